import DaptCluster
import DaptCore
import DaptModel
import DaptTestSupport
import Foundation
import XCTest

/// A model split among two tensor ranks (threads of this process) against
/// the whole model: the same loss, and, gathered, the same gradients.
final class TensorParallelTests: XCTestCase {
    func whole(_ config: LlamaConfig) throws -> LlamaModel {
        let model = try LlamaModel(config: config)
        model.attentionKernel = .tiled(AttentionTiles(query: 3, key: 4))
        model.initializeRandom(seed: 5, std: 0.4)
        return model
    }

    /// Column-parallel q/k/v and gate/up, row-parallel o/down, the
    /// vocabulary-parallel embedding, head and cross-entropy: the loss within
    /// 1e-6 and every gathered gradient within 1e-5 of the whole model's, with
    /// GQA, document masks, and a tied head.
    func testTwoWaySplitMatchesTheWholeModel() throws {
        for tied in [false, true] {
            let config = ModelGradientTests.tinyConfig(nil, tied: tied)
            let batch = try ModelGradientTests.tinyBatch()
            let reference = try whole(config)
            let referenceLoss = try reference.forwardBackward(batch)
            let referenceEval = try reference.loss(batch)
            let wholeLayout = reference.layout
            let results = try InProcessGroup(size: 2).run { rank -> (LossResult, LossResult, [Float]?, [Float]?, Int) in
                let part = try LlamaModel(config: config, tensorGroup: rank)
                part.attentionKernel = .tiled(AttentionTiles(query: 3, key: 4))
                part.initializeRandom(seed: 5, std: 0.4)
                let loss = try part.forwardBackward(batch)
                let eval = try part.loss(batch)
                let weights = try part.parameters.withBuffer { try part.layout.gatherWhole(UnsafeBufferPointer($0), into: wholeLayout, group: rank) }
                let gradients = try part.gradients.withBuffer { try part.layout.gatherWhole(UnsafeBufferPointer($0), into: wholeLayout, group: rank) }
                return (loss, eval, weights, gradients, part.layout.totalCount)
            }
            XCTAssertLessThan(results[0].4, wholeLayout.totalCount * 3 / 4, "a rank holds a part of the model")
            for (r, result) in results.enumerated() {
                XCTAssertEqual(result.0.count, referenceLoss.count)
                XCTAssertEqual(result.0.sum, referenceLoss.sum, accuracy: 1e-6 * abs(referenceLoss.sum), "tied \(tied) rank \(r)")
                XCTAssertEqual(result.1.sum, referenceEval.sum, accuracy: 1e-6 * abs(referenceEval.sum), "tied \(tied) rank \(r) eval")
            }
            XCTAssertNil(results[1].2)
            let weights = try XCTUnwrap(results[0].2), gradients = try XCTUnwrap(results[0].3)
            XCTAssertEqual(weights, reference.parameters.withBuffer { Array($0) }, "the parts of the same initialisation, gathered, are the whole")
            for s in wholeLayout.slices {
                let mine = Array(gradients[s.range]), expected = reference.gradients.values(s)
                XCTAssertLessThanOrEqual(ModelFixtures.relativeError(mine, expected), 1e-5, "tied \(tied): \(s.name)")
            }
        }
    }

    /// Split by vocabulary columns, the loss and each column's gradient are the whole cross-entropy's.
    func testVocabularyParallelCrossEntropy() throws {
        let rows = 5, vocab = 12
        let logits: [Float] = (0..<rows * vocab).map { (i: Int) -> Float in Float((i * 29) % 17) * 0.3 - 2 }
        let targets: [Int32] = [3, ignoreIndex, 11, 6, 0]
        var reference = logits
        let expected = reference.withUnsafeMutableBufferPointer { l in
            targets.withUnsafeBufferPointer { crossEntropy(logits: l.baseAddress!, targets: $0.baseAddress!, rows: rows, vocab: vocab, gradientScale: 0.5) }
        }
        let results = try InProcessGroup(size: 2).run { rank -> (Double, Int, [Float]) in
            let half = vocab / 2
            var mine: [Float] = []
            for r in 0..<rows {
                let start = r * vocab + rank.rank * half
                mine += logits[start..<(start + half)]
            }
            let r = try mine.withUnsafeMutableBufferPointer { l in
                try targets.withUnsafeBufferPointer {
                    try vocabParallelCrossEntropy(logits: l.baseAddress!, targets: $0.baseAddress!, rows: rows, vocab: half,
                                                  firstToken: rank.rank * half, gradientScale: 0.5, group: rank)
                }
            }
            return (r.sum, r.count, mine)
        }
        for (rank, (sum, count, gradient)) in results.enumerated() {
            XCTAssertEqual(count, expected.count)
            XCTAssertEqual(sum, expected.sum, accuracy: 1e-6 * expected.sum)
            for r in 0..<rows {
                for c in 0..<vocab / 2 {
                    let half = vocab / 2
                    let expectedGradient: Float = reference[r * vocab + rank * half + c]
                    XCTAssertEqual(gradient[r * half + c], expectedGradient, accuracy: 1e-6, "rank \(rank) row \(r) column \(c)")
                }
            }
        }
    }

    /// Heads, kv heads, intermediate size and vocabulary must divide by T: the error names the field and both numbers.
    func testIndivisibleSizesAreConfigErrors() throws {
        let config = ModelGradientTests.tinyConfig(nil)  // 4 heads, 2 kv heads, intermediate 20, vocabulary 16
        let rank = InProcessRank(group: InProcessGroup(size: 4), rank: 0)
        XCTAssertThrowsError(try LlamaModel(config: config, tensorGroup: rank)) {
            XCTAssertEqual("\($0)", "pretrain.parallel.tensor: 4 tensor ranks do not divide model.num_key_value_heads (2): each rank must hold an equal part")
        }
        XCTAssertEqual(config.tensorParallelProblems(3).count, 4)
        XCTAssertEqual(config.tensorParallelProblems(2), [])
    }
}
