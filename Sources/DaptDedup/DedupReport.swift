import DaptCore

/// What a dedup run did; rank 0 writes it as `report.json` and prints `summary`.
public struct DedupReport: Codable, Sendable, Equatable {
    public struct Remaining: Codable, Sendable, Equatable {
        /// Kept records sampled, and how many of them still have a kept record
        /// with estimated Jaccard ≥ threshold.
        public var sampled = 0
        public var withDuplicate = 0
        public var rate = 0.0
        public var lower = 0.0
        public var upper = 0.0
        public var confidence = 0.95
    }

    public var ranks = 0
    public var inputs: [String] = []
    public var lines = 0
    public var blankLines = 0
    public var rejected = 0
    /// Valid records (lines − blank − rejected).
    public var records = 0
    public var hashMismatches = 0
    /// Records whose NFC text equals an earlier record's.
    public var exactDuplicates = 0
    public var candidatePairs = 0
    /// Candidate pairs at or above the threshold.
    public var verifiedPairs = 0
    /// Candidate pairs whose verification needed the exact Jaccard (all of them
    /// with `exact`, those near the threshold with `hybrid`, none with `estimated`).
    public var exactComparisons = 0
    public var clusters = 0
    /// Cluster size → number of clusters, sizes ascending.
    public var clusterSizes: [[Int]] = []
    public var largestCluster = 0
    public var recordsInClusters = 0
    public var removed = 0
    public var removedExact = 0
    public var removedNear = 0
    public var kept = 0
    /// removed / records: the share of records that were redundant.
    public var duplicateRateBefore = 0.0
    /// records in clusters / records: the share that had any duplicate.
    public var recordsWithDuplicateBefore = 0.0
    /// Sampled estimate over the kept set.
    public var remaining = Remaining()
    public var threshold = 0.0
    public var preset = ""
    public var shingleSize = 0
    public var numPerm = 0
    public var bands = 0
    public var rows = 0
    public var candidateProbabilityAtThreshold = 0.0
    public var verify = ""
    public var seconds: [String: Double] = [:]
    public var totalSeconds = 0.0
    public var inputBytes = 0
    public var peakResidentBytesMax = 0
    public var firstHashMismatches: [String] = []

    public init() {}

    /// The one-screen text summary.
    public var summary: String {
        func pct(_ x: Double) -> String { String(Double(Int((x * 10000).rounded())) / 100) + "%" }
        var lines: [String] = []
        lines.append("dedup: \(records) records in (\(self.lines) lines, \(blankLines) blank, \(rejected) rejected), \(ranks) rank(s)")
        lines.append("  hash mismatches:      \(hashMismatches)")
        lines.append("  exact duplicates:     \(exactDuplicates)")
        lines.append("  LSH:                  \(bands) bands × \(rows) rows of \(numPerm), P(candidate | J=\(threshold)) = \(String(Double(Int((candidateProbabilityAtThreshold * 1000).rounded())) / 1000))")
        lines.append("  candidate pairs:      \(candidatePairs), verified (\(verify)): \(verifiedPairs), \(exactComparisons) by exact Jaccard")
        lines.append("  clusters:             \(clusters) (largest \(largestCluster)); sizes: " +
                     clusterSizes.prefix(8).map { "\($0[0])×\($0[1])" }.joined(separator: " ") + (clusterSizes.count > 8 ? " …" : ""))
        lines.append("  removed:              \(removed) (\(removedExact) identical, \(removedNear) near)")
        lines.append("  kept:                 \(kept)")
        lines.append("  duplicate rate before: \(pct(duplicateRateBefore)) removable, \(pct(recordsWithDuplicateBefore)) of records had a duplicate")
        lines.append("  remaining (sampled):  \(remaining.withDuplicate)/\(remaining.sampled) = \(pct(remaining.rate)), \(Int(remaining.confidence * 100))% CI [\(pct(remaining.lower)), \(pct(remaining.upper))]")
        lines.append("  counts:               in \(records) = kept \(kept) + removed \(removed): \(records == kept + removed ? "ok" : "MISMATCH")")
        return lines.joined(separator: "\n")
    }
}

public enum DedupError: Error, CustomStringConvertible {
    case strict(String)
    case countMismatch(records: Int, kept: Int, removed: Int)
    case noInput
    /// An input does not match what its manifest says of it.
    case inputCheck(String)

    public var description: String {
        switch self {
        case .strict(let m): return "\(m) (strict mode)"
        case .countMismatch(let r, let k, let m): return "dedup: counts do not add up: \(r) records in, \(k) kept + \(m) removed"
        case .noInput: return "dedup: no input files"
        case .inputCheck(let m): return "dedup: \(m)"
        }
    }
}
