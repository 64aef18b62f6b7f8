import DaptBLAS
import DaptCore
@testable import DaptModel
import XCTest

/// The layer types under `LlamaModel`: a frozen `Linear`, an adapter on a
/// `Linear`, and several micro-batch contexts held at once.
final class LayerTests: XCTestCase {
    func model(seed: UInt64 = 5) throws -> LlamaModel {
        let model = try LlamaModel(config: ModelGradientTests.tinyConfig(nil))
        model.attentionKernel = .tiled(AttentionTiles(query: 3, key: 4))
        model.initializeRandom(seed: seed, std: 0.4)
        return model
    }

    /// A frozen q/k/v projection gets no weight gradient; every other
    /// gradient is the trainable model's, bit for bit (its input gradient still flows).
    func testFrozenLinearComputesOnlyTheInputGradient() throws {
        let batch = try ModelGradientTests.tinyBatch()
        let reference = try model()
        try reference.forwardBackward(batch)
        let frozen = try model()
        frozen.blocks[1].attention.qkv.trainable = false
        let layer = frozen.layout.layers[1], qkv = [layer.q, layer.k, layer.v]
        for s in qkv { frozen.gradients.update(repeating: 7, in: s) }
        try frozen.forwardBackward(batch)
        for s in qkv {
            XCTAssertEqual(frozen.gradients.values(s), [Float](repeating: 7, count: s.count), "\(s.name) untouched")
            XCTAssertNotEqual(reference.gradients.values(s), [Float](repeating: 0, count: s.count))
        }
        for s in frozen.layout.slices where !qkv.contains(s) {
            XCTAssertEqual(frozen.gradients.values(s), reference.gradients.values(s), s.name)
        }
    }

    /// y += x·Aᵀ for a fixed matrix A; its own gradient accumulates dyᵀ·x.
    final class MatrixAdapter: LinearAdapter {
        let a: [Float], inFeatures: Int, outFeatures: Int
        var gradient: [Float]
        /// The rows of each forward call.
        var forwardRows: [Int] = []
        init(_ a: [Float], inFeatures: Int, outFeatures: Int) {
            self.a = a; self.inFeatures = inFeatures; self.outFeatures = outFeatures
            gradient = [Float](repeating: 0, count: a.count)
        }
        func forward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, rows: Int) {
            forwardRows.append(rows)
            a.withUnsafeBufferPointer {
                BLAS.sgemm(.none, .transpose, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures, b: $0.baseAddress!,
                           ldb: inFeatures, beta: 1, c: y, ldc: outFeatures)
            }
        }
        func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int) {
            gradient.withUnsafeMutableBufferPointer {
                BLAS.sgemm(.transpose, .none, m: outFeatures, n: inFeatures, k: rows, a: dy, lda: outFeatures, b: x, ldb: inFeatures,
                           beta: 1, c: $0.baseAddress!, ldc: inFeatures)
            }
            a.withUnsafeBufferPointer {
                BLAS.sgemm(.none, .none, m: rows, n: inFeatures, k: outFeatures, a: dy, lda: outFeatures, b: $0.baseAddress!,
                           ldb: inFeatures, beta: 1, c: dx, ldc: inFeatures)
            }
        }
    }

    /// An adapter adding x·Aᵀ to o_proj trains like o_proj's weight W + A:
    /// the same loss and gradients, and the adapter's gradient is the merged
    /// weight's.
    func testAdapterMatchesTheMergedWeight() throws {
        let batch = try ModelGradientTests.tinyBatch()
        let o = try model().layout.layers[0].o
        let delta = (0..<o.count).map { Float(($0 * 37) % 11 - 5) * 0.01 }
        let adapted = try model()
        let adapter = MatrixAdapter(delta, inFeatures: o.shape[1], outFeatures: o.shape[0])
        adapted.blocks[0].attention.o.adapter = adapter
        adapted.blocks[0].attention.o.trainable = false
        let lossAdapted = try adapted.forwardBackward(batch)
        let merged = try model()
        merged.parameters.set(o, zip(merged.parameters.values(o), delta).map { $0 + $1 })
        let lossMerged = try merged.forwardBackward(batch)
        XCTAssertEqual(lossAdapted.sum, lossMerged.sum, accuracy: 1e-4 * abs(lossMerged.sum))
        XCTAssertLessThanOrEqual(ModelFixtures.relativeError(adapter.gradient, merged.gradients.values(o)), 1e-4)
        XCTAssertEqual(adapted.gradients.values(o), [Float](repeating: 0, count: o.count), "frozen base weight")
        for s in merged.layout.slices where s != o {
            XCTAssertLessThanOrEqual(ModelFixtures.relativeError(adapted.gradients.values(s), merged.gradients.values(s)), 1e-4, s.name)
        }
    }

    /// The passes in row blocks (the MLP's norm, products and SwiGLU; the
    /// attention's norm, q/k/v product and RoPE) give the loss and
    /// gradients of one pass over all rows, also when the blocks do not
    /// divide the rows.
    func testRowBlocksMatchOnePassOverAllRows() throws {
        let batch = try ModelGradientTests.tinyBatch()
        let whole = try model()
        XCTAssertEqual(whole.blocks[0].mlp.rowsPerBlock(batch.tokenCount, whole.settings), 256, "one block holds the 20 rows")
        XCTAssertEqual(whole.blocks[0].attention.rowsPerBlock(batch.tokenCount, whole.settings), 256)
        let wholeLoss = try whole.forwardBackward(batch)
        let blocked = try model()
        blocked.layerBlockRows = 3
        XCTAssertEqual(blocked.blocks.map(\.mlp.blockRows), Array(repeating: 3, count: blocked.blocks.count), "every layer's MLP")
        XCTAssertEqual(blocked.blocks.map(\.attention.blockRows), Array(repeating: 3, count: blocked.blocks.count), "every layer's attention")
        XCTAssertEqual(blocked.blocks[0].mlp.rowsPerBlock(batch.tokenCount, blocked.settings), 3, "7 blocks, the last of 2 rows")
        XCTAssertEqual(blocked.blocks[0].attention.rowsPerBlock(batch.tokenCount, blocked.settings), 3)
        let blockedLoss = try blocked.forwardBackward(batch)
        XCTAssertEqual(blockedLoss.sum, wholeLoss.sum, accuracy: 1e-6 * abs(wholeLoss.sum))
        for s in whole.layout.slices {
            XCTAssertLessThanOrEqual(ModelFixtures.relativeError(blocked.gradients.values(s), whole.gradients.values(s)), 1e-5, s.name)
        }
    }

    /// The activations and the head's scratch start on cache lines (64
    /// bytes), as parameters do (malloc's 16-byte alignment made 64-byte
    /// accesses to rows of a multiple of 16 floats straddle two lines).
    func testActivationBuffersStartOnCacheLines() throws {
        let config = try ModelGradientTests.tinyConfig(nil)
        let a = Activations(dims: LayerDimensions(config: config), layers: config.numHiddenLayers, batchSize: 2, seqLen: 10)
        let buffers = [a.residual, a.mid, a.qkv, a.attnOut, a.lse, a.rstd1, a.rstd2, a.gateUp, a.finalOut, a.finalRstd,
                       a.normOut, a.hAct, a.dResidual, a.dNorm, a.dAttnOut, a.dqkv, a.dHAct, a.dGateUp, a.partial]
        for (i, p) in buffers.enumerated() { XCTAssertEqual(Int(bitPattern: p) % 64, 0, "buffer \(i)") }
        let scratch = GrowableFloats()
        for count in [1, 100, 3000] {
            scratch.reserve(count)
            XCTAssertEqual(Int(bitPattern: scratch.pointer) % 64, 0, "\(count) floats")
            XCTAssertEqual(scratch.capacity, count)
        }
    }

    /// SwiGLU, RoPE and the norms give each thread 64 rows of a block or
    /// more, so with many threads a block grows past 256 rows to keep every
    /// thread busy.
    func testRowBlocksHoldRowsForEveryThread() throws {
        let block = try model().blocks[0]
        var settings = PassSettings(threads: 2)
        XCTAssertEqual(block.mlp.rowsPerBlock(600, settings), 256)
        XCTAssertEqual(block.attention.rowsPerBlock(600, settings), 256)
        settings.threads = 8
        XCTAssertEqual(block.mlp.rowsPerBlock(1100, settings), 512)
        XCTAssertEqual(block.attention.rowsPerBlock(1100, settings), 512)
    }

    /// An adapter on the q/k/v product keeps the attention's forward in one
    /// block of all rows (LoRA draws its dropout masks per call, and its
    /// backward takes all rows at once).
    func testAttentionAdapterRunsOneBlock() throws {
        try assertAdapterKeepsOneBlock { model, blockRows in
            model.blocks[1].attention.blockRows = blockRows
            let qkv = model.blocks[1].attention.qkv
            let delta: [Float] = (0..<qkv.inFeatures * qkv.outFeatures).map { (i: Int) -> Float in Float((i * 31) % 11 - 5) * 0.01 }
            let adapter = MatrixAdapter(delta, inFeatures: qkv.inFeatures, outFeatures: qkv.outFeatures)
            model.blocks[1].attention.qkv.adapter = adapter
            XCTAssertEqual(model.blocks[1].attention.rowsPerBlock(20, model.settings), 20)
            return adapter
        }
    }

    /// An adapter on the MLP keeps one block of all rows (LoRA draws its
    /// dropout masks per call).
    func testMLPAdapterRunsOneBlock() throws {
        try assertAdapterKeepsOneBlock { model, blockRows in
            model.blocks[1].mlp.blockRows = blockRows
            let delta: [Float] = (0..<16 * 20).map { (i: Int) -> Float in Float((i * 29) % 13 - 6) * 0.01 }
            let adapter = MatrixAdapter(delta, inFeatures: 20, outFeatures: 16)
            model.blocks[1].mlp.down.adapter = adapter
            return adapter
        }
    }

    /// With layer 1 set to 256-row blocks, then 3-row ones, and an adapter
    /// attached by `attach`: the adapter sees one forward call over the tiny
    /// batch's 20 rows, and the two passes have the same bits (loss, every
    /// gradient, the adapter's own, not all zero).
    private func assertAdapterKeepsOneBlock(_ attach: (LlamaModel, Int) -> MatrixAdapter,
                                            file: StaticString = #filePath, line: UInt = #line) throws {
        let batch = try ModelGradientTests.tinyBatch()
        XCTAssertEqual(batch.tokenCount, 20, file: file, line: line)
        var passes: [(LossResult, [Float], MatrixAdapter)] = []
        for blockRows in [256, 3] {
            let model = try model()
            let adapter = attach(model, blockRows)
            let loss = try model.forwardBackward(batch)
            XCTAssertEqual(adapter.forwardRows, [20], "block rows \(blockRows)", file: file, line: line)
            passes.append((loss, model.gradients.withBuffer { Array($0) }, adapter))
        }
        XCTAssertEqual(passes[1].0, passes[0].0, file: file, line: line)
        XCTAssertEqual(passes[1].1, passes[0].1, file: file, line: line)
        XCTAssertEqual(passes[1].2.gradient, passes[0].2.gradient, file: file, line: line)
        XCTAssertNotEqual(passes[1].2.gradient, [Float](repeating: 0, count: passes[0].2.gradient.count), file: file, line: line)
    }

    /// Two micro-batches held at once (both forward, then both backward, as
    /// a pipeline stage does) give the gradients of two sequential passes,
    /// bit for bit; also when the held contexts recompute their layers or
    /// their [gate | up] rows (each has its own slot and scratch).
    func testContextsPerMicroBatchMatchSequentialPasses() throws {
        let first = try ModelGradientTests.tinyBatch()
        var second = first
        second.tokens = first.tokens.map { ($0 + 3) % 16 }
        let sequential = try model()
        let l1 = try sequential.forwardBackward(first, normalizer: 30)
        let l2 = try sequential.forwardBackward(second, normalizer: 30)
        for (recomputing, granularity) in [(0, RecomputeGranularity.layer), (1, .layer), (2, .mlp)] {
            let held = try model()
            held.recomputedLayers = recomputing
            held.recomputeGranularity = granularity
            let a1 = try held.makeActivations(first), a2 = try held.makeActivations(second)
            XCTAssertEqual(a1.recomputedLayers, recomputing)
            for a in [a1, a2] {
                try held.embedForward(a)
                try held.forwardLayers(0..<2, a)
            }
            var losses: [LossResult] = []
            for a in [a1, a2] {
                losses.append(try held.headForwardBackward(a, normalizer: 30))
                try held.backwardLayers(0..<2, a)
                try held.embedBackward(a)
            }
            XCTAssertEqual(losses, [l1, l2], "recomputing: \(recomputing) \(granularity)")
            XCTAssertEqual(held.gradients.withBuffer { Array($0) }, sequential.gradients.withBuffer { Array($0) }, "recomputing: \(recomputing) \(granularity)")
        }
    }
}

extension ParameterBuffer {
    func update(repeating value: Float, in slice: ParameterSlice) {
        set(slice, [Float](repeating: value, count: slice.count))
    }
}
