import DaptModel
import Foundation
import XCTest

/// `dapt pretrain` split among pipeline stages under a real `mpirun`: every
/// layout gives the single-rank run, the same layout twice the same bytes.
final class PipelineParallelPretrainTests: XCTestCase, PretrainRunChecks {
    static let fp32 = PretrainCommandTests.tiny + ["--steps", "20"]

    /// 20 fp32 steps under 1×2×1, 2×2×1 and 1×2×2 (T×P×D): the single-rank
    /// losses, clipping norms and weights within 1e-5; 1×2×1 twice: the same
    /// bytes; 1×2×2 warns that one micro-batch per step cannot fill 2 stages.
    /// A P=2 checkpoint loads on one rank with the held-out loss it was saved
    /// with, and resumes on one rank to the single-rank run.
    func testPipelineRunsMatchOneRank() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }

        let single = try pretrain(np: 1, ["--input", shards, "--output", run("p1")] + Self.fp32)
        XCTAssertEqual(single.status, 0, single.report)
        let reference = try PretrainCommandTests.metrics(run("p1"))
        let referenceWeights = try weights(run("p1"))

        for (np, tensor, data) in [(2, 1, 1), (4, 2, 1), (4, 1, 2)] {
            let name = "t\(tensor)p2d\(data)"
            let r = try pretrain(np: np, ["--input", shards, "--output", run(name)] + Self.fp32
                                 + ["--set", "parallel.pipeline=2", "--set", "parallel.tensor=\(tensor)"])
            XCTAssertEqual(r.status, 0, r.report)
            XCTAssertTrue(r.stderr.contains("\(np) ranks: tensor \(tensor) × pipeline 2 × data \(data)"), r.report)
            XCTAssertTrue(r.stderr.contains("rank \(tensor): tensor 0/\(tensor) pipeline 1/2 data 0/\(data)  layers 1–1 + norm and head"), r.report)
            XCTAssertEqual(r.stderr.contains("the pipeline cannot fill"), data == 2, r.report)
            XCTAssertEqual(r.stderr.components(separatedBy: "step 20/20  loss").count, 2, "progress printed once: \(r.report)")
            let lines = try PretrainCommandTests.metrics(run(name))
            assertClose(lines, reference, name)
            for (a, b) in zip(lines, reference) where b.grad_norm != nil {
                XCTAssertEqual(a.grad_norm ?? .nan, b.grad_norm!, accuracy: 1e-5 * b.grad_norm!, "\(name) step \(a.step) grad_norm")
            }
            assertClose(try weights(run(name)), referenceWeights, name)
        }

        let again = try pretrain(np: 2, ["--input", shards, "--output", run("t1p2d1-again"), "--set", "parallel.pipeline=2"] + Self.fp32)
        XCTAssertEqual(again.status, 0, again.report)
        XCTAssertEqual(try PretrainCommandTests.metrics(run("t1p2d1-again")), try PretrainCommandTests.metrics(run("t1p2d1")))
        let model = "/checkpoint-00000020/model.safetensors"
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run("t1p2d1-again") + model)),
                       try Data(contentsOf: URL(fileURLWithPath: run("t1p2d1") + model)), "same layout, same bytes")

        // Stopped at step 10 and resumed under the same layout (1×2×1, and 2×2×1): the uninterrupted run, byte for byte.
        for (np, tensor) in [(2, 1), (4, 2)] {
            let name = "t\(tensor)p2d1", layout = ["--set", "parallel.pipeline=2", "--set", "parallel.tensor=\(tensor)"]
            let half = try pretrain(np: np, ["--input", shards, "--output", run(name + "-resumed"), "--stop-after", "10"] + Self.fp32 + layout)
            XCTAssertEqual(half.status, 0, half.report)
            let rest = try pretrain(np: np, ["--resume", run(name + "-resumed")])
            XCTAssertEqual(rest.status, 0, rest.report)
            XCTAssertTrue(rest.stderr.contains("at step 10") && rest.stderr.contains("\(np) ranks: tensor \(tensor) × pipeline 2 × data 1"), rest.report)
            XCTAssertEqual(try PretrainCommandTests.metrics(run(name + "-resumed")), try PretrainCommandTests.metrics(run(name)), name)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run(name + "-resumed") + model)),
                           try Data(contentsOf: URL(fileURLWithPath: run(name) + model)), "\(name) resumed under the same layout, same bytes")
        }

        // The P=2 checkpoint on one rank: the held-out loss it ended with.
        let from = try pretrain(np: 1, ["--input", shards, "--output", run("from-p2"), "--from", run("t1p2d1") + "/checkpoint-00000020"]
                                    + Self.fp32 + ["--steps", "1"])
        XCTAssertEqual(from.status, 0, from.report)
        let start = try XCTUnwrap(try PretrainCommandTests.metrics(run("from-p2")).first { $0.step == 0 }?.eval_loss)
        let saved = try XCTUnwrap(try PretrainCommandTests.metrics(run("t1p2d1")).last?.eval_loss)
        XCTAssertEqual(start, saved, accuracy: 1e-6 * saved, "a P=2 checkpoint on one rank")
        // And the single-rank checkpoint --from on 2 stages: each loads its own tensors.
        let fromOne = try pretrain(np: 2, ["--input", shards, "--output", run("p2-from-1"), "--from", run("p1") + "/checkpoint-00000020"]
                                       + Self.fp32 + ["--steps", "1", "--set", "parallel.pipeline=2"])
        XCTAssertEqual(fromOne.status, 0, fromOne.report)
        let startP2 = try XCTUnwrap(try PretrainCommandTests.metrics(run("p2-from-1")).first { $0.step == 0 }?.eval_loss)
        let savedOne = try XCTUnwrap(reference.last?.eval_loss)
        XCTAssertEqual(startP2, savedOne, accuracy: 1e-6 * savedOne, "--from under 2 stages")

        let half = try pretrain(np: 2, ["--input", shards, "--output", run("p2-then-1"), "--stop-after", "10", "--set", "parallel.pipeline=2"] + Self.fp32)
        XCTAssertEqual(half.status, 0, half.report)
        let rest = try pretrain(np: 1, ["--resume", run("p2-then-1"), "--set", "parallel.pipeline=1"])
        XCTAssertEqual(rest.status, 0, rest.report)
        XCTAssertTrue(rest.stderr.contains("at step 10"), rest.report)
        assertClose(try PretrainCommandTests.metrics(run("p2-then-1")), reference, "2 stages to step 10, then one rank")
        assertClose(try weights(run("p2-then-1")), referenceWeights, "2 stages to step 10, then one rank")

        // One rank's checkpoint resumed on 2 stages: each reads its own tensors and moments.
        let first = try pretrain(np: 1, ["--input", shards, "--output", run("1-then-p2"), "--stop-after", "10"] + Self.fp32)
        XCTAssertEqual(first.status, 0, first.report)
        let second = try pretrain(np: 2, ["--resume", run("1-then-p2"), "--set", "parallel.pipeline=2"])
        XCTAssertEqual(second.status, 0, second.report)
        XCTAssertTrue(second.stderr.contains("at step 10") && second.stderr.contains("2 ranks: tensor 1 × pipeline 2 × data 1"), second.report)
        assertClose(try PretrainCommandTests.metrics(run("1-then-p2")), reference, "one rank to step 10, then 2 stages")
        assertClose(try weights(run("1-then-p2")), referenceWeights, "one rank to step 10, then 2 stages")
    }

    /// Four stages of one layer each (1×4×1, four micro-batches), and tied
    /// embeddings on two stages (each holds the matrix, their gradients
    /// summed): the single-rank runs within 1e-5.
    func testFourStagesAndTiedEmbeddingsMatchOneRank() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let cases: [(name: String, np: Int, settings: [String])] = [
            ("p4", 4, ["--set", "model.num_hidden_layers=4", "--set", "data.micro_batch_size=1", "--set", "parallel.pipeline=4"]),
            ("tied-p2", 2, ["--set", "model.tie_word_embeddings=true", "--set", "parallel.pipeline=2"]),
        ]
        for c in cases {
            let alone = c.settings.dropLast(2).map { $0 }
            let one = try pretrain(np: 1, ["--input", shards, "--output", run(c.name + "-alone")] + Self.fp32 + alone)
            XCTAssertEqual(one.status, 0, one.report)
            let r = try pretrain(np: c.np, ["--input", shards, "--output", run(c.name)] + Self.fp32 + c.settings)
            XCTAssertEqual(r.status, 0, r.report)
            XCTAssertFalse(r.stderr.contains("cannot fill"), r.report)
            let lines = try PretrainCommandTests.metrics(run(c.name)), reference = try PretrainCommandTests.metrics(run(c.name + "-alone"))
            assertClose(lines, reference, c.name)
            // A tied matrix held by two stages counts once in the clipping norm.
            for (a, b) in zip(lines, reference) where b.grad_norm != nil {
                XCTAssertEqual(a.grad_norm ?? .nan, b.grad_norm!, accuracy: 1e-5 * b.grad_norm!, "\(c.name) step \(a.step) grad_norm")
            }
            assertClose(try weights(run(c.name)), try weights(run(c.name + "-alone")), c.name)
        }
        let tied = try SafeTensorsFile(path: run("tied-p2") + "/checkpoint-00000020/model.safetensors")
        XCTAssertNil(tied.entry("lm_head.weight"), "a tied matrix is saved once")
    }

    /// The coordinator's one decision per step under 2 stages: the poisoned
    /// corpus's spike rolls back to the single-rank run's point, skips the
    /// same sequences, and every stage continues from the restored state.
    func testSpikeRollbackUnderTwoStagesMatchesOneRank() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let shards = try SpikeRollbackTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }
        func rollbacks(_ run: String) throws -> [SpikeRollbackTests.Rollback] {
            try String(contentsOfFile: run + "/rollbacks.jsonl", encoding: .utf8).split(separator: "\n")
                .map { try JSONDecoder().decode(SpikeRollbackTests.Rollback.self, from: Data($0.utf8)) }
        }
        let single = try pretrain(np: 1, ["--input", shards, "--output", run("r1")] + SpikeRollbackTests.settings)
        XCTAssertEqual(single.status, 0, single.report)
        let reference = try rollbacks(run("r1"))
        XCTAssertEqual(reference.count, 1, single.report)
        let r = try pretrain(np: 2, ["--input", shards, "--output", run("p2")] + SpikeRollbackTests.settings + ["--set", "parallel.pipeline=2"])
        XCTAssertEqual(r.status, 0, r.report)
        XCTAssertEqual(try rollbacks(run("p2")), reference, "the same rollback point and skipped range")
        assertClose(try PretrainCommandTests.metrics(run("p2")), try PretrainCommandTests.metrics(run("r1")), "2 stages")
        assertClose(try weights(run("p2"), step: 40), try weights(run("r1"), step: 40), "2 stages")
    }

    /// `parallel.recompute` under 2 tensor × 2 pipeline ranks (three layers
    /// on the first stage, which reruns two, and one on the second, which
    /// reruns none; two micro-batches in flight; the output projection's
    /// all-reduce runs again), in bf16: the losses, gradient norms and saved
    /// weights of the run that keeps every activation, byte for byte (also
    /// with every layer's [gate | up] rows recomputed instead); also
    /// when half the run recomputes every layer it can and the rest, resumed,
    /// only each stage's first (`parallel.recompute_layers: 1`).
    func testRecomputedLayersGiveTheSameRun() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let layout = ["--steps", "8", "--precision", "bf16", "--set", "model.num_hidden_layers=4", "--set", "data.micro_batch_size=1",
                      "--set", "parallel.tensor=2", "--set", "parallel.pipeline=2", "--set", "parallel.stage_layers=[3, 1]",
                      "--set", "checkpoint.every_steps=8"]
        for recompute in [false, true] {
            let r = try pretrain(np: 4, ["--input", shards, "--output", run("rc-\(recompute)"), "--set", "parallel.recompute=\(recompute)"]
                                 + PretrainCommandTests.tiny + layout)
            XCTAssertEqual(r.status, 0, r.report)
            XCTAssertEqual(r.stderr.contains("layers recomputed in backward"), recompute, r.report)
        }
        let mlp = try pretrain(np: 4, ["--input", shards, "--output", run("rc-mlp"), "--set", "parallel.recompute=true",
                                       "--set", "parallel.recompute_granularity=mlp"] + PretrainCommandTests.tiny + layout)
        XCTAssertEqual(mlp.status, 0, mlp.report)
        XCTAssertTrue(mlp.stderr.contains("every layer's [gate | up] rows recomputed in backward"), mlp.report)
        let lines = try PretrainCommandTests.metrics(run("rc-true"))
        XCTAssertEqual(lines.last?.step, 8)
        let losses = lines.compactMap(\.loss)
        XCTAssertEqual(losses.count, 8, "\(lines)")
        XCTAssertTrue(losses.allSatisfy(\.isFinite), "\(lines)")
        XCTAssertEqual(lines, try PretrainCommandTests.metrics(run("rc-false")))
        let model = "/checkpoint-00000008/model.safetensors"
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run("rc-true") + model)),
                       try Data(contentsOf: URL(fileURLWithPath: run("rc-false") + model)), "the same weights, byte for byte")
        XCTAssertEqual(try PretrainCommandTests.metrics(run("rc-mlp")), lines)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run("rc-mlp") + model)),
                       try Data(contentsOf: URL(fileURLWithPath: run("rc-false") + model)), "[gate | up] recomputed: the same weights")

        // Four steps recomputing all, then resumed recomputing some: the uninterrupted run again.
        let half = try pretrain(np: 4, ["--input", shards, "--output", run("rc-resumed"), "--stop-after", "4", "--set", "parallel.recompute=true"]
                                + PretrainCommandTests.tiny + layout)
        XCTAssertEqual(half.status, 0, half.report)
        let rest = try pretrain(np: 4, ["--resume", run("rc-resumed"), "--set", "parallel.recompute_layers=1"])
        XCTAssertEqual(rest.status, 0, rest.report)
        XCTAssertTrue(rest.stderr.contains("the first 1 layer of each stage recomputed in backward"), rest.report)
        XCTAssertEqual(try PretrainCommandTests.metrics(run("rc-resumed")), lines)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run("rc-resumed") + model)),
                       try Data(contentsOf: URL(fileURLWithPath: run("rc-false") + model)), "resumed with the setting changed")
    }

    /// bf16 and fp16 under 2 tensor × 2 pipeline ranks: every step completes
    /// with a finite loss; fp16's loss scale (raised, or halved with the step
    /// skipped on every rank when any rank overflows) follows one rank's.
    func testHalfPrecisionUnderTensorAndPipelineCompletes() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        let alone = dir.appendingPathComponent("fp16-alone").path
        let one = try pretrain(np: 1, ["--input", shards, "--output", alone, "--steps", "6", "--precision", "fp16"] + PretrainCommandTests.tiny)
        XCTAssertEqual(one.status, 0, one.report)
        for precision in ["bf16", "fp16"] {
            let run = dir.appendingPathComponent(precision).path
            let r = try pretrain(np: 4, ["--input", shards, "--output", run, "--steps", "6", "--precision", precision,
                                         "--set", "parallel.tensor=2", "--set", "parallel.pipeline=2"] + PretrainCommandTests.tiny)
            XCTAssertEqual(r.status, 0, r.report)
            XCTAssertTrue(r.stderr.contains("4 ranks: tensor 2 × pipeline 2 × data 1") && r.stderr.contains("step 6/6  loss"), r.report)
            let lines = try PretrainCommandTests.metrics(run)
            XCTAssertEqual(lines.map(\.step), Array(0...6))
            XCTAssertTrue(lines.dropFirst().allSatisfy { ($0.loss ?? .nan).isFinite }, "\(lines)")
            if precision == "fp16" {
                let reference = try PretrainCommandTests.metrics(alone)
                XCTAssertTrue(lines.contains { $0.loss_scale != nil }, "\(lines)")
                XCTAssertEqual(lines.map(\.loss_scale), reference.map(\.loss_scale))
                XCTAssertEqual(lines.map { $0.grad_norm == nil }, reference.map { $0.grad_norm == nil }, "the same steps skipped")
            }
        }
    }
}
