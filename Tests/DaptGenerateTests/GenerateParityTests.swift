import DaptCore
import DaptGenerate
import DaptModel
import XCTest

/// Greedy generation against transformers' `generate` (fixtures from
/// scripts/fixtures/generate_parity.py).
final class GenerateParityTests: XCTestCase {
    func greedyConfig(batchSize: Int, maxNewTokens: Int) -> GenerationConfig {
        var config = GenerationConfig()
        config.batchSize = batchSize
        config.maxNewTokens = maxNewTokens
        return config
    }

    /// Same prompt ids, same tokens generated, token for token; prompts of
    /// different lengths decoded in one batch (dynamic NTK scaling depends on
    /// the batch's longest position, so its prompts go one at a time as in the fixture).
    func testGreedyEqualsTransformersGenerate() throws {
        let tokenizer = try GenerateFixtures.tokenizer()
        for variant in GenerateFixtures.variants {
            let expected = try GenerateFixtures.expected(variant)
            let model = try GenerateFixtures.model(variant)
            let generator = try Generator(model: model, tokenizer: tokenizer,
                                          config: greedyConfig(batchSize: variant == "dynamic" ? 1 : 4, maxNewTokens: expected.maxNewTokens))
            var prompts: [GenerationPrompt] = []
            for (i, p) in expected.prompts.enumerated() {
                XCTAssertEqual(tokenizer.encode(p.text).map { Int32($0) }, p.promptIds, "\(variant) prompt \(i): tokenizer")
                prompts.append(GenerationPrompt(key: "\(i)", tokens: p.promptIds))
            }
            let generations = try generator.generate(prompts)
            for (i, (g, p)) in zip(generations, expected.prompts).enumerated() {
                let endsWithEos = p.generatedIds.last == expected.eosTokenId
                XCTAssertEqual(g.tokens, endsWithEos ? Array(p.generatedIds.dropLast()) : p.generatedIds, "\(variant) prompt \(i)")
                XCTAssertEqual(g.finishReason, endsWithEos ? .eos : .length)
                XCTAssertEqual(g.promptTokens, p.promptIds.count)
                XCTAssertEqual(g.text, String(decoding: try tokenizer.decode(g.tokens.map { UInt32($0) }), as: UTF8.self))
            }
        }
    }

    /// Every step's logits (prefill, then cached steps) equal `generate`'s.
    func testStepLogitsEqualTransformers() throws {
        for variant in GenerateFixtures.variants {
            let expected = try GenerateFixtures.expected(variant)
            let model = try GenerateFixtures.model(variant)
            var worst = 0.0
            for (i, p) in expected.prompts.enumerated() {
                let reference = try GenerateFixtures.expectedLogits(variant, prompt: i)
                let V = model.config.vocabSize
                let cache = KVCache(config: model.config, batch: 1, capacity: p.promptIds.count + p.generatedIds.count)
                var logits = try model.decode([p.promptIds], cache: cache)[0]
                for (step, token) in p.generatedIds.enumerated() {
                    let error = GenerateFixtures.relativeError(logits, Array(reference[(step * V)..<((step + 1) * V)]))
                    worst = max(worst, error)
                    XCTAssertLessThanOrEqual(error, 1e-4, "\(variant) prompt \(i) step \(step)")
                    logits = try model.decode([[token]], cache: cache)[0]
                }
            }
            print("\(variant): worst relative logit error vs transformers generate \(worst)")
        }
    }

    /// Greedy decoding by recomputing the whole sequence at every step picks
    /// the same tokens as the cached generator.
    func testGreedyTokensEqualFullRecomputation() throws {
        let model = try GenerateFixtures.model("yarn"), tokenizer = try GenerateFixtures.tokenizer()
        let prompt = try GenerateFixtures.expected("yarn").prompts[1].promptIds
        let generator = try Generator(model: model, tokenizer: tokenizer, config: greedyConfig(batchSize: 1, maxNewTokens: 16))
        let cached = try generator.generate([GenerationPrompt(key: "p", tokens: prompt)])[0].tokens
        var sequence = prompt
        for _ in 0..<16 {
            let T = sequence.count, V = model.config.vocabSize
            let logits = try model.logits(try TokenBatch(batchSize: 1, seqLen: T, tokens: sequence, targets: [Int32](repeating: ignoreIndex, count: T)))
            var last = Array(logits[((T - 1) * V)..<(T * V)])
            for id in tokenizer.vocabSize..<V { last[id] = -.infinity }
            sequence.append(Int32(TokenSampler.argmax(last)))
        }
        XCTAssertEqual(cached, Array(sequence[prompt.count...]))
    }
}
