import DaptModel
import Foundation
import XCTest

/// `dapt finetune` under a real `mpirun`: 2 data-parallel ranks give the
/// single-rank run (adapters and losses within fp32 tolerance), dropout on.
final class FinetuneMultiRankTests: XCTestCase {
    typealias Line = PretrainCommandTests.Line

    func finetune(np: Int, _ arguments: [String]) throws -> DaptProcess.Result {
        np == 1 ? try DaptProcess.dapt(["finetune"] + arguments) : try DaptProcess.mpirun(np: np, ["finetune"] + arguments, timeout: 300)
    }

    func testTwoRanksEqualOneRank() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let root = DaptProcess.repositoryRoot
        let base = root.appendingPathComponent("Tests/DaptTrainTests/Fixtures/interop/dapt").path
        let lines = try String(contentsOf: root.appendingPathComponent("data/instructions/train.jsonl"), encoding: .utf8)
            .split(separator: "\n").prefix(80).joined(separator: "\n") + "\n"
        let train = dir.appendingPathComponent("train.jsonl").path
        try lines.write(toFile: train, atomically: true, encoding: .utf8)
        let settings = ["--model", base, "--input", train, "--steps", "6", "--set", "lora.r=4", "--set", "lora.lora_dropout=0.1",
                        "--set", "lora.target_modules=[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]",
                        "--set", "optimizer.lr=0.01", "--set", "data.sequence_length=64", "--set", "data.global_batch_size=4",
                        "--set", "data.micro_batch_size=2", "--set", "eval.every_steps=3", "--set", "eval.sequences=4"]
        var adapters: [[String: [Float]]] = []
        var metrics: [[Line]] = []
        for np in [1, 2] {
            let run = dir.appendingPathComponent("np\(np)").path
            let r = try finetune(np: np, settings + ["--output", run])
            XCTAssertEqual(r.status, 0, r.report)
            XCTAssertEqual(r.stderr.components(separatedBy: "step 6/6  loss").count, 2, "progress printed once: \(r.report)")
            let file = try SafeTensorsFile(path: run + "/checkpoint-00000006/adapter_model.safetensors")
            adapters.append(try Dictionary(uniqueKeysWithValues: file.entries.map { ($0.name, try file.floats($0.name)) }))
            metrics.append(try PretrainCommandTests.metrics(run))
        }
        XCTAssertEqual(adapters[0].keys.sorted(), adapters[1].keys.sorted())
        XCTAssertEqual(adapters[0].count, 2 * 7 * 2)
        var largest: Float = 0, size: Float = 0
        for (name, values) in adapters[0] {
            for (x, y) in zip(values, adapters[1][name]!) { largest = max(largest, abs(x - y)); size = max(size, abs(x)) }
        }
        XCTAssertGreaterThan(size, 0)
        XCTAssertLessThanOrEqual(largest, 1e-5, "largest adapter difference, 2 ranks vs 1")
        XCTAssertEqual(metrics[0].map(\.step), metrics[1].map(\.step))
        for (a, b) in zip(metrics[0], metrics[1]) {
            for (x, y) in [(a.loss, b.loss), (a.eval_loss, b.eval_loss)] {
                XCTAssertEqual(x == nil, y == nil)
                if let x, let y { XCTAssertLessThanOrEqual(abs(x - y), 1e-5 * abs(y), "step \(a.step): \(x) vs \(y)") }
            }
        }
        XCTAssertNotNil(metrics[0].first { $0.step == 3 }?.eval_loss)
    }
}
