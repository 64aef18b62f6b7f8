import DaptBLAS
import DaptCore
import DaptModel
import XCTest

/// `LlamaModel.decode` on a KV cache, on a random model (the fixtures of
/// transformers' generation are checked in DaptGenerateTests).
final class DecodeTests: XCTestCase {
    /// Decoding computes q, k and v with one product per layer over the
    /// adjacent q_proj, k_proj and v_proj weights, and its logits stay those
    /// of the full forward pass (a prompt, then two single-token steps).
    func testDecodeRunsOneQKVProductPerLayer() throws {
        let config = LlamaConfig(vocabSize: 32, hiddenSize: 24, intermediateSize: 40, numHiddenLayers: 2, numAttentionHeads: 4,
                                 numKeyValueHeads: 2, maxPositionEmbeddings: 16)
        let model = try LlamaModel(config: config)
        model.initializeRandom(seed: 11, std: 0.3)
        let tokens: [Int32] = [3, 17, 9, 30, 1, 12, 5]
        let full = try model.logits(TokenBatch(batchSize: 1, seqLen: tokens.count, tokens: tokens,
                                               targets: [Int32](repeating: ignoreIndex, count: tokens.count)))
        let cache = KVCache(config: config, batch: 1, capacity: tokens.count)
        let recorder = SgemmRecorder()
        BLAS.recorder = recorder
        defer { BLAS.recorder = nil }
        var logits = try model.decode([Array(tokens.prefix(5))], cache: cache, allPositions: true)[0]
        for t in tokens.suffix(2) { logits += try model.decode([[t]], cache: cache)[0] }
        BLAS.recorder = nil
        XCTAssertLessThanOrEqual(ModelFixtures.relativeError(logits, full), 1e-5)
        let H = config.hiddenSize, qkv = config.qDimension + 2 * config.kvDimension
        let projections = recorder.calls.filter { $0.k == H && $0.transB == .transpose && $0.n != 2 * config.intermediateSize
                                                  && $0.n != H && $0.n != config.vocabSize }
        XCTAssertEqual(projections.map(\.n), [Int](repeating: qkv, count: 3 * config.numHiddenLayers), "one [q | k | v] product per layer and call")
    }
}
