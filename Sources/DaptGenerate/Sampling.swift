import DaptCore
import Foundation

/// The `generate:` section: how the next token is chosen and when
/// generation ends.
public struct GenerationConfig: StageConfig, Equatable {
    /// 0: greedy (the most likely token); otherwise logits are divided by it before sampling.
    public var temperature = 0.0
    /// Keep only the k most likely tokens (ties at the k-th value kept); 0: all.
    public var topK = 0
    /// Keep the most likely tokens whose probabilities first reach this sum; 1: all.
    public var topP = 1.0
    /// With the record id, seeds each record's sampler: the same seed gives
    /// the same output whatever the batching or the number of ranks.
    public var seed: UInt64 = 0
    public var maxNewTokens = 128
    /// Text that ends a record (cut before it).
    public var stop: [String] = []
    /// Prompts decoded together.
    public var batchSize = 8
    /// Start each prompt with <|bos|>.
    public var addBos = false

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case temperature, topK = "top_k", topP = "top_p", seed, maxNewTokens = "max_new_tokens", stop, batchSize = "batch_size", addBos = "add_bos"
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self), d = GenerationConfig()
        temperature = try c.value(.temperature, default: d.temperature)
        topK = try c.value(.topK, default: d.topK)
        topP = try c.value(.topP, default: d.topP)
        seed = try c.value(.seed, default: d.seed)
        maxNewTokens = try c.value(.maxNewTokens, default: d.maxNewTokens)
        stop = try c.value(.stop, default: d.stop)
        batchSize = try c.value(.batchSize, default: d.batchSize)
        addBos = try c.value(.addBos, default: d.addBos)
    }

    public func validate() throws {
        try Check.nonNegative(temperature, "temperature")
        try Check.finite(temperature, "temperature")
        try Check.nonNegative(topK, "top_k")
        if !(topP > 0 && topP <= 1) { throw ConfigError(field: "top_p", reason: "must be in (0, 1], got \(topP)") }
        try Check.positive(maxNewTokens, "max_new_tokens")
        try Check.positive(batchSize, "batch_size")
        if let i = stop.firstIndex(where: \.isEmpty) { throw ConfigError(field: "stop[\(i)]", reason: "an empty stop string would end every record at once") }
    }
}

/// Chooses tokens from logits: greedy, or temperature / top-k / top-p
/// sampling from a seeded generator, among the tokens a mask allows.
public struct TokenSampler: Sendable {
    public let config: GenerationConfig
    private var rng: SplitMix64

    /// A sampler for one record: its stream depends on the seed and the
    /// record's id only.
    public init(config: GenerationConfig, recordKey: String) {
        self.config = config
        rng = SplitMix64(seed: StableHash.mix64(config.seed ^ StableHash.xxh64(recordKey)))
    }

    /// The next token from `logits` [vocab]; only tokens `mask` allows
    /// (at least one must be allowed).
    public mutating func next(logits: [Float], mask: TokenMask? = nil) -> Int {
        var scores = logits
        if let mask {
            precondition(mask.count == scores.count, "mask of \(mask.count) tokens for \(scores.count) logits")
            for i in scores.indices where !mask[i] { scores[i] = -.infinity }
        }
        if config.temperature == 0 { return Self.argmax(scores) }
        let kept = Self.candidates(scores, temperature: config.temperature, topK: config.topK, topP: config.topP)
        // Inverse CDF in ascending token order: one uniform draw per token.
        let u = Double(rng.next() >> 11) * 0x1.0p-53
        var cumulative = 0.0
        for (token, p) in kept {
            cumulative += p
            if u < cumulative { return token }
        }
        return kept.last!.token
    }

    /// The first index of the largest value (as torch.argmax).
    public static func argmax(_ scores: [Float]) -> Int {
        var best = 0
        for i in scores.indices where scores[i] > scores[best] { best = i }
        return best
    }

    /// The tokens sampling may choose and their renormalised probabilities,
    /// in ascending token order: softmax(scores / temperature), then the
    /// top-k (every token tying the k-th value kept), then the smallest set of
    /// most likely tokens whose probability reaches `topP` (ties broken by
    /// token id). Tokens at -inf are never kept.
    public static func candidates(_ scores: [Float], temperature: Double, topK: Int, topP: Double) -> [(token: Int, p: Double)] {
        var order = scores.indices.filter { scores[$0] > -.infinity }
        precondition(!order.isEmpty, "no token is allowed")
        order.sort { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        if topK > 0, order.count > topK {
            let threshold = scores[order[topK - 1]]
            order = order.filter { scores[$0] >= threshold }
        }
        let top = Double(scores[order[0]])
        var weights = order.map { Foundation.exp((Double(scores[$0]) - top) / temperature) }
        var total = weights.reduce(0, +)
        if topP < 1 {
            var cumulative = 0.0, keep = 0
            while keep < order.count {
                cumulative += weights[keep] / total
                keep += 1
                if cumulative >= topP { break }
            }
            order.removeSubrange(keep...)
            weights.removeSubrange(keep...)
            total = weights.reduce(0, +)
        }
        return zip(order, weights).map { (token: $0, p: $1 / total) }.sorted { $0.token < $1.token }
    }
}
