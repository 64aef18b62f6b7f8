import DaptCore
import DaptModel
import XCTest

/// Pipeline stages: the layer split, what each stage holds, and two stages
/// run in sequence (activations and their gradients passed by hand) against
/// the whole model.
final class PipelineStageTests: XCTestCase {
    static func config(layers: Int = 4, vocab: Int = 16, hidden: Int = 16, tied: Bool = false) -> LlamaConfig {
        LlamaConfig(vocabSize: vocab, hiddenSize: hidden, intermediateSize: 20, numHiddenLayers: layers, numAttentionHeads: 4,
                    numKeyValueHeads: 2, maxPositionEmbeddings: 16, rmsNormEps: 1e-5, ropeTheta: 100, tieWordEmbeddings: tied)
    }

    func testBalancedSplitCountsTheHeadOnTheLastStage() throws {
        // A small head: layers spread evenly.
        XCTAssertEqual(try PipelineStage.partition(Self.config(layers: 4), stages: 2).map(\.layers), [0..<2, 2..<4])
        XCTAssertEqual(try PipelineStage.partition(Self.config(layers: 4), stages: 4).map(\.layers), [0..<1, 1..<2, 2..<3, 3..<4])
        // A head costing about two layers (vocab 4096 × hidden 16 against 2·16·16·2 + 3·16·20 = 1984 per layer):
        // the last stage takes fewer layers.
        let heavyHead = Self.config(layers: 6, vocab: 4096)
        let (layer, head, rerun, gateUpRerun) = PipelineStage.costs(heavyHead)
        let expectedLayer: Double = 16 * 16 * 2 + 16 * 8 * 2 + 3 * 16 * 20
        XCTAssertEqual(layer, expectedLayer)
        XCTAssertEqual(head, 4096 * 16)
        // A rerun forward without the down product (16 × 20): a third of the rest.
        XCTAssertEqual(rerun, (expectedLayer - 16 * 20) / 3)
        XCTAssertEqual(gateUpRerun, 2 * 16 * 20 / 3)
        // Recomputation makes a layer dearer against the head: a head of about 1.2 layers (128 × 16 = 2048 against
        // 1728) takes the last stage alone with one layer ([3, 1]: 5184 against 3776 + 0 reruns), but with every stage
        // rerunning all but its last layer [2, 2] is cheaper (3456 + 469 and 3456 + 469 + 2048 = 5973 against 6123).
        let lightHead = Self.config(layers: 4, vocab: 128)
        XCTAssertEqual(try PipelineStage.partition(lightHead, stages: 2).map(\.layers.count), [3, 1])
        XCTAssertEqual(try PipelineStage.partition(lightHead, stages: 2, recomputedLayers: 4).map(\.layers.count), [2, 2])
        // Recomputing every layer's [gate | up] rows alone (213 each) keeps it too: 3 · (1728 + 213) = 5824 against
        // 2 · (1728 + 213) + 2048 = 5931.
        XCTAssertEqual(try PipelineStage.partition(lightHead, stages: 2, recomputedLayers: 4, granularity: .mlp).map(\.layers.count), [3, 1])
        // Rerunning only each stage's first layer keeps [3, 1]: 5184 + 469 = 5653 against 5973.
        XCTAssertEqual(try PipelineStage.partition(lightHead, stages: 2, recomputedLayers: 1).map(\.layers.count), [3, 1])
        XCTAssertEqual(try PipelineStage.partition(heavyHead, stages: 2).map(\.layers.count), [5, 1])
        let stages = try PipelineStage.partition(heavyHead, stages: 3)
        XCTAssertEqual(stages.map(\.layers.count).reduce(0, +), 6)
        XCTAssertEqual(stages.map(\.index), [0, 1, 2])
        XCTAssertTrue(stages[0].isFirst && stages[2].isLast && !stages[1].isFirst && !stages[1].isLast)
        XCTAssertEqual(try PipelineStage.partition(Self.config(layers: 5), stages: 2, stageLayers: [1, 4]).map(\.layers), [0..<1, 1..<5])
    }

    func testBadSplitsNameTheFieldAndTheNumbers() {
        XCTAssertThrowsError(try PipelineStage.partition(Self.config(layers: 2), stages: 4)) {
            XCTAssertEqual("\($0)", "pretrain.parallel.pipeline: 4 pipeline stages for model.num_hidden_layers = 2: every stage needs at least one layer")
        }
        XCTAssertThrowsError(try PipelineStage.partition(Self.config(layers: 4), stages: 2, stageLayers: [1, 2])) {
            XCTAssertEqual("\($0)", "pretrain.parallel.stage_layers: [1, 2] sums to 3, but model.num_hidden_layers is 4")
        }
        XCTAssertThrowsError(try PipelineStage.partition(Self.config(layers: 4), stages: 2, stageLayers: [4, 0])) {
            XCTAssertEqual("\($0)", "pretrain.parallel.stage_layers: [4, 0]: stage 1 has 0 layers; every stage needs at least one")
        }
        XCTAssertThrowsError(try PipelineStage.partition(Self.config(layers: 4), stages: 2, stageLayers: [1, 1, 2])) {
            XCTAssertEqual("\($0)", "pretrain.parallel.stage_layers: [1, 1, 2] has 3 entries for 2 pipeline stages (parallel.pipeline): give one layer count per stage")
        }
    }

    /// Each stage's layout holds its layers, the first the embedding, the
    /// last the final norm and head (tied: its own copy of the embedding);
    /// together they hold the whole model's tensors.
    func testEachStageHoldsOnlyItsTensors() throws {
        for tied in [false, true] {
            let c = Self.config(layers: 4, tied: tied)
            let whole = ParameterLayout(config: c)
            let stages = try PipelineStage.partition(c, stages: 3, stageLayers: [1, 2, 1])
            let layouts = stages.map { ParameterLayout(config: c, stage: $0) }
            XCTAssertEqual(layouts[0].slices.map(\.name), ["model.embed_tokens.weight"] + whole.layer(0).all.map(\.name))
            XCTAssertEqual(layouts[1].slices.map(\.name), (whole.layer(1).all + whole.layer(2).all).map(\.name))
            XCTAssertNil(layouts[1].embedding)
            XCTAssertNil(layouts[1].lmHead)
            XCTAssertEqual(layouts[1].layer(2).q.name, "model.layers.2.self_attn.q_proj.weight")
            XCTAssertEqual(layouts[1].layer(2).q.offset, whole.layer(0).range.count, "offsets start at the stage's own buffer")
            XCTAssertEqual(layouts[2].lmHead?.name, tied ? "model.embed_tokens.weight" : "lm_head.weight")
            XCTAssertEqual(layouts[2].slices.last.map { layouts[2].isTiedCopy($0) }, tied)
            let held = layouts.flatMap { l in l.slices.filter { !l.isTiedCopy($0) }.map(\.name) }
            XCTAssertEqual(held, whole.slices.map(\.name), "every tensor on exactly one stage")
            XCTAssertEqual(layouts.map(\.totalCount).reduce(0, +), whole.totalCount + (tied ? 16 * 16 : 0))
            let model = try LlamaModel(config: c, stage: stages[1])
            XCTAssertEqual(model.parameters.count, layouts[1].totalCount, "a stage allocates only its tensors")
            XCTAssertNil(model.embedding)
            XCTAssertNil(model.head)
        }
    }

    /// Two stages run in sequence, the activation and its gradient copied
    /// between them by hand: the whole model's loss and gradients, tensor
    /// by tensor (a tied embedding's gradient is the sum of both stages').
    func testTwoStagesEqualTheWholeModel() throws {
        for tied in [false, true] {
            let c = Self.config(layers: 3, tied: tied)
            let whole = try LlamaModel(config: c)
            whole.initializeRandom(seed: 9, std: 0.3)
            let batch = try TokenBatch.synthetic(vocab: 16, batchSize: 2, seqLen: 8, documentLength: 5)
            let expected = try whole.forwardBackward(batch)

            let stages = try PipelineStage.partition(c, stages: 2, stageLayers: [2, 1])
            let first = try LlamaModel(config: c, stage: stages[0]), last = try LlamaModel(config: c, stage: stages[1])
            for part in [first, last] { part.initializeRandom(seed: 9, std: 0.3) }
            XCTAssertEqual(first.parameters.values(named: "model.layers.1.mlp.down_proj.weight"), whole.parameters.values(named: "model.layers.1.mlp.down_proj.weight"))
            let a0 = try first.makeActivations(batch), a1 = try last.makeActivations(batch)
            try first.embedForward(a0)
            try first.forwardLayers(0..<2, a0)
            first.withHidden(boundary: 2, a0) { out in last.withHidden(boundary: 2, a1) { _ = $0.update(fromContentsOf: out) } }
            try last.forwardLayers(2..<3, a1)
            let loss = try last.headForwardBackward(a1)
            try last.backwardLayers(2..<3, a1)
            last.withHiddenGradient(a1) { g in first.withHiddenGradient(a0) { _ = $0.update(fromContentsOf: g) } }
            try first.backwardLayers(0..<2, a0)
            try first.embedBackward(a0)

            XCTAssertEqual(loss.count, expected.count)
            XCTAssertEqual(loss.sum, expected.sum, accuracy: 1e-6 * abs(expected.sum))
            for s in whole.layout.slices {
                var got = (first.gradients.values(named: s.name) ?? last.gradients.values(named: s.name))!
                if tied && s.name == "model.embed_tokens.weight" {
                    got = zip(got, last.gradients.values(named: s.name)!).map { $0 + $1 }
                }
                let want = whole.gradients.values(s)
                let scale = want.map(abs).max()!
                for (x, y) in zip(got, want) { XCTAssertEqual(x, y, accuracy: 1e-5 * scale, "\(s.name) tied \(tied)") }
            }
        }
    }
}
