import DaptModel
import Foundation
import XCTest

/// Checkpoints under real `mpirun`: streamed to rank 0 tensor by tensor,
/// they are the same bytes whatever layout wrote them; re-split on load,
/// a run continues under any other layout.
final class CheckpointLayoutTests: XCTestCase, PretrainRunChecks {
    typealias Base = DataParallelPretrainTests
    static let tensor2 = ["--set", "parallel.tensor=2"]
    static let zero = ["--set", "parallel.zero=1"]
    static let tensor2pipeline2 = ["--set", "parallel.tensor=2", "--set", "parallel.pipeline=2"]
    static let tensorFiles = ["model.safetensors", "optimizer.safetensors"]

    func bytes(_ run: String, _ file: String, step: Int) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: run + String(format: "/checkpoint-%08d/", step) + file))
    }

    /// A copy of run directory `from` at `to`, resumed with `--output to` (the saved settings name `from`).
    func copyRun(_ from: String, _ to: String) throws {
        try FileManager.default.copyItem(atPath: from, toPath: to)
    }

    /// A single-rank checkpoint at step 10, loaded and saved again at once
    /// (`--stop-after 0`) by 2 tensor ranks, 2 ZeRO-1 data ranks, 2 tensor ×
    /// 2 data ranks and 2 tensor × 2 pipeline ranks: each rank read its slices, rank 0 received the
    /// others' tensor by tensor, and the weights and moments files are the
    /// single-rank files byte for byte.
    func testEveryLayoutSavesTheSameBytes() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }

        let single = try pretrain(np: 1, ["--input", shards, "--output", run("d1"), "--stop-after", "10"] + Base.fp32)
        XCTAssertEqual(single.status, 0, single.report)
        for (name, np, layout) in [("t2", 2, Self.tensor2), ("z2", 2, Self.zero), ("t2d2", 4, Self.tensor2), ("t2p2", 4, Self.tensor2pipeline2)] {
            try copyRun(run("d1"), run(name))
            let again = try pretrain(np: np, ["--resume", run(name), "--output", run(name), "--stop-after", "0"] + layout)
            XCTAssertEqual(again.status, 0, again.report)
            XCTAssertTrue(again.stderr.contains("at step 10") && again.stderr.contains("saved "), again.report)
            for file in Self.tensorFiles {
                XCTAssertEqual(try bytes(run(name), file, step: 10), try bytes(run("d1"), file, step: 10), "\(name): \(file) byte for byte")
            }
        }
    }

    /// 10 steps on 2 tensor ranks resumed on 2 tensor ranks: the
    /// uninterrupted 2-tensor-rank run, bytes and losses; resumed on 2
    /// ZeRO-1 data ranks, and 10 ZeRO-1 steps resumed on 2 tensor ranks:
    /// the single-rank run within 1e-5; so do 10 steps on 2 tensor × 2
    /// pipeline ranks resumed on one rank and on 4 data ranks. `--from` a
    /// Hugging Face directory (config.json and model.safetensors only) under
    /// 2 tensor, 2 data, 2 ZeRO-1 and 2 tensor × 2 pipeline ranks: one rank's
    /// first-step loss.
    func testResumeAcrossLayoutsAndFromAHuggingFaceDirectory() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }

        let single = try pretrain(np: 1, ["--input", shards, "--output", run("d1")] + Base.fp32)
        XCTAssertEqual(single.status, 0, single.report)
        let reference = try PretrainCommandTests.metrics(run("d1"))
        let whole = try pretrain(np: 2, ["--input", shards, "--output", run("t2")] + Base.fp32 + Self.tensor2)
        XCTAssertEqual(whole.status, 0, whole.report)

        let half = try pretrain(np: 2, ["--input", shards, "--output", run("t2-half"), "--stop-after", "10"] + Base.fp32 + Self.tensor2)
        XCTAssertEqual(half.status, 0, half.report)
        try copyRun(run("t2-half"), run("t2-then-z2"))
        let same = try pretrain(np: 2, ["--resume", run("t2-half")] + Self.tensor2)
        XCTAssertEqual(same.status, 0, same.report)
        XCTAssertEqual(try PretrainCommandTests.metrics(run("t2-half")), try PretrainCommandTests.metrics(run("t2")), "same layout: the same run")
        for file in Self.tensorFiles {
            XCTAssertEqual(try bytes(run("t2-half"), file, step: 20), try bytes(run("t2"), file, step: 20), "same layout: \(file) byte for byte")
        }
        let other = try pretrain(np: 2, ["--resume", run("t2-then-z2"), "--output", run("t2-then-z2"), "--set", "parallel.tensor=1"] + Self.zero)
        XCTAssertEqual(other.status, 0, other.report)
        XCTAssertTrue(other.stderr.contains("at step 10") && other.stderr.contains("(ZeRO-1 over 2 data ranks)"), other.report)
        assertClose(try PretrainCommandTests.metrics(run("t2-then-z2")), reference, "2 tensor ranks to step 10, then 2 ZeRO-1 data ranks")

        let sharded = try pretrain(np: 2, ["--input", shards, "--output", run("z2-then-t2"), "--stop-after", "10"] + Base.fp32 + Self.zero)
        XCTAssertEqual(sharded.status, 0, sharded.report)
        let split = try pretrain(np: 2, ["--resume", run("z2-then-t2"), "--set", "parallel.zero=0"] + Self.tensor2)
        XCTAssertEqual(split.status, 0, split.report)
        XCTAssertTrue(split.stderr.contains("at step 10") && split.stderr.contains("2 ranks: tensor 2 × pipeline 1 × data 1"), split.report)
        assertClose(try PretrainCommandTests.metrics(run("z2-then-t2")), reference, "2 ZeRO-1 data ranks to step 10, then 2 tensor ranks")
        assertClose(try weights(run("z2-then-t2")), try weights(run("d1")), "2 ZeRO-1 data ranks to step 10, then 2 tensor ranks")

        // 2 tensor × 2 pipeline ranks to step 10, then one rank, and 4 data ranks.
        let grid = try pretrain(np: 4, ["--input", shards, "--output", run("t2p2"), "--stop-after", "10"] + Base.fp32 + Self.tensor2pipeline2)
        XCTAssertEqual(grid.status, 0, grid.report)
        try copyRun(run("t2p2"), run("t2p2-then-d4"))
        let alone = try pretrain(np: 1, ["--resume", run("t2p2"), "--set", "parallel.tensor=1", "--set", "parallel.pipeline=1"])
        XCTAssertEqual(alone.status, 0, alone.report)
        assertClose(try PretrainCommandTests.metrics(run("t2p2")), reference, "2 tensor × 2 pipeline ranks to step 10, then one rank")
        assertClose(try weights(run("t2p2")), try weights(run("d1")), "2 tensor × 2 pipeline ranks to step 10, then one rank")
        let data4 = try pretrain(np: 4, ["--resume", run("t2p2-then-d4"), "--output", run("t2p2-then-d4"), "--set", "parallel.tensor=1", "--set", "parallel.pipeline=1"])
        XCTAssertEqual(data4.status, 0, data4.report)
        XCTAssertTrue(data4.stderr.contains("4 ranks: tensor 1 × pipeline 1 × data 4"), data4.report)
        assertClose(try PretrainCommandTests.metrics(run("t2p2-then-d4")), reference, "2 tensor × 2 pipeline ranks to step 10, then 4 data ranks")

        // A Hugging Face directory: the weights and config alone.
        let hf = run("hf")
        try FileManager.default.createDirectory(atPath: hf, withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(atPath: run("d1") + "/checkpoint-00000020/" + file, toPath: hf + "/" + file)
        }
        var firstLosses: [String: Double] = [:]
        for (name, np, layout) in [("from-1", 1, [String]()), ("from-t2", 2, Self.tensor2), ("from-d2", 2, []), ("from-z2", 2, Self.zero), ("from-t2p2", 4, Self.tensor2pipeline2)] {
            let r = try pretrain(np: np, ["--input", shards, "--output", run(name), "--from", hf, "--steps", "1"] + PretrainCommandTests.tiny + layout)
            XCTAssertEqual(r.status, 0, r.report)
            firstLosses[name] = try XCTUnwrap(try PretrainCommandTests.metrics(run(name)).first { $0.step == 1 }?.loss, name)
        }
        let one = try XCTUnwrap(firstLosses["from-1"])
        for (name, loss) in firstLosses {
            XCTAssertEqual(loss, one, accuracy: 1e-5 * abs(one), "\(name): the first-step loss of the loaded weights")
        }
    }
}
