import DaptCore
import DaptGenerate
import XCTest

final class SamplingTests: XCTestCase {
    /// Logits whose softmax is exactly the given probabilities.
    func logits(_ probabilities: [Double]) -> [Float] { probabilities.map { Float(Foundation.log($0)) } }

    func testTopKKeepsExactlyTheKMostLikelyAndTheirTies() {
        let scores: [Float] = [1.0, 3.0, 2.0, 3.0, 0.5, 2.0]
        XCTAssertEqual(TokenSampler.candidates(scores, temperature: 1, topK: 1, topP: 1).map(\.token), [1, 3], "both tokens tying the top value")
        XCTAssertEqual(TokenSampler.candidates(scores, temperature: 1, topK: 3, topP: 1).map(\.token), [1, 2, 3, 5], "the 3rd value ties token 5")
        XCTAssertEqual(TokenSampler.candidates(scores, temperature: 1, topK: 5, topP: 1).map(\.token), [0, 1, 2, 3, 5])
        XCTAssertEqual(TokenSampler.candidates(scores, temperature: 1, topK: 0, topP: 1).map(\.token), [0, 1, 2, 3, 4, 5])
    }

    func testTopPKeepsTheSmallestSetReachingP() {
        let scores = logits([0.05, 0.5, 0.15, 0.3])
        XCTAssertEqual(TokenSampler.candidates(scores, temperature: 1, topK: 0, topP: 0.4).map(\.token), [1])
        XCTAssertEqual(TokenSampler.candidates(scores, temperature: 1, topK: 0, topP: 0.75).map(\.token), [1, 3])
        XCTAssertEqual(TokenSampler.candidates(scores, temperature: 1, topK: 0, topP: 0.9).map(\.token), [1, 2, 3])
        XCTAssertEqual(TokenSampler.candidates(scores, temperature: 1, topK: 0, topP: 0.97).map(\.token), [0, 1, 2, 3])
        // Renormalised over the kept set.
        let kept = TokenSampler.candidates(scores, temperature: 1, topK: 0, topP: 0.75)
        XCTAssertEqual(kept[0].p, 0.5 / 0.8, accuracy: 1e-6)
        XCTAssertEqual(kept[1].p, 0.3 / 0.8, accuracy: 1e-6)
        // top-k applies first and top-p sees its renormalised mass: token 1 holds 0.5/0.8 = 0.625 of it.
        XCTAssertEqual(TokenSampler.candidates(scores, temperature: 1, topK: 2, topP: 0.6).map(\.token), [1])
        XCTAssertEqual(TokenSampler.candidates(scores, temperature: 1, topK: 2, topP: 0.65).map(\.token), [1, 3])
    }

    func testTemperatureSharpensAndFlattens() {
        let scores = logits([0.6, 0.4])
        let cold = TokenSampler.candidates(scores, temperature: 0.5, topK: 0, topP: 1)
        XCTAssertEqual(cold[0].p, 0.36 / 0.52, accuracy: 1e-6)
        let hot = TokenSampler.candidates(scores, temperature: 2, topK: 0, topP: 1)
        XCTAssertEqual(hot[0].p, 0.6.squareRoot() / (0.6.squareRoot() + 0.4.squareRoot()), accuracy: 1e-6)
    }

    func testMaskedTokensAreNeverChosen() {
        var config = GenerationConfig()
        config.temperature = 1
        var sampler = TokenSampler(config: config, recordKey: "1")
        var mask = TokenMask(count: 6)
        mask[2] = true; mask[4] = true
        let scores: [Float] = [9, 9, 0, 9, 0.1, 9]
        var seen = Set<Int>()
        for _ in 0..<200 { seen.insert(sampler.next(logits: scores, mask: mask)) }
        XCTAssertEqual(seen, [2, 4])
        var greedy = TokenSampler(config: GenerationConfig(), recordKey: "1")
        XCTAssertEqual(greedy.next(logits: scores, mask: mask), 4)
        XCTAssertEqual(greedy.next(logits: scores), 0, "first of the tied maxima")
    }

    func testSeededSamplingIsReproducibleAndSeedsDiffer() {
        var config = GenerationConfig()
        config.temperature = 1
        let scores: [Float] = (0..<50).map { Float($0 % 7) * 0.3 }
        func draws(seed: UInt64, key: String) -> [Int] {
            var c = config; c.seed = seed
            var sampler = TokenSampler(config: c, recordKey: key)
            return (0..<64).map { _ in sampler.next(logits: scores) }
        }
        XCTAssertEqual(draws(seed: 1, key: "a"), draws(seed: 1, key: "a"))
        XCTAssertNotEqual(draws(seed: 1, key: "a"), draws(seed: 2, key: "a"))
        XCTAssertNotEqual(draws(seed: 1, key: "a"), draws(seed: 1, key: "b"), "records draw independent streams")
    }

    func testSamplingFollowsTheDistribution() {
        var config = GenerationConfig()
        config.temperature = 1
        var sampler = TokenSampler(config: config, recordKey: "x")
        let scores = logits([0.1, 0.6, 0.3])
        var counts = [0, 0, 0]
        for _ in 0..<6000 { counts[sampler.next(logits: scores)] += 1 }
        XCTAssertEqual(Double(counts[0]) / 6000, 0.1, accuracy: 0.02)
        XCTAssertEqual(Double(counts[1]) / 6000, 0.6, accuracy: 0.03)
        XCTAssertEqual(Double(counts[2]) / 6000, 0.3, accuracy: 0.03)
    }

    func testConfigValidationNamesTheField() {
        var config = GenerationConfig()
        config.topP = 0
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("top_p"), "\($0)") }
        config = GenerationConfig(); config.stop = ["x", ""]
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("stop[1]"), "\($0)") }
        config = GenerationConfig(); config.maxNewTokens = 0
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("max_new_tokens"), "\($0)") }
    }
}
