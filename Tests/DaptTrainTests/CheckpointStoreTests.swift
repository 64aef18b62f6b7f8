import DaptCore
import DaptTrain
import Foundation
import XCTest
import DaptTestSupport

final class CheckpointStoreTests: XCTestCase {
    func temporaryRoot() throws -> String { try temporaryDirectory(self, prefix: "dapt-ckpt") }

    func writeFile(_ dir: String, _ name: String, _ text: String) throws -> String {
        let w = try FileWriter(path: dir + "/" + name)
        try w.write(text); try w.commit()
        return name
    }

    func testRoundTripKeepLastAndCorruption() throws {
        let root = try temporaryRoot()
        for step in [10, 20, 30] {
            try CheckpointStore.save(root: root, step: step, keepLast: 2) { dir in
                [try writeFile(dir, "a.txt", "step \(step)"), try writeFile(dir, "b.bin", String(repeating: "x", count: step))]
            }
        }
        XCTAssertEqual(try CheckpointStore.list(root: root).map(\.step), [20, 30])
        let latest = try XCTUnwrap(CheckpointStore.latest(root: root))
        XCTAssertTrue(latest.hasSuffix("checkpoint-00000030"))
        let manifest = try CheckpointStore.verify(directory: latest)
        XCTAssertEqual(manifest.step, 30)
        XCTAssertEqual(manifest.files.map(\.name), ["a.txt", "b.bin"])
        XCTAssertEqual(try FileSystem.readText(latest + "/a.txt"), "step 30")

        // Flip one byte: checksum mismatch naming the file.
        _ = try writeFile(latest, "b.bin", String(repeating: "x", count: 29) + "y")
        XCTAssertThrowsError(try CheckpointStore.verify(directory: latest)) { error in
            guard case .checkpointChecksumMismatch(let path, _, _) = error as? TrainingError else { return XCTFail("\(error)") }
            XCTAssertTrue(path.hasSuffix("checkpoint-00000030/b.bin"))
        }
        // Truncate: size mismatch.
        _ = try writeFile(latest, "b.bin", "xx")
        XCTAssertThrowsError(try CheckpointStore.verify(directory: latest)) {
            XCTAssertEqual($0 as? TrainingError, .checkpointSizeMismatch(path: latest + "/b.bin", expected: 30, found: 2))
        }
        // Missing file.
        FileSystem.remove(latest + "/a.txt")
        XCTAssertThrowsError(try CheckpointStore.verify(directory: latest)) {
            XCTAssertEqual($0 as? TrainingError, .checkpointMissingFile(directory: latest, file: "a.txt"))
        }
    }

    /// A save that dies part-way (here: the file writer throws after the
    /// first file) leaves the earlier checkpoint the newest, intact and
    /// loadable; the next save clears the leftover.
    func testInterruptedSaveLeavesPreviousCheckpoint() throws {
        struct Killed: Error {}
        let root = try temporaryRoot()
        try CheckpointStore.save(root: root, step: 1, keepLast: 3) { [try writeFile($0, "model.bin", "one")] }
        XCTAssertThrowsError(try CheckpointStore.save(root: root, step: 2, keepLast: 3) { dir in
            _ = try writeFile(dir, "model.bin", "two, half")
            throw Killed()
        })
        let names = try FileSystem.list(root)
        XCTAssertEqual(names.filter { $0.hasPrefix("checkpoint-") }, ["checkpoint-00000001"])
        XCTAssertEqual(names.filter { $0.hasPrefix(".tmp-") }.count, 1, "the half-written directory stays hidden")
        let latest = try XCTUnwrap(CheckpointStore.latest(root: root))
        XCTAssertEqual(try CheckpointStore.verify(directory: latest).step, 1)
        XCTAssertEqual(try FileSystem.readText(latest + "/model.bin"), "one")
        try CheckpointStore.save(root: root, step: 2, keepLast: 3) { [try writeFile($0, "model.bin", "two")] }
        XCTAssertEqual(try FileSystem.list(root), ["checkpoint-00000001", "checkpoint-00000002"])
    }
}
