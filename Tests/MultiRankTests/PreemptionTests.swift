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
        XCTAssertEqual(stopped.status, 0, stopped.report)
        XCTAssertTrue(stopped.stderr.contains("stopped by SIGTERM after step"), stopped.report)
        XCTAssertTrue(stopped.stderr.contains("launch: stopped by SIGTERM; resumable from \(run)"), stopped.report)
        XCTAssertFalse(stopped.stderr.contains("restart 1"), "a preempted job is not restarted\n\(stopped.report)")
        let lines = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let stop = try JSONDecoder().decode(Event.self, from: Data(XCTUnwrap(lines.last).utf8))
        XCTAssertEqual(stop.event, "stop")
        let checkpoints = try FileManager.default.contentsOfDirectory(atPath: run).filter { $0.hasPrefix("checkpoint-") }.sorted()
        XCTAssertEqual(checkpoints.last, String(format: "checkpoint-%08d", stop.step), "the checkpoint is of the step the ranks stopped after")
        let target = stop.step + 2
        let resumed = try DaptProcess.mpirun(np: 2, ["pretrain", "--input", shards, "--output", run, "--steps", String(target), "--resume", run]
                                             + PretrainCommandTests.tiny)
        XCTAssertEqual(resumed.status, 0, resumed.report)
        XCTAssertTrue(resumed.stderr.contains("resumed from \(run)/\(checkpoints.last!) at step \(stop.step)"), resumed.report)
        XCTAssertTrue(resumed.stderr.contains("step \(target)/\(target)"), resumed.report)
    }

    /// A Ctrl-C at the terminal: SIGINT to the foreground process group of
    /// `launch.sh -np 2 dapt pretrain` (a session of its own here, with SIGINT
    /// handled as in a shell's foreground job). The ranks get SIGINT, stop at a
    /// step boundary, rank 0 writes that step's checkpoint, the job exits 0
    /// (docs/parallel.md), and a resume ends byte for byte where the
    /// uninterrupted run does. A resume with another data.shuffle is refused
    /// on both ranks with one message naming the setting.
    func testCtrlCStopsWithACheckpointAndResumesBitIdentically() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        let straight = dir.appendingPathComponent("straight").path, run = dir.appendingPathComponent("run").path
        let settings = ["--input", shards, "--steps", "600"] + PretrainCommandTests.tiny + ["--set", "eval.every_steps=0", "--set", "log_every_steps=100"]
        let reference = try DaptProcess.mpirun(np: 2, ["pretrain", "--output", straight] + settings)
        XCTAssertEqual(reference.status, 0, reference.report)

        let launch = ["--default-signal=INT", "setsid", "-w", Self.launch, "-np", "2", "dapt", "pretrain", "--output", run] + settings
        let stopped = try DaptProcess.run("/usr/bin/env", launch, timeout: 200) { process in
            let deadline = Date().addingTimeInterval(150)
            while Date() < deadline {
                if let text = try? String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8), text.contains("\"step\":2,") { break }
                Thread.sleep(forTimeInterval: 0.005)
            }
            // launch.sh leads its session and process group: what a terminal's Ctrl-C signals.
            guard let group = Self.sessionLeader(under: process.processIdentifier) else { return XCTFail("no session leader") }
            kill(-group, SIGINT)
        }
        XCTAssertEqual(stopped.status, 0, stopped.report)
        XCTAssertTrue(stopped.stderr.contains("stopped by SIGINT after step"), stopped.report)
        XCTAssertTrue(stopped.stderr.contains("launch: stopped by SIGINT; resumable from \(run)"), stopped.report)
        let lines = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        struct Stop: Decodable { var event: String; var step: Int; var signal: String }
        let stop = try JSONDecoder().decode(Stop.self, from: Data(XCTUnwrap(lines.last).utf8))
        XCTAssertEqual(stop.event, "stop")
        XCTAssertEqual(stop.signal, "SIGINT")
        XCTAssertLessThan(stop.step, 600, "stopped before the end")
        let checkpoints = try FileManager.default.contentsOfDirectory(atPath: run).filter { $0.hasPrefix("checkpoint-") }
        XCTAssertEqual(checkpoints, [String(format: "checkpoint-%08d", stop.step)], "the checkpoint of the step the ranks stopped after")

        let shuffled = try DaptProcess.mpirun(np: 2, ["pretrain", "--resume", run, "--set", "data.shuffle=false"])
        XCTAssertEqual(shuffled.status, 2, shuffled.report)
        XCTAssertEqual(shuffled.stderr.components(separatedBy: "pretrain.data.shuffle: true in the checkpoint, false in this run").count, 2, shuffled.report)
        let stray = try DaptProcess.dapt(["pretrain", "--input", shards, "--output", dir.appendingPathComponent("other").path, "--allow-data-change"])
        XCTAssertEqual(stray.status, 2, stray.report)
        XCTAssertTrue(stray.stderr.contains("--allow-data-change: only applies with --resume"), stray.report)

        let resumed = try DaptProcess.mpirun(np: 2, ["pretrain", "--resume", run])
        XCTAssertEqual(resumed.status, 0, resumed.report)
        XCTAssertTrue(resumed.stderr.contains("resumed from \(run)/checkpoint-\(String(format: "%08d", stop.step)) at step \(stop.step)"), resumed.report)
        func steps(_ run: String) throws -> [PretrainCommandTests.Line] { try PretrainCommandTests.metrics(run).filter { $0.loss != nil || $0.eval_loss != nil } }
        XCTAssertEqual(try steps(run), try steps(straight))
        XCTAssertEqual(try steps(run).map(\.step), Array(0...600))
        let model = "/checkpoint-00000600/model.safetensors"
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run + model)), try Data(contentsOf: URL(fileURLWithPath: straight + model)),
                       "interrupted by SIGINT and resumed: the uninterrupted run's bytes")
    }

    /// The process that leads the session started by `setsid` under `pid`
    /// (`pid` itself, or its child when setsid had to fork).
    static func sessionLeader(under pid: Int32) -> Int32? {
        for _ in 0..<500 {
            for candidate in [pid] + children(of: pid) where session(of: candidate) == candidate { return candidate }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return nil
    }

    static func session(of pid: Int32) -> Int32? {
        // /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces, so count after the last ')'.
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 3 ? Int32(fields[3]) : nil
    }

    static func children(of pid: Int32) -> [Int32] {
        ((try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? "").split(separator: " ").compactMap { Int32($0) }
    }

    /// The quick form of scripts/faults.sh: a rank SIGKILLed mid-run, the
    /// job restarted by launch.sh, the final weights byte-identical to an
    /// uninterrupted run.
    func testKilledRankRestartsToTheSameModel() throws {
        let script = DaptProcess.repositoryRoot.appendingPathComponent("scripts/faults.sh").path
        let r = try DaptProcess.run(script, ["--trials", "1", "--ranks", "2", "--steps", "16"], timeout: 280)
        XCTAssertEqual(r.status, 0, r.report)
        XCTAssertTrue(r.stdout.contains("1 of 1 trials restarted and ended bit-identical"), r.report)
        let row = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasPrefix("1 ") }, r.report).split(separator: " ", omittingEmptySubsequences: true)
        XCTAssertEqual(row[4], "1", "one restart: \(row)")
        XCTAssertEqual(row.last, "identical")
    }

    /// Restarts need the run directory; a bad count is refused.
    func testLaunchRestartsNeedsTheRunDirectory() throws {
        let noOutput = try DaptProcess.run(Self.launch, ["--restarts", "1", "-np", "2", "dapt", "pretrain", "--steps", "2"], timeout: 60)
        XCTAssertEqual(noOutput.status, 2, noOutput.report)
        XCTAssertTrue(noOutput.stderr.contains("--restarts needs the pretrain job's --output"), noOutput.report)
        let bad = try DaptProcess.run(Self.launch, ["--restarts", "x", "-np", "2", "dapt", "pretrain"], timeout: 60)
        XCTAssertEqual(bad.status, 2, bad.report)
        XCTAssertTrue(bad.stderr.contains("--restarts must be a whole number"), bad.report)
    }
}
