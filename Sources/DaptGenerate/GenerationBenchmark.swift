import DaptCore
import DaptModel
import Foundation

/// Prefill and decoding speed of the KV-cache decoder on synthetic prompts
/// (the benchmark's transformers peer builds the same ids).
public enum GenerationBenchmark {
    public struct Timing: Equatable, Sendable {
        public var batch: Int, promptLength: Int, newTokens: Int
        /// Median seconds of the prefill of every prompt, and of the decoding steps after it.
        public var prefillSeconds: Double, decodeSeconds: Double
        public var prefillTokensPerSecond: Double { Double(batch * promptLength) / prefillSeconds }
        public var decodeTokensPerSecond: Double { Double(batch * newTokens) / decodeSeconds }
        public var stepSeconds: Double { decodeSeconds / Double(newTokens) }
    }

    /// Token t of prompt b is (b·131 + t·7919 + 13) mod vocab.
    public static func prompts(batch: Int, length: Int, vocab: Int) -> [[Int32]] {
        (0..<batch).map { b in (0..<length).map { Int32((b * 131 + $0 * 7919 + 13) % vocab) } }
    }

    /// Greedy decoding of `newTokens` tokens after the prompts, `repeats`
    /// times after one warm-up; medians.
    public static func measure(model: LlamaModel, batch: Int, promptLength: Int, newTokens: Int, repeats: Int) throws -> Timing {
        let prompts = prompts(batch: batch, length: promptLength, vocab: model.config.vocabSize)
        var prefill: [Double] = [], decode: [Double] = []
        for run in 0...max(repeats, 1) {
            let cache = KVCache(config: model.config, batch: batch, capacity: promptLength + newTokens)
            let start = monotonicSeconds()
            var logits = try model.decode(prompts, cache: cache)
            let prefilled = monotonicSeconds()
            for _ in 0..<newTokens {
                logits = try model.decode(logits.map { [Int32(TokenSampler.argmax($0))] }, cache: cache)
            }
            let end = monotonicSeconds()
            if run > 0 { prefill.append(prefilled - start); decode.append(end - prefilled) }
        }
        let median = Statistics.median
        return Timing(batch: batch, promptLength: promptLength, newTokens: newTokens, prefillSeconds: median(prefill), decodeSeconds: median(decode))
    }
}
