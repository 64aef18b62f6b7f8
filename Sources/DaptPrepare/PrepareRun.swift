#if canImport(Glibc)
import Glibc
#endif
import DaptCluster
import DaptCore

/// Unwinds one rank's scan at its first reject under `--strict`.
private struct StopScanning: Error {}

public enum PrepareError: Error, CustomStringConvertible, Equatable {
    case noInputs
    case missingInput(String)
    case unknownInputKind(String)
    case inputsDiffer(rank: Int)
    case countMismatch(recordsIn: Int, patents: Int, rejects: Int)

    public var description: String {
        switch self {
        case .noInputs: return "prepare.inputs: no inputs given (set prepare.inputs in the config or pass --input)"
        case .missingInput(let p): return "\(p): input does not exist"
        case .unknownInputKind(let p): return "\(p): not an input kind prepare reads (.jsonl, .txt, .md, or a folder)"
        case .inputsDiffer(let r): return "rank \(r) sees different input files than rank 0 (inputs must be on a shared file system)"
        case .countMismatch(let i, let p, let r):
            return "count check failed: \(i) records in, but \(p) patents written + \(r) rejects = \(p + r)"
        }
    }
}

/// What a finished run produced; `summary` and paths are complete on rank 0.
public struct PrepareOutcome: Sendable {
    public var stats: PrepareStats
    public var summary: PrepareSummary
    public var manifestPath: String
    public var rejectsPath: String
    public var summaryPath: String
    public var mergedPath: String?
    /// The first rejects (rank 0 only), for printing.
    public var firstRejects: [String]
    public var duplicatePatentIDs: Int
}

/// One rank's share of `dapt prepare`: reads its byte range of the input,
/// writes `NAME-RRRR-of-NNNN.jsonl`, and (rank 0) the manifest, rejects,
/// summary and, with `merge`, the merged corpus `NAME.jsonl`.
public struct PrepareRun {
    public let config: PrepareConfig
    public let counter: any TokenCounter
    public let communicator: any Communicator
    public let sink: any EventSink
    public var merge = false

    public init(config: PrepareConfig, counter: any TokenCounter, communicator: any Communicator, sink: any EventSink, merge: Bool = false) {
        self.config = config; self.counter = counter; self.communicator = communicator; self.sink = sink; self.merge = merge
    }

    public static func shardName(_ name: String, rank: Int, size: Int) -> String {
        "\(name)-\(fourDigits(rank))-of-\(fourDigits(size)).jsonl"
    }

    static func fourDigits(_ n: Int) -> String {
        let s = String(n)
        return s.count >= 4 ? s : String(repeating: "0", count: 4 - s.count) + s
    }

    public func run() throws -> PrepareOutcome {
        let rank = communicator.rank, size = communicator.size
        guard !config.inputs.isEmpty else { throw PrepareError.noInputs }
        let catalog = try InputCatalog.discover(config.inputs)
        // Every rank must see the same files, or the split is wrong.
        let fingerprint = StableHash.xxh64(catalog.files.map { "\($0.path)\t\($0.size)" }.joined(separator: "\n"), seed: 7)
        let fingerprints = try communicator.allGather(fingerprint)
        if let bad = fingerprints.firstIndex(where: { $0 != fingerprints[0] }) { throw PrepareError.inputsDiffer(rank: bad) }

        // Everything is written into a staging folder and published as a
        // unit, so outputs of an earlier run (perhaps with another rank
        // count) never mix with these.
        let out = config.output
        let publisher = OutputPublisher(directory: out)
        try publisher.begin(communicator)
        let staging = publisher.staging

        let range = catalog.byteRange(rank: rank, size: size)
        let splitter = try PatentSplitter(config: config, counter: counter)

        // Pass 1: line-aligned regions and newline counts, so each rank
        // knows the line number its region of each JSONL file starts at.
        var regions = [LineRegion?](repeating: nil, count: catalog.files.count)
        var newlines = [Int64](repeating: 0, count: catalog.files.count)
        for (i, file) in catalog.files.enumerated() where file.kind == .jsonl && file.size > 0 {
            let local = max(range.lowerBound, file.offset) - file.offset
            let localEnd = min(range.upperBound, file.offset + file.size) - file.offset
            guard local < localEnd else { continue }
            let mapped = try MappedFile(path: file.path, sequential: true)
            mapped.withBytes { p in
                let region = LineRegion.aligned(local..<localEnd, in: p)
                regions[i] = region
                newlines[i] = Int64(region.newlineCount(in: p))
            }
        }
        let allNewlines = try communicator.allGatherV(newlines)
        let firstLine = (0..<catalog.files.count).map { f in 1 + (0..<rank).reduce(0) { $0 + Int(allNewlines[$1][f]) } }

        // Pass 2: split and write.
        let shardPath = staging + "/" + Self.shardName(config.name, rank: rank, size: size)
        let writer = try FileWriter(path: shardPath, bufferSize: 4 << 20)
        var shardSHA = SHA1()
        var stats = PrepareStats()
        var rejectBytes: [UInt8] = []
        var firstRejects: [String] = []
        var patentHashes: [UInt64] = []
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1 << 20)
        var bytesDone = 0
        var lastReported = 0
        // This rank's work: its line-aligned JSONL regions and the text files it owns.
        var rangeBytes = regions.reduce(0) { $0 + ($1.map { $0.end - $0.start } ?? 0) }
        for file in catalog.files where file.kind == .text && catalog.owner(ofOffset: file.offset, size: size) == rank {
            rangeBytes += file.size
        }

        func flush() throws {
            guard !buffer.isEmpty else { return }
            buffer.withUnsafeBytes { shardSHA.update($0) }
            try writer.write(buffer)
            buffer.removeAll(keepingCapacity: true)
        }

        func handle(_ result: Result<PatentRecord, PrepareReject>) throws {
            stats.records += 1
            var reject: PrepareReject
            switch result {
            case .success(let record):
                switch splitter.split(record) {
                case .success(let split):
                    stats.add(patent: split)
                    let fields = FragmentJSON.PatentFields(record)
                    for fragment in split.fragments {
                        FragmentJSON.append(fragment, of: fields, to: &buffer)
                        stats.add(fragment: fragment, budgetTokens: config.maxTokens)
                    }
                    patentHashes.append(StableHash.xxh64(record.patent, seed: 0x5041_5445_4E54))
                    if buffer.count >= 1 << 20 { try flush() }
                    return
                case .failure(let failure):
                    reject = PrepareReject(file: "", line: 0, field: failure.field, reason: failure.reason, patent: record.patent, raw: nil)
                }
            case .failure(let r):
                reject = r
            }
            throw reject
        }

        var strictReject: PrepareReject?
        func record(_ reject: PrepareReject) throws {
            if config.strict { strictReject = reject; throw StopScanning() }
            stats.add(reject: reject)
            rejectBytes += reject.jsonLine()
            if firstRejects.count < 20 { firstRejects.append(reject.description) }
        }

        func progress() {
            if bytesDone - lastReported >= 8 << 20 || bytesDone >= rangeBytes {
                lastReported = bytesDone
                sink.report(.progress(stage: "prepare", done: bytesDone >> 10, total: rangeBytes >> 10, unit: "KiB"))
            }
        }

        var lineReader = PatentLineReader()
        do {
        for (i, file) in catalog.files.enumerated() {
            switch file.kind {
            case .jsonl:
                guard let region = regions[i] else { continue }
                let mapped = try MappedFile(path: file.path, sequential: true)
                try mapped.withBytes { p in
                    var lineNumber = firstLine[i]
                    var s = region.start
                    while s < region.end {
                        var e = s
                        if let hit = memchr(p.baseAddress! + s, 0x0A, p.count - s) {
                            e = UnsafeRawPointer(hit) - UnsafeRawPointer(p.baseAddress!)
                        } else {
                            e = p.count
                        }
                        var lineEnd = e
                        if lineEnd > s && p[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                        let line = UnsafeBufferPointer(rebasing: p[s..<lineEnd])
                        if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) {
                            stats.blankLines += 1
                        } else {
                            do {
                                try handle(lineReader.parse(line, file: file.path, lineNumber: lineNumber))
                            } catch var reject as PrepareReject {
                                if reject.file.isEmpty { reject.file = file.path; reject.line = lineNumber; reject.raw = Array(line) }
                                try record(reject)
                            }
                        }
                        bytesDone += min(e + 1, p.count) - s
                        stats.inputBytes += min(e + 1, p.count) - s
                        progress()
                        lineNumber += 1
                        s = e + 1
                    }
                }
            case .text:
                guard catalog.owner(ofOffset: file.offset, size: size) == rank else { continue }
                let mapped = try MappedFile(path: file.path, sequential: true)
                try mapped.withBytes { p in
                    do {
                        try handle(PatentReader.parseTextFile(p, file: file.path))
                    } catch var reject as PrepareReject {
                        if reject.file.isEmpty { reject.file = file.path; reject.line = 1 }
                        try record(reject)
                    }
                }
                bytesDone += file.size
                stats.inputBytes += file.size
                progress()
            }
        }
        } catch is StopScanning {}
        if config.strict {
            // Ranks own increasing ranges of the input, so the lowest rank
            // with a reject holds the first one in input order.
            if let first = try firstInInputOrder(strictReject.map { (communicator.rank, $0.description) }, communicator) {
                throw FirstBadRecord(message: first)
            }
        }
        try flush()
        try writer.commit()
        let shardDigest = shardSHA.finalize()
        if stats.records != stats.patents + stats.rejects {
            throw PrepareError.countMismatch(recordsIn: stats.records, patents: stats.patents, rejects: stats.rejects)
        }

        // Gather: totals everywhere, shard facts, rejects and patent ids on rank 0.
        var totalVector = stats.vector
        try communicator.allReduce(&totalVector, op: .sum)
        let totals = PrepareStats(vector: totalVector)
        let shardFacts = try communicator.gatherV([Int64(stats.fragments), Int64(stats.patents), Int64(writer.bytesWritten), Int64(stats.records), Int64(stats.rejects)], root: 0)
        let digests = try communicator.gatherV(shardDigest, root: 0)
        let allRejects = try communicator.gatherV(rejectBytes, root: 0)
        let allHashes = try communicator.gatherV(patentHashes, root: 0)
        let rejectMessages = try communicator.gatherV(Array(firstRejects.joined(separator: "\n").utf8), root: 0)

        let rejectsPath = out + "/rejects.jsonl"
        let summaryPath = out + "/summary.json"
        let manifestPath = out + "/manifest.json"
        var outcome = PrepareOutcome(stats: totals, summary: PrepareSummary(stats: totals, config: config, counter: counter.name, inputFiles: catalog.files.count, ignoredFiles: catalog.ignored.count, duplicatePatentIDs: 0),
                                     manifestPath: manifestPath, rejectsPath: rejectsPath, summaryPath: summaryPath,
                                     mergedPath: nil, firstRejects: [], duplicatePatentIDs: 0)
        if rank == 0, let shardFacts, let digests, let allRejects, let allHashes, let rejectMessages {
            if totals.records != totals.patents + totals.rejects {
                throw PrepareError.countMismatch(recordsIn: totals.records, patents: totals.patents, rejects: totals.rejects)
            }
            let hashes = allHashes.flatMap { $0 }.sorted()
            var duplicates = 0
            if hashes.count > 1 { for k in 1..<hashes.count where hashes[k] == hashes[k - 1] { duplicates += 1 } }
            outcome.duplicatePatentIDs = duplicates
            outcome.summary.duplicatePatentIDs = duplicates
            outcome.firstRejects = Array(rejectMessages.flatMap { bytes -> [String] in
                bytes.isEmpty ? [] : String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
            }.prefix(20))

            let rejectsAll = allRejects.flatMap { $0 }
            let rejectsWriter = try FileWriter(path: publisher.path("rejects.jsonl"))
            try rejectsWriter.write(rejectsAll)
            try rejectsWriter.commit()
            let summaryWriter = try FileWriter(path: publisher.path("summary.json"))
            try summaryWriter.write(outcome.summary.json())
            try summaryWriter.commit()

            var manifest = CorpusManifest(name: config.name, ranks: size, shards: (0..<size).map { r in
                CorpusManifest.Shard(file: Self.shardName(config.name, rank: r, size: size), fragments: Int(shardFacts[r][0]),
                                     patents: Int(shardFacts[r][1]), bytes: Int(shardFacts[r][2]), sha1: Hex.encode(digests[r]))
            }, records: totals.records, patents: totals.patents, rejects: totals.rejects,
               rejectsFile: "rejects.jsonl", rejectsSHA1: SHA1.hex(rejectsAll), summaryFile: "summary.json")
            let stagedManifest = publisher.path("manifest.json")
            try manifest.write(to: stagedManifest)
            if merge {
                let merged = try PreparedCorpus(manifestPath: stagedManifest).merge()
                manifest.merged = merged
                try manifest.write(to: stagedManifest)
                outcome.mergedPath = out + "/" + merged.file
            }
        }
        try publisher.finish(stage: "prepare", communicator)
        return outcome
    }

    static func isShard(_ file: String, name: String) -> Bool {
        guard file.hasPrefix(name + "-"), file.hasSuffix(".jsonl") else { return false }
        let middle = file.dropFirst(name.count + 1).dropLast(".jsonl".count)
        let parts = middle.split(separator: "-")
        return parts.count == 3 && parts[1] == "of" && parts[0].allSatisfy(\.isNumber) && parts[2].allSatisfy(\.isNumber)
    }
}
