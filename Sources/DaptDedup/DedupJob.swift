import DaptCluster
import DaptCore
import Foundation

extension ExchangeOutbox: ExchangeOutboxLike {
    func appendRecord(_ record: [UInt8], to peer: Int) throws { try append(record, to: peer) }
}

/// One rank's part of a dedup run. See docs/dedup.md for the design; in short:
///
/// 0. check: shards of prepared corpora are checked against their manifests;
/// 1. scan: each rank reads its byte range of the inputs, checks every record,
///    recomputes its hash and computes its MinHash signature;
/// 2. lines: ranks learn each other's line counts, which gives every record
///    its global input position; rejects and hash mismatches go to rank 0;
/// 3. exact: (sha1, record) entries go to the owner of the hash; identical
///    texts after the first are marked (one more round tells their holders);
/// 4. bands: (band key, record) entries go to the owner of the key
///    (mix64(key) mod N); owners sort them and pair records that share a key;
/// 5. verify: each pair goes to the holder of its first record, which sends
///    that record's signature (or text) to the holder of the second, which
///    keeps the pair if the similarity reaches the threshold;
/// 6. clusters: verified pairs are gathered on every rank; union–find gives
///    the components and the representative (longest text, then earliest);
/// 7. representatives send their id and signature to their members' holders,
///    which note `duplicate_of` and the similarity;
/// 8. sample: the share of kept records that still have a near duplicate;
/// 9. write: every rank writes its kept and removed records into its region
///    of the shared output files, in input order.
///
/// Each phase is a function of the earlier phases' results (DedupScan.swift,
/// DedupLines.swift, DedupRounds.swift, DedupVerify.swift,
/// DedupClusters.swift, DedupSample.swift, DedupOutputs.swift). Every
/// decision is made on sorted data keyed by input position, so the output is
/// the same for any number of ranks.
public final class DedupJob {
    public let config: DedupConfig
    public let inputs: [String]
    /// Shards of prepared corpora among `inputs`, checked against their manifests first.
    public let shards: [PreparedShard]
    public let outputDirectory: String
    let context: DedupContext

    public private(set) var report = DedupReport()

    public init(config: DedupConfig, inputs: [String], shards: [PreparedShard] = [], outputDirectory: String,
                communicator: any Communicator, exchange: RecordExchange, sink: any EventSink = SilentSink()) {
        self.config = config
        self.inputs = inputs
        self.shards = shards
        self.outputDirectory = outputDirectory
        context = DedupContext(config: config, inputs: inputs, writeDirectory: OutputPublisher(directory: outputDirectory).staging,
                               communicator: communicator, exchange: exchange, sink: sink)
    }

    /// The line re-reader used by verification (for tests).
    var fetcher: LineFetcher { context.fetcher }

    public static let outputNames = (kept: "kept.jsonl", removed: "removed.jsonl", clusters: "clusters.jsonl",
                                     rejects: "rejects.jsonl", report: "report.json", pairs: "pairs.jsonl")

    /// Runs every phase; returns the report (complete on rank 0).
    @discardableResult
    public func run() throws -> DedupReport {
        guard !inputs.isEmpty else { throw DedupError.noInput }
        let comm = context.comm
        let started = monotonicSeconds()
        var timings: [(String, Double)] = []
        func timed<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
            let t = monotonicSeconds()
            let r = try body()
            timings.append((name, monotonicSeconds() - t))
            return r
        }
        report.noteSettings(config)
        try timed("check") { try context.checkShards(shards) }
        // Everything is written into the staging folder and published as a unit at the end.
        let publisher = OutputPublisher(directory: outputDirectory)
        try publisher.begin(comm)
        let plan = try InputPlan(paths: inputs)

        let scanned = try timed("scan") { try context.scan(plan) }
        let accounted = try timed("lines") { try context.settleLines(plan, consume scanned) }
        report.noteLines(plan, accounted.counts)
        let records = accounted.records, layout = accounted.layout
        let exact = try timed("exact") { try context.exactRound(records, layout) }
        report.exactDuplicates = exact.duplicates
        let candidates = try timed("bands") { try context.bandRound(records, skipping: exact.isDuplicate) }
        let verified = try timed("verify") { try context.verifyRounds(candidates, records, layout) }
        report.noteVerification(verified)
        let graph = try timed("clusters") { try context.clusterPairs(exact.pairs + verified.pairs) }
        report.noteClusters(graph)
        let removals = try timed("representatives") { try context.representativeRound(graph, records, layout) }
        report.noteRemovals(removals)
        report.remaining = try timed("sample") { try context.sampleRemaining(records, layout, removals) }
        try timed("write") {
            try context.writeOutputs(plan, records, removals, graph, expected: (records: report.records, kept: report.kept, removed: report.removed))
        }

        // Timings and memory: the slowest rank's figures.
        for (name, t) in timings { report.seconds[name] = try comm.allReduce(t, op: .max) }
        report.totalSeconds = try comm.allReduce(monotonicSeconds() - started, op: .max)
        report.peakResidentBytesMax = Int(try comm.allReduce(Int64(peakResidentBytes()), op: .max))
        if comm.rank == 0 {
            let w = try FileWriter(path: publisher.path(Self.outputNames.report))
            try w.write(ReportJSON.encode(report))
            try w.commit()
        }
        try publisher.finish(stage: "dedup", comm)
        return report
    }
}

/// What every phase of a dedup run shares: the settings derived from the
/// config, the rank's place in the job and the line re-reader.
struct DedupContext {
    let config: DedupConfig
    /// Where the outputs are written: the staging folder, published when the run ends.
    let writeDirectory: String
    let comm: any Communicator
    let exchange: RecordExchange
    let sink: any EventSink

    let threshold: Double
    let numPerm: Int
    let hasher: MinHasher
    let bandKeys: BandKeys
    let seed: UInt64
    let rule: VerificationRule
    /// Re-reads lines for exact comparisons: each input opened once, reads in offset order.
    let fetcher: LineFetcher

    init(config: DedupConfig, inputs: [String], writeDirectory: String,
         communicator: any Communicator, exchange: RecordExchange, sink: any EventSink) {
        self.config = config
        self.writeDirectory = writeDirectory
        comm = communicator
        self.exchange = exchange
        self.sink = sink
        threshold = config.effectiveThreshold
        numPerm = config.numPerm
        seed = UInt64(bitPattern: Int64(config.seed))
        hasher = MinHasher(numPerm: config.numPerm, seed: seed)
        bandKeys = BandKeys(bands: config.banding.bands, rows: config.banding.rows, seed: seed)
        rule = config.verificationRule
        fetcher = LineFetcher(paths: inputs)
    }

    var rank: Int { comm.rank }
    var size: Int { comm.size }

    /// Checks the shards against their manifests, shard k on rank k mod N;
    /// every rank fails with the first mismatch in input order.
    func checkShards(_ shards: [PreparedShard]) throws {
        guard !shards.isEmpty else { return }
        var problem: (position: Int, message: String)?
        for k in stride(from: rank, to: shards.count, by: size) {
            do { try shards[k].verify() } catch {
                problem = (k, "\(error)")
                break
            }
        }
        let first = try firstInInputOrder(problem, comm)
        // Every rank has the same error: the command line prints it once (rank 0).
        if let first { throw SharedError(message: DedupError.inputCheck(first).description) }
    }
}

extension DedupReport {
    mutating func noteSettings(_ config: DedupConfig) {
        let banding = config.banding
        threshold = config.effectiveThreshold
        preset = config.preset
        shingleSize = config.shingleSize
        numPerm = config.numPerm
        bands = banding.bands
        rows = banding.rows
        candidateProbabilityAtThreshold = banding.recallAtThreshold
        verify = config.verify
    }

    mutating func noteLines(_ plan: InputPlan, _ counts: LineCounts) {
        ranks = counts.ranks
        inputs = plan.paths
        inputBytes = plan.totalBytes
        lines = counts.lines
        blankLines = counts.blankLines
        rejected = counts.rejected
        hashMismatches = counts.hashMismatches
        records = counts.records
        firstHashMismatches = counts.firstHashMismatches
    }

    mutating func noteVerification(_ verified: VerifiedPairs) {
        candidatePairs = verified.candidatePairs
        verifiedPairs = verified.verifiedPairs
        exactComparisons = verified.exactComparisons
    }

    mutating func noteClusters(_ graph: ClusterGraph) {
        clusters = graph.components.count
        recordsInClusters = graph.nodes.count
        removed = graph.nodes.count - graph.components.count
        largestCluster = graph.components.map(\.members.count).max() ?? 0
        var sizes: [Int: Int] = [:]
        for c in graph.components { sizes[c.members.count, default: 0] += 1 }
        clusterSizes = sizes.keys.sorted().map { [$0, sizes[$0]!] }
    }

    mutating func noteRemovals(_ removals: Removals) {
        removedExact = removals.identicalTotal
        removedNear = removed - removedExact
        kept = records - removed
        duplicateRateBefore = records > 0 ? Double(removed) / Double(records) : 0
        recordsWithDuplicateBefore = records > 0 ? Double(recordsInClusters) / Double(records) : 0
    }
}
