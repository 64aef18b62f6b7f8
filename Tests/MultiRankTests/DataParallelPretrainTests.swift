import DaptModel
import Foundation
import XCTest

/// `dapt pretrain` under a real `mpirun`: data parallelism gives the
/// single-rank run, layouts that are not built are refused.
final class DataParallelPretrainTests: XCTestCase {
    typealias Line = PretrainCommandTests.Line
    static let fp32 = PretrainCommandTests.tiny + ["--steps", "20"]

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

    /// 20 fp32 steps on 1, 2 and 4 data-parallel ranks: the same losses and
    /// weights; the same layout twice: identical bytes; 10 steps on 2 ranks
    /// resumed on one rank to 20: the single-rank run; resumed on 2 ranks:
    /// the uninterrupted 2-rank run, byte for byte.
    func testDataParallelRunsMatchOneRank() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }

        let single = try pretrain(np: 1, ["--input", shards, "--output", run("d1")] + Self.fp32)
        XCTAssertEqual(single.status, 0, single.stderr)
        XCTAssertFalse(single.stderr.contains("ranks: tensor"), "one rank prints no grid")
        let reference = try PretrainCommandTests.metrics(run("d1"))
        XCTAssertEqual(reference.map(\.step), Array(0...20))
        let referenceWeights = try weights(run("d1"))

        for np in [2, 4] {
            let r = try pretrain(np: np, ["--input", shards, "--output", run("d\(np)")] + Self.fp32)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stderr.contains("\(np) ranks: tensor 1 × pipeline 1 × data \(np)"), r.stderr)
            XCTAssertTrue(r.stderr.contains("rank \(np - 1): tensor 0/1 pipeline 0/1 data \(np - 1)/\(np)"), r.stderr)
            XCTAssertEqual(r.stderr.components(separatedBy: "step 20/20  loss").count, 2, "progress printed once: \(r.stderr)")
            assertClose(try PretrainCommandTests.metrics(run("d\(np)")), reference, "\(np) ranks")
            assertClose(try weights(run("d\(np)")), referenceWeights, "\(np) ranks")
            XCTAssertTrue(FileManager.default.fileExists(atPath: run("d\(np)") + "/loss_curve.svg"))
        }

        let again = try pretrain(np: 2, ["--input", shards, "--output", run("d2-again")] + Self.fp32)
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(try PretrainCommandTests.metrics(run("d2-again")), try PretrainCommandTests.metrics(run("d2")))
        let model = "/checkpoint-00000020/model.safetensors"
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run("d2-again") + model)),
                       try Data(contentsOf: URL(fileURLWithPath: run("d2") + model)), "same layout, same bytes")

        let half = try pretrain(np: 2, ["--input", shards, "--output", run("resumed"), "--stop-after", "10"] + Self.fp32)
        XCTAssertEqual(half.status, 0, half.stderr)
        XCTAssertEqual(try PretrainCommandTests.metrics(run("resumed")).map(\.step), Array(0...10))
        let rest = try pretrain(np: 1, ["--resume", run("resumed")])
        XCTAssertEqual(rest.status, 0, rest.stderr)
        XCTAssertTrue(rest.stderr.contains("at step 10"), rest.stderr)
        assertClose(try PretrainCommandTests.metrics(run("resumed")), reference, "2 ranks to step 10, then one rank")
        assertClose(try weights(run("resumed")), referenceWeights, "2 ranks to step 10, then one rank")

        // Resumed under the same degree: the uninterrupted run, byte for byte.
        let firstHalf = try pretrain(np: 2, ["--input", shards, "--output", run("resumed-d2"), "--stop-after", "10"] + Self.fp32)
        XCTAssertEqual(firstHalf.status, 0, firstHalf.stderr)
        let secondHalf = try pretrain(np: 2, ["--resume", run("resumed-d2")])
        XCTAssertEqual(secondHalf.status, 0, secondHalf.stderr)
        XCTAssertTrue(secondHalf.stderr.contains("at step 10") && secondHalf.stderr.contains("2 ranks: tensor 1 × pipeline 1 × data 2"), secondHalf.stderr)
        XCTAssertEqual(try PretrainCommandTests.metrics(run("resumed-d2")), try PretrainCommandTests.metrics(run("d2")))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run("resumed-d2") + model)),
                       try Data(contentsOf: URL(fileURLWithPath: run("d2") + model)), "resumed under the same degree, same bytes")

        // A fresh run into a directory that holds one: every rank stops, one message.
        let taken = try pretrain(np: 2, ["--input", shards, "--output", run("d2")] + Self.fp32)
        XCTAssertNotEqual(taken.status, 0)
        XCTAssertEqual(taken.stderr.components(separatedBy: "already holds a run").count, 2, taken.stderr)
        XCTAssertEqual(try PretrainCommandTests.metrics(run("d2")), try PretrainCommandTests.metrics(run("d2-again")), "left as it was")
    }

    func testBFloat16OnTwoRanksCompletes() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        let run = dir.appendingPathComponent("bf16").path
        let r = try pretrain(np: 2, ["--input", shards, "--output", run, "--steps", "6", "--precision", "bf16"] + PretrainCommandTests.tiny)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("2 ranks: tensor 1 × pipeline 1 × data 2") && r.stderr.contains("step 6/6  loss"), r.stderr)
        let lines = try PretrainCommandTests.metrics(run)
        XCTAssertEqual(lines.map(\.step), Array(0...6))
        XCTAssertTrue(lines.dropFirst().allSatisfy { ($0.loss ?? .nan).isFinite }, "\(lines)")
    }

    /// Tensor parallelism is not built, and T·P must divide the world:
    /// exit 2, one message naming the field and numbers, nothing written.
    func testUnbuiltAndIndivisibleLayoutsAreRefused() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        let run = dir.appendingPathComponent("run").path
        let tensor = try pretrain(np: 2, ["--input", shards, "--output", run, "--set", "parallel.tensor=2"] + Self.fp32)
        XCTAssertEqual(tensor.status, 2, tensor.stderr)
        XCTAssertEqual(tensor.stderr.components(separatedBy: "pretrain.parallel.tensor: 2: tensor parallelism is not built yet").count, 2, tensor.stderr)
        let indivisible = try pretrain(np: 3, ["--input", shards, "--output", run, "--set", "parallel.tensor=2"] + Self.fp32)
        XCTAssertEqual(indivisible.status, 2, indivisible.stderr)
        XCTAssertEqual(indivisible.stderr.components(separatedBy: "world size 3 is not divisible by parallel.tensor (2) × parallel.pipeline (1)").count, 2, indivisible.stderr)
        let pipeline = try pretrain(np: 1, ["--input", shards, "--output", run, "--set", "parallel.pipeline=3"] + Self.fp32)
        XCTAssertEqual(pipeline.status, 2, pipeline.stderr)
        XCTAssertTrue(pipeline.stderr.contains("world size 1 is not divisible by parallel.tensor (1) × parallel.pipeline (3)"), pipeline.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run), "nothing written")
    }
}
