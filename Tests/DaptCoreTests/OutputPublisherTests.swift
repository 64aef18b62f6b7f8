import DaptCore
import Foundation
import XCTest
import DaptTestSupport

final class OutputPublisherTests: XCTestCase {
    func files(_ dir: String) throws -> [String: String] {
        var out: [String: String] = [:]
        for name in try FileSystem.list(dir) { out[name] = try FileSystem.readText(dir + "/" + name) }
        return out
    }

    func publish(_ publisher: OutputPublisher, _ contents: [String: String]) throws {
        try publisher.begin()
        for (name, text) in contents { try text.write(toFile: publisher.path(name), atomically: false, encoding: .utf8) }
        try publisher.publish(stage: "test")
    }

    /// A second run with other files replaces the first run's folder as a
    /// whole: none of its files survives, and no staging folder is left.
    func testSecondRunLeavesNoFileOfTheFirst() throws {
        let root = try temporaryDirectory(self)
        let publisher = OutputPublisher(directory: root + "/out")
        XCTAssertEqual(publisher.staging, root + "/.out.staging")
        try publish(publisher, ["a.jsonl": "1\n", "shard-00001": "x", "pairs.jsonl": "p\n"])
        XCTAssertTrue(OutputPublisher.isComplete(root + "/out"))
        try publish(publisher, ["a.jsonl": "2\n"])
        var second = try files(root + "/out")
        XCTAssertNotNil(second.removeValue(forKey: OutputPublisher.marker))
        XCTAssertEqual(second, ["a.jsonl": "2\n"])
        XCTAssertEqual(try FileSystem.list(root), ["out"])
    }

    /// A run that stops before publishing leaves the earlier complete output
    /// untouched; the next run clears what it left.
    func testUnpublishedRunLeavesTheEarlierOutputIntact() throws {
        let root = try temporaryDirectory(self)
        let publisher = OutputPublisher(directory: root + "/out/")
        try publish(publisher, ["kept.jsonl": "old\n", "report.json": "{}"])
        let before = try files(root + "/out")
        try publisher.begin()
        try "new\n".write(toFile: publisher.path("kept.jsonl"), atomically: false, encoding: .utf8)
        // (killed here)
        XCTAssertEqual(try files(root + "/out"), before)
        try OutputPublisher.requireComplete(root + "/out")
        try publish(publisher, ["kept.jsonl": "newer\n"])
        XCTAssertEqual(try files(root + "/out")["kept.jsonl"], "newer\n")
        XCTAssertNil(try files(root + "/out")["report.json"])
        XCTAssertEqual(try FileSystem.list(root), ["out"])
    }

    /// Killed between moving the old folder aside and the new one in (where
    /// folders cannot be swapped in one step): the next run puts the old one back.
    func testOldFolderLeftAsideIsRestored() throws {
        let root = try temporaryDirectory(self)
        let publisher = OutputPublisher(directory: root + "/out")
        try publish(publisher, ["kept.jsonl": "old\n"])
        XCTAssertEqual(rename(root + "/out", root + "/.out.old"), 0)
        try publisher.begin()
        XCTAssertEqual(try files(root + "/out")["kept.jsonl"], "old\n")
        try OutputPublisher.requireComplete(root + "/out")
    }

    /// A folder with other files and no marker is not replaced; an empty one is.
    func testForeignFolderIsRefusedAndIncompleteFolderIsNotRead() throws {
        let root = try temporaryDirectory(self)
        try FileSystem.makeDirectories(root + "/mine")
        try "keep me".write(toFile: root + "/mine/notes.txt", atomically: false, encoding: .utf8)
        XCTAssertThrowsError(try OutputPublisher(directory: root + "/mine").begin()) { error in
            XCTAssertEqual(error as? PublishError, .foreignFolder(root + "/mine"))
        }
        XCTAssertEqual(try FileSystem.readText(root + "/mine/notes.txt"), "keep me")
        XCTAssertThrowsError(try OutputPublisher.requireComplete(root + "/mine")) { error in
            XCTAssertEqual(error as? PublishError, .incomplete(root + "/mine"))
            XCTAssertTrue("\(error)".contains("rerun the stage"))
        }
        try FileSystem.makeDirectories(root + "/empty")
        try publish(OutputPublisher(directory: root + "/empty"), ["a": "1"])
        XCTAssertEqual(try files(root + "/empty")["a"], "1")
    }
}
