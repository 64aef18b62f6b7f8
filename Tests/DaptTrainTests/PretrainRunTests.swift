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

final class PretrainRunTests: XCTestCase {
    func metricsSteps(_ run: String) throws -> [Int] { try MetricsLog.read(path: run + "/metrics.jsonl").map(\.step) }

    /// The whole run through the library: shards in, checkpoint, metrics and
    /// plot out; perplexity of the run directory resolves to its newest checkpoint.
    func testRunAndPerplexityThroughTheLibrary() throws {
        let fixture = try ShardFixture(self)
        let run = fixture.directory + "/run"
        try PretrainRun.run(config: fixture.config(run: run, steps: 4), stopAfter: 2)
        XCTAssertEqual(try CheckpointStore.list(root: run).map(\.step), [2])
        try PretrainRun.run(config: fixture.config(run: run, steps: 4), resume: run)
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
}
