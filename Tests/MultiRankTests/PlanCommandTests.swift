import DaptTestSupport
import Foundation
import XCTest

/// `dapt plan`: the table and its recommendation, errors naming the field,
/// and `--calibrate` under a real `mpirun` writing a cluster file the plan reads.
final class PlanCommandTests: XCTestCase {
    func writeModel(_ dir: String) throws -> String {
        let path = dir + "/config.json"
        try #"{"model_type": "llama", "vocab_size": 256, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testTableRecommendsALayoutThatFits() throws {
        let dir = try temporaryDirectory(self)
        let model = try writeModel(dir)
        let r = try DaptProcess.dapt(["plan", "--model", model, "--global-batch", "8", "--seq-len", "32", "--set", "ranks_per_node=4"])
        XCTAssertEqual(r.status, 0, r.report)
        XCTAssertTrue(r.stdout.contains("global batch 8 × 32 tokens, fp32"), r.report)
        let header = r.stdout.split(separator: "\n").first { $0.hasPrefix("layout ") }
        XCTAssertEqual(header?.split(separator: " ").joined(separator: " "),
                       "layout memory params grads optim snaps activ step compute tp comm pp comm bubble dp comm update tokens/s dapt", r.report)
        let recommended = r.stdout.split(separator: "\n").first { $0.hasPrefix("recommended: T=") }
        XCTAssertNotNil(recommended, r.report)
        // kv heads 2: T = 4 cannot split them.
        XCTAssertTrue(r.stdout.contains("left out T=4 P=1 D=1: 4 tensor ranks do not divide model.num_key_value_heads (2)"), r.report)
        XCTAssertFalse(r.stdout.contains("micro-batches of n tokens"), "no fixed work per micro-batch by default: \(r.report)")
        let paying = try DaptProcess.dapt(["plan", "--model", model, "--global-batch", "8", "--seq-len", "32", "--set", "ranks_per_node=4",
                                           "--set", "micro_batch_overhead_rows=64"])
        XCTAssertEqual(paying.status, 0, paying.report)
        XCTAssertTrue(paying.stdout.contains("; micro-batches of n tokens reach n ÷ (n + 64) of the efficiency"), paying.report)

        let json = try DaptProcess.dapt(["plan", "--model", model, "--global-batch", "8", "--seq-len", "32", "--set", "ranks_per_node=4", "--json"])
        XCTAssertEqual(json.status, 0, json.report)
        let rows = try json.stdout.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertFalse(rows.isEmpty)
        for row in rows {
            let t = row["tensor"] as! Int, p = row["pipeline"] as! Int, d = row["data"] as! Int
            XCTAssertEqual(t * p * d, 4)
            XCTAssertNotEqual(t, 4)
        }
        // ZeRO-1 divides each rank's update by D (its slice, rounded up).
        func key(_ row: [String: Any]) -> String { ["tensor", "pipeline", "data", "micro_batch"].map { "\(row[$0]!)" }.joined(separator: " ") }
        let whole = Dictionary(rows.filter { !($0["zero1"] as! Bool) }.map { (key($0), $0["update_seconds"] as! Double) }, uniquingKeysWith: { a, _ in a })
        let sharded = rows.filter { $0["zero1"] as! Bool }
        XCTAssertFalse(sharded.isEmpty, json.report)
        for row in sharded {
            let update = row["update_seconds"] as! Double, full = try XCTUnwrap(whole[key(row)])
            XCTAssertGreaterThan(full, 0)
            XCTAssertEqual(update / full, 1 / Double(row["data"] as! Int), accuracy: 1e-3, key(row))
        }
    }

    func testBadClusterValueNamesTheFieldAndExitsTwo() throws {
        let dir = try temporaryDirectory(self)
        let model = try writeModel(dir)
        let r = try DaptProcess.dapt(["plan", "--model", model, "--global-batch", "8", "--seq-len", "32", "--set", "compute_efficiency=2"])
        XCTAssertEqual(r.status, 2, r.report)
        XCTAssertTrue(r.stderr.contains("--set compute_efficiency=2: compute_efficiency: must be <= 1 (a share of gflops_per_rank), got 2.0"), r.report)
        let cluster = dir + "/cluster.yaml"
        try "nodes: 8\nranks_per_node: eight\n".write(toFile: cluster, atomically: true, encoding: .utf8)
        let bad = try DaptProcess.dapt(["plan", "--model", model, "--global-batch", "8", "--seq-len", "32", "--cluster", cluster])
        XCTAssertEqual(bad.status, 2, bad.report)
        XCTAssertTrue(bad.stderr.contains("\(cluster):2:"), bad.report)
        XCTAssertTrue(bad.stderr.contains("ranks_per_node"), bad.report)
    }

    func testCalibrateUnderMPIWritesAClusterThePlanReads() throws {
        let dir = try temporaryDirectory(self)
        let model = try writeModel(dir)
        let cluster = dir + "/measured.yaml"
        let r = try DaptProcess.mpirun(np: 2, ["plan", "--calibrate", "--model", model, "--seq-len", "32", "--micro-batch", "2", "--output", cluster])
        XCTAssertEqual(r.status, 0, r.report)
        XCTAssertTrue(r.stdout.contains("all-reduce 16 MiB over 2 ranks"), r.report)
        XCTAssertTrue(r.stdout.contains("the same step at 32 tokens:"), "a quarter of 2 × 32 tokens, rounded up to a sequence: \(r.report)")
        let yaml = try String(contentsOfFile: cluster, encoding: .utf8)
        XCTAssertTrue(yaml.contains("ranks_per_node: 2\nnodes: 1\n"), yaml)
        XCTAssertFalse(yaml.contains("intra_node_bandwidth_gbs: 5\n"), "the link is measured, not the default: \(yaml)")
        // The update is measured too: a positive figure, not the default's 2 ns.
        let update = yaml.split(separator: "\n").first { $0.hasPrefix("optimizer_ns_per_parameter: ") }.flatMap { Double($0.split(separator: " ")[1]) }
        XCTAssertNotNil(update, yaml)
        XCTAssertGreaterThan(update ?? 0, 0, yaml)
        XCTAssertNotEqual(update, 2, "the default: \(yaml)")
        let plan = try DaptProcess.dapt(["plan", "--model", model, "--global-batch", "8", "--seq-len", "32", "--cluster", cluster])
        XCTAssertEqual(plan.status, 0, plan.report)
        XCTAssertTrue(plan.stdout.contains("cluster note: measured by dapt plan --calibrate"), plan.report)
    }
}
