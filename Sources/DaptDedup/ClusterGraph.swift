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
    static func encode(_ r: DedupReport) -> [UInt8] {
        func num(_ x: Double) -> String { x.isFinite ? "\(x)" : "null" }
        var s = "{\n"
        var fields: [(String, String)] = [
            ("ranks", "\(r.ranks)"),
            ("inputs", "[" + r.inputs.map(JSONWriter.quoted).joined(separator: ",") + "]"),
            ("input_bytes", "\(r.inputBytes)"),
            ("lines", "\(r.lines)"), ("blank_lines", "\(r.blankLines)"), ("rejected", "\(r.rejected)"),
            ("records", "\(r.records)"), ("hash_mismatches", "\(r.hashMismatches)"),
            ("exact_duplicates", "\(r.exactDuplicates)"),
            ("candidate_pairs", "\(r.candidatePairs)"), ("verified_pairs", "\(r.verifiedPairs)"),
            ("exact_comparisons", "\(r.exactComparisons)"),
            ("clusters", "\(r.clusters)"), ("largest_cluster", "\(r.largestCluster)"),
            ("cluster_sizes", "[" + r.clusterSizes.map { "[\($0[0]),\($0[1])]" }.joined(separator: ",") + "]"),
            ("records_in_clusters", "\(r.recordsInClusters)"),
            ("removed", "\(r.removed)"), ("removed_exact", "\(r.removedExact)"), ("removed_near", "\(r.removedNear)"),
            ("kept", "\(r.kept)"),
            ("duplicate_rate_before", num(r.duplicateRateBefore)),
            ("records_with_duplicate_before", num(r.recordsWithDuplicateBefore)),
            ("remaining_duplicate_rate", "{\"sampled\":\(r.remaining.sampled),\"with_duplicate\":\(r.remaining.withDuplicate),\"rate\":\(num(r.remaining.rate)),\"lower\":\(num(r.remaining.lower)),\"upper\":\(num(r.remaining.upper)),\"confidence\":\(num(r.remaining.confidence)),\"method\":\"wilson\"}"),
            ("threshold", num(r.threshold)), ("preset", JSONWriter.quoted(r.preset)), ("shingle_size", "\(r.shingleSize)"),
            ("num_perm", "\(r.numPerm)"), ("bands", "\(r.bands)"), ("rows", "\(r.rows)"),
            ("candidate_probability_at_threshold", num(r.candidateProbabilityAtThreshold)),
            ("verify", JSONWriter.quoted(r.verify)),
            ("first_hash_mismatches", "[" + r.firstHashMismatches.map(JSONWriter.quoted).joined(separator: ",") + "]"),
        ]
        fields.append(("seconds", "{" + r.seconds.keys.sorted().map { "\(JSONWriter.quoted($0)):\(num(r.seconds[$0]!))" }.joined(separator: ",") + "}"))
        fields.append(("total_seconds", num(r.totalSeconds)))
        fields.append(("peak_resident_bytes_max", "\(r.peakResidentBytesMax)"))
        s += fields.map { "  \(JSONWriter.quoted($0.0)): \($0.1)" }.joined(separator: ",\n")
        s += "\n}\n"
        return Array(s.utf8)
    }
}
