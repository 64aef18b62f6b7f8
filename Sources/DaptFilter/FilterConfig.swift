import DaptCore

/// Cuts for the records a rule matches: a tail is cut by quantile of the
/// group's perplexities, or by an absolute perplexity when one is given.
public struct FilterCut: Codable, Equatable, Sendable {
    /// Records above this quantile of their group's perplexity are removed (`high`); 1: none.
    public var highQuantile: Double? = nil
    /// Records below this quantile are removed (`low`); 0: none.
    public var lowQuantile: Double? = nil
    /// Records with a perplexity above this are removed (instead of `high_quantile`).
    public var maxPerplexity: Double? = nil
    /// Records with a perplexity below this are removed (instead of `low_quantile`).
    public var minPerplexity: Double? = nil

    public init(highQuantile: Double? = nil, lowQuantile: Double? = nil, maxPerplexity: Double? = nil, minPerplexity: Double? = nil) {
        self.highQuantile = highQuantile; self.lowQuantile = lowQuantile
        self.maxPerplexity = maxPerplexity; self.minPerplexity = minPerplexity
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case highQuantile = "high_quantile", lowQuantile = "low_quantile"
        case maxPerplexity = "max_perplexity", minPerplexity = "min_perplexity"
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        try self.init(fieldsOf: decoder, defaults: FilterCut())
    }

    /// The cut's keys where they stand among a section's other keys (a rule, the
    /// `filter:` section itself); absent ones keep `defaults`. The caller checks
    /// for unknown keys, knowing its own.
    init(fieldsOf decoder: Decoder, defaults: FilterCut) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        highQuantile = try c.decodeIfPresent(Double.self, forKey: .highQuantile) ?? defaults.highQuantile
        lowQuantile = try c.decodeIfPresent(Double.self, forKey: .lowQuantile) ?? defaults.lowQuantile
        maxPerplexity = try c.decodeIfPresent(Double.self, forKey: .maxPerplexity) ?? defaults.maxPerplexity
        minPerplexity = try c.decodeIfPresent(Double.self, forKey: .minPerplexity) ?? defaults.minPerplexity
    }

    static let keyNames = CodingKeys.allCases.map(\.stringValue)

    /// `other`'s settings where it has them, ours elsewhere.
    func overridden(by other: FilterCut) -> FilterCut {
        FilterCut(highQuantile: other.highQuantile ?? highQuantile, lowQuantile: other.lowQuantile ?? lowQuantile,
                  maxPerplexity: other.maxPerplexity ?? maxPerplexity, minPerplexity: other.minPerplexity ?? minPerplexity)
    }

    func validate(_ prefix: String) throws {
        if let q = highQuantile { try Check.finite(q, prefix + "high_quantile"); try Check.inRange(q, 0...1, prefix + "high_quantile") }
        if let q = lowQuantile { try Check.finite(q, prefix + "low_quantile"); try Check.inRange(q, 0...1, prefix + "low_quantile") }
        if let h = highQuantile, let l = lowQuantile, l > h {
            throw ConfigError(field: prefix + "low_quantile", reason: "must not exceed high_quantile (\(h)), got \(l)")
        }
        if let p = maxPerplexity { try Check.positive(p, prefix + "max_perplexity") }
        if let p = minPerplexity { try Check.nonNegative(p, prefix + "min_perplexity") }
        if let h = maxPerplexity, let l = minPerplexity, l > h {
            throw ConfigError(field: prefix + "min_perplexity", reason: "must not exceed max_perplexity (\(h)), got \(l)")
        }
    }
}

/// A cut for one bucket, one language, or one bucket of one language.
public struct FilterRule: Codable, Equatable, Sendable {
    /// The bucket (0-based, shortest first) it applies to; nil: every bucket.
    public var bucket: Int? = nil
    /// The `lang` it applies to; nil: every language.
    public var lang: String? = nil
    public var cut = FilterCut()

    public init(bucket: Int? = nil, lang: String? = nil, cut: FilterCut) {
        self.bucket = bucket; self.lang = lang; self.cut = cut
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case bucket, lang
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(known: CodingKeys.allCases.map(\.stringValue) + FilterCut.keyNames)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        bucket = try c.decodeIfPresent(Int.self, forKey: .bucket)
        lang = try c.decodeIfPresent(String.self, forKey: .lang)
        cut = try FilterCut(fieldsOf: decoder, defaults: FilterCut())
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(bucket, forKey: .bucket)
        try c.encodeIfPresent(lang, forKey: .lang)
        try cut.encode(to: encoder)
    }
}

/// The `filter:` section. Every key is optional.
public struct FilterConfig: StageConfig, Equatable {
    /// The field holding the text to score.
    public var textField = "text"
    /// The field naming a record's language; records without it form the language "".
    public var langField = "lang"
    /// Tokens per scored sequence: short records are packed into rows of this length, long ones
    /// scored in windows of it. 0: the model's positions (at most 512).
    public var window = 0
    /// Tokens shared by consecutive windows of a long record: each window after the first scores
    /// only its tokens past the overlap, so every token is scored once with at least `overlap`
    /// tokens of context. nil: a quarter of the window.
    public var overlap: Int? = nil
    /// Rows per forward pass.
    public var batchSize = 8
    /// Start each record with the tokenizer's `<|bos|>` so its first token is scored too.
    public var addBos = false
    /// Length buckets by quantiles of the records' token counts (when `bucket_edges` is empty).
    public var buckets = 4
    /// Token-count edges between buckets, increasing: [64, 256] makes buckets <64, 64..<256, >=256.
    public var bucketEdges: [Int] = []
    /// Whether quantile cuts are taken per `lang` within each bucket (rules naming a `lang` need it).
    public var byLang = true
    /// The cut of every bucket, unless a rule says otherwise.
    public var cut = FilterCut(highQuantile: 0.95, lowQuantile: 0.02)
    /// Per bucket and/or language overrides, applied in order (later ones win).
    public var rules: [FilterRule] = []
    /// Also write scores.jsonl: each scored record's place, tokens, perplexity and bucket.
    public var writeScores = false
    /// Any bad record is fatal.
    public var strict = false

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case window, overlap, buckets, rules, strict
        case textField = "text_field", langField = "lang_field", batchSize = "batch_size", addBos = "add_bos"
        case bucketEdges = "bucket_edges", byLang = "by_lang"
        case writeScores = "write_scores"
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(known: CodingKeys.allCases.map(\.stringValue) + FilterCut.keyNames)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = FilterConfig()
        textField = try c.value(.textField, default: d.textField)
        langField = try c.value(.langField, default: d.langField)
        window = try c.value(.window, default: d.window)
        overlap = try c.decodeIfPresent(Int.self, forKey: .overlap)
        batchSize = try c.value(.batchSize, default: d.batchSize)
        addBos = try c.value(.addBos, default: d.addBos)
        buckets = try c.value(.buckets, default: d.buckets)
        bucketEdges = try c.value(.bucketEdges, default: d.bucketEdges)
        byLang = try c.value(.byLang, default: d.byLang)
        cut = try FilterCut(fieldsOf: decoder, defaults: d.cut)
        rules = try c.value(.rules, default: d.rules)
        writeScores = try c.value(.writeScores, default: d.writeScores)
        strict = try c.value(.strict, default: d.strict)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(textField, forKey: .textField)
        try c.encode(langField, forKey: .langField)
        try c.encode(window, forKey: .window)
        try c.encodeIfPresent(overlap, forKey: .overlap)
        try c.encode(batchSize, forKey: .batchSize)
        try c.encode(addBos, forKey: .addBos)
        try c.encode(buckets, forKey: .buckets)
        try c.encode(bucketEdges, forKey: .bucketEdges)
        try c.encode(byLang, forKey: .byLang)
        try c.encode(rules, forKey: .rules)
        try c.encode(writeScores, forKey: .writeScores)
        try c.encode(strict, forKey: .strict)
        try cut.encode(to: encoder)
    }

    public func validate() throws {
        if textField.isEmpty { throw ConfigError(field: "text_field", reason: "must not be empty") }
        try Check.nonNegative(window, "window")
        if window != 0 { try Check.inRange(window, 2...65536, "window") }
        if let overlap { try Check.nonNegative(overlap, "overlap") }
        if window != 0, let overlap, overlap >= window { throw ConfigError(field: "overlap", reason: "must be less than window (\(window)), got \(overlap)") }
        try Check.inRange(batchSize, 1...4096, "batch_size")
        try Check.inRange(buckets, 1...1000, "buckets")
        for (i, e) in bucketEdges.enumerated() {
            if e <= 0 { throw ConfigError(field: "bucket_edges[\(i)]", reason: "must be > 0, got \(e)") }
            if i > 0 && e <= bucketEdges[i - 1] {
                throw ConfigError(field: "bucket_edges[\(i)]", reason: "must be greater than the edge before it (\(bucketEdges[i - 1])), got \(e)")
            }
        }
        try cut.validate("")
        for (i, rule) in rules.enumerated() {
            if let b = rule.bucket {
                let count = bucketEdges.isEmpty ? buckets : bucketEdges.count + 1
                try Check.inRange(b, 0...(count - 1), "rules[\(i)].bucket")
            }
            if rule.lang != nil && !byLang {
                throw ConfigError(field: "rules[\(i)].lang", reason: "a rule for a language applies only with by_lang: true (without it the groups have no language)")
            }
            try rule.cut.validate("rules[\(i)].")
        }
    }

    /// The window and overlap in effect for a model with `positions` positions.
    public func scoringWindow(positions: Int) -> (window: Int, overlap: Int) {
        let w = max(window == 0 ? min(positions, 512) : window, 2)
        return (w, overlap ?? w / 4)
    }

    /// The cut in effect for a bucket and language: the section's, then each matching rule in order.
    public func cut(bucket: Int, lang: String) -> FilterCut {
        var c = cut
        for rule in rules where (rule.bucket == nil || rule.bucket == bucket) && (rule.lang == nil || rule.lang == lang) {
            c = c.overridden(by: rule.cut)
        }
        return c
    }
}
