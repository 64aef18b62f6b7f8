import Foundation
import XCTest

/// `pretrain.parallel.bucket_mb` under a real `mpirun`: gradients reduced in
/// small buckets during backward give the run of one all-reduce after it.
final class OverlapPretrainTests: XCTestCase, PretrainRunChecks {
    /// 10 fp32 steps, two micro-batches per data rank (accumulated, reduced
    /// in the last one's backward), with 10 KB buckets (many per layer) and
    /// with none: on 2 data ranks and on 2 tensor × 2 data ranks the same
    /// metrics and byte-identical weights (each element is summed once over
    /// two ranks, a + b = b + a).
    func testBucketedReductionGivesTheBlockingRun() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let base = PretrainCommandTests.tiny + ["--steps", "10", "--set", "data.global_batch_size=8"]
        let model = "/checkpoint-00000010/model.safetensors"
        for (np, tensor) in [(2, 1), (4, 2)] {
            var runs: [String] = []
            for bucket in ["0", "0.01"] {
                let name = "np\(np)-bucket\(bucket)"
                let r = try pretrain(np: np, ["--input", shards, "--output", run(name), "--set", "parallel.tensor=\(tensor)",
                                              "--set", "parallel.bucket_mb=\(bucket)"] + base)
                XCTAssertEqual(r.status, 0, r.stderr)
                XCTAssertTrue(r.stderr.contains("tensor \(tensor) × pipeline 1 × data 2"), r.stderr)
                runs.append(run(name))
            }
            XCTAssertEqual(try PretrainCommandTests.metrics(runs[1]), try PretrainCommandTests.metrics(runs[0]), "np \(np)")
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: runs[1] + model)),
                           try Data(contentsOf: URL(fileURLWithPath: runs[0] + model)), "np \(np): same weights, byte for byte")
        }
    }
}
