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
                XCTAssertEqual(r.status, 0, r.report)
                XCTAssertTrue(r.stderr.contains("tensor \(tensor) × pipeline 1 × data 2"), r.report)
                runs.append(run(name))
            }
            XCTAssertEqual(try PretrainCommandTests.metrics(runs[1]), try PretrainCommandTests.metrics(runs[0]), "np \(np)")
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: runs[1] + model)),
                           try Data(contentsOf: URL(fileURLWithPath: runs[0] + model)), "np \(np): same weights, byte for byte")
        }
    }

    /// The same under ZeRO-1 (each bucket reduce-scattered onto the slices'
    /// owners during backward) and under the pipeline schedule (buckets
    /// started in the last micro-batch's backward), 10 KB buckets against
    /// none, two data ranks: 1×1×2 with ZeRO-1, 1×2×2 without and with it,
    /// and 1×2×2 with tied embeddings (their bucket waits for the two end
    /// stages' sum): the same metrics and weights byte for byte. On 4 data
    /// ranks with ZeRO-1 (each element summed over four ranks, whose order
    /// MPI may choose by message size) within 1e-5.
    func testBucketedReductionUnderZeroAndPipelineGivesTheBlockingRun() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try PretrainCommandTests.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let base = PretrainCommandTests.tiny + ["--steps", "10", "--set", "data.global_batch_size=8"]
        let model = "/checkpoint-00000010/model.safetensors"
        let cases: [(name: String, np: Int, pipeline: Int, settings: [String])] = [
            ("z-d2", 2, 1, ["--set", "parallel.zero=1"]),
            ("p2d2", 4, 2, []),
            ("z-p2d2", 4, 2, ["--set", "parallel.zero=1"]),
            ("z-tied-p2d2", 4, 2, ["--set", "parallel.zero=1", "--set", "model.tie_word_embeddings=true"]),
            ("z-d4", 4, 1, ["--set", "parallel.zero=1"]),
        ]
        for c in cases {
            var runs: [String] = []
            for bucket in ["0", "0.01"] {
                let name = "\(c.name)-bucket\(bucket)"
                let r = try pretrain(np: c.np, ["--input", shards, "--output", run(name), "--set", "parallel.pipeline=\(c.pipeline)",
                                                "--set", "parallel.bucket_mb=\(bucket)"] + c.settings + base)
                XCTAssertEqual(r.status, 0, r.report)
                XCTAssertTrue(r.stderr.contains("tensor 1 × pipeline \(c.pipeline) × data \(c.np / c.pipeline)"), r.report)
                runs.append(run(name))
            }
            let (bucketed, blocking) = (try PretrainCommandTests.metrics(runs[1]), try PretrainCommandTests.metrics(runs[0]))
            if c.np / c.pipeline == 2 {
                XCTAssertEqual(bucketed, blocking, c.name)
                XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: runs[1] + model)),
                               try Data(contentsOf: URL(fileURLWithPath: runs[0] + model)), "\(c.name): same weights, byte for byte")
            } else {
                assertClose(bucketed, blocking, c.name)
                assertClose(try weights(runs[1], step: 10), try weights(runs[0], step: 10), c.name)
            }
        }
    }
}
