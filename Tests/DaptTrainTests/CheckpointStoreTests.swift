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
        XCTAssertEqual(names.filter { $0.hasPrefix(".tmp-") }.count, 0, "a failed save removes its partial copy")
        let latest = try XCTUnwrap(CheckpointStore.latest(root: root))
        XCTAssertEqual(try CheckpointStore.verify(directory: latest).step, 1)
        XCTAssertEqual(try FileSystem.readText(latest + "/model.bin"), "one")
        // A process killed mid-save leaves its hidden copy; the next save clears it.
        try FileSystem.makeDirectories(root + "/.tmp-checkpoint-00000002-999")
        _ = try writeFile(root + "/.tmp-checkpoint-00000002-999", "model.bin", "two, half")
        try CheckpointStore.save(root: root, step: 2, keepLast: 3) { [try writeFile($0, "model.bin", "two")] }
        XCTAssertEqual(try FileSystem.list(root), ["checkpoint-00000001", "checkpoint-00000002"])
    }

    /// A disk that fills during a save: the error names the checkpoint, the
    /// cause and the intact previous checkpoint; nothing of the partial copy stays.
    func testDiskFullDuringSaveKeepsThePreviousAndSaysSo() throws {
        let root = try temporaryRoot()
        try CheckpointStore.save(root: root, step: 1, keepLast: 3) { [try writeFile($0, "model.bin", "one")] }
        XCTAssertThrowsError(try CheckpointStore.save(root: root, step: 2, keepLast: 3) { dir in
            _ = try writeFile(dir, "model.bin", "two")
            throw FileError(path: dir + "/optimizer.bin", operation: "write", errno: ENOSPC)
        }) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("could not write checkpoint \(root)/checkpoint-00000002"), text)
            XCTAssertTrue(text.contains("No space left on device"), text)
            XCTAssertTrue(text.contains("previous checkpoint \(root)/checkpoint-00000001 is intact"), text)
        }
        XCTAssertEqual(try FileSystem.list(root), ["checkpoint-00000001"])
        XCTAssertEqual(try CheckpointStore.verify(directory: root + "/checkpoint-00000001").step, 1)
    }

    /// The newest checkpoint that verifies, with each damaged newer one reported.
    func testNewestIntactSkipsDamagedCheckpoints() throws {
        let root = try temporaryRoot()
        for step in [1, 2, 3] { try CheckpointStore.save(root: root, step: step, keepLast: 0) { [try writeFile($0, "model.bin", "step \(step)")] } }
        _ = try writeFile(root + "/checkpoint-00000003", "model.bin", "st")
        var skipped: [String] = []
        XCTAssertEqual(try CheckpointStore.newestIntact(root: root) { path, error in skipped.append("\(error)") }, root + "/checkpoint-00000002")
        XCTAssertEqual(skipped, ["\(root)/checkpoint-00000003/model.bin: 2 bytes, the manifest says 6 (file truncated or corrupted)"])
    }
}
