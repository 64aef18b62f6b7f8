import DaptGenerate
import DaptModel
import XCTest

final class KVCacheTests: XCTestCase {
    /// Full recomputation: the whole sequence in one forward pass of the training path.
    func fullLogits(_ model: LlamaModel, _ tokens: [Int32]) throws -> [Float] {
        let batch = try TokenBatch(batchSize: 1, seqLen: tokens.count, tokens: tokens,
                                   targets: [Int32](repeating: ignoreIndex, count: tokens.count))
        return try model.logits(batch)
    }

    /// Three sequences of different lengths decoded together: prefill of
    /// their prompts, then one token per step, the shorter ones dropping out.
    /// Every step's logits equal those of the full forward pass at that position.
    func testCachedStepsEqualFullRecomputation() throws {
        for variant in ["gqa", "yarn"] {
            let model = try GenerateFixtures.model(variant)
            let V = model.config.vocabSize
            let expected = try GenerateFixtures.expected(variant)
            let sequences = expected.prompts.prefix(3).map { $0.promptIds + $0.generatedIds }
            let prompts = [5, 2, 9]
            let steps = [12, 20, 7]
            let cache = KVCache(config: model.config, batch: 3, capacity: 64)
            var logits = try model.decode((0..<3).map { Array(sequences[$0].prefix(prompts[$0])) }, cache: cache)
            var worst = 0.0
            let full = try sequences.map { try fullLogits(model, $0) }
            for step in 0...steps.max()! {
                for i in 0..<3 where step <= steps[i] {
                    let position = prompts[i] + step - 1
                    let reference = Array(full[i][(position * V)..<((position + 1) * V)])
                    let error = GenerateFixtures.relativeError(logits[i], reference)
                    worst = max(worst, error)
                    XCTAssertLessThanOrEqual(error, 1e-5, "\(variant) sequence \(i) step \(step)")
                }
                let next = (0..<3).map { i in step < steps[i] ? [sequences[i][prompts[i] + step]] : [] }
                if next.allSatisfy(\.isEmpty) { break }
                logits = try model.decode(next, cache: cache)
                for i in 0..<3 where step >= steps[i] { XCTAssertTrue(logits[i].isEmpty) }
            }
            XCTAssertEqual(cache.lengths, (0..<3).map { prompts[$0] + steps[$0] })
            print("\(variant): KV-cache vs full recomputation, worst relative logit error \(worst)")
        }
    }

    /// Feeding a sequence in chunks (a causal mask inside each chunk, after
    /// cached keys) gives the full pass's logits at every position.
    func testChunkedPrefillEqualsFullPass() throws {
        let model = try GenerateFixtures.model("gqa")
        let tokens = try GenerateFixtures.expected("gqa").prompts[2].promptIds
        let full = try fullLogits(model, tokens)
        let cache = KVCache(config: model.config, batch: 1, capacity: tokens.count)
        var chunked: [Float] = []
        for range in [0..<17, 17..<18, 18..<tokens.count] {
            chunked += try model.decode([Array(tokens[range])], cache: cache, allPositions: true)[0]
        }
        XCTAssertLessThanOrEqual(GenerateFixtures.relativeError(chunked, full), 1e-5)
    }

    /// The cache refuses tokens past its capacity and ids outside the vocabulary.
    func testDecodeRejectsOverflowAndBadTokens() throws {
        let model = try GenerateFixtures.model("gqa")
        let cache = KVCache(config: model.config, batch: 2, capacity: 4)
        XCTAssertThrowsError(try model.decode([[1, 2, 3], [4, 5, 6, 7, 8]], cache: cache)) {
            XCTAssertEqual($0 as? DecodeError, .capacityExceeded(sequence: 1, length: 5, capacity: 4))
        }
        XCTAssertEqual(cache.lengths, [0, 0], "nothing is appended by a refused call")
        XCTAssertThrowsError(try model.decode([[1], [Int32(model.config.vocabSize)]], cache: cache)) {
            XCTAssertEqual($0 as? DecodeError, .tokenOutOfRange(sequence: 1, index: 0, value: Int32(model.config.vocabSize), vocab: model.config.vocabSize))
        }
        XCTAssertThrowsError(try model.decode([[1]], cache: cache)) { XCTAssertEqual($0 as? DecodeError, .wrongBatch(expected: 2, found: 1)) }
    }
}
