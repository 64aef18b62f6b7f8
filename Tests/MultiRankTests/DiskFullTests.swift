import Foundation
import XCTest

/// A disk that fills during a checkpoint, for real: the run directory on a
/// tmpfs with room for two checkpoints (root only; skipped otherwise).
final class DiskFullTests: XCTestCase {
    func shell(_ command: String) throws -> DaptProcess.Result {
        try DaptProcess.run("/bin/sh", ["-c", command], timeout: 60)
    }

    /// Two data ranks write a checkpoint every 2 steps into 1200 KB (each
    /// takes about 500 KB): the third save fails; every rank stops with one
    /// error naming the checkpoint, the cause and the intact previous one;
    /// no partial copy is left. With more room, --resume continues from it.
    func testDiskFullDuringACheckpointStopsAndKeepsThePrevious() throws {
        try XCTSkipUnless(getuid() == 0, "mounting a tmpfs needs root")
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        let disk = dir.appendingPathComponent("disk").path
        try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: true)
        let mounted = try shell("mount -t tmpfs -o size=1200k tmpfs '\(disk)'")
        try XCTSkipUnless(mounted.status == 0, "cannot mount a tmpfs here: \(mounted.report)")
        addTeardownBlock { _ = try? self.shell("umount '\(disk)'") }
        let run = disk + "/run"
        let settings = ["--steps", "10", "--set", "checkpoint.every_steps=2", "--set", "checkpoint.keep_last=0"] + PretrainCommandTests.tiny

        let full = try DaptProcess.mpirun(np: 2, ["pretrain", "--input", shards, "--output", run] + settings)
        XCTAssertNotEqual(full.status, 0, full.report)
        XCTAssertTrue(full.stderr.contains("could not write checkpoint \(run)/checkpoint-00000006"), full.report)
        XCTAssertTrue(full.stderr.contains("No space left on device"), full.report)
        XCTAssertTrue(full.stderr.contains("The previous checkpoint \(run)/checkpoint-00000004 is intact"), full.report)
        XCTAssertFalse(full.stderr.contains("step 7/10"), "no rank trains past the failed save\n\(full.report)")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: run).sorted(),
                       ["checkpoint-00000002", "checkpoint-00000004", "metrics.jsonl"], "no partial copy left")

        let remounted = try shell("mount -o remount,size=8m '\(disk)'")
        XCTAssertEqual(remounted.status, 0, remounted.report)
        let resumed = try DaptProcess.mpirun(np: 2, ["pretrain", "--resume", run])
        XCTAssertEqual(resumed.status, 0, resumed.report)
        XCTAssertTrue(resumed.stderr.contains("resumed from \(run)/checkpoint-00000004 at step 4"), resumed.report)
        XCTAssertTrue(resumed.stderr.contains("step 10/10"), resumed.report)
    }
}
