import DaptCore
import DaptModel
import Foundation
import XCTest
import DaptTestSupport

final class ModelGradientTests: XCTestCase {
    static func tinyConfig(_ scaling: RopeScaling?, tied: Bool = false) -> LlamaConfig {
        LlamaConfig(vocabSize: 16, hiddenSize: 16, intermediateSize: 20, numHiddenLayers: 2, numAttentionHeads: 4,
                    numKeyValueHeads: 2, maxPositionEmbeddings: 6, rmsNormEps: 1e-5, ropeTheta: 100,
                    ropeScaling: scaling, tieWordEmbeddings: tied)
    }

    static func tinyBatch() throws -> TokenBatch {
        let tokens: [Int32] = [1, 5, 7, 2, 9, 3, 3, 11, 0, 4, 15, 6, 8, 2, 12, 13, 1, 7, 9, 10]
        let targets: [Int32] = [5, 7, 2, ignoreIndex, 3, 3, 11, 0, 4, 15, 6, 8, 2, 12, 13, 1, 7, 9, 10, ignoreIndex]
        return try TokenBatch(batchSize: 2, seqLen: 10, tokens: tokens, targets: targets,
                              documentIds: [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    }

    /// Finite differences of the whole model's loss for each RoPE scaling
    /// mode, with GQA, a document mask and a tied head.
    func testWholeModelGradientsByFiniteDifferences() throws {
        let scalings: [(RopeScaling?, Bool)] = [(nil, false), (RopeScaling(type: .linear, factor: 2), false),
                                                (RopeScaling(type: .dynamic, factor: 2), false),
                                                (RopeScaling(type: .yarn, factor: 4, originalMaxPositionEmbeddings: 4), true)]
        let batch = try Self.tinyBatch()
        for (scaling, tied) in scalings {
            let model = try LlamaModel(config: Self.tinyConfig(scaling, tied: tied))
            model.attentionKernel = .tiled(AttentionTiles(query: 3, key: 4))
            model.initializeRandom(seed: 5, std: 0.4)
            model.parameters.withBuffer { p in
                for s in model.layout.slices where s.isNormWeight { for i in s.range { p[i] += 0.05 * Float(i % 7) } }
            }
            model.gradients.zero()
            try model.forwardBackward(batch)
            var params = model.parameters.withBuffer { Array($0) }
            let analytic = model.gradients.withBuffer { Array($0) }
            finiteDifferenceCheck(name: "model \(String(describing: scaling?.type)) tied=\(tied)", inputs: &params, analytic: analytic,
                                  sample: 60, eps: 5e-3, tolerance: 2e-3) { values in
                model.parameters.withBuffer { p in for i in 0..<values.count { p[i] = values[i] } }
                return (try? model.loss(batch).mean) ?? .nan
            }
        }
    }

    func testTiledAndReferenceModelsAgree() throws {
        let model = try LlamaModel(config: Self.tinyConfig(RopeScaling(type: .yarn, factor: 2, originalMaxPositionEmbeddings: 4)))
        model.initializeRandom(seed: 9, std: 0.5)
        let batch = try Self.tinyBatch()
        model.attentionKernel = .reference
        model.gradients.zero()
        let l1 = try model.forwardBackward(batch)
        let g1 = model.gradients.withBuffer { Array($0) }
        model.attentionKernel = .tiled(AttentionTiles(query: 4, key: 3))
        model.gradients.zero()
        let l2 = try model.forwardBackward(batch)
        let g2 = model.gradients.withBuffer { Array($0) }
        XCTAssertEqual(l1.mean, l2.mean, accuracy: 1e-5)
        XCTAssertLessThanOrEqual(ModelFixtures.relativeError(g2, g1), 1e-5)
    }

    /// Attention split across threads by kv-head groups gives the same result.
    func testThreadedAttentionMatchesSingleThread() throws {
        var config = Self.tinyConfig(nil)
        config.numAttentionHeads = 4; config.numKeyValueHeads = 4
        let model = try LlamaModel(config: config)
        model.initializeRandom(seed: 4, std: 0.5)
        let batch = try Self.tinyBatch()
        model.gradients.zero()
        let l1 = try model.forwardBackward(batch)
        let g1 = model.gradients.withBuffer { Array($0) }
        model.threads = 2
        model.gradients.zero()
        let l2 = try model.forwardBackward(batch)
        XCTAssertEqual(l1, l2)
        XCTAssertEqual(g1, model.gradients.withBuffer { Array($0) })
    }

    /// Rounded activations: logits are representable in the low precision,
    /// and loss and gradients stay close to fp32's.
    func testLowPrecisionActivations() throws {
        let model = try LlamaModel(config: Self.tinyConfig(nil))
        model.initializeRandom(seed: 6, std: 0.4)
        let batch = try Self.tinyBatch()
        model.gradients.zero()
        let exact = try model.forwardBackward(batch)
        let g32 = model.gradients.withBuffer { Array($0) }
        for precision in [Precision.bf16, .fp16] {
            model.activationPrecision = precision
            let logits = try model.logits(batch)
            for v in logits.prefix(200) {
                if precision == .bf16 { XCTAssertEqual(v.bitPattern & 0xFFFF, 0) } else { XCTAssertEqual(v, Float(Float16(v))) }
            }
            model.gradients.zero()
            let low = try model.forwardBackward(batch)
            XCTAssertNotEqual(low.sum, exact.sum)
            XCTAssertEqual(low.mean, exact.mean, accuracy: 0.02 * exact.mean, "\(precision)")
            let err = ModelFixtures.relativeError(model.gradients.withBuffer { Array($0) }, g32)
            XCTAssertLessThan(err, precision == .bf16 ? 0.1 : 0.01, "\(precision) gradients")
        }
    }

    /// Scoring runs the LM head only on positions with a target: each
    /// position's loss equals log-softmax over the full logits, and positions
    /// without a target (first, middle, last) score 0, in fp32 and bf16.
    func testTokenLossesMatchFullLogitsWhereTargetsAreSparse() throws {
        let model = try LlamaModel(config: Self.tinyConfig(nil))
        model.initializeRandom(seed: 8, std: 0.4)
        let base = try Self.tinyBatch()
        var targets = base.targets
        for i in [0, 5, 6, 12] { targets[i] = ignoreIndex }
        let batch = try TokenBatch(batchSize: 2, seqLen: 10, tokens: base.tokens, targets: targets, documentIds: base.documentIds)
        for precision in [Precision.fp32, .bf16] {
            model.activationPrecision = precision
            let logits = try model.logits(batch)
            let losses = try model.tokenLosses(batch)
            XCTAssertEqual(losses.count, targets.count)
            for (r, t) in targets.enumerated() {
                guard t != ignoreIndex else { XCTAssertEqual(losses[r], 0, "position \(r)"); continue }
                let row = logits[(r * 16)..<((r + 1) * 16)].map(Double.init)
                let m = row.max()!
                let expected = log(row.reduce(0) { $0 + exp($1 - m) }) + m - row[Int(t)]
                XCTAssertEqual(Double(losses[r]), expected, accuracy: 1e-5, "\(precision) position \(r)")
                XCTAssertGreaterThan(losses[r], 0)
            }
        }
    }

    /// With threads, the row loops (SwiGLU, the scoring softmax) run in row
    /// chunks: a batch large enough to be split gives the same losses, bit
    /// for bit, as one thread.
    func testRowChunksOnThreadsMatchOneThread() throws {
        let model = try LlamaModel(config: Self.tinyConfig(nil))
        model.initializeRandom(seed: 9, std: 0.4)
        let rows = 40, seqLen = 6
        let count = rows * seqLen
        let tokens: [Int32] = (0..<count).map { (i: Int) -> Int32 in Int32((i * 7 + i / 5) % 16) }
        var targets: [Int32] = (0..<count).map { (i: Int) -> Int32 in Int32((i * 5 + 3) % 16) }
        for i in stride(from: 0, to: targets.count, by: 11) { targets[i] = ignoreIndex }
        let batch = try TokenBatch(batchSize: rows, seqLen: seqLen, tokens: tokens, targets: targets)
        model.threads = 1
        let one = try model.tokenLosses(batch)
        let logitsOne = try model.logits(batch)
        model.threads = 2
        XCTAssertEqual(try model.tokenLosses(batch), one)
        XCTAssertEqual(try model.logits(batch), logitsOne)
        XCTAssertEqual(one.filter { $0 > 0 }.count, targets.filter { $0 != ignoreIndex }.count)
    }

    func testLayoutIsContiguousWithHuggingFaceNames() throws {
        let c = Self.tinyConfig(nil)
        let layout = ParameterLayout(config: c)
        XCTAssertEqual(layout.slices.first?.name, "model.embed_tokens.weight")
        XCTAssertEqual(layout.slices.last?.name, "lm_head.weight")
        var offset = 0
        for s in layout.slices { XCTAssertEqual(s.offset, offset, s.name); offset += s.count }
        XCTAssertEqual(offset, layout.totalCount)
        XCTAssertEqual(layout.slice(named: "model.layers.1.self_attn.k_proj.weight")?.shape, [8, 16])
        XCTAssertEqual(layout.slice(named: "model.layers.0.mlp.down_proj.weight")?.shape, [16, 20])
        XCTAssertEqual(layout.layers[1].range.lowerBound, layout.layers[0].range.upperBound, "layers are adjacent ranges")
        let tied = ParameterLayout(config: Self.tinyConfig(nil, tied: true))
        XCTAssertEqual(tied.lmHead, tied.embedding)
        XCTAssertEqual(tied.totalCount, layout.totalCount - 16 * 16)
    }

    func testBatchValidation() throws {
        XCTAssertThrowsError(try TokenBatch(batchSize: 1, seqLen: 3, tokens: [1, 2], targets: [1, 2, 3])) {
            XCTAssertEqual($0 as? BatchError, .wrongCount(field: "tokens", expected: 3, found: 2))
        }
        XCTAssertThrowsError(try TokenBatch(batchSize: 1, seqLen: 4, tokens: [1, 2, 3, 4], targets: [1, 2, 3, 4], documentIds: [0, 1, 0, 0])) {
            XCTAssertEqual($0 as? BatchError, .documentNotContiguous(row: 0, position: 2, documentId: 0))
        }
        let b = try TokenBatch(batchSize: 1, seqLen: 5, tokens: [1, 2, 3, 4, 5], targets: [1, 2, 3, 4, 5], documentIds: [7, 7, 3, 3, 3])
        XCTAssertEqual(b.positions, [0, 1, 0, 1, 2], "positions restart per document")
        let model = try LlamaModel(config: Self.tinyConfig(nil))
        let bad = try TokenBatch(batchSize: 1, seqLen: 2, tokens: [1, 16], targets: [1, ignoreIndex])
        XCTAssertThrowsError(try model.loss(bad)) {
            XCTAssertEqual(($0 as? BatchError)?.description, "batch: tokens[1]: 16 is outside the vocabulary of 16")
        }
    }
}

final class SerializationTests: XCTestCase {
    func temporaryDirectory() throws -> String { try DaptTestSupport.temporaryDirectory(self, prefix: "dapt-model") }

    func testModelSaveAndLoadRoundTrip() throws {
        let dir = try temporaryDirectory()
        for tied in [false, true] {
            let config = ModelGradientTests.tinyConfig(RopeScaling(type: .yarn, factor: 4, originalMaxPositionEmbeddings: 4), tied: tied)
            let model = try LlamaModel(config: config)
            model.initializeRandom(seed: 3)
            try model.save(directory: dir + "/m\(tied)")
            let loaded = try LlamaModel(directory: dir + "/m\(tied)")
            XCTAssertEqual(loaded.config, config)
            XCTAssertEqual(loaded.parameters.withBuffer { Array($0) }, model.parameters.withBuffer { Array($0) })
            let file = try SafeTensorsFile(path: dir + "/m\(tied)/model.safetensors")
            XCTAssertEqual(file.entries.count, model.layout.slices.count)
            XCTAssertEqual(file.entry("lm_head.weight") == nil, tied)
        }
    }

    func testHalfPrecisionFilesConvert() throws {
        let dir = try temporaryDirectory()
        let values: [Float] = [0, 1, -2.5, 3.14159, 1e-3, 65504, -1e-8]
        try values.withUnsafeBufferPointer { buf in
            for dtype in [SafeTensorsDType.f16, .bf16, .f32] {
                try SafeTensors.write(path: "\(dir)/\(dtype.rawValue).safetensors",
                                      tensors: [SafeTensors.Tensor(name: "t", shape: [7], values: buf)], dtype: dtype)
            }
        }
        XCTAssertEqual(try SafeTensorsFile(path: "\(dir)/F32.safetensors").floats("t"), values)
        XCTAssertEqual(try SafeTensorsFile(path: "\(dir)/F16.safetensors").floats("t"), values.map { Float(Float16($0)) })
        let bf = try SafeTensorsFile(path: "\(dir)/BF16.safetensors").floats("t")
        XCTAssertEqual(bf[1], 1); XCTAssertEqual(bf[2], -2.5)
        XCTAssertEqual(bf[3], 3.140625, "3.14159 rounds to the nearest bfloat16")
        for (a, b) in zip(bf, values) { XCTAssertEqual(a, b, accuracy: abs(b) / 128) }
        XCTAssertEqual(try SafeTensorsFile(path: "\(dir)/BF16.safetensors").entry("t")?.dtype, "BF16")
    }

    func testLoadErrorsNameTheTensor() throws {
        let dir = try temporaryDirectory()
        let config = ModelGradientTests.tinyConfig(nil)
        let model = try LlamaModel(config: config)
        try model.save(directory: dir)
        // A different intermediate size: shape mismatch on the MLP.
        var other = config
        other.intermediateSize = 24
        let wrong = try LlamaModel(config: other)
        XCTAssertThrowsError(try wrong.parameters.loadSafeTensors(directory: dir)) {
            XCTAssertEqual($0 as? SafeTensorsError, .shapeMismatch(path: dir + "/model.safetensors", name: "model.layers.0.mlp.gate_proj.weight",
                                                                  expected: [24, 16], found: [20, 16]))
            XCTAssertTrue("\($0)".contains("model.layers.0.mlp.gate_proj.weight"))
        }
        // Fewer layers in the config: the extra layers in the file are unexpected.
        var fewer = config
        fewer.numHiddenLayers = 1
        XCTAssertThrowsError(try LlamaModel(config: fewer).parameters.loadSafeTensors(directory: dir)) {
            guard case .unexpectedTensor(_, let name)? = $0 as? SafeTensorsError else { return XCTFail("\($0)") }
            XCTAssertTrue(name.hasPrefix("model.layers.1."))
        }
        // More layers: a missing tensor.
        var more = config
        more.numHiddenLayers = 3
        XCTAssertThrowsError(try LlamaModel(config: more).parameters.loadSafeTensors(directory: dir)) {
            XCTAssertEqual($0 as? SafeTensorsError, .missingTensor(path: dir + "/model.safetensors", name: "model.layers.2.self_attn.q_proj.weight"))
        }
        // A truncated file.
        let bytes = try FileSystem.readAll(dir + "/model.safetensors")
        XCTAssertThrowsError(try SafeTensorsFile(bytes: Array(bytes[0..<100]), path: "cut.safetensors")) {
            XCTAssertTrue("\($0)".hasPrefix("cut.safetensors: not a valid safetensors file"), "\($0)")
        }
        // An unsupported dtype.
        let header = #"{"x":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#
        var raw: [UInt8] = (0..<8).map { UInt8((header.utf8.count >> (8 * $0)) & 0xFF) } + Array(header.utf8) + [UInt8](repeating: 0, count: 8)
        XCTAssertThrowsError(try SafeTensorsFile(bytes: raw, path: "i.safetensors").floats("x")) {
            XCTAssertEqual($0 as? SafeTensorsError, .unsupportedDType(path: "i.safetensors", name: "x", dtype: "I64"))
        }
        raw.removeLast(4)
        XCTAssertThrowsError(try SafeTensorsFile(bytes: raw, path: "i.safetensors")) {
            guard case .badDataOffsets(_, "x", _)? = $0 as? SafeTensorsError else { return XCTFail("\($0)") }
        }
    }

    func testConfigValidationAndJSON() throws {
        var c = ModelGradientTests.tinyConfig(RopeScaling(type: .linear, factor: 2))
        let decoded = try JSONDecoder().decode(LlamaConfig.self, from: Data(try c.jsonBytes()))
        XCTAssertEqual(decoded, c)
        c.numKeyValueHeads = 3
        XCTAssertThrowsError(try c.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "num_key_value_heads") }
        c.numKeyValueHeads = 2
        c.hiddenSize = 18
        XCTAssertThrowsError(try c.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "hidden_size") }
        let json = #"{"vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "hidden_act": "gelu"}"#
        XCTAssertThrowsError(try JSONDecoder().decode(LlamaConfig.self, from: Data(json.utf8))) {
            XCTAssertTrue("\($0)".contains("hidden_act"), "\($0)")
        }
        let legacy = #"{"vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "rope_theta": 500000, "rope_scaling": {"type": "dynamic", "factor": 2.0}}"#
        let l = try JSONDecoder().decode(LlamaConfig.self, from: Data(legacy.utf8))
        XCTAssertEqual(l.ropeTheta, 500000)
        XCTAssertEqual(l.ropeScaling?.type, .dynamic)
        XCTAssertEqual(l.numKeyValueHeads, 2, "defaults to num_attention_heads")
    }
}
