import DaptCore

/// The `dedup:` section. Every key is optional; see configs/dedup.yaml and
/// docs/dedup.md for what each one does.
public struct DedupConfig: StageConfig, Equatable {
    /// Kind of text; picks the Jaccard threshold unless `threshold` is set.
    public var preset: String = "patent"
    /// Jaccard similarity at or above which two records are duplicates (nil: the preset's).
    public var threshold: Double? = nil
    /// Characters per shingle (after normalisation).
    public var shingleSize: Int = 5
    /// MinHash permutations per signature (a multiple of 8).
    public var numPerm: Int = 128
    /// LSH bands and rows per band; both 0: chosen from the threshold (see `LSHBanding.choose`).
    public var bands: Int = 0
    public var rows: Int = 0
    /// When choosing bands × rows: the candidate probability wanted at the threshold.
    public var targetRecall: Double = 0.99
    /// How candidate pairs are verified: `hybrid` (the signature estimate when it is far from the
    /// threshold, the exact Jaccard of the shingle sets near it), `estimated` or `exact`.
    public var verify: String = "hybrid"
    /// Hybrid verification: estimates within this many standard errors of the threshold are checked exactly.
    public var hybridSigmas: Double = 3
    /// Seed of the shingle hash and the permutations; same seed, same output.
    public var seed: Int = 42
    /// In an LSH bucket each record is paired with at most this many following records.
    public var bucketWindow: Int = 64
    /// Kept records sampled to estimate the remaining duplicate rate.
    public var sampleSize: Int = 1000
    /// Confidence level of the Wilson interval of that estimate.
    public var confidence: Double = 0.95
    /// Recompute `hash` and report records whose stored hash differs.
    public var checkHash: Bool = true
    /// Also write `pairs.jsonl`: every verified pair with its similarity.
    public var writePairs: Bool = false
    /// Any bad record or hash mismatch is fatal.
    public var strict: Bool = false

    public init() {}

    /// Jaccard thresholds of the presets.
    public static let presets: [(name: String, threshold: Double)] = [
        ("patent", 0.85), ("web", 0.8), ("book", 0.85), ("code", 0.85),
    ]

    public var effectiveThreshold: Double {
        threshold ?? Self.presets.first { $0.name == preset }?.threshold ?? 0.85
    }

    /// Bands and rows in effect: the configured ones, or the chosen ones.
    /// The verification rule in effect.
    public var verificationRule: VerificationRule {
        VerificationRule(mode: verify, threshold: effectiveThreshold, numPerm: numPerm, sigmas: hybridSigmas)
    }

    public var banding: LSHBanding.Choice {
        if bands > 0 && rows > 0 {
            return LSHBanding.Choice(bands: bands, rows: rows, threshold: effectiveThreshold)
        }
        return LSHBanding.choose(threshold: effectiveThreshold, numPerm: numPerm, targetRecall: targetRecall)
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case preset, threshold, bands, rows, verify, seed, confidence, strict
        case shingleSize = "shingle_size"
        case numPerm = "num_perm"
        case targetRecall = "target_recall"
        case bucketWindow = "bucket_window"
        case sampleSize = "sample_size"
        case checkHash = "check_hash"
        case writePairs = "write_pairs"
        case hybridSigmas = "hybrid_sigmas"
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = DedupConfig()
        preset = try c.value(.preset, default: d.preset)
        threshold = try c.decodeIfPresent(Double.self, forKey: .threshold)
        shingleSize = try c.value(.shingleSize, default: d.shingleSize)
        numPerm = try c.value(.numPerm, default: d.numPerm)
        bands = try c.value(.bands, default: d.bands)
        rows = try c.value(.rows, default: d.rows)
        targetRecall = try c.value(.targetRecall, default: d.targetRecall)
        verify = try c.value(.verify, default: d.verify)
        hybridSigmas = try c.value(.hybridSigmas, default: d.hybridSigmas)
        seed = try c.value(.seed, default: d.seed)
        bucketWindow = try c.value(.bucketWindow, default: d.bucketWindow)
        sampleSize = try c.value(.sampleSize, default: d.sampleSize)
        confidence = try c.value(.confidence, default: d.confidence)
        checkHash = try c.value(.checkHash, default: d.checkHash)
        writePairs = try c.value(.writePairs, default: d.writePairs)
        strict = try c.value(.strict, default: d.strict)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(preset, forKey: .preset)
        try c.encodeIfPresent(threshold, forKey: .threshold)
        try c.encode(shingleSize, forKey: .shingleSize)
        try c.encode(numPerm, forKey: .numPerm)
        try c.encode(bands, forKey: .bands)
        try c.encode(rows, forKey: .rows)
        try c.encode(targetRecall, forKey: .targetRecall)
        try c.encode(verify, forKey: .verify)
        try c.encode(hybridSigmas, forKey: .hybridSigmas)
        try c.encode(seed, forKey: .seed)
        try c.encode(bucketWindow, forKey: .bucketWindow)
        try c.encode(sampleSize, forKey: .sampleSize)
        try c.encode(confidence, forKey: .confidence)
        try c.encode(checkHash, forKey: .checkHash)
        try c.encode(writePairs, forKey: .writePairs)
        try c.encode(strict, forKey: .strict)
    }

    public func validate() throws {
        try Check.oneOf(preset, Self.presets.map(\.name), "preset")
        if let threshold { try Check.inRange(threshold, 0.05...1.0, "threshold") }
        try Check.inRange(shingleSize, 1...64, "shingle_size")
        try Check.inRange(numPerm, 8...1024, "num_perm")
        if numPerm % 8 != 0 { throw ConfigError(field: "num_perm", reason: "must be a multiple of 8, got \(numPerm)") }
        try Check.nonNegative(bands, "bands")
        try Check.nonNegative(rows, "rows")
        if (bands == 0) != (rows == 0) {
            throw ConfigError(field: bands == 0 ? "bands" : "rows", reason: "set both bands and rows, or neither")
        }
        if bands * rows > numPerm {
            throw ConfigError(field: "bands", reason: "bands × rows = \(bands * rows) exceeds num_perm \(numPerm)")
        }
        try Check.inRange(targetRecall, 0.5...0.999999, "target_recall")
        try Check.oneOf(verify, ["hybrid", "estimated", "exact"], "verify")
        try Check.inRange(hybridSigmas, 0.0...20.0, "hybrid_sigmas")
        try Check.inRange(bucketWindow, 1...100_000, "bucket_window")
        try Check.inRange(sampleSize, 0...1_000_000, "sample_size")
        try Check.inRange(confidence, 0.5...0.9999, "confidence")
    }
}
