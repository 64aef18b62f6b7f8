import DaptCluster
import DaptCore
import DaptModel
import DaptTokenizer
@testable import DaptTrain
import Foundation
import XCTest
import DaptTestSupport

/// A small corpus of patent-like word sequences, its tokenizer and token shards.
struct ShardFixture {
    let directory: String
    let corpus: String
    let tokenizer: String
    let shards: String

    static let words = ["claim", "device", "signal", "layer", "method", "first", "second", "wherein", "circuit", "电路", "装置", "信号"]

    /// `documents` lines of 20 words drawn by a seeded generator.
    static func texts(documents: Int, seed: UInt64) -> [String] {
        var rng = SplitMix64(seed: seed)
        return (0..<documents).map { _ in (0..<20).map { _ in words[Int(rng.next() % UInt64(words.count))] }.joined(separator: " ") }
    }

    static func jsonl(_ texts: [String]) -> [String] {
        texts.map { "{\"text\": \"\($0)\"}" }
    }

    /// Trains a byte-level BPE on the corpus (`minFrequency` varies the merges
    /// at the same vocabulary size) and encodes the corpus into shards.
    init(_ test: XCTestCase, documents: Int = 200, seed: UInt64 = 7, vocabSize: Int = 300, minFrequency: Int = 2,
         tokenizerFrom: [String]? = nil) throws {
        directory = try temporaryDirectory(test, prefix: "dapt-pretrain-run")
        corpus = directory + "/corpus.jsonl"
        tokenizer = directory + "/tokenizer.json"
        shards = directory + "/tokens"
        let texts = Self.texts(documents: documents, seed: seed)
        try writeLines(Self.jsonl(texts), to: corpus)
        var trainer = BPETrainer(vocabSize: vocabSize, minFrequency: minFrequency)
        for t in tokenizerFrom ?? texts { trainer.add(t) }
        let tok = try trainer.train()
        let json = Array(tok.jsonText().utf8)
        let writer = try FileWriter(path: tokenizer, atomic: true)
        try writer.write(json)
        try writer.commit()
        let encoder = ShardEncoder(tokenizer: tok, tokenizerJSON: json, options: .init())
        _ = try encoder.run(inputs: [corpus], output: shards, communicator: SingleRankCommunicator(), sink: SilentSink())
    }

    /// The trainer tests' tiny model and schedule on these shards (vocabulary: the tokenizer's).
    func config(run: String, steps: Int) -> PretrainConfig {
        var c = TrainerTests.config(run: run, steps: steps)
        c.model.vocabSize = 0
        c.data.shards = shards
        c.data.heldOutFraction = 0.05
        c.checkpoint.keepLast = 3
        return c
    }
}

/// Keeps every event a run reports.
final class CollectingSink: EventSink, @unchecked Sendable {
    var events: [StageEvent] = []
    func report(_ event: StageEvent) { events.append(event) }
    var notices: [String] { events.compactMap { if case .notice(_, let m) = $0 { return m } else { return nil } } }
}

final class PretrainRunTests: XCTestCase {
    func metricsSteps(_ run: String) throws -> [Int] { try MetricsLog.read(path: run + "/metrics.jsonl").map(\.step) }

    /// The whole run through the library: shards in, checkpoint, metrics and
    /// plot out; perplexity of the run directory resolves to its newest checkpoint.
    func testRunAndPerplexityThroughTheLibrary() throws {
        let fixture = try ShardFixture(self)
        let run = fixture.directory + "/run"
        try PretrainRun.run(config: fixture.config(run: run, steps: 4), options: .init(stopAfter: 2))
        XCTAssertEqual(try CheckpointStore.list(root: run).map(\.step), [2])
        try PretrainRun.run(config: fixture.config(run: run, steps: 4), options: .init(resume: run))
        XCTAssertEqual(try CheckpointStore.list(root: run).map(\.step), [2, 4])
        XCTAssertEqual(try metricsSteps(run), [0, 1, 2, 3, 4])
        XCTAssertTrue(FileSystem.exists(run + "/loss_curve.svg"))
        let checkpoint = run + "/checkpoint-00000004"
        XCTAssertEqual(try fileChecksum(checkpoint + "/tokenizer.json"), try fileChecksum(fixture.tokenizer))

        var request = PerplexityRequest(model: run, input: fixture.shards)
        request.sequenceLength = 32
        let onShards = try PerplexityEvaluation.run(request)
        XCTAssertEqual(onShards.modelDirectory, checkpoint)
        XCTAssertEqual(onShards.documents, 200)
        XCTAssertGreaterThan(onShards.tokens, 0)
        XCTAssertLessThanOrEqual(onShards.tokens, onShards.sequences * 32, "at most one target per position")
        request.input = fixture.corpus
        let onText = try PerplexityEvaluation.run(request)
        XCTAssertEqual(onText.loss, onShards.loss, "JSONL through the checkpoint's tokenizer gives the shards' ids")
    }

    /// eval's rope_scaling, rope_theta and max_position_embeddings evaluate
    /// the weights under other positions than they were trained with.
    func testPerplexityUnderAnotherRopeScaling() throws {
        let fixture = try ShardFixture(self)
        let run = fixture.directory + "/run"
        try PretrainRun.run(config: fixture.config(run: run, steps: 2))   // trained at 32 of 64 positions
        var request = PerplexityRequest(model: run, input: fixture.shards)
        request.sequenceLength = 128
        XCTAssertThrowsError(try PerplexityEvaluation.run(request)) { XCTAssertTrue("\($0)".contains("exceeds the positions"), "\($0)") }
        request.maxPositionEmbeddings = 128
        let plain = try PerplexityEvaluation.run(request)
        request.maxPositionEmbeddings = nil
        request.ropeScaling = RopeScaling(type: .yarn, factor: 2)                 // 2 × 64 positions
        let yarn = try PerplexityEvaluation.run(request)
        XCTAssertEqual(yarn.tokens, plain.tokens)
        XCTAssertNotEqual(yarn.loss, plain.loss)
        XCTAssertEqual(PerplexityEvaluation.section(request, yarn).config["rope_scaling"]?.string, "yarn × 2.0")
        request.ropeScaling = RopeScaling(type: .linear, factor: 0.5)
        XCTAssertThrowsError(try PerplexityEvaluation.run(request)) { XCTAssertEqual(($0 as? ConfigError)?.field, "eval.rope_scaling.factor") }

        request.ropeScaling = nil
        request.sequenceLength = 32
        let own = try PerplexityEvaluation.run(request)
        request.ropeTheta = 1e6
        XCTAssertNotEqual(try PerplexityEvaluation.run(request).loss, own.loss)
        let config = try ConfigLoader.decode(EvalConfig.self, yaml: "rope_scaling: {rope_type: dynamic, factor: 4}\nrope_theta: 40000\nmax_position_embeddings: 256\n")
        XCTAssertEqual(config.ropeScaling, RopeScaling(type: .dynamic, factor: 4))
        XCTAssertEqual(config.request(model: run, input: "x", tokenizer: nil).ropeTheta, 40000)
        XCTAssertEqual(config.request(model: run, input: "x", tokenizer: nil).maxPositionEmbeddings, 256)
    }
}

extension PretrainRunTests {
    func bytes(_ path: String) throws -> [UInt8] { try FileSystem.readAll(path) }

    func copyFile(_ source: String, to destination: String) throws {
        let writer = try FileWriter(path: destination)
        try writer.write(try bytes(source))
        try writer.commit()
    }

    func XCTAssertThrowsTrainingError<T>(_ body: @autoclosure () throws -> T, _ check: (TrainingError) -> Bool, _ message: String = "",
                                      file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), message, file: file, line: line) { error in
            guard let e = error as? TrainingError, check(e) else { return XCTFail("unexpected error: \(error)", file: file, line: line) }
        }
    }

    /// A fresh run into a directory holding a run is refused and changes
    /// nothing; with overwrite, the old (longer) run goes as a whole.
    func testFreshRunDoesNotReplaceAnExistingRun() throws {
        let fixture = try ShardFixture(self)
        let run = fixture.directory + "/run"
        var longer = fixture.config(run: run, steps: 4)
        longer.checkpoint.everySteps = 1
        try PretrainRun.run(config: longer)
        let metricsBefore = try bytes(run + "/metrics.jsonl")
        let weightsBefore = try bytes(run + "/checkpoint-00000004/model.safetensors")

        let shorter = fixture.config(run: run, steps: 2)
        let sink = CollectingSink()
        XCTAssertThrowsError(try PretrainRun.run(config: shorter, sink: sink)) { error in
            guard case .runDirectoryInUse(let dir, let entries) = error as? TrainingError else { return XCTFail("\(error)") }
            XCTAssertEqual(dir, run)
            XCTAssertEqual(entries, ["checkpoint-00000002", "checkpoint-00000003", "checkpoint-00000004", "loss_curve.svg", "metrics.jsonl"])
            let message = "\(error)"
            XCTAssertTrue(message.contains("--resume \(run)") && message.contains("--overwrite"), message)
        }
        XCTAssertEqual(sink.notices, [])
        var unread = shorter
        unread.data.shards = fixture.directory + "/no-shards"
        XCTAssertThrowsTrainingError(try PretrainRun.run(config: unread), {
            if case .runDirectoryInUse = $0 { return true } else { return false }
        }, "refused before the shards are read")
        XCTAssertEqual(try bytes(run + "/metrics.jsonl"), metricsBefore)
        XCTAssertEqual(try bytes(run + "/checkpoint-00000004/model.safetensors"), weightsBefore)

        try PretrainRun.run(config: shorter, options: .init(overwrite: true))
        XCTAssertEqual(try CheckpointStore.list(root: run).map(\.step), [2], "nothing of the older run is left")
        XCTAssertEqual(try metricsSteps(run), [0, 1, 2])
        XCTAssertEqual(try FileSystem.list(fixture.directory).filter { $0.hasPrefix(".") }, [], "the replaced run is deleted")

        // Overwrite never removes files that are not a run's, and resume excludes it.
        try writeLines(["notes"], to: run + "/notes.txt")
        XCTAssertThrowsTrainingError(try PretrainRun.run(config: shorter, options: .init(overwrite: true))) {
            if case .runDirectoryHoldsOtherFiles(run, ["notes.txt"]) = $0 { return true } else { return false }
        }
        XCTAssertEqual(try CheckpointStore.list(root: run).map(\.step), [2])
        XCTAssertThrowsTrainingError(try PretrainRun.run(config: shorter, options: .init(resume: run, overwrite: true))) {
            if case .conflictingOptions = $0 { return true } else { return false }
        }
    }

    /// Shards, checkpoints and evaluation must use one tokenizer: a second
    /// tokenizer of the same vocabulary size is refused everywhere, naming both.
    func testTokenizerMismatchIsRefused() throws {
        let a = try ShardFixture(self)
        let reversed = ShardFixture.texts(documents: 200, seed: 7).map { String($0.reversed()) }
        let b = try ShardFixture(self, tokenizerFrom: reversed)
        let (sa, sb) = (try ShardDocuments(directory: a.shards), try ShardDocuments(directory: b.shards))
        XCTAssertEqual(sa.vocabSize, sb.vocabSize, "same vocabulary size: only the checksum tells them apart")
        XCTAssertNotEqual(sa.tokenizerChecksum, sb.tokenizerChecksum)
        func isMismatch(_ expected: String, _ found: String) -> (TrainingError) -> Bool {
            { if case .tokenizerMismatch(let e, let ec, let f, let fc) = $0 { return e == expected && f == found && ec != fc } else { return false } }
        }
        let run = a.directory + "/run"
        try PretrainRun.run(config: a.config(run: run, steps: 2))
        let checkpoint = run + "/checkpoint-00000002"

        // Resume on the other tokenizer's shards.
        var onB = a.config(run: run, steps: 4)
        onB.data.shards = b.shards
        XCTAssertThrowsTrainingError(try PretrainRun.run(config: onB, options: .init(resume: run)),
                                     isMismatch(b.shards, checkpoint + "/tokenizer.json"))
        XCTAssertEqual(try CheckpointStore.list(root: run).map(\.step), [2])
        // A fresh run whose checkpoints would carry another tokenizer than the shards'.
        var otherTokenizer = a.config(run: a.directory + "/run2", steps: 2)
        otherTokenizer.data.tokenizer = b.tokenizer
        XCTAssertThrowsTrainingError(try PretrainRun.run(config: otherTokenizer), isMismatch(a.shards, b.tokenizer))
        // Perplexity on the other tokenizer's shards, or its JSONL tokenisation.
        var request = PerplexityRequest(model: run, input: b.shards)
        request.sequenceLength = 32
        XCTAssertThrowsTrainingError(try PerplexityEvaluation.run(request), isMismatch(b.shards, checkpoint + "/tokenizer.json"))
        request.input = a.corpus
        request.tokenizer = b.tokenizer
        XCTAssertThrowsTrainingError(try PerplexityEvaluation.run(request), isMismatch(checkpoint, b.tokenizer))
        request.tokenizer = a.tokenizer
        XCTAssertNoThrow(try PerplexityEvaluation.run(request), "the same tokenizer from another path is fine")
    }

    /// A checkpoint whose manifest is gone is not loaded by eval, resume or
    /// --from; a Hugging Face directory (no manifest, no training files) is.
    func testCheckpointWithoutManifestIsNotAModel() throws {
        let fixture = try ShardFixture(self)
        let run = fixture.directory + "/run"
        try PretrainRun.run(config: fixture.config(run: run, steps: 2))
        let checkpoint = run + "/checkpoint-00000002"
        // Named as Hugging Face trainers name their checkpoints: the name does not make it a dapt checkpoint.
        let hf = fixture.directory + "/hf-trainer/checkpoint-500"
        try LlamaModel(directory: checkpoint).save(directory: hf)
        try copyFile(checkpoint + "/tokenizer.json", to: hf + "/tokenizer.json")
        unlink(checkpoint + "/manifest.json")
        func isNotAModel(_ path: String) -> (TrainingError) -> Bool {
            { if case .notAModel(let p, let reason) = $0 { return p == path && reason.contains("manifest.json") } else { return false } }
        }
        var request = PerplexityRequest(model: checkpoint, input: fixture.shards)
        request.sequenceLength = 32
        XCTAssertThrowsTrainingError(try PerplexityEvaluation.run(request), isNotAModel(checkpoint))
        request.model = run
        XCTAssertThrowsTrainingError(try PerplexityEvaluation.run(request), isNotAModel(checkpoint))
        XCTAssertThrowsTrainingError(try PretrainRun.run(config: fixture.config(run: run, steps: 4), options: .init(resume: run)),
                                     isNotAModel(checkpoint))
        var from = fixture.config(run: fixture.directory + "/from", steps: 2)
        from.model.from = checkpoint
        XCTAssertThrowsTrainingError(try PretrainRun.run(config: from), isNotAModel(checkpoint))

        request.model = hf
        XCTAssertEqual(try PerplexityEvaluation.run(request).modelDirectory, hf)
        // Without a tokenizer beside the weights the check cannot be made, and the run says so.
        unlink(hf + "/tokenizer.json")
        let sink = CollectingSink()
        _ = try PerplexityEvaluation.run(request, sink: sink)
        XCTAssertTrue(sink.notices.contains { $0.contains(hf) && $0.contains("cannot be checked") }, "\(sink.notices)")
        try copyFile(checkpoint + "/tokenizer.json", to: hf + "/tokenizer.json")
        request.model = fixture.directory + "/hf-trainer"
        XCTAssertEqual(try ModelDirectory.resolve(request.model), .huggingFace(hf))
        from.model.from = hf
        try PretrainRun.run(config: from)
        XCTAssertEqual(try CheckpointStore.list(root: fixture.directory + "/from").map(\.step), [2])
        XCTAssertThrowsTrainingError(try PretrainRun.run(config: fixture.config(run: run, steps: 4), options: .init(resume: hf))) {
            if case .notAModel(hf, let reason) = $0 { return reason.contains("--from") } else { return false }
        }
    }

    /// Non-finite floats and sequences longer than the model's positions are
    /// configuration errors before any work.
    func testSettingsThatCannotWorkAreConfigErrors() throws {
        func configError(_ yaml: String) -> ConfigError? {
            do { try ConfigLoader.decode(PretrainConfig.self, yaml: yaml).validate(); return nil } catch { return error as? ConfigError }
        }
        XCTAssertEqual(configError("optimizer:\n  lr: .nan\n")?.field, "optimizer.lr")
        XCTAssertEqual(configError("optimizer:\n  lr: .inf\n")?.field, "optimizer.lr")
        XCTAssertEqual(configError("optimizer:\n  weight_decay: .nan\n")?.field, "optimizer.weight_decay")
        XCTAssertEqual(configError("optimizer:\n  max_grad_norm: .nan\n")?.field, "optimizer.max_grad_norm")
        XCTAssertEqual(configError("model:\n  rope_theta: .nan\n")?.field, "model.rope_theta")
        XCTAssertEqual(configError("model:\n  init_std: .nan\n")?.field, "model.init_std")
        XCTAssertEqual(configError("model:\n  max_position_embeddings: 128\ndata:\n  sequence_length: 256\n")?.field, "data.sequence_length")
        XCTAssertNil(configError("model:\n  max_position_embeddings: 256\ndata:\n  sequence_length: 256\n"))

        // A loaded model's positions, with RoPE scaling: linear × 2 of 64 covers 128.
        var llama = LlamaConfig(vocabSize: 300, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 1, numAttentionHeads: 4, maxPositionEmbeddings: 64)
        var config = PretrainConfig()
        config.data.sequenceLength = 128
        XCTAssertThrowsError(try config.validate(against: llama, from: "m")) { XCTAssertEqual(($0 as? ConfigError)?.field, "pretrain.data.sequence_length") }
        llama.ropeScaling = RopeScaling(type: .linear, factor: 2)
        XCTAssertNoThrow(try config.validate(against: llama, from: "m"))
        llama.ropeScaling = RopeScaling(type: .yarn, factor: 4, originalMaxPositionEmbeddings: 16)
        XCTAssertEqual(llama.positionLimit, 64)
        XCTAssertThrowsError(try config.validate(against: llama, from: "m"))

        // Through the run: --from a model of 16 positions, nothing written.
        let fixture = try ShardFixture(self)
        let hf = fixture.directory + "/hf"
        llama = LlamaConfig(vocabSize: 300, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 1, numAttentionHeads: 4, maxPositionEmbeddings: 16)
        try LlamaModel(config: llama).save(directory: hf)
        var from = fixture.config(run: fixture.directory + "/run", steps: 2)
        from.model.from = hf
        XCTAssertThrowsError(try PretrainRun.run(config: from)) { error in
            XCTAssertEqual((error as? ConfigError)?.field, "pretrain.data.sequence_length", "\(error)")
            XCTAssertTrue("\(error)".contains(hf), "\(error)")
        }
        XCTAssertFalse(FileSystem.exists(fixture.directory + "/run"))
    }

    /// A folder whose config.json is not a Llama config: an error naming the file and field.
    func testForeignConfigIsNamedByFileAndField() throws {
        let dir = try temporaryDirectory(self)
        for (json, field) in [("{\"model_type\": \"bert\", \"hidden_size\": 768}", "model_type"), ("{\"hidden_size\": \"wide\"}", "hidden_size")] {
            try writeLines([json], to: dir + "/config.json")
            XCTAssertThrowsError(try PerplexityEvaluation.run(PerplexityRequest(model: dir, input: dir + "/none.jsonl"))) { error in
                guard let e = error as? ConfigError else { return XCTFail("\(error)") }
                XCTAssertEqual(e.file, dir + "/config.json")
                XCTAssertEqual(e.field, field)
                XCTAssertFalse("\(e)".contains("DecodingError") || "\(e)".contains("CodingKeys"), "\(e)")
            }
        }
        XCTAssertThrowsTrainingError(try PerplexityEvaluation.run(PerplexityRequest(model: dir + "/empty", input: dir))) {
            if case .notAModel = $0 { return true } else { return false }
        }
    }

    /// Resuming without a config takes the checkpoint's; a config for another architecture is refused.
    func testResumeUsesTheCheckpointsSettings() throws {
        let fixture = try ShardFixture(self)
        let run = fixture.directory + "/run"
        var config = fixture.config(run: run, steps: 4)
        config.optimizer.lr = 2e-3
        try PretrainRun.run(config: config, options: .init(stopAfter: 2))
        XCTAssertEqual(try PretrainRun.savedConfig(checkpoint: run), config)
        var wider = config
        wider.model.hiddenSize = 64
        XCTAssertThrowsTrainingError(try PretrainRun.run(config: wider, options: .init(resume: run))) {
            if case .checkpointIncompatible(_, let reason) = $0 { return reason.contains("hidden_size 32 vs 64") } else { return false }
        }
        try PretrainRun.run(config: try PretrainRun.savedConfig(checkpoint: run), options: .init(resume: run))
        XCTAssertEqual(try metricsSteps(run), [0, 1, 2, 3, 4])
    }

    /// Resuming a run whose newest checkpoint was truncated: a warning names
    /// the file, the run continues from the one before and ends where an
    /// uninterrupted run does.
    func testResumeFallsBackFromADamagedNewestCheckpoint() throws {
        let fixture = try ShardFixture(self)
        let straight = fixture.directory + "/straight", run = fixture.directory + "/run"
        var config = fixture.config(run: straight, steps: 6)
        config.checkpoint.everySteps = 2
        try PretrainRun.run(config: config)
        config.checkpoint.directory = run
        try PretrainRun.run(config: config, options: .init(stopAfter: 4))
        let damaged = run + "/checkpoint-00000004/" + Trainer.modelFile
        let original = try bytes(damaged)
        let writer = try FileWriter(path: damaged)
        try writer.write(Array(original.prefix(original.count / 2)))
        try writer.commit()
        let sink = CollectingSink()
        try PretrainRun.run(config: config, options: .init(resume: run), sink: sink)
        let warnings = sink.events.compactMap { if case .warning(_, let m) = $0 { return m } else { return nil } }
        XCTAssertEqual(warnings.count, 1)
        XCTAssertTrue(warnings.first?.contains(damaged) == true && warnings.first?.contains("truncated") == true, "\(warnings)")
        XCTAssertTrue(sink.notices.contains { $0.contains("resumed from \(run)/checkpoint-00000002 at step 2") }, "\(sink.notices)")
        XCTAssertEqual(try bytes(run + "/checkpoint-00000006/" + Trainer.modelFile), try bytes(straight + "/checkpoint-00000006/" + Trainer.modelFile))
    }

    /// A resume that changes which data the steps after it see is refused
    /// before anything is written: the error names the setting and both
    /// values, and says whether --allow-data-change may accept it (not for
    /// a sequence length, whose units the data position is counted in).
    func testResumeRefusesChangedDataSettings() throws {
        let fixture = try ShardFixture(self)
        // The same tokenizer (trained on the first corpus's texts) over other documents.
        let other = try ShardFixture(self, seed: 8, tokenizerFrom: ShardFixture.texts(documents: 200, seed: 7))
        let run = fixture.directory + "/run"
        let config = fixture.config(run: run, steps: 4)
        try PretrainRun.run(config: config, options: .init(stopAfter: 2))
        let corpus = try ShardDocuments(directory: fixture.shards).corpusChecksum
        let otherCorpus = try ShardDocuments(directory: other.shards).corpusChecksum
        XCTAssertNotEqual(corpus, otherCorpus)

        func changed(_ change: (inout PretrainConfig) -> Void) -> PretrainConfig {
            var c = config
            change(&c)
            return c
        }
        let cases: [(field: String, old: String, new: String, overridable: Bool, config: PretrainConfig)] = [
            ("pretrain.data.shuffle", "true", "false", true, changed { $0.data.shuffle = false }),
            ("pretrain.data.seed", "42", "43", true, changed { $0.data.seed = 43 }),
            ("pretrain.data.global_batch_size", "4", "8", true, changed { $0.data.globalBatchSize = 8 }),
            ("pretrain.data.held_out_fraction", "0.05", "0.1", true, changed { $0.data.heldOutFraction = 0.1 }),
            ("pretrain.data.shards", "corpus xxh64 \(corpus) (\(fixture.shards))", "corpus xxh64 \(otherCorpus) (\(other.shards))", true, changed { $0.data.shards = other.shards }),
            ("pretrain.data.sequence_length", "32", "16", false, changed { $0.data.sequenceLength = 16 }),
            ("pretrain.curriculum", "none", "[16 tokens until step 2, 32 tokens until step 4]", false,
             changed { $0.curriculum = [.init(untilStep: 2, sequenceLength: 16), .init(untilStep: 4, sequenceLength: 32)] }),
        ]
        for c in cases {
            XCTAssertThrowsError(try PretrainRun.run(config: c.config, options: .init(resume: run)), c.field) { error in
                guard let e = error as? ConfigError else { return XCTFail("\(c.field): \(error)") }
                let text = e.description
                XCTAssertEqual(e.field, c.field, text)
                XCTAssertTrue(text.hasPrefix("--resume \(run)/checkpoint-00000002: \(c.field): "), text)
                XCTAssertTrue(text.contains(": \(c.old) in the checkpoint, \(c.new) in this run: the steps after the resume would train on other data"), text)
                XCTAssertEqual(text.contains("give --allow-data-change"), c.overridable, text)
                XCTAssertEqual(text.contains("cannot be overridden"), !c.overridable, text)
            }
        }
        // Two at once: both named; the one that can be accepted is told apart.
        var two = changed { $0.data.shuffle = false }
        two.data.sequenceLength = 16
        XCTAssertThrowsError(try PretrainRun.run(config: two, options: .init(resume: run))) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("pretrain.data.shuffle true in the checkpoint, false in this run; pretrain.data.sequence_length 32 in the checkpoint, 16 in this run"), text)
            XCTAssertTrue(text.contains("pretrain.data.sequence_length cannot be overridden: the checkpoint's data position counts sequences of 32 tokens"), text)
            XCTAssertTrue(text.contains("The other changes could be accepted with --allow-data-change"), text)
        }
        XCTAssertThrowsError(try PretrainRun.run(config: changed { $0.data.sequenceLength = 16 }, options: .init(resume: run, allowDataChange: true))) { error in
            XCTAssertTrue("\(error)".contains("cannot be overridden, not even with --allow-data-change"), "\(error)")
        }
        XCTAssertEqual(try metricsSteps(run), [0, 1, 2], "nothing written by a refused resume")

        // Accepted on purpose: a warning names each change, the run goes on and its checkpoints record the new settings.
        var accepted = changed { $0.data.shuffle = false }
        accepted.data.seed = 43
        let sink = CollectingSink()
        try PretrainRun.run(config: accepted, options: .init(resume: run, stopAfter: 1, allowDataChange: true), sink: sink)
        let warnings = sink.events.compactMap { if case .warning(_, let m) = $0 { return m } else { return nil } }
        XCTAssertEqual(warnings.count, 1, "\(warnings)")
        XCTAssertTrue(warnings.first?.contains("pretrain.data.seed 42 → 43; pretrain.data.shuffle true → false") == true, "\(warnings)")
        XCTAssertEqual(try PretrainRun.savedConfig(checkpoint: run), accepted)
        let state = try TrainingState.load(checkpoint: run + "/checkpoint-00000003", dataSeed: nil)
        XCTAssertEqual(state.dataSeed, 43)
        XCTAssertEqual(state.corpusChecksum, corpus)
        // The new settings are now the run's: resuming with them needs no override, with the old ones it is refused.
        XCTAssertThrowsError(try PretrainRun.run(config: config, options: .init(resume: run)))
        try PretrainRun.run(config: accepted, options: .init(resume: run))
        XCTAssertEqual(try metricsSteps(run), [0, 1, 2, 3, 4])
    }
}
