import DaptModel
import Foundation
import XCTest

/// `pretrain.parallel.zero: 1` under a real `mpirun`: the optimizer state
/// is sharded over the data ranks, the run is the unsharded one, and
/// checkpoints are the same files whichever way they were written or read.
final class ZeroPretrainTests: XCTestCase, PretrainRunChecks {
    typealias Base = DataParallelPretrainTests
    static let zero = ["--set", "parallel.zero=1"]

    /// The optimizer-state figure of the run's summary line.
    func stateBytes(_ stderr: String) -> Int? {
        guard let range = stderr.range(of: " bytes of optimizer state per rank") else { return nil }
        return Int(stderr[..<range.lowerBound].split(separator: " ").last ?? "")
    }

    func tensors(_ run: String, _ file: String, step: Int = 20) throws -> [String: [Float]] {
        let f = try SafeTensorsFile(path: run + String(format: "/checkpoint-%08d/", step) + file)
        return try Dictionary(uniqueKeysWithValues: f.entries.map { ($0.name, try f.floats($0.name)) })
    }

    /// The AdamW moments of two runs' step-20 checkpoints: the same tensors,
    /// each within 1e-4 of the reference tensor's largest value.
    func assertMomentsClose(_ run: String, _ reference: String, _ label: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let moments = try tensors(run, "optimizer.safetensors"), referenceMoments = try tensors(reference, "optimizer.safetensors")
        XCTAssertEqual(moments.keys.sorted(), referenceMoments.keys.sorted(), label, file: file, line: line)
        var largest: Float = 0
        for (name, values) in referenceMoments {
            let scale = values.map(abs).max() ?? 0
            for (x, y) in zip(moments[name] ?? [], values) { largest = max(largest, abs(x - y) / max(scale, 1e-30)) }
        }
        XCTAssertLessThanOrEqual(largest, 1e-4, "\(label) (largest difference relative to the tensor's largest value)", file: file, line: line)
    }

    /// 20 fp32 steps with ZeRO-1 on 2 and 4 data ranks: the single-rank
    /// losses, weights and AdamW moments (gathered into the same files);
    /// optimizer state per rank 1/D of the unsharded; 10 sharded steps on 2
    /// ranks resumed unsharded on one rank, and 10 unsharded steps on one
    /// rank resumed sharded on 4: the single-rank run.
    func testZeroOneMatchesTheUnshardedRun() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }

        let single = try pretrain(np: 1, ["--input", shards, "--output", run("d1")] + Base.fp32)
        XCTAssertEqual(single.status, 0, single.report)
        let reference = try PretrainCommandTests.metrics(run("d1"))
        let fullBytes = try XCTUnwrap(stateBytes(single.stderr), single.report)
        XCTAssertNil(single.stderr.range(of: "ZeRO-1"), single.report)

        for np in [2, 4] {
            let r = try pretrain(np: np, ["--input", shards, "--output", run("z\(np)")] + Base.fp32 + Self.zero)
            XCTAssertEqual(r.status, 0, r.report)
            XCTAssertTrue(r.stderr.contains("(ZeRO-1 over \(np) data ranks)"), r.report)
            let bytes = try XCTUnwrap(stateBytes(r.stderr), r.report)
            XCTAssertLessThanOrEqual(abs(bytes * np - fullBytes), 8 * np, "optimizer state per rank is 1/\(np): \(bytes) vs \(fullBytes)")
            assertClose(try PretrainCommandTests.metrics(run("z\(np)")), reference, "ZeRO-1 on \(np) ranks")
            assertClose(try tensors(run("z\(np)"), "model.safetensors"), try tensors(run("d1"), "model.safetensors"), "ZeRO-1 on \(np) ranks: weights")
            try assertMomentsClose(run("z\(np)"), run("d1"), "ZeRO-1 on \(np) ranks: moments gathered in order")
        }

        let half = try pretrain(np: 2, ["--input", shards, "--output", run("z2-resumed"), "--stop-after", "10"] + Base.fp32 + Self.zero)
        XCTAssertEqual(half.status, 0, half.report)
        let rest = try pretrain(np: 1, ["--resume", run("z2-resumed"), "--set", "parallel.zero=0"])
        XCTAssertEqual(rest.status, 0, rest.report)
        XCTAssertTrue(rest.stderr.contains("at step 10") && !rest.stderr.contains("ZeRO-1"), rest.report)
        assertClose(try PretrainCommandTests.metrics(run("z2-resumed")), reference, "ZeRO-1 on 2 ranks to step 10, then one rank unsharded")
        assertClose(try tensors(run("z2-resumed"), "model.safetensors"), try tensors(run("d1"), "model.safetensors"), "sharded, then unsharded")

        let first = try pretrain(np: 1, ["--input", shards, "--output", run("d1-resumed"), "--stop-after", "10"] + Base.fp32)
        XCTAssertEqual(first.status, 0, first.report)
        let sharded = try pretrain(np: 4, ["--resume", run("d1-resumed")] + Self.zero)
        XCTAssertEqual(sharded.status, 0, sharded.report)
        XCTAssertTrue(sharded.stderr.contains("at step 10") && sharded.stderr.contains("(ZeRO-1 over 4 data ranks)"), sharded.report)
        assertClose(try PretrainCommandTests.metrics(run("d1-resumed")), reference, "one rank to step 10, then ZeRO-1 on 4 ranks")
        assertClose(try tensors(run("d1-resumed"), "model.safetensors"), try tensors(run("d1"), "model.safetensors"), "unsharded, then sharded")
    }

    /// ZeRO-1 under tensor parallelism, 2 tensor × 2 data ranks: each
    /// tensor rank's moments sharded over its data group (state per rank
    /// half the unsharded T = 2 run's), the single-rank losses, weights and
    /// moments in one HF directory; 10 such steps resumed on one rank
    /// unsharded, and 10 single-rank steps resumed so, give the single-rank run.
    func testZeroOneUnderTensorParallelism() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let tensor = ["--set", "parallel.tensor=2"]

        let single = try pretrain(np: 1, ["--input", shards, "--output", run("d1")] + Base.fp32)
        XCTAssertEqual(single.status, 0, single.report)
        let reference = try PretrainCommandTests.metrics(run("d1"))
        let plain = try pretrain(np: 4, ["--input", shards, "--output", run("t2d2")] + Base.fp32 + tensor)
        XCTAssertEqual(plain.status, 0, plain.report)
        let r = try pretrain(np: 4, ["--input", shards, "--output", run("t2d2z")] + Base.fp32 + tensor + Self.zero)
        XCTAssertEqual(r.status, 0, r.report)
        XCTAssertTrue(r.stderr.contains("tensor 2 × pipeline 1 × data 2") && r.stderr.contains("(ZeRO-1 over 2 data ranks)"), r.report)
        let (full, half) = (try XCTUnwrap(stateBytes(plain.stderr), plain.report), try XCTUnwrap(stateBytes(r.stderr), r.report))
        XCTAssertLessThanOrEqual(abs(half * 2 - full), 16, "moments halve: \(half) vs \(full)")
        assertClose(try PretrainCommandTests.metrics(run("t2d2z")), reference, "ZeRO-1 on T2×D2")
        assertClose(try tensors(run("t2d2z"), "model.safetensors"), try tensors(run("d1"), "model.safetensors"), "ZeRO-1 on T2×D2: weights")
        try assertMomentsClose(run("t2d2z"), run("d1"), "ZeRO-1 on T2×D2: whole moments")

        let half10 = try pretrain(np: 4, ["--input", shards, "--output", run("t2d2z-resumed"), "--stop-after", "10"] + Base.fp32 + tensor + Self.zero)
        XCTAssertEqual(half10.status, 0, half10.report)
        let rest = try pretrain(np: 1, ["--resume", run("t2d2z-resumed"), "--set", "parallel.zero=0", "--set", "parallel.tensor=1"])
        XCTAssertEqual(rest.status, 0, rest.report)
        assertClose(try PretrainCommandTests.metrics(run("t2d2z-resumed")), reference, "ZeRO-1 on T2×D2 to step 10, then one rank")
        assertClose(try tensors(run("t2d2z-resumed"), "model.safetensors"), try tensors(run("d1"), "model.safetensors"), "T2×D2 sharded, then one rank")

        let first = try pretrain(np: 1, ["--input", shards, "--output", run("d1-resumed"), "--stop-after", "10"] + Base.fp32)
        XCTAssertEqual(first.status, 0, first.report)
        let sharded = try pretrain(np: 4, ["--resume", run("d1-resumed")] + tensor + Self.zero)
        XCTAssertEqual(sharded.status, 0, sharded.report)
        XCTAssertTrue(sharded.stderr.contains("at step 10") && sharded.stderr.contains("(ZeRO-1 over 2 data ranks)"), sharded.report)
        assertClose(try PretrainCommandTests.metrics(run("d1-resumed")), reference, "one rank to step 10, then ZeRO-1 on T2×D2")
        assertClose(try tensors(run("d1-resumed"), "model.safetensors"), try tensors(run("d1"), "model.safetensors"), "one rank, then T2×D2 sharded")
    }

    /// ZeRO-1 under pipeline parallelism, 1×2×2 (T×P×D): each stage's
    /// moments sharded over its data group (state per rank half the
    /// unsharded 1×2×2 run's), the single-rank losses, clipping norms,
    /// weights and moments in one HF directory; with tied embeddings (the
    /// matrix on both end stages, each sharding its own copy) likewise; 10
    /// such steps resumed on one rank unsharded, or on 1×1×2 with ZeRO-1,
    /// and 10 single-rank steps resumed under 1×2×2 with ZeRO-1, give the
    /// single-rank run; in bf16
    /// the master weights are sharded too and the run is the unsharded one.
    func testZeroOneUnderPipelineParallelism() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let pipeline = ["--set", "parallel.pipeline=2"], tied = ["--set", "model.tie_word_embeddings=true"]

        let single = try pretrain(np: 1, ["--input", shards, "--output", run("d1")] + Base.fp32)
        XCTAssertEqual(single.status, 0, single.report)
        let reference = try PretrainCommandTests.metrics(run("d1"))
        let plain = try pretrain(np: 4, ["--input", shards, "--output", run("p2d2")] + Base.fp32 + pipeline)
        XCTAssertEqual(plain.status, 0, plain.report)
        for (name, settings, alone) in [("p2d2z", pipeline, "d1"), ("tied-p2d2z", pipeline + tied, "tied-d1")] {
            if name.hasPrefix("tied") {
                let one = try pretrain(np: 1, ["--input", shards, "--output", run(alone)] + Base.fp32 + tied)
                XCTAssertEqual(one.status, 0, one.report)
            }
            let r = try pretrain(np: 4, ["--input", shards, "--output", run(name)] + Base.fp32 + settings + Self.zero)
            XCTAssertEqual(r.status, 0, r.report)
            XCTAssertTrue(r.stderr.contains("tensor 1 × pipeline 2 × data 2") && r.stderr.contains("(ZeRO-1 over 2 data ranks)"), r.report)
            let lines = try PretrainCommandTests.metrics(run(name)), expected = try PretrainCommandTests.metrics(run(alone))
            assertClose(lines, expected, "ZeRO-1 on \(name)")
            // Each stage's squares are summed over its data group, then over the stages; a tied copy counts once.
            XCTAssertEqual(lines.filter { $0.grad_norm != nil }.count, expected.filter { $0.grad_norm != nil }.count, name)
            for (a, b) in zip(lines, expected) where b.grad_norm != nil {
                XCTAssertEqual(a.grad_norm ?? .nan, b.grad_norm!, accuracy: 1e-5 * b.grad_norm!, "\(name) step \(a.step) grad_norm")
            }
            assertClose(try tensors(run(name), "model.safetensors"), try tensors(run(alone), "model.safetensors"), "ZeRO-1 on \(name): weights")
            try assertMomentsClose(run(name), run(alone), "ZeRO-1 on \(name): whole moments")
            if name == "p2d2z" {
                let (full, half) = (try XCTUnwrap(stateBytes(plain.stderr), plain.report), try XCTUnwrap(stateBytes(r.stderr), r.report))
                XCTAssertLessThanOrEqual(abs(half * 2 - full), 16, "moments halve: \(half) vs \(full)")
            }
        }

        let half10 = try pretrain(np: 4, ["--input", shards, "--output", run("p2d2z-resumed"), "--stop-after", "10"] + Base.fp32 + pipeline + Self.zero)
        XCTAssertEqual(half10.status, 0, half10.report)
        let rest = try pretrain(np: 1, ["--resume", run("p2d2z-resumed"), "--set", "parallel.zero=0", "--set", "parallel.pipeline=1"])
        XCTAssertEqual(rest.status, 0, rest.report)
        XCTAssertTrue(rest.stderr.contains("at step 10") && !rest.stderr.contains("ZeRO-1"), rest.report)
        assertClose(try PretrainCommandTests.metrics(run("p2d2z-resumed")), reference, "ZeRO-1 on 1×2×2 to step 10, then one rank")
        assertClose(try tensors(run("p2d2z-resumed"), "model.safetensors"), try tensors(run("d1"), "model.safetensors"), "1×2×2 sharded, then one rank")

        // The same sharded checkpoint resumed sharded differently: one stage, 2 data ranks, ZeRO-1 over the whole buffer.
        let quarter = try pretrain(np: 4, ["--input", shards, "--output", run("p2d2z-then-d2z"), "--stop-after", "10"] + Base.fp32 + pipeline + Self.zero)
        XCTAssertEqual(quarter.status, 0, quarter.report)
        let resharded = try pretrain(np: 2, ["--resume", run("p2d2z-then-d2z"), "--set", "parallel.pipeline=1"])
        XCTAssertEqual(resharded.status, 0, resharded.report)
        XCTAssertTrue(resharded.stderr.contains("at step 10") && resharded.stderr.contains("tensor 1 × pipeline 1 × data 2")
                      && resharded.stderr.contains("(ZeRO-1 over 2 data ranks)"), resharded.report)
        assertClose(try PretrainCommandTests.metrics(run("p2d2z-then-d2z")), reference, "ZeRO-1 on 1×2×2 to step 10, then ZeRO-1 on 1×1×2")
        assertClose(try tensors(run("p2d2z-then-d2z"), "model.safetensors"), try tensors(run("d1"), "model.safetensors"), "1×2×2 sharded, then 1×1×2 sharded")

        let first = try pretrain(np: 1, ["--input", shards, "--output", run("d1-resumed"), "--stop-after", "10"] + Base.fp32)
        XCTAssertEqual(first.status, 0, first.report)
        let sharded = try pretrain(np: 4, ["--resume", run("d1-resumed")] + pipeline + Self.zero)
        XCTAssertEqual(sharded.status, 0, sharded.report)
        XCTAssertTrue(sharded.stderr.contains("at step 10") && sharded.stderr.contains("tensor 1 × pipeline 2 × data 2")
                      && sharded.stderr.contains("(ZeRO-1 over 2 data ranks)"), sharded.report)
        assertClose(try PretrainCommandTests.metrics(run("d1-resumed")), reference, "one rank to step 10, then ZeRO-1 on 1×2×2")
        assertClose(try tensors(run("d1-resumed"), "model.safetensors"), try tensors(run("d1"), "model.safetensors"), "one rank, then 1×2×2 sharded")

        // bf16: each stage's fp32 master weights sharded too, the unsharded 1×2×2 run's losses and saved masters.
        let bf16 = ["--steps", "6", "--precision", "bf16"] + PretrainCommandTests.tiny + pipeline
        let plainBF16 = try pretrain(np: 4, ["--input", shards, "--output", run("bf16")] + bf16)
        XCTAssertEqual(plainBF16.status, 0, plainBF16.report)
        let shardedBF16 = try pretrain(np: 4, ["--input", shards, "--output", run("bf16-z")] + bf16 + Self.zero)
        XCTAssertEqual(shardedBF16.status, 0, shardedBF16.report)
        let (fullBF16, halfBF16) = (try XCTUnwrap(stateBytes(plainBF16.stderr), plainBF16.report), try XCTUnwrap(stateBytes(shardedBF16.stderr), shardedBF16.report))
        XCTAssertLessThanOrEqual(abs(halfBF16 * 2 - fullBF16), 24, "moments and master weights halve: \(halfBF16) vs \(fullBF16)")
        assertClose(try PretrainCommandTests.metrics(run("bf16-z")), try PretrainCommandTests.metrics(run("bf16")), "bf16 ZeRO-1 on 1×2×2")
        assertClose(try tensors(run("bf16-z"), "model.safetensors", step: 6), try tensors(run("bf16"), "model.safetensors", step: 6), "bf16 ZeRO-1 on 1×2×2: master weights")
    }

    /// bf16 keeps fp32 master weights: ZeRO-1 shards them too (state per
    /// rank ≈ 3N/2 of 3N floats on 2 ranks) and gives the unsharded 2-rank
    /// run; resumed sharded from step 3 it is that run again.
    func testZeroOneShardsTheMasterWeightsInMixedPrecision() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let bf16 = ["--steps", "6", "--precision", "bf16"] + PretrainCommandTests.tiny

        let plain = try pretrain(np: 2, ["--input", shards, "--output", run("plain")] + bf16)
        XCTAssertEqual(plain.status, 0, plain.report)
        let sharded = try pretrain(np: 2, ["--input", shards, "--output", run("zero")] + bf16 + Self.zero)
        XCTAssertEqual(sharded.status, 0, sharded.report)
        let (full, half) = (try XCTUnwrap(stateBytes(plain.stderr), plain.report), try XCTUnwrap(stateBytes(sharded.stderr), sharded.report))
        XCTAssertLessThanOrEqual(abs(half * 2 - full), 16, "moments and master weights halve: \(half) vs \(full)")
        let reference = try PretrainCommandTests.metrics(run("plain"))
        assertClose(try PretrainCommandTests.metrics(run("zero")), reference, "bf16 ZeRO-1 on 2 ranks")
        assertClose(try tensors(run("zero"), "model.safetensors", step: 6), try tensors(run("plain"), "model.safetensors", step: 6), "bf16 ZeRO-1: master weights")

        let first = try pretrain(np: 2, ["--input", shards, "--output", run("resumed"), "--stop-after", "3"] + bf16 + Self.zero)
        XCTAssertEqual(first.status, 0, first.report)
        let rest = try pretrain(np: 2, ["--resume", run("resumed")])
        XCTAssertEqual(rest.status, 0, rest.report)
        XCTAssertEqual(try PretrainCommandTests.metrics(run("resumed")), try PretrainCommandTests.metrics(run("zero")), "resumed under ZeRO-1: the same run")
    }
}
