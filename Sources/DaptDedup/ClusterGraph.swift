import DaptCore
/// A verified duplicate pair of records, by global input position (a < b).
public struct VerifiedPair: Sendable, Equatable {
    public var a: Int64
    public var b: Int64
    public var lengthA: Int32
    public var lengthB: Int32
    public var similarity: Float
    /// From the exact (identical NFC text) stage.
    public var exact: Bool

    public init(a: Int64, b: Int64, lengthA: Int32, lengthB: Int32, similarity: Float, exact: Bool) {
        self.a = a; self.b = b; self.lengthA = lengthA; self.lengthB = lengthB; self.similarity = similarity; self.exact = exact
    }

    /// Four Int64s, for gathering.
    public var encoded: [Int64] {
        [a, b, Int64(lengthA) << 32 | Int64(UInt32(bitPattern: lengthB)),
         Int64(similarity.bitPattern) << 1 | (exact ? 1 : 0)]
    }

    public init<C: Collection>(encoded e: C) where C.Element == Int64 {
        let v = Array(e)
        a = v[0]; b = v[1]
        lengthA = Int32(truncatingIfNeeded: v[2] >> 32)
        lengthB = Int32(bitPattern: UInt32(truncatingIfNeeded: v[2]))
        similarity = Float(bitPattern: UInt32(truncatingIfNeeded: v[3] >> 1))
        exact = v[3] & 1 == 1
    }
}

/// Connected components of verified pairs (union–find) and each one's
/// representative: the longest text (in Unicode scalars of its NFC form),
/// ties broken by the earliest input position. Built from the pairs sorted
/// by position, so every rank builds the same graph.
public struct ClusterGraph: Sendable {
    public struct Component: Sendable, Equatable {
        public var representative: Int64
        /// Every member, the representative included, by input position.
        public var members: [Int64]
    }

    /// The pairs, sorted by (a, b).
    public let pairs: [VerifiedPair]
    /// Every record in some pair, sorted.
    public let nodes: [Int64]
    /// Components ordered by their representative's position.
    public let components: [Component]

    public init(pairs unsorted: [VerifiedPair]) {
        pairs = unsorted.sorted { ($0.a, $0.b) < ($1.a, $1.b) }
        var all: [Int64] = []
        all.reserveCapacity(pairs.count * 2)
        for p in pairs { all.append(p.a); all.append(p.b) }
        all.sort()
        var distinct: [Int64] = []
        for g in all where distinct.last != g { distinct.append(g) }
        nodes = distinct
        var lengths = [Int32](repeating: 0, count: distinct.count)
        var sets = UnionFind(count: distinct.count)
        func index(_ g: Int64) -> Int {
            var lo = 0, hi = distinct.count
            while lo < hi { let mid = (lo + hi) / 2; if distinct[mid] < g { lo = mid + 1 } else { hi = mid } }
            return lo
        }
        for p in pairs {
            let x = index(p.a), y = index(p.b)
            lengths[x] = p.lengthA; lengths[y] = p.lengthB
            sets.union(x, y)
        }
        // Best member per root: longest, then earliest (nodes are in position order).
        var best = [Int](repeating: -1, count: distinct.count)
        for x in 0..<distinct.count {
            let root = sets.find(x)
            if best[root] < 0 || lengths[x] > lengths[best[root]] { best[root] = x }
        }
        var byRoot: [[Int64]] = Array(repeating: [], count: distinct.count)
        for x in 0..<distinct.count { byRoot[sets.find(x)].append(distinct[x]) }
        var components: [Component] = []
        for root in 0..<distinct.count where !byRoot[root].isEmpty {
            components.append(Component(representative: distinct[best[root]], members: byRoot[root]))
        }
        components.sort { $0.representative < $1.representative }
        self.components = components
    }

    public func contains(_ g: Int64) -> Bool {
        var lo = 0, hi = nodes.count
        while lo < hi { let mid = (lo + hi) / 2; if nodes[mid] < g { lo = mid + 1 } else { hi = mid } }
        return lo < nodes.count && nodes[lo] == g
    }
}

/// `report.json`: keys in a fixed order, numbers printed the same on every run.
enum ReportJSON {
    static func value(_ r: DedupReport) -> JSONValue {
        func num(_ x: Double) -> JSONValue { x.isFinite ? .float(x) : .null }
        func int(_ x: Int) -> JSONValue { .integer(x) }
        let remaining: JSONValue = .object([
            ("sampled", int(r.remaining.sampled)), ("with_duplicate", int(r.remaining.withDuplicate)), ("rate", num(r.remaining.rate)),
            ("lower", num(r.remaining.lower)), ("upper", num(r.remaining.upper)), ("confidence", num(r.remaining.confidence)),
            ("method", .string("wilson")),
        ])
        return .object([
            ("ranks", int(r.ranks)),
            ("inputs", .array(r.inputs.map { .string($0) })),
            ("input_bytes", int(r.inputBytes)),
            ("lines", int(r.lines)), ("blank_lines", int(r.blankLines)), ("rejected", int(r.rejected)),
            ("records", int(r.records)), ("hash_mismatches", int(r.hashMismatches)),
            ("exact_duplicates", int(r.exactDuplicates)),
            ("candidate_pairs", int(r.candidatePairs)), ("verified_pairs", int(r.verifiedPairs)),
            ("exact_comparisons", int(r.exactComparisons)),
            ("clusters", int(r.clusters)), ("largest_cluster", int(r.largestCluster)),
            ("cluster_sizes", .array(r.clusterSizes.map { .array([int($0[0]), int($0[1])]) })),
            ("records_in_clusters", int(r.recordsInClusters)),
            ("removed", int(r.removed)), ("removed_exact", int(r.removedExact)), ("removed_near", int(r.removedNear)),
            ("kept", int(r.kept)),
            ("duplicate_rate_before", num(r.duplicateRateBefore)),
            ("records_with_duplicate_before", num(r.recordsWithDuplicateBefore)),
            ("remaining_duplicate_rate", remaining),
            ("threshold", num(r.threshold)), ("preset", .string(r.preset)), ("shingle_size", int(r.shingleSize)),
            ("num_perm", int(r.numPerm)), ("bands", int(r.bands)), ("rows", int(r.rows)),
            ("candidate_probability_at_threshold", num(r.candidateProbabilityAtThreshold)),
            ("verify", .string(r.verify)),
            ("first_hash_mismatches", .array(r.firstHashMismatches.map { .string($0) })),
            ("seconds", .object(r.seconds.keys.sorted().map { ($0, num(r.seconds[$0]!)) })),
            ("total_seconds", num(r.totalSeconds)),
            ("peak_resident_bytes_max", int(r.peakResidentBytesMax)),
        ])
    }

    static func encode(_ r: DedupReport) -> [UInt8] {
        var out: [UInt8] = []
        value(r).write(to: &out, indent: 2)
        out.append(0x0A)
        return out
    }
}
