import DaptCore
@testable import DaptModel
import DaptTestSupport
import XCTest

/// The LoRA branch's fast path (BLAS products, fused dropout, reused
/// scratch) against its plain-loop reference, and the frozen base.
final class LoraAdapterTests: XCTestCase {
    static let config = LlamaConfig(vocabSize: 16, hiddenSize: 16, intermediateSize: 20, numHiddenLayers: 2, numAttentionHeads: 4,
                                    numKeyValueHeads: 2, maxPositionEmbeddings: 16, rmsNormEps: 1e-5, ropeTheta: 100)

    /// Adapters on every target with non-zero B (PEFT starts B at zero, which would hide B's products).
    func adapters(dropout: Double) throws -> LoraAdapters {
        let adapters = try LoraAdapters(config: Self.config, settings: LoraSettings(rank: 4, alpha: 8, dropout: dropout, targets: LoraTarget.allCases))
        adapters.initialize(seed: 5)
        var rng = SplitMix64(seed: 9)
        for m in adapters.modules { for i in m.b.range { adapters.parameters[i] = Float(rng.next() >> 40) * 0x1.0p-24 - 0.5 } }
        return adapters
    }

    func randoms(_ count: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in Float(rng.next() >> 40) * 0x1.0p-24 * 2 - 1 }
    }

    func testFastBranchEqualsTheReferenceWithAndWithoutDropout() throws {
        let model = try LlamaModel(config: Self.config)
        let adapters = try adapters(dropout: 0.25)
        adapters.attach(to: model)
        let rows = 13
        for training in [false, true] {
            adapters.training = training
            adapters.dropoutSeed = 77
            // The fused q/k/v and gate/up products with several modules, and down_proj alone.
            for linear in [model.blocks[0].attention.qkv, model.blocks[1].mlp.gateUp, model.blocks[1].mlp.down] {
                let adapter = try XCTUnwrap(linear.adapter as? LoraLinearAdapter)
                let x = randoms(rows * linear.inFeatures, seed: 1), y0 = randoms(rows * linear.outFeatures, seed: 2)
                let dy = randoms(rows * linear.outFeatures, seed: 3), dx0 = randoms(rows * linear.inFeatures, seed: 4)
                var (yFast, yReference) = (y0, y0)
                adapter.forward(x: x, y: &yFast, rows: rows)
                adapter.referenceForward(x: x, y: &yReference, rows: rows)
                XCTAssertGreaterThan(relativeError(yFast, y0), 1e-3, "the branch must add something")
                XCTAssertLessThan(relativeError(yFast, yReference), 1e-5, "forward, training \(training)")

                var (dxFast, dxReference) = (dx0, dx0)
                adapters.zeroGradients()
                adapter.backward(x: x, dy: dy, dx: &dxFast, rows: rows)
                let gradientsFast = Array(adapters.gradients)
                adapters.zeroGradients()
                adapter.referenceBackward(x: x, dy: dy, dx: &dxReference, rows: rows)
                XCTAssertGreaterThan(gradientsFast.map(abs).max() ?? 0, 0)
                XCTAssertLessThan(relativeError(dxFast, dxReference), 1e-5, "input gradient, training \(training)")
                XCTAssertLessThan(relativeError(gradientsFast, Array(adapters.gradients)), 1e-5, "adapter gradients, training \(training)")
            }
        }
    }

    func testDropoutDropsItsShareAndBackwardSeesForwardsMask() throws {
        let adapters = try adapters(dropout: 0.25)
        let m = adapters.modules[0]
        let d = LoraDropout(seed: 3, module: m, probability: 0.25)
        let mask = d.kept(count: 100_001)
        let kept = Double(mask.filter { $0 }.count) / Double(mask.count)
        XCTAssertEqual(kept, 0.75, accuracy: 0.01)
        // apply() draws the same mask as kept(), scaled by 1/(1-p), with a tail shorter than one draw.
        let x = randoms(1003, seed: 8)
        var out = [Float](repeating: 9, count: 1003)
        d.apply(x, to: &out, count: 1003, accumulate: false)
        let small = d.kept(count: 1003)
        for i in 0..<1003 { XCTAssertEqual(out[i], small[i] ? x[i] / 0.75 : 0, accuracy: 1e-6, "\(i)") }
        // Another module or seed draws another mask.
        XCTAssertNotEqual(LoraDropout(seed: 4, module: m, probability: 0.25).kept(count: 1003), small)
        XCTAssertNotEqual(LoraDropout(seed: 3, module: adapters.modules[1], probability: 0.25).kept(count: 1003), small)
    }

    /// A frozen base: backward computes input gradients only, holds no
    /// gradient buffer, and the adapters' gradients are those of the same
    /// model trained in full.
    func testFrozenBaseHoldsNoGradientBufferAndGivesTheSameAdapterGradients() throws {
        let batch = try ModelGradientTests.tinyBatch()
        var results: [[Float]] = []
        for frozen in [true, false] {
            let model = try LlamaModel(config: Self.config)
            model.initializeRandom(seed: 2)
            let adapters = try adapters(dropout: 0.1)
            adapters.attach(to: model)
            adapters.training = true
            adapters.dropoutSeed = 12
            if !frozen {
                model.embedding!.trainable = true
                model.head!.projection.trainable = true
                for l in model.blocks.indices { model.blocks[l].mlp.down.trainable = true; model.blocks[l].inputNorm.trainable = true }
            }
            XCTAssertEqual(model.trainsBaseParameters, !frozen)
            try model.forwardBackward(batch)
            XCTAssertEqual(model.holdsGradientBuffer, !frozen, frozen ? "frozen" : "trained")
            if !frozen { model.gradients.withBuffer { XCTAssertGreaterThan($0.map(abs).max() ?? 0, 0) } }
            results.append(Array(adapters.gradients))
        }
        XCTAssertGreaterThan(results[0].map(abs).max() ?? 0, 0)
        XCTAssertEqual(results[0], results[1])
        // A model never trained holds none either (evaluation, generation).
        let plain = try LlamaModel(config: Self.config)
        _ = try plain.loss(batch)
        XCTAssertFalse(plain.holdsGradientBuffer)
    }

    /// A frozen head over the rows that have a target (a fine-tuning batch)
    /// gives the loss and every other gradient of the head over all rows.
    func testHeadOverTargetRowsEqualsTheWholeHead() throws {
        let whole = try ModelGradientTests.tinyBatch()
        // Targets on 6 of 20 positions, the first and last rows without one.
        let kept: Set<Int> = [2, 3, 7, 8, 12, 15]
        let targets = whole.targets.enumerated().map { kept.contains($0.offset) && $0.element != ignoreIndex ? $0.element : ignoreIndex }
        XCTAssertEqual(targets.filter { $0 != ignoreIndex }.count, 5)
        let batch = try TokenBatch(batchSize: 2, seqLen: 10, tokens: whole.tokens, targets: targets, documentIds: whole.documentIds)
        var results: [(loss: LossResult, gradients: [Float])] = []
        for gathered in [false, true] {
            let model = try LlamaModel(config: Self.config)
            model.initializeRandom(seed: 4)
            model.gathersHeadRows = gathered
            model.head!.projection.trainable = false
            let loss = try model.forwardBackward(batch)
            results.append((loss, model.gradients.withBuffer { Array($0) }))
        }
        XCTAssertEqual(results[1].loss.count, 5)
        XCTAssertEqual(results[1].loss.sum, results[0].loss.sum, accuracy: 1e-6 * abs(results[0].loss.sum))
        XCTAssertGreaterThan(results[1].gradients.map(abs).max() ?? 0, 0)
        XCTAssertLessThan(relativeError(results[1].gradients, results[0].gradients), 1e-5)
    }
}
