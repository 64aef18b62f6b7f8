import DaptBLAS
import DaptCore
@testable import DaptModel
import XCTest

/// Activation recomputation (`LlamaModel.recomputedLayers`): backward runs
/// a recomputed layer's forward again from its kept input, so the losses and
/// gradients are the ones of a pass that saved everything, bit for bit
/// (contexts held at once: `LayerTests.testContextsPerMicroBatchMatchSequentialPasses`).
final class RecomputeTests: XCTestCase {
    /// The tiny test model (GQA, 4 heads over 2 kv heads) with three layers,
    /// so one (the first) or two (all but the last) can be recomputed.
    static let config: LlamaConfig = {
        var c = ModelGradientTests.tinyConfig(nil)
        c.numHiddenLayers = 3
        return c
    }()

    func model(recomputed: Int, granularity: RecomputeGranularity = .layer, precision: Precision = .fp32, blockRows: Int? = nil,
               threads: Int = 1) throws -> LlamaModel {
        let model = try LlamaModel(config: Self.config)
        model.attentionKernel = .tiled(AttentionTiles(query: 3, key: 4))
        model.initializeRandom(seed: 7, std: 0.4)
        model.recomputedLayers = recomputed
        model.recomputeGranularity = granularity
        model.activationPrecision = precision
        model.threads = threads
        if let blockRows { model.layerBlockRows = blockRows }
        return model
    }

    /// Whole passes (document mask, ignored targets) in fp32 and bf16, in
    /// one block of rows and in blocks of 3, on one thread and two: the same
    /// loss and gradients with and without recomputation: of the first
    /// layer, of all but the last, and of the [gate | up] rows of every
    /// layer; two steps in a row, so a context's shared slot is reused.
    func testRecomputedPassesGiveTheSameBits() throws {
        let batch = try ModelGradientTests.tinyBatch()
        var second = batch
        second.tokens = batch.tokens.map { ($0 + 5) % 16 }
        for (precision, blockRows, threads) in [(Precision.fp32, nil, 1), (.bf16, nil, 1), (.fp32, 3, 1), (.bf16, 3, 2)] {
            let saved = try model(recomputed: 0, precision: precision, blockRows: blockRows, threads: threads)
            let first = try model(recomputed: 1, precision: precision, blockRows: blockRows, threads: threads)
            let all = try model(recomputed: 3, precision: precision, blockRows: blockRows, threads: threads)
            let mlp = try model(recomputed: 3, granularity: .mlp, precision: precision, blockRows: blockRows, threads: threads)
            let recomputing = [(first, "first layer"), (all, "all layers"), (mlp, "[gate | up] rows")]
            for b in [batch, second] {
                let losses = try saved.forwardBackward(b)
                for (recomputing, name) in recomputing {
                    XCTAssertEqual(try recomputing.forwardBackward(b), losses, "\(name), \(precision) block rows \(blockRows.map(String.init) ?? "default") threads \(threads)")
                }
            }
            let gradients = saved.gradients.withBuffer { Array($0) }
            for (recomputing, name) in recomputing {
                XCTAssertEqual(recomputing.gradients.withBuffer { Array($0) }, gradients, "\(name), \(precision) block rows \(blockRows.map(String.init) ?? "default") threads \(threads)")
            }
            XCTAssertNotEqual(gradients, [Float](repeating: 0, count: gradients.count))
        }
    }

    /// Every layer keeps its input; the rest of a recomputed layer's saved
    /// tensors (mid, q/k/v, attention output and log-sum-exp, two norm
    /// scales, [gate | up]) share one slot with the layer after it.
    func testOnlyLayerInputsAreKeptPerLayer() {
        let dims = LayerDimensions(config: Self.config)
        let saving = Activations(dims: dims, layers: 3, batchSize: 2, seqLen: 10)
        // 20 rows × (mid 16 + q/k/v 16 + 8 + 8 + attention 16 + lse 4 + 2 scales + [gate | up] 40) per recomputed layer.
        for (recomputed, dropped) in [(1, 1), (2, 2), (3, 2), (50, 2)] {
            let recomputing = Activations(dims: dims, layers: 3, batchSize: 2, seqLen: 10, recomputedLayers: recomputed)
            XCTAssertEqual(saving.allocatedFloats - recomputing.allocatedFloats, dropped * 20 * 110, "\(recomputed) recomputed")
            XCTAssertEqual(recomputing.recomputedLayers, dropped)
        }
        XCTAssertEqual(Activations(dims: dims, layers: 1, batchSize: 2, seqLen: 10, recomputedLayers: 1).allocatedFloats,
                       Activations(dims: dims, layers: 1, batchSize: 2, seqLen: 10).allocatedFloats, "one layer: nothing to drop")
        // [gate | up] alone: 20 rows × 40 per layer, less one block scratch of all rows.
        for (recomputed, dropped) in [(1, 1), (3, 3), (9, 3)] {
            let mlp = Activations(dims: dims, layers: 3, batchSize: 2, seqLen: 10, recomputedLayers: recomputed, granularity: .mlp)
            XCTAssertEqual(saving.allocatedFloats - mlp.allocatedFloats, (dropped - 1) * 20 * 40, "[gate | up] of \(recomputed)")
            XCTAssertEqual(mlp.recomputedLayers, dropped)
        }
    }

    /// On a pipeline stage holding model layers 4…7 with its first two
    /// recomputed, layers 4, 5 and 6 share one slot and layer 7 has its own;
    /// every layer keeps its own input and output.
    func testRecomputedLayersShareTheStagesFirstSlot() throws {
        let a = Activations(dims: LayerDimensions(config: Self.config), layers: 4, firstLayer: 4, batchSize: 2, seqLen: 10, recomputedLayers: 2)
        XCTAssertEqual((4...7).map { a.recomputes($0) }, [true, true, false, false])
        let slots = (4...7).map { a.layer($0) }
        XCTAssertEqual(Set(slots[0...2].map(\.gateUp)).count, 1)
        XCTAssertEqual(Set(slots[0...2].map(\.qkv)).count, 1)
        XCTAssertNotEqual(slots[3].gateUp, slots[2].gateUp)
        XCTAssertNotEqual(slots[3].mid, slots[2].mid)
        XCTAssertEqual(Set(slots.map(\.x)).count, 4)
        XCTAssertEqual(slots[2].out, slots[3].x)

        // The model sizes a context's [gate | up] scratch to its MLP's blocks.
        let batch = try ModelGradientTests.tinyBatch()
        XCTAssertEqual(try model(recomputed: 3, granularity: .mlp, blockRows: 3).makeActivations(batch).gateUpBlockRows, 3)
        XCTAssertEqual(try model(recomputed: 3, granularity: .mlp).makeActivations(batch).gateUpBlockRows, 20, "one block of all 20 rows")

        // [gate | up] of the first two: their rows go to one block scratch, everything else is each layer's own.
        let mlp = Activations(dims: LayerDimensions(config: Self.config), layers: 4, firstLayer: 4, batchSize: 2, seqLen: 10,
                              recomputedLayers: 2, granularity: .mlp)
        XCTAssertEqual((4...7).map { mlp.recomputes($0) }, [false, false, false, false])
        XCTAssertEqual((4...7).map { mlp.recomputesGateUp($0) }, [true, true, false, false])
        let own = (4...7).map { mlp.layer($0) }
        XCTAssertEqual(own.map(\.gateUpPerBlock), [true, true, false, false])
        XCTAssertEqual(Set(own.map(\.gateUp)).count, 3)
        XCTAssertEqual(Set(own.map(\.qkv)).count, 4)
        XCTAssertEqual(Set(own.map(\.mid)).count, 4)
    }

    /// Backward reruns the forward of each recomputed layer (never the last,
    /// whose tensors the forward pass left in the slot), without the MLP's
    /// down product: recomputed × (one layer's forward products − 1) more.
    func testBackwardRerunsEveryLayerButTheLast() throws {
        let batch = try ModelGradientTests.tinyBatch()
        func products(_ body: () throws -> Void) rethrows -> Int {
            let recorder = SgemmRecorder()
            BLAS.recorder = recorder
            defer { BLAS.recorder = nil }
            try body()
            return recorder.calls.count
        }
        let saved = try model(recomputed: 0)
        let a = try saved.makeActivations(batch)
        try saved.embedForward(a)
        let layerForward = try products { try saved.forwardLayers(0..<1, a) }
        XCTAssertGreaterThan(layerForward, 4, "q/k/v, attention's tiles, o, [gate | up], down")
        let plain = try products { _ = try saved.forwardBackward(batch) }
        for (recomputed, reruns) in [(1, 1), (2, 2), (3, 2)] {
            let model = try model(recomputed: recomputed)
            let rerun = try products { _ = try model.forwardBackward(batch) }
            XCTAssertEqual(rerun - plain, reruns * (layerForward - 1), "\(recomputed) recomputed")
        }
        // [gate | up] alone: one product per layer (its 20 rows are one block), also the last layer's.
        for recomputed in [1, 3] {
            let model = try model(recomputed: recomputed, granularity: .mlp)
            let rerun = try products { _ = try model.forwardBackward(batch) }
            XCTAssertEqual(rerun - plain, recomputed, "[gate | up] of \(recomputed)")
        }
    }
}
