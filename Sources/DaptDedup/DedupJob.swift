#if canImport(Glibc)
import Glibc
#endif
import DaptCluster
import DaptCore
import Foundation

extension ExchangeOutbox: ExchangeOutboxLike {
    func appendRecord(_ record: [UInt8], to peer: Int) throws { try append(record, to: peer) }
}

/// One rank's part of a dedup run. See docs/dedup.md for the design; in short:
///
/// 1. scan: each rank reads its byte range of the inputs, checks every record,
///    recomputes its hash and computes its MinHash signature;
/// 2. exact: (sha1, record) entries go to the owner of the hash; identical
///    texts after the first are marked (one more round tells their holders);
/// 3. bands: (band key, record) entries go to the owner of the key
///    (mix64(key) mod N); owners sort them and pair records that share a key;
/// 4. verify: each pair goes to the holder of its first record, which sends
///    that record's signature (or text) to the holder of the second, which
///    keeps the pair if the similarity reaches the threshold;
/// 5. clusters: verified pairs are gathered on every rank; union–find gives
///    the components and the representative (longest text, then earliest);
/// 6. representatives send their id and signature to their members' holders,
///    which note `duplicate_of` and the similarity;
/// 7. every rank writes its kept and removed records into its region of the
///    shared output files, in input order.
///
/// Every decision is made on sorted data keyed by input position, so the
/// output is the same for any number of ranks.
public final class DedupJob {
    public let config: DedupConfig
    public let inputs: [String]
    public let outputDirectory: String
    let comm: any Communicator
    let exchange: RecordExchange
    let sink: any EventSink

    let threshold: Double
    let numPerm: Int
    let banding: LSHBanding.Choice
    let hasher: MinHasher
    let bandKeys: BandKeys
    let seed: UInt64

    // Per local record (valid records only, in input order).
    var gidx: [Int64] = []
    var fileIndex: [Int32] = []
    var offset: [Int64] = []
    var lineLength: [Int32] = []
    var closingBrace: [Int32] = []
    var textLength: [Int32] = []
    var idStart: [Int] = []
    var idLength: [Int32] = []
    var idArena: [UInt8] = []
    var sha1: [UInt8] = []          // 20 bytes per record
    var signatures: [UInt32] = []   // numPerm per record
    var emptyShingles: [Bool] = []
    var exactDuplicate: [Bool] = []
    var removal: [Int32] = []       // index into removals, or -1
    var removals: [(repId: [UInt8], similarity: Double, identical: Bool)] = []

    // Line bookkeeping.
    var localLines = 0
    var localLinesPerFile: [Int] = []
    var lineBase: [Int64] = []      // per rank, plus the total at the end
    var fileLineBase: [Int] = []    // this rank's first line number per file (0-based)
    var pendingRejects: [(file: Int, fileLine: Int, problem: RecordProblem, line: [UInt8])] = []
    var pendingMismatches: [(file: Int, fileLine: Int, stored: String, computed: String)] = []
    var localLineOfRecord: [Int] = []  // line ordinal in file on this rank

    public private(set) var report = DedupReport()

    public init(config: DedupConfig, inputs: [String], outputDirectory: String,
                communicator: any Communicator, exchange: RecordExchange, sink: any EventSink = SilentSink()) {
        self.config = config
        self.inputs = inputs
        self.outputDirectory = outputDirectory
        self.comm = communicator
        self.exchange = exchange
        self.sink = sink
        threshold = config.effectiveThreshold
        numPerm = config.numPerm
        banding = config.banding
        seed = UInt64(bitPattern: Int64(config.seed))
        hasher = MinHasher(numPerm: config.numPerm, seed: seed)
        bandKeys = BandKeys(bands: banding.bands, rows: banding.rows, seed: seed)
    }

    var rank: Int { comm.rank }
    var size: Int { comm.size }

    public static let outputNames = (kept: "kept.jsonl", removed: "removed.jsonl", clusters: "clusters.jsonl",
                                     rejects: "rejects.jsonl", report: "report.json", pairs: "pairs.jsonl")

    /// Runs every phase; returns the report (complete on rank 0).
    @discardableResult
    public func run() throws -> DedupReport {
        guard !inputs.isEmpty else { throw DedupError.noInput }
        let started = monotonicSeconds()
        var timings: [(String, Double)] = []
        func timed<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
            let t = monotonicSeconds()
            let r = try body()
            timings.append((name, monotonicSeconds() - t))
            return r
        }
        report.threshold = threshold
        report.preset = config.preset
        report.shingleSize = config.shingleSize
        report.numPerm = numPerm
        report.bands = banding.bands
        report.rows = banding.rows
        report.candidateProbabilityAtThreshold = banding.recallAtThreshold
        report.verify = config.verify
        if rank == 0 { try FileSystem.makeDirectories(outputDirectory) }
        try comm.barrier()
        let plan = try InputPlan(paths: inputs)
        try timed("scan") { try scan(plan) }
        try timed("lines") { try settleLines(plan) }
        try timed("exact") { try exactRound() }
        let candidates = try timed("bands") { try bandRound() }
        let verified = try timed("verify") { try verifyRounds(candidates) }
        let graph = try timed("clusters") { try clusterPairs(verified) }
        try timed("representatives") { try representativeRound(graph) }
        try timed("sample") { try sampleRemaining() }
        try timed("write") { try writeOutputs(plan, graph) }

        // Timings and memory: the slowest rank's figures.
        for (name, t) in timings { report.seconds[name] = try comm.allReduce(t, op: .max) }
        report.totalSeconds = try comm.allReduce(monotonicSeconds() - started, op: .max)
        report.peakResidentBytesMax = Int(try comm.allReduce(Int64(peakResidentBytes()), op: .max))
        if rank == 0 {
            let encoder = ReportJSON.encode(report)
            let w = try FileWriter(path: "\(outputDirectory)/\(Self.outputNames.report)", atomic: true)
            try w.write(encoder)
            try w.commit()
        }
        return report
    }

    // MARK: scan

    func scan(_ plan: InputPlan) throws {
        var scanner = JSONLineScanner()
        var scalars: [UInt32] = []
        var shingles: [UInt64] = []
        localLinesPerFile = Array(repeating: 0, count: plan.paths.count)
        let checkHash = config.checkHash
        var nextProgress = 20_000
        for piece in plan.pieces(rank: rank, size: size) {
            try forEachLine(path: plan.paths[piece.file], start: piece.start, end: piece.end) { lineOffset, line in
                let fileLine = localLinesPerFile[piece.file]
                localLinesPerFile[piece.file] += 1
                let ordinal = localLines
                localLines += 1
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { report.blankLines += 1; return }
                let record: ScannedRecord
                do throws(RecordProblem) {
                    record = try scanner.scan(line)
                } catch {
                    pendingRejects.append((piece.file, fileLine, error, Array(line)))
                    return
                }
                // One pass normalises text that is already NFC (nearly all);
                // the rest is converted first and normalised again.
                var nfc = record.text
                var scalarCount = TextNormalizer.normalize(nfc, into: &scalars, requireQuickNFC: true)
                if scalarCount == nil {
                    nfc = nfc.precomposedStringWithCanonicalMapping
                    scalarCount = TextNormalizer.normalize(nfc, into: &scalars)
                }
                var digest = SHA1()
                digest.update(nfc)
                let hashBytes = digest.finalize()
                if checkHash, let stored = record.hash {
                    let computed = "sha1:" + Hex.encode(hashBytes)
                    if stored != computed { pendingMismatches.append((piece.file, fileLine, stored, computed)) }
                }
                gidx.append(Int64(ordinal))  // made global in settleLines
                localLineOfRecord.append(fileLine)
                fileIndex.append(Int32(piece.file))
                offset.append(Int64(lineOffset))
                lineLength.append(Int32(line.count))
                closingBrace.append(Int32(record.closingBrace))
                textLength.append(Int32(scalarCount!))
                idStart.append(idArena.count)
                idLength.append(Int32(record.idToken.count))
                idArena.append(contentsOf: UnsafeBufferPointer(rebasing: line[record.idToken]))
                sha1.append(contentsOf: hashBytes)
                Shingler.hashes(scalars, size: config.shingleSize, seed: seed, into: &shingles)
                emptyShingles.append(shingles.isEmpty)
                let base = signatures.count
                signatures.append(contentsOf: repeatElement(0, count: numPerm))
                signatures.withUnsafeMutableBufferPointer { all in
                    shingles.withUnsafeBufferPointer { s in
                        hasher.signature(of: s, into: UnsafeMutableBufferPointer(rebasing: all[base..<(base + numPerm)]))
                    }
                }
                if gidx.count >= nextProgress {
                    nextProgress += 20_000
                    sink.report(.progress(stage: "dedup", done: gidx.count, total: nil, unit: "records (rank 0)"))
                }
            }
        }
        exactDuplicate = Array(repeating: false, count: gidx.count)
        removal = Array(repeating: -1, count: gidx.count)
    }

    /// Global line numbers: ranks learn each other's line counts.
    func settleLines(_ plan: InputPlan) throws {
        let counts = try comm.allGatherV([Int64(localLines)] + localLinesPerFile.map { Int64($0) })
        lineBase = [0]
        for r in 0..<size { lineBase.append(lineBase[r] + counts[r][0]) }
        fileLineBase = (0..<plan.paths.count).map { f in (0..<rank).reduce(0) { $0 + Int(counts[$1][1 + f]) } }
        let base = lineBase[rank]
        for i in 0..<gidx.count { gidx[i] += base }
        report.ranks = size
        report.inputs = plan.paths
        report.inputBytes = plan.totalBytes
        report.lines = Int(lineBase[size])

        // Rejects and hash mismatches, with their line numbers, go to rank 0.
        var rejectLines: [UInt8] = []
        for r in pendingRejects {
            let lineNumber = fileLineBase[r.file] + r.fileLine + 1
            let error = InputError(file: plan.paths[r.file], line: lineNumber, field: r.problem.field, reason: r.problem.reason)
            var json = "{\"file\":\(JSONString.quote(plan.paths[r.file])),\"line\":\(lineNumber),"
            if let f = r.problem.field { json += "\"field\":\(JSONString.quote(f))," }
            json += "\"reason\":\(JSONString.quote(r.problem.reason)),\"error\":\(JSONString.quote(error.description)),"
            json += "\"record\":\(JSONString.quote(String(decoding: r.line, as: UTF8.self)))}\n"
            rejectLines += Array(json.utf8)
        }
        var mismatchLines: [UInt8] = []
        for m in pendingMismatches {
            let e = InputError(file: plan.paths[m.file], line: fileLineBase[m.file] + m.fileLine + 1, field: "hash",
                               reason: "stored \(m.stored) but the NFC text hashes to \(m.computed)")
            mismatchLines += Array((e.description + "\n").utf8)
        }
        report.rejected = Int(try comm.allReduce(Int64(pendingRejects.count), op: .sum))
        report.hashMismatches = Int(try comm.allReduce(Int64(pendingMismatches.count), op: .sum))
        report.blankLines = Int(try comm.allReduce(Int64(report.blankLines), op: .sum))
        report.records = Int(try comm.allReduce(Int64(gidx.count), op: .sum))
        let allRejects = try comm.gatherV(rejectLines, root: 0)
        let allMismatches = try comm.gatherV(mismatchLines, root: 0)
        // This rank's first problem in input order (a reject or a hash
        // mismatch); rank 0 takes the first rank's, for --strict.
        var firstProblem = ""
        let firstR = pendingRejects.first.map { ($0.file, $0.fileLine) }
        let firstM = pendingMismatches.first.map { ($0.file, $0.fileLine) }
        if let r = firstR, firstM == nil || r < firstM! {
            let x = pendingRejects[0]
            firstProblem = InputError(file: plan.paths[x.file], line: fileLineBase[x.file] + x.fileLine + 1,
                                      field: x.problem.field, reason: x.problem.reason).description
        } else if firstM != nil {
            firstProblem = String(decoding: mismatchLines.prefix { $0 != 0x0A }, as: UTF8.self)
        }
        let firstProblems = try comm.gatherV(Array(firstProblem.utf8), root: 0)
        if rank == 0 {
            let w = try FileWriter(path: "\(outputDirectory)/\(Self.outputNames.rejects)", atomic: true)
            for part in allRejects! { try w.write(part) }
            try w.commit()
            let mismatches = allMismatches!.flatMap { $0 }.split(separator: 0x0A).map { String(decoding: $0, as: UTF8.self) }
            report.firstHashMismatches = Array(mismatches.prefix(20))
            for m in mismatches.prefix(20) { sink.report(.notice(stage: "dedup", message: m)) }
            let firstReject = allRejects!.first { !$0.isEmpty }.map { part -> String in
                let line = String(decoding: part.prefix { $0 != 0x0A }, as: UTF8.self)
                return line.range(of: "\"error\":").map { _ in extractError(line) } ?? line
            }
            if report.rejected > 0 { sink.report(.notice(stage: "dedup", message: "\(report.rejected) rejected line(s), first: \(firstReject ?? "")")) }
            if config.strict, let first = firstProblems!.first(where: { !$0.isEmpty }) {
                throw DedupError.strict(String(decoding: first, as: UTF8.self))
            }
        }
        if config.strict && (report.rejected > 0 || report.hashMismatches > 0) {
            // Rank 0 has thrown and ends the job; wait for that.
            try comm.barrier()
            throw DedupError.strict("input errors (see rank 0)")
        }
        pendingRejects = []
    }

    // MARK: ownership

    /// The rank holding global record position `g`.
    func holder(_ g: Int64) -> Int {
        var lo = 0, hi = size - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineBase[mid] <= g { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    /// Index of global position `g` among this rank's records.
    func localIndex(_ g: Int64) -> Int {
        var lo = 0, hi = gidx.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if gidx[mid] < g { lo = mid + 1 } else { hi = mid }
        }
        precondition(lo < gidx.count && gidx[lo] == g, "record \(g) is not held by rank \(rank)")
        return lo
    }

    func signature(_ i: Int) -> ArraySlice<UInt32> { signatures[(i * numPerm)..<((i + 1) * numPerm)] }

    // MARK: exact duplicates

    struct ExactEntry { var k0: UInt64; var k1: UInt64; var k2: UInt32; var g: Int64; var length: Int32 }

    var exactPairs: [VerifiedPair] = []

    func exactRound() throws {
        var received: [UInt8] = []
        try exchange.round(produce: { outbox in
            let packed = PackedOutbox(outbox, peers: size)
            for i in 0..<gidx.count {
                let h = sha1[(i * 20)..<(i * 20 + 20)]
                let k0 = h.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
                try packed.add(to: Int(UInt64(littleEndian: k0) % UInt64(size))) { b in
                    b.append(contentsOf: h); b.put(gidx[i]); b.put(textLength[i])
                }
            }
            try packed.flushAll()
        }, consume: { _, record in received.append(contentsOf: record) })

        var entries: [ExactEntry] = []
        entries.reserveCapacity(received.count / 32)
        received.withUnsafeBytes { raw in
            var c = ByteCursor(raw)
            while !c.atEnd {
                // The hash is compared as big-endian words so sorting is by digest bytes.
                let k0 = UInt64(bigEndian: c.get(UInt64.self).littleEndian)
                let k1 = UInt64(bigEndian: c.get(UInt64.self).littleEndian)
                let k2 = UInt32(bigEndian: c.get(UInt32.self).littleEndian)
                entries.append(ExactEntry(k0: k0, k1: k1, k2: k2, g: c.get(Int64.self), length: c.get(Int32.self)))
            }
        }
        received = []
        entries.sort { ($0.k0, $0.k1, $0.k2, $0.g) < ($1.k0, $1.k1, $1.k2, $1.g) }
        var duplicates: [Int64] = []
        var start = 0
        while start < entries.count {
            var end = start + 1
            while end < entries.count && entries[end].k0 == entries[start].k0 && entries[end].k1 == entries[start].k1
                    && entries[end].k2 == entries[start].k2 { end += 1 }
            for k in (start + 1)..<max(end, start + 1) {
                exactPairs.append(VerifiedPair(a: entries[start].g, b: entries[k].g, lengthA: entries[start].length,
                                               lengthB: entries[k].length, similarity: 1, exact: true))
                duplicates.append(entries[k].g)
            }
            start = end
        }
        report.exactDuplicates = Int(try comm.allReduce(Int64(duplicates.count), op: .sum))
        // Tell the holders which of their records are exact duplicates.
        try exchange.round(produce: { outbox in
            let packed = PackedOutbox(outbox, peers: size)
            for g in duplicates { try packed.add(to: holder(g)) { $0.put(g) } }
            try packed.flushAll()
        }, consume: { _, record in
            var c = ByteCursor(record)
            while !c.atEnd { exactDuplicate[localIndex(c.get(Int64.self))] = true }
        })
    }

    // MARK: LSH bands

    struct BandEntry { var key: UInt64; var g: Int64 }

    /// Candidate pairs (a < b) from this rank's buckets, sorted and distinct.
    func bandRound() throws -> [(Int64, Int64)] {
        var received: [UInt8] = []
        let n = UInt64(size)
        try exchange.round(produce: { outbox in
            let packed = PackedOutbox(outbox, peers: size)
            try signatures.withUnsafeBufferPointer { all in
                for i in 0..<gidx.count where !exactDuplicate[i] && !emptyShingles[i] {
                    let sig = UnsafeBufferPointer(rebasing: all[(i * numPerm)..<((i + 1) * numPerm)])
                    for band in 0..<bandKeys.bands {
                        let key = bandKeys.key(sig, band: band)
                        try packed.add(to: Int(StableHash.mix64(key) % n)) { b in b.put(key); b.put(gidx[i]) }
                    }
                }
            }
            try packed.flushAll()
        }, consume: { _, record in received.append(contentsOf: record) })
        var entries: [BandEntry] = []
        entries.reserveCapacity(received.count / 16)
        received.withUnsafeBytes { raw in
            var c = ByteCursor(raw)
            while !c.atEnd { entries.append(BandEntry(key: c.get(UInt64.self), g: c.get(Int64.self))) }
        }
        received = []
        entries.sort { ($0.key, $0.g) < ($1.key, $1.g) }
        var pairs: [(Int64, Int64)] = []
        let window = config.bucketWindow
        var start = 0
        while start < entries.count {
            var end = start + 1
            while end < entries.count && entries[end].key == entries[start].key { end += 1 }
            if end - start > 1 {
                for x in start..<end {
                    var y = x + 1
                    while y < end && y <= x + window { pairs.append((entries[x].g, entries[y].g)); y += 1 }
                }
            }
            start = end
        }
        entries = []
        pairs.sort { $0 < $1 }
        return uniqued(pairs)
    }

    func uniqued(_ sorted: [(Int64, Int64)]) -> [(Int64, Int64)] {
        var out: [(Int64, Int64)] = []
        out.reserveCapacity(sorted.count)
        for p in sorted where out.last.map({ $0 != p }) ?? true { out.append(p) }
        return out
    }

    // MARK: verification

    lazy var rule = config.verificationRule
    /// Re-reads lines for exact comparisons: each input opened once, reads in offset order.
    lazy var fetcher = LineFetcher(paths: inputs)

    /// What a record's holder sends for comparisons: its signature, then (when
    /// the rule may need it) its NFC text.
    func comparisonPayload(_ i: Int) throws -> [UInt8] {
        var payload = signature(i).withUnsafeBytes { Array($0) }
        if rule.needsText { payload += Array(try nfcText(i).utf8) }
        return payload
    }

    /// Re-reads record i's line and returns its NFC text. Calls in ascending
    /// record order read the input sequentially (see `LineFetcher`).
    func nfcText(_ i: Int, readAhead: Bool = true) throws -> String {
        try fetcher.withLine(file: Int(fileIndex[i]), offset: Int(offset[i]), length: Int(lineLength[i]), readAhead: readAhead) { line in
            var scanner = JSONLineScanner()
            let record = try scanner.scan(line)
            return TextNormalizer.nfc(record.text)
        }
    }

    func shingleSet(_ nfc: String) -> [UInt64] {
        var scalars: [UInt32] = [], hashes: [UInt64] = []
        TextNormalizer.normalize(nfc, into: &scalars)
        Shingler.hashes(scalars, size: config.shingleSize, seed: seed, into: &hashes)
        return Shingler.set(hashes)
    }

    /// Estimated Jaccard of local record j and a remote signature.
    func estimate(local j: Int, signature remote: UnsafeRawBufferPointer) -> Double {
        signatures.withUnsafeBufferPointer { all in
            MinHasher.estimatedJaccard(remote.bindMemory(to: UInt32.self),
                                       UnsafeBufferPointer(rebasing: all[(j * numPerm)..<((j + 1) * numPerm)]))
        }
    }

    /// Comparisons of local records with remote texts that need the exact
    /// Jaccard, collected while a round's messages arrive and computed after
    /// it, in ascending local record order, so the local lines are re-read in
    /// one sequential pass. Each remote text is kept once (UTF-8).
    struct ExactQueue {
        var texts: [[UInt8]] = []
        var items: [(local: Int, text: Int, tag: Int)] = []
        private var pendingText = true
        /// Call when a new message starts: its text is stored on first use.
        mutating func newMessage() { pendingText = true }
        mutating func add(local: Int, text: UnsafeRawBufferPointer, tag: Int) {
            if pendingText { texts.append(Array(text)); pendingText = false }
            items.append((local, texts.count - 1, tag))
        }
    }

    /// Computes the queued exact Jaccards; `body(tag, similarity)`.
    func resolve(_ queue: ExactQueue, _ body: (Int, Double) -> Void) throws {
        let order = queue.items.indices.sorted { (queue.items[$0].local, queue.items[$0].text) < (queue.items[$1].local, queue.items[$1].text) }
        var remoteSets: [Int: [UInt64]] = [:]
        var current = -1, localSet: [UInt64] = []
        for k in order {
            let item = queue.items[k]
            if item.local != current { localSet = shingleSet(try nfcText(item.local)); current = item.local }
            if remoteSets[item.text] == nil {
                if remoteSets.count >= 4096 { remoteSets.removeAll(keepingCapacity: true) }  // bounded cache
                remoteSets[item.text] = shingleSet(String(decoding: queue.texts[item.text], as: UTF8.self))
            }
            body(item.tag, Shingler.jaccard(remoteSets[item.text]!, localSet))
        }
    }

    func verifyRounds(_ candidates: [(Int64, Int64)]) throws -> [VerifiedPair] {
        // Each candidate pair to the holder of its first record.
        var received: [UInt8] = []
        try exchange.round(produce: { outbox in
            let packed = PackedOutbox(outbox, peers: size)
            for (a, b) in candidates { try packed.add(to: holder(a)) { $0.put(a); $0.put(b) } }
            try packed.flushAll()
        }, consume: { _, record in received.append(contentsOf: record) })
        var mine: [(Int64, Int64)] = []
        received.withUnsafeBytes { raw in
            var c = ByteCursor(raw)
            while !c.atEnd { mine.append((c.get(Int64.self), c.get(Int64.self))) }
        }
        received = []
        mine.sort { $0 < $1 }
        mine = uniqued(mine)
        // Counted here, after the holder removed pairs found in several bands
        // (by several owners), so the figure does not depend on the ranks.
        report.candidatePairs = Int(try comm.allReduce(Int64(mine.count), op: .sum))

        // The first record's payload to the holder of the second; it decides.
        // First records are visited in ascending order, so their lines are
        // re-read in one sequential pass.
        var verified: [VerifiedPair] = []
        var queue = ExactQueue()
        var queued: [(a: Int64, lengthA: Int32, b: Int64)] = []
        let signatureBytes = numPerm * 4
        try exchange.round(produce: { outbox in
            var s = 0
            while s < mine.count {
                var e = s + 1
                while e < mine.count && mine[e].0 == mine[s].0 { e += 1 }
                let i = localIndex(mine[s].0)
                let payload = try comparisonPayload(i)
                var k = s
                while k < e {  // second records are sorted, so each holder's run is contiguous
                    let dest = holder(mine[k].1)
                    var m = k
                    while m < e && holder(mine[m].1) == dest { m += 1 }
                    var rec: [UInt8] = []
                    rec.reserveCapacity(16 + 8 * (m - k) + payload.count)
                    rec.put(mine[s].0); rec.put(textLength[i]); rec.put(Int32(m - k))
                    for x in k..<m { rec.put(mine[x].1) }
                    rec.append(contentsOf: payload)
                    try outbox.append(rec, to: dest)
                    k = m
                }
                s = e
            }
        }, consume: { _, record in
            var c = ByteCursor(record)
            let a = c.get(Int64.self), lengthA = c.get(Int32.self), count = Int(c.get(Int32.self))
            let bs = (0..<count).map { _ in c.get(Int64.self) }
            let sig = c.take(signatureBytes)
            let text = c.take(record.count - c.offset)
            queue.newMessage()
            for b in bs {
                let j = localIndex(b)
                let est = estimate(local: j, signature: sig)
                switch rule.decide(estimate: est) {
                case .accept:
                    verified.append(VerifiedPair(a: a, b: b, lengthA: lengthA, lengthB: textLength[j], similarity: Float(est), exact: false))
                case .reject: break
                case .exact:
                    queue.add(local: j, text: text, tag: queued.count)
                    queued.append((a, lengthA, b))
                }
            }
        })
        try resolve(queue) { tag, sim in
            if sim >= threshold {
                let q = queued[tag]
                verified.append(VerifiedPair(a: q.a, b: q.b, lengthA: q.lengthA, lengthB: textLength[localIndex(q.b)],
                                             similarity: Float(sim), exact: false))
            }
        }
        report.verifiedPairs = Int(try comm.allReduce(Int64(verified.count), op: .sum))
        report.exactComparisons = Int(try comm.allReduce(Int64(queue.items.count), op: .sum))
        return verified
    }

    // MARK: clusters

    func clusterPairs(_ verified: [VerifiedPair]) throws -> ClusterGraph {
        let local = (exactPairs + verified).flatMap { $0.encoded }
        let all = try comm.allGatherV(local).flatMap { $0 }
        var pairs: [VerifiedPair] = []
        pairs.reserveCapacity(all.count / 4)
        var k = 0
        while k < all.count { pairs.append(VerifiedPair(encoded: all[k..<(k + 4)])); k += 4 }
        exactPairs = []
        let graph = ClusterGraph(pairs: pairs)
        report.clusters = graph.components.count
        report.recordsInClusters = graph.nodes.count
        report.removed = graph.nodes.count - graph.components.count
        report.largestCluster = graph.components.map(\.members.count).max() ?? 0
        var sizes: [Int: Int] = [:]
        for c in graph.components { sizes[c.members.count, default: 0] += 1 }
        report.clusterSizes = sizes.keys.sorted().map { [$0, sizes[$0]!] }
        return graph
    }

    /// Representatives tell their members' holders who they are.
    func representativeRound(_ graph: ClusterGraph) throws {
        // Components come in ascending representative order: one sequential pass.
        var queue = ExactQueue()
        try exchange.round(produce: { outbox in
            for component in graph.components where holder(component.representative) == rank {
                let r = localIndex(component.representative)
                let payload = try comparisonPayload(r)
                let members = component.members.filter { $0 != component.representative }  // sorted
                var k = 0
                while k < members.count {
                    let dest = holder(members[k])
                    var m = k
                    while m < members.count && holder(members[m]) == dest { m += 1 }
                    var rec: [UInt8] = []
                    rec.put(component.representative)
                    rec.append(contentsOf: sha1[(r * 20)..<(r * 20 + 20)])
                    rec.put(idLength[r]); rec.append(contentsOf: idArena[idStart[r]..<(idStart[r] + Int(idLength[r]))])
                    rec.put(Int32(m - k))
                    for x in k..<m { rec.put(members[x]) }
                    rec.append(contentsOf: payload)
                    try outbox.append(rec, to: dest)
                    k = m
                }
            }
        }, consume: { _, record in
            var c = ByteCursor(record)
            _ = c.get(Int64.self)
            let repHash = Array(c.take(20))
            let idCount = Int(c.get(Int32.self))
            let repId = Array(c.take(idCount))
            let count = Int(c.get(Int32.self))
            let members = (0..<count).map { _ in c.get(Int64.self) }
            let sig = c.take(numPerm * 4)
            let text = c.take(record.count - c.offset)
            queue.newMessage()
            for g in members {
                let j = localIndex(g)
                let identical = sha1[(j * 20)..<(j * 20 + 20)].elementsEqual(repHash)
                var sim = 1.0
                if !identical {
                    // The similarity reported is the one verification would use:
                    // exact when the rule asks for it, else the estimate.
                    sim = estimate(local: j, signature: sig)
                    if rule.decide(estimate: sim) == .exact { queue.add(local: j, text: text, tag: removals.count) }
                }
                removal[j] = Int32(removals.count)
                removals.append((repId, sim, identical))
            }
        })
        try resolve(queue) { tag, sim in removals[tag].similarity = sim }
        let identical = removals.filter(\.identical).count
        report.removedExact = Int(try comm.allReduce(Int64(identical), op: .sum))
        report.removedNear = report.removed - report.removedExact
        report.kept = report.records - report.removed
        report.duplicateRateBefore = report.records > 0 ? Double(report.removed) / Double(report.records) : 0
        report.recordsWithDuplicateBefore = report.records > 0 ? Double(report.recordsInClusters) / Double(report.records) : 0
    }

    // MARK: sampled remaining-duplicate estimate

    /// Samples `sampleSize` kept records (smallest seeded hash of their
    /// position, so the sample does not depend on the ranks) and compares each
    /// with every kept record by estimated Jaccard.
    func sampleRemaining() throws {
        let k = config.sampleSize
        let sampleSeed = StableHash.mix64(seed ^ 0x7361_6D70_6C65)
        func eligible(_ i: Int) -> Bool { removal[i] < 0 && !emptyShingles[i] }
        var keys: [(UInt64, Int64)] = []
        for i in 0..<gidx.count where eligible(i) { keys.append((StableHash.mix64(sampleSeed ^ UInt64(gidx[i])), gidx[i])) }
        keys.sort { $0 < $1 }
        let offered = keys.prefix(k).flatMap { [Int64(bitPattern: $0.0), $0.1] }
        let all = try comm.allGatherV(Array(offered)).flatMap { $0 }
        var pool: [(UInt64, Int64)] = []
        var p = 0
        while p < all.count { pool.append((UInt64(bitPattern: all[p]), all[p + 1])); p += 2 }
        pool.sort { $0 < $1 }
        let sample = pool.prefix(k).map(\.1).sorted()
        // Signatures of the sample, from their holders, in sample order.
        var mySigs: [UInt8] = []
        for g in sample where holder(g) == rank { signature(localIndex(g)).withUnsafeBytes { mySigs.append(contentsOf: $0) } }
        let sigBytes = try comm.allGatherV(mySigs).flatMap { $0 }
        let sigs = [UInt32](unsafeUninitializedCapacity: sigBytes.count / 4) { buf, n in
            sigBytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(buf).copyMemory(from: $0) }
            n = sigBytes.count / 4
        }
        let candidates = (0..<gidx.count).filter(eligible)
        var hits = [Int64](repeating: 0, count: sample.count)
        if rule.needsText {
            // Signatures preselect (the lowest estimate the rule could still
            // accept) and the rule decides, with the exact Jaccard of the texts
            // where it asks for it, as it did for the pairs.
            var mine: [UInt8] = []
            for g in sample where holder(g) == rank {  // ascending: one sequential pass
                let text = Array(try nfcText(localIndex(g)).utf8)
                mine.put(UInt32(text.count)); mine += text
            }
            var sampleTexts: [String] = []
            let gathered = try comm.allGatherV(mine).flatMap { $0 }
            gathered.withUnsafeBytes { raw in
                var c = ByteCursor(raw)
                while !c.atEnd { let n = Int(c.get(UInt32.self)); sampleTexts.append(String(decoding: c.take(n), as: UTF8.self)) }
            }
            var sampleSets: [Int: [UInt64]] = [:], localSets: [Int: [UInt64]] = [:]
            let loose = numPerm - Int((rule.lowestCandidateEstimate * Double(numPerm)).rounded(.up))
            try sigs.withUnsafeBufferPointer { s in
                try signatures.withUnsafeBufferPointer { all in
                    try markSamplesWithDuplicate(samples: s, sampleIds: sample, records: all, recordIds: gidx, candidates: candidates,
                                                 numPerm: numPerm, maxMismatches: loose, hits: &hits) { n, i in
                        let est = MinHasher.estimatedJaccard(UnsafeBufferPointer(rebasing: s[(n * self.numPerm)..<((n + 1) * self.numPerm)]),
                                                             UnsafeBufferPointer(rebasing: all[(i * self.numPerm)..<((i + 1) * self.numPerm)]))
                        switch self.rule.decide(estimate: est) {
                        case .accept: return true
                        case .reject: return false
                        case .exact: break
                        }
                        if sampleSets[n] == nil { sampleSets[n] = self.shingleSet(sampleTexts[n]) }
                        if localSets[i] == nil {
                            if localSets.count >= 4096 { localSets.removeAll(keepingCapacity: true) }
                            // Scattered records: read just the line (the input stays open).
                            localSets[i] = self.shingleSet(try self.nfcText(i, readAhead: false))
                        }
                        return Shingler.jaccard(sampleSets[n]!, localSets[i]!) >= self.threshold
                    }
                }
            }
        } else {
            let maxMismatches = numPerm - Int((threshold * Double(numPerm)).rounded(.up))
            try sigs.withUnsafeBufferPointer { s in
                try signatures.withUnsafeBufferPointer { all in
                    try markSamplesWithDuplicate(samples: s, sampleIds: sample, records: all, recordIds: gidx, candidates: candidates,
                                             numPerm: numPerm, maxMismatches: maxMismatches, hits: &hits)
                }
            }
        }
        try comm.allReduce(&hits, op: .max)
        let withDuplicate = Int(hits.reduce(0, +))
        let ci = WilsonInterval.bounds(successes: withDuplicate, trials: sample.count, confidence: config.confidence)
        report.remaining = DedupReport.Remaining(sampled: sample.count, withDuplicate: withDuplicate,
                                                 rate: sample.isEmpty ? 0 : Double(withDuplicate) / Double(sample.count),
                                                 lower: ci.lower, upper: ci.upper, confidence: config.confidence)
    }

    // MARK: output

    static func formatSimilarity(_ s: Double) -> String {
        let v = Int((s * 10000).rounded())
        let frac = String(v % 10000)
        return "\(v / 10000)." + String(repeating: "0", count: 4 - frac.count) + frac
    }

    func removedSuffix(_ i: Int) -> [UInt8] {
        let r = removals[Int(removal[i])]
        var s: [UInt8] = Array(",\"duplicate_of\":".utf8) + r.repId
        s += Array(",\"similarity\":\(Self.formatSimilarity(r.similarity)),\"reason\":\"\(r.identical ? "exact" : "near")\"}\n".utf8)
        return s
    }

    func writeOutputs(_ plan: InputPlan, _ graph: ClusterGraph) throws {
        // Sizes of this rank's regions, then everyone's offsets.
        var keptBytes = 0, removedBytes = 0, keptCount = 0, removedCount = 0
        for i in 0..<gidx.count {
            if removal[i] < 0 {
                keptBytes += Int(lineLength[i]) + 1; keptCount += 1
            } else {
                removedBytes += Int(closingBrace[i]) + removedSuffix(i).count; removedCount += 1
            }
        }
        let totals = try comm.allGatherV([Int64(keptBytes), Int64(removedBytes), Int64(keptCount), Int64(removedCount)])
        let keptAll = totals.reduce(0) { $0 + Int($1[2]) }, removedAll = totals.reduce(0) { $0 + Int($1[3]) }
        guard keptAll + removedAll == report.records, keptAll == report.kept, removedAll == report.removed else {
            throw DedupError.countMismatch(records: report.records, kept: keptAll, removed: removedAll)
        }
        let keptOffset = totals.prefix(rank).reduce(0) { $0 + Int($1[0]) }
        let removedOffset = totals.prefix(rank).reduce(0) { $0 + Int($1[1]) }
        let keptPath = "\(outputDirectory)/\(Self.outputNames.kept)", removedPath = "\(outputDirectory)/\(Self.outputNames.removed)"
        let keptTemp = keptPath + ".partial", removedTemp = removedPath + ".partial"
        if rank == 0 {
            try createSized(keptTemp, size: totals.reduce(0) { $0 + Int($1[0]) })
            try createSized(removedTemp, size: totals.reduce(0) { $0 + Int($1[1]) })
        }
        try comm.barrier()
        let kept = try RegionWriter(path: keptTemp, offset: keptOffset, length: keptBytes)
        let removed = try RegionWriter(path: removedTemp, offset: removedOffset, length: removedBytes)
        var next = 0  // records are in line order, so one sequential re-read serves them all
        for piece in plan.pieces(rank: rank, size: size) {
            try forEachLine(path: plan.paths[piece.file], start: piece.start, end: piece.end) { lineOffset, line in
                guard next < gidx.count, Int(fileIndex[next]) == piece.file, Int(offset[next]) == lineOffset else { return }
                let i = next
                next += 1
                if removal[i] < 0 {
                    try kept.write(line)
                    try kept.write([0x0A])
                } else {
                    try removed.write(UnsafeBufferPointer(rebasing: line[0..<Int(closingBrace[i])]))
                    try removed.write(removedSuffix(i))
                }
            }
        }
        precondition(next == gidx.count, "re-read found \(next) of \(gidx.count) records")
        try kept.close()
        try removed.close()

        // Cluster membership with ids, gathered on rank 0 for clusters.jsonl.
        var info: [UInt8] = []
        for i in 0..<gidx.count where graph.contains(gidx[i]) {
            info.put(gidx[i])
            let sim = removal[i] < 0 ? -1.0 : removals[Int(removal[i])].similarity
            info.put(Int64(bitPattern: sim.bitPattern))
            info.put(UInt8(removal[i] >= 0 && removals[Int(removal[i])].identical ? 1 : 0))
            info.put(idLength[i]); info.append(contentsOf: idArena[idStart[i]..<(idStart[i] + Int(idLength[i]))])
        }
        let gathered = try comm.gatherV(info, root: 0)
        try comm.barrier()
        if rank == 0 {
            try renameFile(keptTemp, keptPath)
            try renameFile(removedTemp, removedPath)
            try writeClusters(graph, gathered!.flatMap { $0 })
        }
    }

    func writeClusters(_ graph: ClusterGraph, _ info: [UInt8]) throws {
        var members: [Int64: (id: [UInt8], similarity: Double, identical: Bool)] = [:]
        info.withUnsafeBytes { raw in
            var c = ByteCursor(raw)
            while !c.atEnd {
                let g = c.get(Int64.self)
                let sim = Double(bitPattern: UInt64(bitPattern: c.get(Int64.self)))
                let identical = c.get(UInt8.self) == 1
                let n = Int(c.get(Int32.self))
                members[g] = (Array(c.take(n)), sim, identical)
            }
        }
        let w = try FileWriter(path: "\(outputDirectory)/\(Self.outputNames.clusters)", atomic: true)
        for (k, component) in graph.components.enumerated() {
            let rep = members[component.representative]!
            var line = "{\"cluster\":\(k),\"representative\":\(String(decoding: rep.id, as: UTF8.self)),\"size\":\(component.members.count),\"members\":["
            var first = true
            for g in component.members where g != component.representative {
                let m = members[g]!
                line += (first ? "" : ",") + "{\"id\":\(String(decoding: m.id, as: UTF8.self)),\"similarity\":\(Self.formatSimilarity(m.similarity)),\"reason\":\"\(m.identical ? "exact" : "near")\"}"
                first = false
            }
            try w.write(line + "]}\n")
        }
        try w.commit()
        if config.writePairs {
            let pw = try FileWriter(path: "\(outputDirectory)/\(Self.outputNames.pairs)", atomic: true)
            for p in graph.pairs {
                try pw.write("{\"a\":\(String(decoding: members[p.a]!.id, as: UTF8.self)),\"b\":\(String(decoding: members[p.b]!.id, as: UTF8.self)),\"similarity\":\(Self.formatSimilarity(Double(p.similarity))),\"kind\":\"\(p.exact ? "exact" : "near")\"}\n")
            }
            try pw.commit()
        }
    }
}

private func extractError(_ jsonLine: String) -> String {
    // The "error" field of a reject line, unescaped enough for a message.
    guard let r = jsonLine.range(of: "\"error\":\"") else { return jsonLine }
    var out = ""
    var escaped = false
    for ch in jsonLine[r.upperBound...] {
        if escaped { out.append(ch); escaped = false; continue }
        if ch == "\\" { escaped = true; continue }
        if ch == "\"" { break }
        out.append(ch)
    }
    return out
}

/// For every sample signature, sets hits[n] = 1 if some candidate record
/// (other than the sample itself) differs from it in at most `maxMismatches`
/// positions, i.e. has estimated Jaccard ≥ threshold. Compares 32 values at a
/// time and gives up on a pair as soon as it has too many mismatches, which
/// is exact (not a heuristic) and quick for the dissimilar majority.
/// With `confirm`, a signature match only counts if `confirm(sample, record)` agrees.
func markSamplesWithDuplicate(samples: UnsafeBufferPointer<UInt32>, sampleIds: [Int64], records: UnsafeBufferPointer<UInt32>,
                              recordIds: [Int64], candidates: [Int], numPerm: Int, maxMismatches: Int, hits: inout [Int64],
                              confirm: ((Int, Int) throws -> Bool)? = nil) throws {
    let sampleCount = sampleIds.count
    guard sampleCount > 0, !candidates.isEmpty else { return }
    let ps = UnsafeRawPointer(samples.baseAddress!), pr = UnsafeRawPointer(records.baseAddress!)
    let bytes = numPerm * 4
    let one = SIMD8<UInt32>(repeating: 1), zero = SIMD8<UInt32>()
    for i in candidates {
        let rec = pr + i * bytes
        let id = recordIds[i]
        for n in 0..<sampleCount where hits[n] == 0 && sampleIds[n] != id {
            let smp = ps + n * bytes
            var mismatches = 0
            var v = 0
            while v < numPerm {
                var acc = SIMD8<UInt32>()
                let end = min(v + 32, numPerm)
                while v < end {
                    let a = rec.loadUnaligned(fromByteOffset: v * 4, as: SIMD8<UInt32>.self)
                    let b = smp.loadUnaligned(fromByteOffset: v * 4, as: SIMD8<UInt32>.self)
                    acc &+= one.replacing(with: zero, where: a .== b)
                    v += 8
                }
                mismatches += Int(acc.wrappedSum())
                if mismatches > maxMismatches { break }
            }
            if mismatches <= maxMismatches {
                if let confirm { if try confirm(n, i) { hits[n] = 1 } } else { hits[n] = 1 }
            }
        }
    }
}
