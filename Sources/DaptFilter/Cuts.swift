import DaptCore
import Foundation

/// Quantiles by linear interpolation between order statistics (NumPy's
/// default): q·(n−1) is the fractional index into the sorted values.
public enum Quantile {
    public static func of(sorted values: [Double], _ q: Double) -> Double {
        precondition(!values.isEmpty, "quantile of no values")
        let h = (Double(values.count) - 1) * min(max(q, 0), 1)
        let lo = Int(h.rounded(.down))
        let hi = min(lo + 1, values.count - 1)
        return values[lo] + (h - Double(lo)) * (values[hi] - values[lo])
    }
}

/// Length buckets by token count: bucket b holds counts in [edges[b−1], edges[b]).
public struct LengthBuckets: Equatable, Sendable {
    /// Increasing token-count edges between buckets (count − 1 of them).
    public let edges: [Int]

    public init(edges: [Int]) { self.edges = edges }

    /// Edges at the 1/n, 2/n, … quantiles of `counts` (rounded up), without
    /// repeats: a corpus of equal lengths has one bucket.
    public init(quantilesOf counts: [Int], buckets n: Int) {
        guard n > 1, !counts.isEmpty else { self.edges = []; return }
        let sorted = counts.map(Double.init).sorted()
        var edges: [Int] = []
        for i in 1..<n {
            let e = Int(Quantile.of(sorted: sorted, Double(i) / Double(n)).rounded(.up))
            // An edge at or below the smallest count would leave its bucket empty.
            if e > Int(sorted[0]), edges.last.map({ e > $0 }) ?? true { edges.append(e) }
        }
        self.edges = edges
    }

    public var count: Int { edges.count + 1 }

    public func bucket(of tokens: Int) -> Int {
        var lo = 0, hi = edges.count
        while lo < hi { let mid = (lo + hi) / 2; if edges[mid] <= tokens { lo = mid + 1 } else { hi = mid } }
        return lo
    }

    /// [lower, upper) token counts of bucket b (upper nil: unbounded).
    public func range(of b: Int) -> (lower: Int, upper: Int?) {
        (b == 0 ? 0 : edges[b - 1], b < edges.count ? edges[b] : nil)
    }
}

/// Why a record is removed.
public enum RemovalReason: String, Sendable, Equatable {
    case high, low
}

/// The thresholds of one group (a bucket, or a bucket of one language):
/// perplexities above `high` or below `low` are removed.
public struct GroupThresholds: Equatable, Sendable {
    public var high: Double?
    public var low: Double?

    public init(high: Double?, low: Double?) { self.high = high; self.low = low }

    /// From the group's perplexities (any order) and its cut; an absolute
    /// perplexity wins over a quantile.
    public init(perplexities: [Double], cut: FilterCut) {
        let sorted = perplexities.sorted()
        func quantile(_ q: Double?) -> Double? { q.flatMap { sorted.isEmpty ? nil : Quantile.of(sorted: sorted, $0) } }
        high = cut.maxPerplexity ?? quantile(cut.highQuantile)
        low = cut.minPerplexity ?? quantile(cut.lowQuantile)
    }

    public func decide(_ ppl: Double) -> RemovalReason? {
        if let high, ppl > high { return .high }
        if let low, ppl < low { return .low }
        return nil
    }
}

/// A scored record as the cuts see it.
public struct ScoredRecord: Equatable, Sendable {
    /// Tokens scored (the count buckets go by).
    public var tokens: Int
    /// Summed negative log-likelihood of those tokens (nats).
    public var nll: Double
    public var lang: String

    public init(tokens: Int, nll: Double, lang: String) { self.tokens = tokens; self.nll = nll; self.lang = lang }

    public var perplexity: Double { exp(nll / Double(max(tokens, 1))) }
}

/// The decisions for a whole corpus: each record's bucket and removal.
public struct FilterDecisions: Sendable {
    public struct Group: Sendable {
        public var bucket: Int
        public var lang: String
        public var cut: FilterCut
        public var thresholds: GroupThresholds
        /// Indices of the group's records.
        public var members: [Int]
    }

    public let buckets: LengthBuckets
    public let bucketOf: [Int]
    public let reasons: [RemovalReason?]
    /// Groups by bucket, then language.
    public let groups: [Group]

    public init(records: [ScoredRecord], config: FilterConfig) {
        let buckets = config.bucketEdges.isEmpty
            ? LengthBuckets(quantilesOf: records.map(\.tokens), buckets: config.buckets)
            : LengthBuckets(edges: config.bucketEdges)
        self.buckets = buckets
        bucketOf = records.map { buckets.bucket(of: $0.tokens) }
        var members: [String: [Int]] = [:]
        var keys: [(Int, String)] = []
        for (i, r) in records.enumerated() {
            let lang = config.byLang ? r.lang : ""
            let key = "\(bucketOf[i])\u{0}\(lang)"
            if members[key] == nil { keys.append((bucketOf[i], lang)) }
            members[key, default: []].append(i)
        }
        keys.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        var reasons = [RemovalReason?](repeating: nil, count: records.count)
        var groups: [Group] = []
        for (bucket, lang) in keys {
            let m = members["\(bucket)\u{0}\(lang)"]!
            // Without by_lang every group has the language "", so only rules without `lang` apply.
            let cut = config.cut(bucket: bucket, lang: lang)
            let thresholds = GroupThresholds(perplexities: m.map { records[$0].perplexity }, cut: cut)
            for i in m { reasons[i] = thresholds.decide(records[i].perplexity) }
            groups.append(Group(bucket: bucket, lang: lang, cut: cut, thresholds: thresholds, members: m))
        }
        self.reasons = reasons
        self.groups = groups
    }
}
