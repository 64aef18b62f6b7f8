import DaptCore
import DaptModel
import DaptTokenizer
@testable import DaptTrain
import Foundation
import XCTest
import DaptTestSupport

/// LoRA against PEFT + transformers (Fixtures/lora from scripts/fixtures/lora_parity.py,
/// over the small checkpoint in Fixtures/interop/dapt), and the finetune loop.
final class LoraTests: XCTestCase {
    struct PeftRecord: Decodable { var tokens: [[Int32]]; var targets: [[Int32]]?; var loss: Double?; var logits: [Float] }

    func fixture(_ path: String) throws -> String {
        try XCTUnwrap(Bundle.module.url(forResource: "Fixtures/" + path, withExtension: nil)).path
    }

    var basePath: String { get throws { try fixture("interop/dapt") } }

    func record(_ name: String) throws -> PeftRecord {
        try JSONDecoder().decode(PeftRecord.self, from: Data(contentsOf: URL(fileURLWithPath: fixture("lora/" + name))))
    }

    func batch(_ r: PeftRecord) throws -> TokenBatch {
        let rows = r.tokens.count, T = r.tokens[0].count
        return try TokenBatch(batchSize: rows, seqLen: T, tokens: r.tokens.flatMap { $0 },
                              targets: r.targets?.flatMap { $0 } ?? [Int32](repeating: ignoreIndex, count: rows * T))
    }

    func testPeftAdapterGivesPeftLogitsAttachedAndMerged() throws {
        let expected = try record("peft.json")
        let model = try ModelDirectory.resolve(basePath).loadModel()
        let plain = try model.logits(batch(expected))
        XCTAssertGreaterThan(relativeError(plain, expected.logits), 1e-2, "the adapter must change the logits for this test to mean anything")
        let adapters = try LoraAdapters.load(directory: fixture("lora/peft"), config: model.config)
        XCTAssertEqual(adapters.settings, LoraSettings(rank: 4, alpha: 8, targets: LoraTarget.allCases))
        adapters.attach(to: model)
        XCTAssertLessThan(relativeError(try model.logits(batch(expected)), expected.logits), 1e-4, "attached")
        let merged = try FinetuneRun.loadAdapted(model: basePath, adapter: fixture("lora/peft"))
        XCTAssertLessThan(relativeError(try merged.logits(batch(expected)), expected.logits), 1e-4, "merged")
    }

    func testAdapterGradientsEqualPeft() throws {
        let expected = try record("peft.json")
        let model = try ModelDirectory.resolve(basePath).loadModel()
        let adapters = try LoraAdapters.load(directory: fixture("lora/peft"), config: model.config)
        adapters.attach(to: model)
        adapters.training = true
        let loss = try model.forwardBackward(batch(expected))
        XCTAssertEqual(loss.mean, try XCTUnwrap(expected.loss), accuracy: 1e-5 * abs(expected.loss!))
        let grads = try SafeTensorsFile(path: fixture("lora/grads.safetensors"))
        XCTAssertEqual(grads.entries.count, adapters.slices.count)
        for s in adapters.slices {
            let ours = Array(adapters.gradients[s.range])
            XCTAssertGreaterThan(ours.map(abs).max() ?? 0, 0, s.name)
            XCTAssertLessThan(relativeError(ours, try grads.floats(s.name, expectedShape: s.shape)), 1e-4, s.name)
        }
        // The base computes no weight gradients and holds no buffer for them.
        XCTAssertFalse(model.holdsGradientBuffer)
    }

    func testDaptAdapterGivesTheLogitsPeftComputedForIt() throws {
        let expected = try record("dapt.json")
        let merged = try FinetuneRun.loadAdapted(model: basePath, adapter: fixture("lora/dapt"))
        XCTAssertLessThan(relativeError(try merged.logits(batch(expected)), expected.logits), 1e-4)
        // What dapt saves today is what PEFT read: the same names, shapes, values and settings.
        let model = try ModelDirectory.resolve(basePath).loadModel()
        let committed = try LoraAdapters.load(directory: fixture("lora/dapt"), config: model.config)
        let dir = try temporaryDirectory(self)
        try committed.save(directory: dir, baseModel: "base")
        let resaved = try SafeTensorsFile(path: dir + "/" + LoraAdapters.weightsFile)
        let original = try SafeTensorsFile(path: fixture("lora/dapt/" + LoraAdapters.weightsFile))
        XCTAssertEqual(resaved.entries.map(\.name).sorted(), original.entries.map(\.name).sorted())
        for e in original.entries { XCTAssertEqual(try resaved.floats(e.name), try original.floats(e.name), e.name) }
        let config = try JSONValue.parse(FileSystem.readAll(dir + "/" + LoraAdapters.configFile))
        XCTAssertEqual(config["peft_type"]?.string, "LORA")
        XCTAssertEqual(config["target_modules"]?.array?.compactMap(\.string), ["q_proj", "v_proj", "o_proj", "down_proj"])
    }

    func testMergeAddsScaledProductOfBAndA() throws {
        let base = try ModelDirectory.resolve(basePath).loadModel()
        let adapters = try LoraAdapters.load(directory: fixture("lora/peft"), config: base.config)
        let merged = try FinetuneRun.loadAdapted(model: basePath, adapter: fixture("lora/peft"))
        let scale = adapters.settings.scale, r = adapters.settings.rank
        for m in adapters.modules where m.layer == 1 {
            let slice = base.layout.slice(named: "model.layers.1.\(m.target.modulePath).weight")!
            let w0 = base.parameters.withBuffer { Array($0[slice.range]) }
            let w1 = merged.parameters.withBuffer { Array($0[slice.range]) }
            for o in stride(from: 0, to: m.outFeatures, by: 5) {
                for i in stride(from: 0, to: m.inFeatures, by: 3) {
                    var ba: Float = 0
                    for k in 0..<r { ba += adapters.parameters[m.b.offset + o * r + k] * adapters.parameters[m.a.offset + k * m.inFeatures + i] }
                    XCTAssertEqual(w1[o * m.inFeatures + i], w0[o * m.inFeatures + i] + scale * ba, accuracy: 1e-6, "\(m.target) [\(o), \(i)]")
                }
            }
        }
        // Unadapted weights are untouched.
        let norm = base.layout.slice(named: "model.layers.0.input_layernorm.weight")!
        XCTAssertEqual(base.parameters.withBuffer { Array($0[norm.range]) }, merged.parameters.withBuffer { Array($0[norm.range]) })
    }

    func testBadAdapterConfigsAreNamed() throws {
        let model = try ModelDirectory.resolve(basePath).loadModel()
        let dir = try temporaryDirectory(self)
        let original = try FileSystem.readText(fixture("lora/peft/adapter_config.json"))
        try FileSystem.readAll(fixture("lora/peft/adapter_model.safetensors")).withUnsafeBytes {
            try Data($0).write(to: URL(fileURLWithPath: dir + "/adapter_model.safetensors"))
        }
        for (from, to, message) in [("\"use_dora\": false", "\"use_dora\": true", "use_dora: DoRA is not supported"),
                                     ("\"r\": 4", "\"r\": 8", "does not match the config's [8, 32]"),
                                     ("\"k_proj\"", "\"lm_head\"", "target_modules: \"lm_head\" is not one of")] {
            XCTAssertTrue(original.contains(from), from)
            try original.replacingOccurrences(of: from, with: to).write(toFile: dir + "/adapter_config.json", atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try LoraAdapters.load(directory: dir, config: model.config)) {
                XCTAssertTrue("\($0)".contains(message), "\($0)")
            }
        }
    }

    // MARK: The finetune loop

    /// The first `count` bundled instruction examples.
    func instructions(_ count: Int) throws -> String {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let lines = try String(contentsOf: repo.appendingPathComponent("data/instructions/train.jsonl"), encoding: .utf8)
            .split(separator: "\n").prefix(count).map(String.init)
        let path = try temporaryDirectory(self) + "/train.jsonl"
        try writeLines(lines, to: path)
        return path
    }

    func config(_ train: String, run: String, steps: Int = 4, dropout: Double = 0.1) throws -> FinetuneConfig {
        var c = FinetuneConfig()
        c.model = try basePath
        c.data.train = train
        c.data.sequenceLength = 64
        c.data.globalBatchSize = 4
        c.data.microBatchSize = 2
        c.data.heldOutFraction = 0.2
        c.lora.r = 4
        c.lora.loraDropout = dropout
        c.lora.targetModules = [.qProj, .vProj, .gateProj, .upProj, .downProj]
        c.optimizer.lr = 1e-2
        c.optimizer.weightDecay = 0.01
        c.schedule.totalSteps = steps
        c.schedule.warmupRatio = 0.25
        c.eval.everySteps = 2
        c.eval.sequences = 4
        c.checkpoint.directory = run
        c.checkpoint.everySteps = 2
        try c.validate()
        return c
    }

    func testLossMaskCoversExactlyTheAssistantTokens() throws {
        let tokenizer = try BPETokenizer.load(path: basePath + "/tokenizer.json")
        let template = try ChatTemplate(tokenizer: tokenizer)
        let documents = try ChatDocuments.load(path: instructions(6), template: template)
        let batches = try ChatBatches(tokens: documents.tokens, mask: documents.assistantMask, sequenceLength: 32, seed: 3, shuffle: false)
        // Unshuffled: the stream is the documents in order; rebuild it and its mask.
        var stream: [Int32] = [], mask: [Bool] = [], docEnd: [Bool] = []
        for d in 0..<documents.count {
            let n = documents.tokens.documentLength(d)
            let start = documents.tokens.starts[d]
            stream += documents.tokens.tokens[start..<(start + n)]
            mask += documents.assistantMask.tokens[start..<(start + n)].map { $0 == 1 }
            docEnd += (0..<n).map { $0 == n - 1 }
        }
        var counted = 0
        for s in 0..<batches.sequencesPerEpoch {
            let b = try batches.batch(firstSequence: s, count: 1)
            for t in 0..<32 {
                let g = s * 32 + t
                XCTAssertEqual(b.tokens[t], stream[g])
                // A target counts iff the token it predicts is an assistant token of the same document (not past a sequence end).
                let expected: Int32 = t < 31 && !docEnd[g] && mask[g + 1] ? stream[g + 1] : ignoreIndex
                if t < 31 { XCTAssertEqual(b.targets[t], expected, "sequence \(s) position \(t)") }
                if b.targets[t] != ignoreIndex { counted += 1 }
            }
        }
        XCTAssertGreaterThan(counted, 50)
        // The counted targets decode to assistant replies: JSON and <|end|>.
        let b = try batches.batch(firstSequence: 0, count: batches.sequencesPerEpoch)
        let predicted = b.targets.filter { $0 != ignoreIndex }.map { UInt32($0) }
        let text = try tokenizer.decodeText(predicted)
        XCTAssertTrue(text.contains("\"intent\""), text)
        XCTAssertFalse(text.contains("<|user|>") || text.contains("<|system|>") || text.contains("<|assistant|>"), text)
    }

    func testTrainingChangesOnlyTheAdaptersAndResumesBitIdentically() throws {
        let train = try instructions(60)
        let root = try temporaryDirectory(self)
        let full = try config(train, run: root + "/full")
        try FinetuneRun.run(config: full)
        let halves = try config(train, run: root + "/halves")
        try FinetuneRun.run(config: halves, options: FinetuneOptions(stopAfter: 2))
        // Another data seed would change the data order: the restore refuses it.
        var reseeded = halves
        reseeded.data.seed += 1
        XCTAssertThrowsError(try FinetuneRun.run(config: reseeded, options: FinetuneOptions(resume: root + "/halves"))) { error in
            XCTAssertTrue("\(error)".contains("finetune.data.seed 42 in the checkpoint, 43 in this run: the data order would change"), "\(error)")
        }
        try FinetuneRun.run(config: halves, options: FinetuneOptions(resume: root + "/halves"))
        let a = try FileSystem.readAll(root + "/full/checkpoint-00000004/adapter_model.safetensors")
        let b = try FileSystem.readAll(root + "/halves/checkpoint-00000004/adapter_model.safetensors")
        XCTAssertEqual(a, b, "resumed run differs")
        XCTAssertEqual(try FileSystem.readAll(root + "/full/checkpoint-00000004/optimizer.safetensors"),
                       try FileSystem.readAll(root + "/halves/checkpoint-00000004/optimizer.safetensors"))
        let metrics = try MetricsLog.read(path: root + "/full/metrics.jsonl")
        XCTAssertNotNil(metrics.first { $0.step == 2 }?.evalLoss)
        // Trained B matrices are non-zero; the checkpoint is a PEFT adapter with the chat template.
        let adapter = try SafeTensorsFile(path: root + "/full/checkpoint-00000004/adapter_model.safetensors")
        XCTAssertGreaterThan(try adapter.floats("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight").map(abs).max() ?? 0, 0)
        let tokenizerConfig = try JSONValue.parse(FileSystem.readAll(root + "/full/checkpoint-00000004/tokenizer_config.json"))
        XCTAssertEqual(tokenizerConfig["chat_template"]?.string, ChatTemplate.source)

        // The frozen base is unchanged bit for bit by training.
        let model = try ModelDirectory.resolve(basePath).loadModel()
        let before = model.parameters.withBuffer { Array($0) }
        let c = try config(train, run: root + "/frozen", steps: 2)
        let documents = try ChatDocuments.load(path: train, template: ChatTemplate(tokenizer: BPETokenizer.load(path: basePath + "/tokenizer.json")))
        let batches = try ChatBatches(tokens: documents.tokens, mask: documents.assistantMask, sequenceLength: 64, seed: 1)
        let trainer = try FinetuneTrainer(config: c, model: model, train: batches, heldOut: nil)
        let m1 = try trainer.step(), m2 = try trainer.step()
        XCTAssertLessThan(m2.loss!, m1.loss! + 1, "training runs")
        XCTAssertNotNil(m1.gradientNorm)
        XCTAssertEqual(model.parameters.withBuffer { Array($0) }, before)
        XCTAssertEqual(trainer.optimizer.count, trainer.adapters.totalCount, "AdamW state only for the adapters")
        XCTAssertFalse(model.holdsGradientBuffer, "no gradient buffer for the frozen base")
    }

    func testMergeCommandWritesAHuggingFaceModel() throws {
        let out = try temporaryDirectory(self) + "/merged"
        try FinetuneRun.merge(model: basePath, adapter: fixture("lora/peft"), output: out)
        let expected = try record("peft.json")
        let merged = try LlamaModel(directory: out)
        XCTAssertLessThan(relativeError(try merged.logits(batch(expected)), expected.logits), 1e-4)
        XCTAssertTrue(FileSystem.exists(out + "/tokenizer.json"))
        XCTAssertEqual(try JSONValue.parse(FileSystem.readAll(out + "/tokenizer_config.json"))["chat_template"]?.string, ChatTemplate.source)
        XCTAssertThrowsError(try FinetuneRun.merge(model: basePath, adapter: fixture("lora/peft"), output: out))
    }

    func testBadChatRecordsAndSettingsAreNamed() throws {
        let template = try ChatTemplate(tokenizer: BPETokenizer.load(path: basePath + "/tokenizer.json"))
        let path = try temporaryDirectory(self) + "/bad.jsonl"
        let good = #"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "{}"}]}"#
        for (line, message) in [(#"{"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]}"#, ":2: messages[1].role: \"robot\" is not one of"),
                                (#"{"messages": [{"role": "user", "content": "q"}]}"#, ":2: messages: no assistant message"),
                                (#"{"text": "x"}"#, ":2: messages: missing"),
                                ("{oops", ":2: not valid JSON")] {
            try writeLines([good, line, good], to: path)
            XCTAssertThrowsError(try ChatDocuments.load(path: path, template: template)) {
                XCTAssertTrue("\($0)".contains(path + message), "\($0)")
            }
        }
        try writeLines([good, "", good], to: path)
        XCTAssertEqual(try ChatDocuments.load(path: path, template: template).count, 2)

        var c = FinetuneConfig()
        c.lora.loraDropout = 1
        XCTAssertThrowsError(try c.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "lora.lora_dropout") }
        c = FinetuneConfig()
        c.lora.targetModules = []
        XCTAssertThrowsError(try c.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "lora.target_modules") }
        c = FinetuneConfig()
        c.data.globalBatchSize = 6
        XCTAssertThrowsError(try c.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "data.global_batch_size") }
        XCTAssertNoThrow(try FinetuneConfig().validate())
    }

    /// bf16: the base is held rounded once and then never changes; training still learns.
    func testBF16HoldsTheBaseRoundedAndTrains() throws {
        let train = try instructions(40)
        var c = try config(train, run: try temporaryDirectory(self) + "/bf16", steps: 3, dropout: 0)
        c.precision.mode = .bf16
        let model = try ModelDirectory.resolve(basePath).loadModel()
        var expected = model.parameters.withBuffer { Array($0) }
        expected.withUnsafeMutableBufferPointer { roundInPlace($0, to: .bf16) }
        XCTAssertNotEqual(expected, model.parameters.withBuffer { Array($0) }, "rounding must change something for this test to mean anything")
        let documents = try ChatDocuments.load(path: train, template: ChatTemplate(tokenizer: BPETokenizer.load(path: basePath + "/tokenizer.json")))
        let trainer = try FinetuneTrainer(config: c, model: model,
                                          train: ChatBatches(tokens: documents.tokens, mask: documents.assistantMask, sequenceLength: 64, seed: 1), heldOut: nil)
        var losses: [Double] = []
        for _ in 0..<3 { losses.append(try XCTUnwrap(trainer.step().loss)) }
        XCTAssertTrue(losses.allSatisfy(\.isFinite), "\(losses)")
        XCTAssertEqual(model.parameters.withBuffer { Array($0) }, expected)
        XCTAssertGreaterThan(trainer.adapters.parameters.map(abs).max() ?? 0, 0)
    }
}
