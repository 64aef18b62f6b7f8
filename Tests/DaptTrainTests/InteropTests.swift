import DaptCore
import DaptModel
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
        let trainer = try Trainer(config: config, model: model, train: TrainerTests.corpus(), heldOut: TrainerTests.corpus(documents: 20))
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

    /// The committed checkpoint resumes: state, moments and weights come back.
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
