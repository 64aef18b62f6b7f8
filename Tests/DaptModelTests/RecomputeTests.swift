import DaptBLAS
import DaptCore
@testable import DaptModel
import XCTest

/// Activation recomputation (`LlamaModel.recomputesLayers`): backward runs
/// each layer's forward again from its kept input, so the losses and
/// gradients are the ones of a pass that saved everything, bit for bit
/// (contexts held at once: `LayerTests.testContextsPerMicroBatchMatchSequentialPasses`).
final class RecomputeTests: XCTestCase {
    /// The tiny test model (GQA, 4 heads over 2 kv heads) with three layers,
    /// so two of them are recomputed.
    static let config: LlamaConfig = {
        var c = ModelGradientTests.tinyConfig(nil)
        c.numHiddenLayers = 3
        return c
    }()

    func model(recomputing: Bool, precision: Precision = .fp32, blockRows: Int? = nil, threads: Int = 1) throws -> LlamaModel {
        let model = try LlamaModel(config: Self.config)
        model.attentionKernel = .tiled(AttentionTiles(query: 3, key: 4))
        model.initializeRandom(seed: 7, std: 0.4)
        model.recomputesLayers = recomputing
        model.activationPrecision = precision
        model.threads = threads
        if let blockRows { model.layerBlockRows = blockRows }
        return model
    }

    /// Whole passes (document mask, ignored targets) in fp32 and bf16, in
    /// one block of rows and in blocks of 3, on one thread and two: the same
    /// loss and gradients with and without recomputation; two steps in a
    /// row, so a context's shared slot is reused.
    func testRecomputedPassesGiveTheSameBits() throws {
        let batch = try ModelGradientTests.tinyBatch()
        var second = batch
        second.tokens = batch.tokens.map { ($0 + 5) % 16 }
        for (precision, blockRows, threads) in [(Precision.fp32, nil, 1), (.bf16, nil, 1), (.fp32, 3, 1), (.bf16, 3, 2)] {
            let label = "\(precision) block rows \(blockRows.map(String.init) ?? "default") threads \(threads)"
            let saved = try model(recomputing: false, precision: precision, blockRows: blockRows, threads: threads)
            let recomputed = try model(recomputing: true, precision: precision, blockRows: blockRows, threads: threads)
            for b in [batch, second] {
                XCTAssertEqual(try recomputed.forwardBackward(b), try saved.forwardBackward(b), label)
            }
            let gradients = saved.gradients.withBuffer { Array($0) }
            XCTAssertEqual(recomputed.gradients.withBuffer { Array($0) }, gradients, label)
            XCTAssertNotEqual(gradients, [Float](repeating: 0, count: gradients.count), label)
        }
    }

    /// Every layer keeps its input; the rest of its saved tensors (mid,
    /// q/k/v, attention output and log-sum-exp, two norm scales, [gate | up])
    /// exist once instead of once per layer.
    func testOnlyLayerInputsAreKeptPerLayer() {
        let dims = LayerDimensions(config: Self.config)
        let saving = Activations(dims: dims, layers: 3, batchSize: 2, seqLen: 10)
        let recomputing = Activations(dims: dims, layers: 3, batchSize: 2, seqLen: 10, recomputesLayers: true)
        // 20 rows × (mid 16 + q/k/v 16 + 8 + 8 + attention 16 + lse 4 + 2 scales + [gate | up] 40) for each of the two layers dropped.
        XCTAssertEqual(saving.allocatedFloats - recomputing.allocatedFloats, 2 * 20 * 110)
        XCTAssertEqual(Activations(dims: dims, layers: 1, batchSize: 2, seqLen: 10, recomputesLayers: true).allocatedFloats,
                       Activations(dims: dims, layers: 1, batchSize: 2, seqLen: 10).allocatedFloats, "one layer: nothing to drop")
    }

    /// Backward reruns the forward of every layer but the last (whose
    /// tensors the forward pass left in the slot), without the MLP's down
    /// product: (layers − 1) × (one layer's forward products − 1) more.
    func testBackwardRerunsEveryLayerButTheLast() throws {
        let batch = try ModelGradientTests.tinyBatch()
        func products(_ body: () throws -> Void) rethrows -> Int {
            let recorder = SgemmRecorder()
            BLAS.recorder = recorder
            defer { BLAS.recorder = nil }
            try body()
            return recorder.calls.count
        }
        let saved = try model(recomputing: false), recomputed = try model(recomputing: true)
        let a = try saved.makeActivations(batch)
        try saved.embedForward(a)
        let layerForward = try products { try saved.forwardLayers(0..<1, a) }
        XCTAssertGreaterThan(layerForward, 4, "q/k/v, attention's tiles, o, [gate | up], down")
        let plain = try products { _ = try saved.forwardBackward(batch) }
        let rerun = try products { _ = try recomputed.forwardBackward(batch) }
        XCTAssertEqual(rerun - plain, 2 * (layerForward - 1))
    }
}
