import DaptModel
import DaptTestSupport
import Foundation
import XCTest

/// Fixture helpers shared by the model tests.
enum ModelFixtures {
    static var directory: String { Bundle.module.path(forResource: "Fixtures", ofType: nil)! }

    struct BatchFile: Decodable {
        var batchSize: Int, seqLen: Int
        var tokens: [Int32], targets: [Int32], documentIds: [Int32], positions: [Int32]
        enum CodingKeys: String, CodingKey {
            case batchSize = "batch_size", seqLen = "seq_len", tokens, targets, documentIds = "document_ids", positions
        }
    }

    static func batch(_ variant: String) throws -> TokenBatch {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/parity-\(variant)/batch.json"))
        let f = try JSONDecoder().decode(BatchFile.self, from: data)
        return try TokenBatch(batchSize: f.batchSize, seqLen: f.seqLen, tokens: f.tokens, targets: f.targets,
                              positions: f.positions, documentIds: f.documentIds)
    }

    /// max |a − b| / max |b|: the error relative to the tensor's scale.
    static func relativeError(_ a: [Float], _ b: [Float]) -> Double { DaptTestSupport.relativeError(a, b) }
}

final class ParityTests: XCTestCase {
    static let variants = ["default", "linear", "dynamic", "yarn", "yarn-untruncated", "tied-theta"]

    func checkParity(_ variant: String, kernel: AttentionKernel, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = "\(ModelFixtures.directory)/parity-\(variant)"
        let model = try LlamaModel(directory: dir)
        model.attentionKernel = kernel
        let batch = try ModelFixtures.batch(variant)
        let expected = try SafeTensorsFile(path: dir + "/expected.safetensors")

        let logits = try model.logits(batch)
        let logitsError = ModelFixtures.relativeError(logits, try expected.floats("logits"))
        XCTAssertLessThanOrEqual(logitsError, 1e-4, "\(variant): logits", file: file, line: line)

        model.gradients.zero()
        let loss = try model.forwardBackward(batch)
        let expectedLoss = Double(try expected.floats("loss")[0])
        XCTAssertEqual(loss.mean, expectedLoss, accuracy: 1e-4 * abs(expectedLoss), "\(variant): loss", file: file, line: line)
        XCTAssertEqual(loss.count, batch.targets.filter { $0 != ignoreIndex }.count)

        var checked = 0
        var worst = logitsError
        for slice in model.layout.slices {
            let e = try expected.floats("grad." + slice.name, expectedShape: slice.shape)
            let err = ModelFixtures.relativeError(model.gradients.values(slice), e)
            XCTAssertLessThanOrEqual(err, 1e-4, "\(variant): gradient of \(slice.name)", file: file, line: line)
            checked += 1
            worst = max(worst, err)
        }
        print("parity \(variant) \(kernel): loss \(loss.mean) vs \(expectedLoss), worst relative error \(worst)")
        XCTAssertEqual(checked, expected.entries.filter { $0.name.hasPrefix("grad.") }.count, "every expected gradient compared")
    }

    func testParityWithTransformersTiled() throws {
        for v in Self.variants {
            // Small tiles so the fixture's 24-token rows span several tiles and documents.
            try checkParity(v, kernel: .tiled(AttentionTiles(query: 8, key: 8)))
        }
    }

    func testParityWithTransformersDefaultTiles() throws {
        try checkParity("default", kernel: .tiled(AttentionTiles()))
        try checkParity("yarn", kernel: .tiled(AttentionTiles(query: 5, key: 7)))
    }

    func testParityWithTransformersReferenceAttention() throws {
        for v in ["default", "yarn"] { try checkParity(v, kernel: .reference) }
    }

    func testConfigReadsTransformersRopeParameters() throws {
        let yarn = try LlamaConfig.load(path: "\(ModelFixtures.directory)/parity-yarn/config.json")
        XCTAssertEqual(yarn.ropeScaling, RopeScaling(type: .yarn, factor: 4, originalMaxPositionEmbeddings: 8))
        XCTAssertEqual(yarn.numKeyValueHeads, 2)
        let tied = try LlamaConfig.load(path: "\(ModelFixtures.directory)/parity-tied-theta/config.json")
        XCTAssertEqual(tied.ropeTheta, 500000)
        XCTAssertNil(tied.ropeScaling)
        XCTAssertTrue(tied.tieWordEmbeddings)
        XCTAssertNil(ParameterLayout(config: tied).slice(named: "lm_head.weight"))
    }

    /// A token attends only to its own document: changing document A's
    /// tokens leaves document B's logits and B's loss gradients unchanged.
    func testDocumentMaskIsolatesDocuments() throws {
        let dir = "\(ModelFixtures.directory)/parity-default"
        let model = try LlamaModel(directory: dir)
        model.attentionKernel = .tiled(AttentionTiles(query: 8, key: 8))
        let base = try ModelFixtures.batch("default")
        let T = base.seqLen, V = model.config.vocabSize
        // Row 0: document 0 = A (positions 0..<10), document 1 = B (10..<24).
        let aRange = 0..<10, bRange = 10..<24
        var targets = base.targets
        for i in aRange { targets[i] = ignoreIndex }  // loss from B only
        let batchA = try TokenBatch(batchSize: base.batchSize, seqLen: T, tokens: base.tokens, targets: targets,
                                    positions: base.positions, documentIds: base.documentIds)
        var changed = base.tokens
        for i in aRange { changed[i] = (changed[i] + 7) % Int32(V) }
        let batchB = try TokenBatch(batchSize: base.batchSize, seqLen: T, tokens: changed, targets: targets,
                                    positions: base.positions, documentIds: base.documentIds)

        let logits1 = try model.logits(batchA), logits2 = try model.logits(batchB)
        XCTAssertEqual(Array(logits1[(bRange.lowerBound * V)..<(bRange.upperBound * V)]),
                       Array(logits2[(bRange.lowerBound * V)..<(bRange.upperBound * V)]), "document B's logits")
        XCTAssertNotEqual(Array(logits1[0..<(aRange.upperBound * V)]), Array(logits2[0..<(aRange.upperBound * V)]),
                          "document A's logits do change")

        model.gradients.zero()
        let loss1 = try model.forwardBackward(batchA)
        let g1 = model.gradients.withBuffer { Array($0) }
        model.gradients.zero()
        let loss2 = try model.forwardBackward(batchB)
        let g2 = model.gradients.withBuffer { Array($0) }
        XCTAssertEqual(loss1, loss2)
        XCTAssertEqual(g1, g2, "gradients of B's loss")
        XCTAssertTrue(g1.contains { $0 != 0 })

        // Without the document mask, B sees A and its logits change.
        let unmasked1 = try model.logits(try TokenBatch(batchSize: base.batchSize, seqLen: T, tokens: base.tokens, targets: targets, positions: base.positions))
        let unmasked2 = try model.logits(try TokenBatch(batchSize: base.batchSize, seqLen: T, tokens: changed, targets: targets, positions: base.positions))
        XCTAssertNotEqual(Array(unmasked1[(bRange.lowerBound * V)..<(bRange.upperBound * V)]),
                          Array(unmasked2[(bRange.lowerBound * V)..<(bRange.upperBound * V)]))
    }

    /// Running the layers in two ranges (as two pipeline stages would) gives
    /// the same loss and gradients as one pass.
    func testLayerRangesComposeToTheFullPass() throws {
        let model = try LlamaModel(directory: "\(ModelFixtures.directory)/parity-default")
        let batch = try ModelFixtures.batch("default")
        model.gradients.zero()
        let whole = try model.forwardBackward(batch)
        let g1 = model.gradients.withBuffer { Array($0) }

        model.gradients.zero()
        try model.prepare(batch)
        model.embedForward()
        model.forwardLayers(0..<1)
        let boundary = model.withHidden(boundary: 1) { Array($0) }
        model.withHidden(boundary: 1) { $0.update(repeating: 0) }
        model.withHidden(boundary: 1) { buf in for i in 0..<buf.count { buf[i] = boundary[i] } }  // as if received
        model.forwardLayers(1..<2)
        let staged = model.headForwardBackward()
        model.backwardLayers(1..<2)
        model.backwardLayers(0..<1)
        model.embedBackward()
        XCTAssertEqual(whole, staged)
        XCTAssertEqual(g1, model.gradients.withBuffer { Array($0) })
    }

    /// Gradients accumulate: two calls with normalizer 2N equal one mean-loss call.
    func testGradientAccumulationWithNormalizer() throws {
        let model = try LlamaModel(directory: "\(ModelFixtures.directory)/parity-default")
        let batch = try ModelFixtures.batch("default")
        model.gradients.zero()
        let once = try model.forwardBackward(batch)
        let g1 = model.gradients.withBuffer { Array($0) }
        model.gradients.zero()
        try model.forwardBackward(batch, lossScale: 8, normalizer: Double(2 * once.count))
        try model.forwardBackward(batch, lossScale: 8, normalizer: Double(2 * once.count))
        let g2 = model.gradients.withBuffer { Array($0.map { $0 / 8 }) }
        XCTAssertLessThanOrEqual(ModelFixtures.relativeError(g2, g1), 1e-6)
    }
}
