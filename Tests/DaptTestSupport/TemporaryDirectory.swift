import Foundation
import XCTest

/// A fresh directory for one test, removed when the test ends.
public func temporaryDirectory(_ test: XCTestCase, prefix: String = "dapt") throws -> String {
    try temporaryDirectoryURL(test, prefix: prefix).path
}

/// The same as a URL, for tests that build paths with Foundation.
public func temporaryDirectoryURL(_ test: XCTestCase, prefix: String = "dapt") throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
    return dir
}

/// Writes `lines`, each ended by a newline.
public func writeLines(_ lines: [String], to path: String) throws {
    try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
}
