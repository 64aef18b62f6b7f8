import DaptCore

/// The `tokenizer:` section of the dapt config.
public struct TokenizerConfig: StageConfig, Equatable {
    /// Target vocabulary size, special tokens included.
    public var vocabSize = 32000
    /// Pairs seen fewer times than this are never merged.
    public var minFrequency = 2
    /// Distinct pre-tokens kept while counting (rarest dropped beyond it; bounds training memory).
    public var maxWords = 8_000_000
    public var specialTokens = SpecialTokens.defaults
    /// dapt (GPT-4 style, Han runs apart), gpt4 or gpt2.
    public var preTokenizer = "dapt"
    /// The JSONL field holding the text.
    public var textField = "text"
    /// Encoding to shards:
    public var addBos = false
    public var addEos = true
    /// Input lines per shard (shards are assigned to ranks round-robin).
    public var shardLines = 4096
    /// Pre-tokens kept in each encoder's cache.
    public var cacheEntries = 1 << 16
    /// A bad record stops the run (true) or goes to the shard's rejects file (false).
    public var strict = true

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case vocabSize = "vocab_size", minFrequency = "min_frequency", maxWords = "max_words", specialTokens = "special_tokens"
        case preTokenizer = "pre_tokenizer", textField = "text_field", addBos = "add_bos", addEos = "add_eos"
        case shardLines = "shard_lines", cacheEntries = "cache_entries", strict
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = TokenizerConfig()
        vocabSize = try c.value(.vocabSize, default: d.vocabSize)
        minFrequency = try c.value(.minFrequency, default: d.minFrequency)
        maxWords = try c.value(.maxWords, default: d.maxWords)
        specialTokens = try c.value(.specialTokens, default: d.specialTokens)
        preTokenizer = try c.value(.preTokenizer, default: d.preTokenizer)
        textField = try c.value(.textField, default: d.textField)
        addBos = try c.value(.addBos, default: d.addBos)
        addEos = try c.value(.addEos, default: d.addEos)
        shardLines = try c.value(.shardLines, default: d.shardLines)
        cacheEntries = try c.value(.cacheEntries, default: d.cacheEntries)
        strict = try c.value(.strict, default: d.strict)
    }

    public func validate() throws {
        try Check.inRange(vocabSize, (256 + specialTokens.count)...(1 << 31), "vocab_size")
        try Check.positive(minFrequency, "min_frequency")
        try Check.inRange(maxWords, 1000...(1 << 40), "max_words")
        try Check.oneOf(preTokenizer, PreTokenizerKind.allCases.map(\.rawValue), "pre_tokenizer")
        if textField.isEmpty { throw ConfigError(field: "text_field", reason: "must not be empty") }
        try Check.positive(shardLines, "shard_lines")
        try Check.positive(cacheEntries, "cache_entries")
        for (i, t) in specialTokens.enumerated() {
            if t.isEmpty { throw ConfigError(field: "special_tokens[\(i)]", reason: "must not be empty") }
            if specialTokens[..<i].contains(t) { throw ConfigError(field: "special_tokens[\(i)]", reason: "\"\(t)\" is listed twice") }
        }
        for required in [SpecialTokens.bos, SpecialTokens.eos, SpecialTokens.pad] where !specialTokens.contains(required) {
            throw ConfigError(field: "special_tokens", reason: "must include \(required)")
        }
    }

    public var preTokenizerKind: PreTokenizerKind { PreTokenizerKind(rawValue: preTokenizer) ?? .dapt }
}
