import DaptCore
import Foundation
import XCTest
import DaptTestSupport

final class FilesTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try temporaryDirectoryURL(self, prefix: "files")
    }

    func lines(of path: String, chunk: Int) throws -> [(Int, String)] {
        var out: [(Int, String)] = []
        try LineReader(path: path, chunkSize: chunk).forEachLine { n, bytes in
            out.append((n, String(decoding: bytes, as: UTF8.self))); return true
        }
        return out
    }

    func testLineReaderAcrossChunkBoundaries() throws {
        let text = "first\r\n\n第二行 with 中文\nlast line without newline"
        let path = dir.appendingPathComponent("a.txt").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        for chunk in [1, 2, 3, 7, 64, 1 << 20] {
            let got = try lines(of: path, chunk: chunk)
            XCTAssertEqual(got.map(\.0), [1, 2, 3, 4], "chunk \(chunk)")
            XCTAssertEqual(got.map(\.1), ["first", "", "第二行 with 中文", "last line without newline"], "chunk \(chunk)")
        }
    }

    func testLineReaderStopsEarlyAndReportsMissingFile() throws {
        let path = dir.appendingPathComponent("b.txt").path
        try "1\n2\n3\n".write(toFile: path, atomically: true, encoding: .utf8)
        var seen = 0
        try LineReader(path: path).forEachLine { _, _ in seen += 1; return seen < 2 }
        XCTAssertEqual(seen, 2)
        XCTAssertThrowsError(try LineReader(path: dir.appendingPathComponent("nope").path).forEachLine { _, _ in true }) { error in
            XCTAssertTrue("\(error)".contains("nope"), "\(error)")
        }
    }

    func testAtomicWriterLeavesOldFileUntilCommit() throws {
        let path = dir.appendingPathComponent("out.json").path
        try "old".write(toFile: path, atomically: true, encoding: .utf8)
        let writer = try FileWriter(path: path, atomic: true, bufferSize: 4)
        try writer.write("new contents, longer than the buffer")
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "old")
        try writer.commit()
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "new contents, longer than the buffer")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["out.json"])
    }

    func testAbandonedAtomicWriterRemovesItsTemporary() throws {
        let path = dir.appendingPathComponent("gone.json").path
        do {
            let writer = try FileWriter(path: path, atomic: true)
            try writer.write("partial")
            try writer.flush()
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [])
    }

    func testListIsSortedAndMakeDirectoriesNests() throws {
        let nested = dir.appendingPathComponent("x/y/z").path
        try FileSystem.makeDirectories(nested)
        XCTAssertTrue(FileSystem.isDirectory(nested))
        for name in ["b", "a", "c"] { try "".write(toFile: dir.appendingPathComponent(name).path, atomically: true, encoding: .utf8) }
        XCTAssertEqual(try FileSystem.list(dir.path), ["a", "b", "c", "x"])
    }
}
