import Foundation
import XCTest

/// Preemption and restarts of a data-parallel run through cluster/launch.sh.
final class PreemptionTests: XCTestCase {
    static var launch: String { DaptProcess.repositoryRoot.appendingPathComponent("cluster/launch.sh").path }

    override func setUp() {
        // launch.sh and faults.sh run the binary under test, not the release build.
        setenv("DAPT_BIN", DaptProcess.binary, 1)
    }

    struct Event: Decodable { var event: String; var step: Int; var message: String }

    /// SIGTERM to the launcher reaches both ranks: they finish the step,
    /// rank 0 writes a checkpoint of it, the launcher exits 0 saying the run
    /// is resumable (no restart), and a resume continues from that step.
    func testSigtermStopsBothRanksWithACheckpointAndExitsZero() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        let run = dir.appendingPathComponent("run").path
        let args = ["--restarts", "2", "-np", "2", "dapt", "pretrain", "--input", shards, "--output", run, "--steps", "1000000"] + PretrainCommandTests.tiny
        let stopped = try DaptProcess.run(Self.launch, args, timeout: 200) { process in
            let deadline = Date().addingTimeInterval(150)
            while Date() < deadline {
                if let text = try? String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8), text.contains("\"step\":3,") { break }
                Thread.sleep(forTimeInterval: 0.01)
            }
            kill(process.processIdentifier, SIGTERM)
        }
        XCTAssertEqual(stopped.status, 0, stopped.stderr)
        XCTAssertTrue(stopped.stderr.contains("stopped by SIGTERM after step"), stopped.stderr)
        XCTAssertTrue(stopped.stderr.contains("launch: stopped by SIGTERM; resumable from \(run)"), stopped.stderr)
        XCTAssertFalse(stopped.stderr.contains("restart 1"), "a preempted job is not restarted")
        let lines = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let stop = try JSONDecoder().decode(Event.self, from: Data(XCTUnwrap(lines.last).utf8))
        XCTAssertEqual(stop.event, "stop")
        let checkpoints = try FileManager.default.contentsOfDirectory(atPath: run).filter { $0.hasPrefix("checkpoint-") }.sorted()
        XCTAssertEqual(checkpoints.last, String(format: "checkpoint-%08d", stop.step), "the checkpoint is of the step the ranks stopped after")
        let target = stop.step + 2
        let resumed = try DaptProcess.mpirun(np: 2, ["pretrain", "--input", shards, "--output", run, "--steps", String(target), "--resume", run]
                                             + PretrainCommandTests.tiny)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("resumed from \(run)/\(checkpoints.last!) at step \(stop.step)"), resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("step \(target)/\(target)"), resumed.stderr)
    }

    /// The quick form of scripts/faults.sh: a rank SIGKILLed mid-run, the
    /// job restarted by launch.sh, the final weights byte-identical to an
    /// uninterrupted run.
    func testKilledRankRestartsToTheSameModel() throws {
        let script = DaptProcess.repositoryRoot.appendingPathComponent("scripts/faults.sh").path
        let r = try DaptProcess.run(script, ["--trials", "1", "--ranks", "2", "--steps", "16"], timeout: 280)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("1 of 1 trials restarted and ended bit-identical"), r.stdout + r.stderr)
        let row = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasPrefix("1 ") }).split(separator: " ", omittingEmptySubsequences: true)
        XCTAssertEqual(row[4], "1", "one restart: \(row)")
        XCTAssertEqual(row.last, "identical")
    }

    /// Restarts need the run directory; a bad count is refused.
    func testLaunchRestartsNeedsTheRunDirectory() throws {
        let noOutput = try DaptProcess.run(Self.launch, ["--restarts", "1", "-np", "2", "dapt", "pretrain", "--steps", "2"], timeout: 60)
        XCTAssertEqual(noOutput.status, 2)
        XCTAssertTrue(noOutput.stderr.contains("--restarts needs the pretrain job's --output"), noOutput.stderr)
        let bad = try DaptProcess.run(Self.launch, ["--restarts", "x", "-np", "2", "dapt", "pretrain"], timeout: 60)
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.stderr.contains("--restarts must be a whole number"), bad.stderr)
    }
}
