import DaptCore
import DaptModel
import DaptTokenizer
@testable import DaptTrain
import Foundation
import XCTest
import DaptTestSupport

/// Fixtures from scripts/fixtures/train_interop.py: a Llama saved by
/// transformers, and a dapt checkpoint (continued pretraining of it) loaded
/// by transformers, each with the logits transformers computed.
final class InteropTests: XCTestCase {
    struct Logits: Decodable { var tokens: [Int32]; var vocab: Int; var logits: [Float] }

    func fixture(_ path: String) throws -> String {
        try XCTUnwrap(Bundle.module.url(forResource: "Fixtures/interop/" + path, withExtension: nil)).path
    }

    func logits(of model: LlamaModel, tokens: [Int32]) throws -> [Float] {
        let n = tokens.count
        let batch = try TokenBatch(batchSize: 1, seqLen: n, tokens: tokens, targets: [Int32](repeating: -100, count: n),
                                   positions: (0..<n).map(Int32.init))
        return try model.logits(batch)
    }

    func assertClose(_ a: [Float], _ b: [Float], _ what: String) {
        XCTAssertEqual(a.count, b.count)
        let scale = b.map(abs).max() ?? 1
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThan(worst / scale, 1e-4, "\(what): max |diff| \(worst) vs max |logit| \(scale)")
    }

    func testTransformersModelLoadsWithSameLogits() throws {
        let expected = try JSONDecoder().decode(Logits.self, from: Data(contentsOf: URL(fileURLWithPath: fixture("hf_logits.json"))))
        let model = try LlamaModel(directory: fixture("hf"))
        XCTAssertEqual(model.config.vocabSize, expected.vocab)
        assertClose(try logits(of: model, tokens: expected.tokens), expected.logits, "transformers model in dapt")
    }

    func testDaptCheckpointGivesTransformersLogits() throws {
        let dir = try fixture("dapt")
        let manifest = try CheckpointStore.verify(directory: dir)
        XCTAssertEqual(manifest.step, 3)
        XCTAssertEqual(Set(manifest.files.map(\.name)), ["config.json", "model.safetensors", "optimizer.safetensors", "pretrain_config.json", "tokenizer.json", "training_state.json"])
        let expected = try JSONDecoder().decode(Logits.self, from: Data(contentsOf: URL(fileURLWithPath: fixture("dapt_logits.json"))))
        let model = try LlamaModel(directory: dir)
        assertClose(try logits(of: model, tokens: expected.tokens), expected.logits, "dapt checkpoint in transformers")
        // Training changed the transformers model: the two logit sets differ.
        let original = try JSONDecoder().decode(Logits.self, from: Data(contentsOf: URL(fileURLWithPath: fixture("hf_logits.json"))))
        XCTAssertGreaterThan(zip(original.logits, expected.logits).map { abs($0 - $1) }.max() ?? 0, 1e-3)
    }

    /// Continued pretraining from the transformers model: loss goes down,
    /// and the checkpoint dapt writes has the tensors transformers wrote.
    func testTransformersModelContinuesTraining() throws {
        let hf = try fixture("hf")
        let model = try LlamaModel(directory: hf)
        var config = TrainerTests.config(run: try temporaryDirectory(self, prefix: "dapt-interop"), steps: 12)
        config.model.from = hf
        config.optimizer.lr = 1e-2
        // Held out for real: a seeded split of one corpus, no held-out document among the training ones.
        let source = TrainerTests.corpus()
        let split = splitHeldOut(documentCount: source.documentCount, fraction: 0.15, seed: config.data.seed)
        let train = DocumentSubset(base: source, indices: split.train), heldOut = DocumentSubset(base: source, indices: split.heldOut)
        XCTAssertGreaterThanOrEqual(heldOut.documentCount, 10)
        XCTAssertEqual(train.documentCount + heldOut.documentCount, source.documentCount)
        XCTAssertTrue(Set(split.train).isDisjoint(with: split.heldOut))
        XCTAssertTrue(try Self.sharedDocuments(train, heldOut).isEmpty, "held-out documents also in training")
        let trainer = try Trainer(config: config, model: model, train: train, heldOut: heldOut)
        let before = try XCTUnwrap(trainer.evaluate()).loss
        for _ in 0..<12 { try trainer.step() }
        let after = try XCTUnwrap(trainer.evaluate()).loss
        XCTAssertLessThan(after, before - 0.3, "\(before) → \(after)")
        let dir = try trainer.saveCheckpoint()
        let written = try SafeTensorsFile(path: dir + "/model.safetensors")
        let original = try SafeTensorsFile(path: hf + "/model.safetensors")
        XCTAssertEqual(written.entries.map(\.name), original.entries.map(\.name))
        XCTAssertEqual(written.entries.map(\.shape), original.entries.map(\.shape))
        XCTAssertEqual(written.entries.map(\.dtype), original.entries.map(\.dtype))
    }

    /// Token contents of `source`'s documents.
    static func contents(_ source: any DocumentSource) throws -> [[Int32]] {
        try (0..<source.documentCount).map { d in
            var tokens = [Int32](repeating: 0, count: source.documentLength(d))
            try tokens.withUnsafeMutableBufferPointer { try source.copyTokens(document: d, range: 0..<$0.count, into: $0.baseAddress!) }
            return tokens
        }
    }

    /// Documents of `heldOut` whose tokens equal a document of `train`.
    static func sharedDocuments(_ train: any DocumentSource, _ heldOut: any DocumentSource) throws -> [[Int32]] {
        let trained = Set(try contents(train))
        return try contents(heldOut).filter { trained.contains($0) }
    }

    /// The overlap check finds what the held-out set used to be: the first
    /// training documents again (the same seed).
    func testOverlapCheckFindsReusedDocuments() throws {
        XCTAssertEqual(try Self.sharedDocuments(TrainerTests.corpus(), TrainerTests.corpus(documents: 20)).count, 20)
    }

    /// The figures transformers computes for evaluation sequences
    /// (scripts/fixtures/eval_ppl_parity.py).
    struct PackedPerplexity: Decodable {
        struct Figures: Decodable { var loss: Double; var perplexity: Double; var unmasked_loss: Double }
        var sequence_length: Int; var batch_size: Int; var documents: [[Int32]]
        var sequences: Int; var tokens: Int; var left_out_tokens: Int; var pieces_per_sequence: [Int]
        var models: [String: Figures]
    }

    func relativeError(_ a: Double, _ b: Double) -> Double { abs(a - b) / abs(b) }

    /// `dapt eval ppl`'s library function on JSONL text and the dapt
    /// checkpoint, against transformers' mean token loss on the same packed
    /// sequences (several documents per sequence, positions restarting per
    /// document, no attention across documents, -100 at document ends).
    func testEvalPerplexityMatchesTransformersOnPackedDocuments() throws {
        let f = try JSONDecoder().decode(PackedPerplexity.self, from: Data(contentsOf: URL(fileURLWithPath: fixture("ppl/expected.json"))))
        let expected = try XCTUnwrap(f.models["dapt"])
        // The fixture packs several documents into a sequence, and without
        // document masking its loss differs by far more than the tolerance.
        XCTAssertGreaterThanOrEqual(f.pieces_per_sequence.max() ?? 0, 3)
        XCTAssertGreaterThan(relativeError(expected.unmasked_loss, expected.loss), 20 * 1e-4)

        var request = PerplexityRequest(model: try fixture("dapt"), input: try fixture("ppl/eval.jsonl"))
        request.sequenceLength = f.sequence_length
        request.batchSize = f.batch_size
        let report = try PerplexityEvaluation.run(request)
        print("eval ppl parity, packed documents: loss \(report.loss) vs transformers \(expected.loss), relative error \(relativeError(report.loss, expected.loss))")
        XCTAssertLessThan(relativeError(report.loss, expected.loss), 1e-4, "loss \(report.loss) vs transformers \(expected.loss)")
        XCTAssertLessThan(relativeError(report.perplexity, expected.perplexity), 1e-4, "perplexity \(report.perplexity) vs \(expected.perplexity)")
        XCTAssertEqual(report.tokens, f.tokens)
        XCTAssertEqual(report.sequences, f.sequences)
        XCTAssertEqual(report.documents, f.documents.count)
        XCTAssertEqual(report.leftOutTokens, f.left_out_tokens)

        // Same documents (dapt's tokenizer and `tokenizers` agree) and the same packing.
        let documents = try documentsFromJSONL(path: try fixture("ppl/eval.jsonl"), tokenizer: try BPETokenizer.load(path: try fixture("dapt/tokenizer.json")))
        XCTAssertEqual(try Self.contents(documents), f.documents)
        let order = try PackedSequenceOrder(source: documents, sequenceLength: f.sequence_length, seed: 0, shuffle: false)
        let packed = try PackedBatch(order: order, firstSequence: 0, count: f.sequences)
        let pieces = (0..<f.sequences).map { row in Int(packed.documentIds[(row * f.sequence_length)..<((row + 1) * f.sequence_length)].max()!) + 1 }
        XCTAssertEqual(pieces, f.pieces_per_sequence)

        // The model transformers made, on the same token ids.
        let hf = try XCTUnwrap(f.models["hf"])
        let result = try evaluatePerplexity(model: try LlamaModel(directory: try fixture("hf")), source: InMemoryDocuments(documents: f.documents),
                                            sequenceLength: f.sequence_length, batchSize: f.batch_size)
        XCTAssertLessThan(relativeError(result.loss, hf.loss), 1e-4, "transformers model: \(result.loss) vs \(hf.loss)")
        XCTAssertEqual(result.tokens, f.tokens)
    }

    /// The committed checkpoint resumes: state, moments and weights come back.
    /// eval ppl's JSONL input: blank lines are skipped and counted, as in
    /// every stage, and the documents are those of the same file without them.
    func testBlankLinesInEvalInputAreSkippedAndCounted() throws {
        let dir = try temporaryDirectory(self)
        let tokenizer = try BPETokenizer.load(path: try fixture("dapt/tokenizer.json"))
        try writeLines(["{\"text\": \"a claim\"}", "{\"text\": \"a device\"}"], to: dir + "/plain.jsonl")
        try writeLines(["", "{\"text\": \"a claim\"}", "  ", "{\"text\": \"a device\"}"], to: dir + "/blank.jsonl")
        let plain = try documentsFromJSONL(path: dir + "/plain.jsonl", tokenizer: tokenizer)
        let read = try documentsAndCountsFromJSONL(path: dir + "/blank.jsonl", tokenizer: tokenizer)
        XCTAssertEqual(read.counts, JSONLText.Counts(lines: 4, blank: 2, rejected: 0))
        XCTAssertEqual(read.documents.documentCount, 2)
        XCTAssertEqual(try Self.contents(read.documents), try Self.contents(plain))
        try writeLines(["{\"text\": \"a claim\"}", "{\"txt\": 1}"], to: dir + "/bad.jsonl")
        XCTAssertThrowsError(try documentsFromJSONL(path: dir + "/bad.jsonl", tokenizer: tokenizer)) {
            XCTAssertEqual("\($0)", "\(dir)/bad.jsonl:2: text: missing")
        }
    }

    func testCommittedCheckpointResumes() throws {
        let dir = try fixture("dapt")
        let model = try LlamaModel(directory: try fixture("hf"))
        var config = TrainerTests.config(run: try temporaryDirectory(self, prefix: "dapt-interop-r"), steps: 6)
        config.data.sequenceLength = 32
        let trainer = try Trainer(config: config, model: model, train: TrainerTests.corpus(), heldOut: nil)
        try trainer.restore(checkpoint: dir)
        XCTAssertEqual(trainer.state.step, 3)
        XCTAssertEqual(trainer.state.appliedSteps, 3)
        XCTAssertEqual(trainer.optimizer.stepCount, 3)
        XCTAssertEqual(trainer.state.nextSequence, 6)
        let saved = try SafeTensorsFile(path: dir + "/model.safetensors")
        let name = "model.layers.1.mlp.down_proj.weight"
        XCTAssertEqual(try saved.floats(name), trainer.master.values(named: name))
        XCTAssertGreaterThan(trainer.optimizer.secondMoment.max() ?? 0, 0)
    }
}
