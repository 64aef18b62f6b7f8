import DaptModel
import Foundation
import XCTest

/// Runs `dapt pretrain` alone or under mpirun and compares runs.
protocol PretrainRunChecks {}

extension PretrainRunChecks where Self: XCTestCase {
    typealias Line = PretrainCommandTests.Line

    func pretrain(np: Int, _ arguments: [String]) throws -> DaptProcess.Result {
        np == 1 ? try DaptProcess.dapt(["pretrain"] + arguments) : try DaptProcess.mpirun(np: np, ["pretrain"] + arguments, timeout: 300)
    }

    func weights(_ run: String, step: Int = 20) throws -> [String: [Float]] {
        let file = try SafeTensorsFile(path: run + String(format: "/checkpoint-%08d/model.safetensors", step))
        return try Dictionary(uniqueKeysWithValues: file.entries.map { ($0.name, try file.floats($0.name)) })
    }

    func assertClose(_ lines: [Line], _ reference: [Line], _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(lines.map(\.step), reference.map(\.step), label, file: file, line: line)
        for (a, b) in zip(lines, reference) {
            for (x, y, name) in [(a.loss, b.loss, "loss"), (a.eval_loss, b.eval_loss, "eval_loss")] {
                XCTAssertEqual(x == nil, y == nil, "\(label) step \(a.step) \(name)", file: file, line: line)
                if let x, let y {
                    XCTAssertLessThanOrEqual(abs(x - y), 1e-5 * abs(y), "\(label) step \(a.step) \(name): \(x) vs \(y)", file: file, line: line)
                }
            }
        }
    }

    func assertClose(_ weights: [String: [Float]], _ reference: [String: [Float]], _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(weights.keys.sorted(), reference.keys.sorted(), label, file: file, line: line)
        var largest: Float = 0
        for (name, values) in reference {
            guard let other = weights[name], other.count == values.count else { return XCTFail("\(label): \(name)", file: file, line: line) }
            for (x, y) in zip(other, values) { largest = max(largest, abs(x - y)) }
        }
        XCTAssertLessThanOrEqual(largest, 1e-5, "\(label): largest weight difference", file: file, line: line)
    }
}

/// `dapt pretrain` under a real `mpirun`: data parallelism gives the
/// single-rank run, layouts that are not built are refused.
final class DataParallelPretrainTests: XCTestCase, PretrainRunChecks {
    static let fp32 = PretrainCommandTests.tiny + ["--steps", "20"]

    /// 20 fp32 steps on 1, 2 and 4 data-parallel ranks: the same losses and
    /// weights; the same layout twice: identical bytes; 10 steps on 2 ranks
    /// resumed on one rank to 20: the single-rank run; resumed on 2 ranks:
    /// the uninterrupted 2-rank run, byte for byte.
    func testDataParallelRunsMatchOneRank() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }

        let single = try pretrain(np: 1, ["--input", shards, "--output", run("d1")] + Self.fp32)
        XCTAssertEqual(single.status, 0, single.report)
        XCTAssertFalse(single.stderr.contains("ranks: tensor"), "one rank prints no grid\n\(single.report)")
        let reference = try PretrainCommandTests.metrics(run("d1"))
        XCTAssertEqual(reference.map(\.step), Array(0...20))
        let referenceWeights = try weights(run("d1"))

        for np in [2, 4] {
            let r = try pretrain(np: np, ["--input", shards, "--output", run("d\(np)")] + Self.fp32)
            XCTAssertEqual(r.status, 0, r.report)
            XCTAssertTrue(r.stderr.contains("\(np) ranks: tensor 1 × pipeline 1 × data \(np)"), r.report)
            XCTAssertTrue(r.stderr.contains("rank \(np - 1): tensor 0/1 pipeline 0/1 data \(np - 1)/\(np)"), r.report)
            XCTAssertEqual(r.stderr.components(separatedBy: "step 20/20  loss").count, 2, "progress printed once: \(r.report)")
            assertClose(try PretrainCommandTests.metrics(run("d\(np)")), reference, "\(np) ranks")
            assertClose(try weights(run("d\(np)")), referenceWeights, "\(np) ranks")
            XCTAssertTrue(FileManager.default.fileExists(atPath: run("d\(np)") + "/loss_curve.svg"))
        }

        let again = try pretrain(np: 2, ["--input", shards, "--output", run("d2-again")] + Self.fp32)
        XCTAssertEqual(again.status, 0, again.report)
        XCTAssertEqual(try PretrainCommandTests.metrics(run("d2-again")), try PretrainCommandTests.metrics(run("d2")))
        let model = "/checkpoint-00000020/model.safetensors"
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run("d2-again") + model)),
                       try Data(contentsOf: URL(fileURLWithPath: run("d2") + model)), "same layout, same bytes")

        let half = try pretrain(np: 2, ["--input", shards, "--output", run("resumed"), "--stop-after", "10"] + Self.fp32)
        XCTAssertEqual(half.status, 0, half.report)
        XCTAssertEqual(try PretrainCommandTests.metrics(run("resumed")).map(\.step), Array(0...10))
        let rest = try pretrain(np: 1, ["--resume", run("resumed")])
        XCTAssertEqual(rest.status, 0, rest.report)
        XCTAssertTrue(rest.stderr.contains("at step 10"), rest.report)
        assertClose(try PretrainCommandTests.metrics(run("resumed")), reference, "2 ranks to step 10, then one rank")
        assertClose(try weights(run("resumed")), referenceWeights, "2 ranks to step 10, then one rank")

        // Resumed under the same degree: the uninterrupted run, byte for byte.
        let firstHalf = try pretrain(np: 2, ["--input", shards, "--output", run("resumed-d2"), "--stop-after", "10"] + Self.fp32)
        XCTAssertEqual(firstHalf.status, 0, firstHalf.report)
        let secondHalf = try pretrain(np: 2, ["--resume", run("resumed-d2")])
        XCTAssertEqual(secondHalf.status, 0, secondHalf.report)
        XCTAssertTrue(secondHalf.stderr.contains("at step 10") && secondHalf.stderr.contains("2 ranks: tensor 1 × pipeline 1 × data 2"), secondHalf.report)
        XCTAssertEqual(try PretrainCommandTests.metrics(run("resumed-d2")), try PretrainCommandTests.metrics(run("d2")))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run("resumed-d2") + model)),
                       try Data(contentsOf: URL(fileURLWithPath: run("d2") + model)), "resumed under the same degree, same bytes")

        // A fresh run into a directory that holds one: every rank stops, one message.
        let taken = try pretrain(np: 2, ["--input", shards, "--output", run("d2")] + Self.fp32)
        XCTAssertNotEqual(taken.status, 0, taken.report)
        XCTAssertEqual(taken.stderr.components(separatedBy: "already holds a run").count, 2, taken.report)
        XCTAssertEqual(try PretrainCommandTests.metrics(run("d2")), try PretrainCommandTests.metrics(run("d2-again")), "left as it was")
    }

    /// bf16 on 2 data ranks and fp16 on 2 tensor ranks complete with finite losses.
    func testHalfPrecisionOnTwoRanksCompletes() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        let run = dir.appendingPathComponent("bf16").path
        let r = try pretrain(np: 2, ["--input", shards, "--output", run, "--steps", "6", "--precision", "bf16"] + PretrainCommandTests.tiny)
        XCTAssertEqual(r.status, 0, r.report)
        XCTAssertTrue(r.stderr.contains("2 ranks: tensor 1 × pipeline 1 × data 2") && r.stderr.contains("step 6/6  loss"), r.report)
        let lines = try PretrainCommandTests.metrics(run)
        XCTAssertEqual(lines.map(\.step), Array(0...6))
        XCTAssertTrue(lines.dropFirst().allSatisfy { ($0.loss ?? .nan).isFinite }, "\(lines)")

        // fp16 split among 2 tensor ranks: every rank scales, checks and skips alike.
        let fp16 = dir.appendingPathComponent("fp16-t2").path
        let t = try pretrain(np: 2, ["--input", shards, "--output", fp16, "--steps", "6", "--precision", "fp16", "--set", "parallel.tensor=2"] + PretrainCommandTests.tiny)
        XCTAssertEqual(t.status, 0, t.report)
        XCTAssertTrue(t.stderr.contains("2 ranks: tensor 2 × pipeline 1 × data 1") && t.stderr.contains("step 6/6  loss"), t.report)
        let fp16Lines = try PretrainCommandTests.metrics(fp16)
        XCTAssertEqual(fp16Lines.map(\.step), Array(0...6))
        XCTAssertTrue(fp16Lines.dropFirst().allSatisfy { ($0.loss ?? .nan).isFinite }, "\(fp16Lines)")
    }

    /// 20 fp32 steps split among 2 tensor ranks, and 2 tensor × 2 data
    /// ranks: the single-rank losses and weights within 1e-5, the checkpoint
    /// one Hugging Face file of whole tensors; a run of 2 tensor ranks to step
    /// 10 resumes on one rank, and one rank's resumes on 2 tensor ranks, each
    /// ending at the single-rank run.
    func testTensorParallelRunsMatchOneRank() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let tensor2 = ["--set", "parallel.tensor=2"]

        let single = try pretrain(np: 1, ["--input", shards, "--output", run("t1")] + Self.fp32)
        XCTAssertEqual(single.status, 0, single.report)
        let reference = try PretrainCommandTests.metrics(run("t1"))
        let referenceWeights = try weights(run("t1"))

        for (np, data) in [(2, 1), (4, 2)] {
            let name = "t2d\(data)"
            let r = try pretrain(np: np, ["--input", shards, "--output", run(name)] + Self.fp32 + tensor2)
            XCTAssertEqual(r.status, 0, r.report)
            XCTAssertTrue(r.stderr.contains("\(np) ranks: tensor 2 × pipeline 1 × data \(data)"), r.report)
            XCTAssertTrue(r.stderr.contains("rank 1: tensor 1/2 pipeline 0/1 data 0/\(data)  layers 0–1, heads 2–3 of 4"), r.report)
            let lines = try PretrainCommandTests.metrics(run(name))
            assertClose(lines, reference, "tensor 2 × data \(data)")
            // The clipping norm counts every parameter once: replicated norm gains are not summed T times.
            for (a, b) in zip(lines, reference) where b.grad_norm != nil {
                XCTAssertEqual(a.grad_norm ?? .nan, b.grad_norm!, accuracy: 1e-5 * b.grad_norm!, "tensor 2 × data \(data) step \(a.step) grad_norm")
            }
            assertClose(try weights(run(name)), referenceWeights, "tensor 2 × data \(data)")
            let file = try SafeTensorsFile(path: run(name) + "/checkpoint-00000020/model.safetensors")
            XCTAssertEqual(file.entry("model.embed_tokens.weight")?.shape, try SafeTensorsFile(path: run("t1") + "/checkpoint-00000020/model.safetensors").entry("model.embed_tokens.weight")?.shape)
        }

        let half = try pretrain(np: 2, ["--input", shards, "--output", run("t2-then-1"), "--stop-after", "10"] + Self.fp32 + tensor2)
        XCTAssertEqual(half.status, 0, half.report)
        let rest = try pretrain(np: 1, ["--resume", run("t2-then-1"), "--set", "parallel.tensor=1"])
        XCTAssertEqual(rest.status, 0, rest.report)
        XCTAssertTrue(rest.stderr.contains("at step 10"), rest.report)
        assertClose(try PretrainCommandTests.metrics(run("t2-then-1")), reference, "2 tensor ranks to step 10, then one rank")
        assertClose(try weights(run("t2-then-1")), referenceWeights, "2 tensor ranks to step 10, then one rank")

        let first = try pretrain(np: 1, ["--input", shards, "--output", run("t1-then-2"), "--stop-after", "10"] + Self.fp32)
        XCTAssertEqual(first.status, 0, first.report)
        let second = try pretrain(np: 2, ["--resume", run("t1-then-2")] + tensor2)
        XCTAssertEqual(second.status, 0, second.report)
        XCTAssertTrue(second.stderr.contains("at step 10") && second.stderr.contains("2 ranks: tensor 2 × pipeline 1 × data 1"), second.report)
        assertClose(try PretrainCommandTests.metrics(run("t1-then-2")), reference, "one rank to step 10, then 2 tensor ranks")
        assertClose(try weights(run("t1-then-2")), referenceWeights, "one rank to step 10, then 2 tensor ranks")

        // --from the single-rank checkpoint on 2 tensor ranks: each loads its part, and the held-out
        // loss before training is the one the single-rank run measured with those weights.
        let from = try pretrain(np: 2, ["--input", shards, "--output", run("from-t2"), "--from", run("t1") + "/checkpoint-00000020"]
                                    + Self.fp32 + tensor2 + ["--steps", "1"])
        XCTAssertEqual(from.status, 0, from.report)
        let start = try XCTUnwrap(try PretrainCommandTests.metrics(run("from-t2")).first { $0.step == 0 }?.eval_loss)
        let finalEval = try XCTUnwrap(reference.last?.eval_loss)
        XCTAssertEqual(start, finalEval, accuracy: 1e-5 * finalEval, "--from under tensor 2")
    }

    /// Every pipeline stage needs a layer, stage_layers must sum to the
    /// layers, T·P must divide the world, and T the kv heads: exit 2, one
    /// message naming the field and numbers, nothing written.
    func testUnbuiltAndIndivisibleLayoutsAreRefused() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        let run = dir.appendingPathComponent("run").path
        let stages = try pretrain(np: 4, ["--input", shards, "--output", run, "--set", "parallel.pipeline=4"] + Self.fp32)
        XCTAssertEqual(stages.status, 2, stages.report)
        XCTAssertEqual(stages.stderr.components(separatedBy: "pretrain.parallel.pipeline: 4 pipeline stages for model.num_hidden_layers = 2: every stage needs at least one layer").count, 2, stages.report)
        let split = try pretrain(np: 2, ["--input", shards, "--output", run, "--set", "parallel.pipeline=2", "--set", "parallel.stage_layers=[2, 1]"] + Self.fp32)
        XCTAssertEqual(split.status, 2, split.report)
        XCTAssertEqual(split.stderr.components(separatedBy: "stage_layers: [2, 1] sums to 3, but model.num_hidden_layers is 2").count, 2, split.report)
        let heads = try pretrain(np: 2, ["--input", shards, "--output", run, "--set", "parallel.tensor=2", "--set", "model.num_key_value_heads=1"] + Self.fp32)
        XCTAssertEqual(heads.status, 2, heads.report)
        XCTAssertEqual(heads.stderr.components(separatedBy: "pretrain.parallel.tensor: 2 tensor ranks do not divide model.num_key_value_heads (1)").count, 2, heads.report)
        let indivisible = try pretrain(np: 3, ["--input", shards, "--output", run, "--set", "parallel.tensor=2"] + Self.fp32)
        XCTAssertEqual(indivisible.status, 2, indivisible.report)
        XCTAssertEqual(indivisible.stderr.components(separatedBy: "world size 3 is not divisible by parallel.tensor (2) × parallel.pipeline (1)").count, 2, indivisible.report)
        let oneRankPipeline = try pretrain(np: 1, ["--input", shards, "--output", run, "--set", "parallel.pipeline=3"] + Self.fp32)
        XCTAssertEqual(oneRankPipeline.status, 2, oneRankPipeline.report)
        XCTAssertTrue(oneRankPipeline.stderr.contains("world size 1 is not divisible by parallel.tensor (1) × parallel.pipeline (3)"), oneRankPipeline.report)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run), "nothing written")
    }
}
