import Foundation

/// A prepared corpus that does not match its manifest.
public enum CorpusError: Error, CustomStringConvertible, Equatable {
    case manifest(path: String, reason: String)
    case shardMismatch(path: String, reason: String)

    public var description: String {
        switch self {
        case .manifest(let p, let r): return "\(p): \(r)"
        case .shardMismatch(let p, let r): return "\(p): \(r)"
        }
    }
}

/// `manifest.json`: the shards of a prepared corpus in input order, with
/// their record counts and SHA-1 checksums. Written by rank 0 after every
/// rank has committed its shard, so its presence means the run finished.
public struct CorpusManifest: Equatable, Sendable {
    public static let format = "dapt-prepare-manifest/1"

    public struct Shard: Equatable, Sendable {
        public var file: String
        public var fragments: Int
        public var patents: Int
        public var bytes: Int
        public var sha1: String

        public init(file: String, fragments: Int, patents: Int, bytes: Int, sha1: String) {
            self.file = file; self.fragments = fragments; self.patents = patents; self.bytes = bytes; self.sha1 = sha1
        }
    }

    public struct Merged: Equatable, Sendable {
        public var file: String
        public var fragments: Int
        public var bytes: Int
        public var sha1: String

        public init(file: String, fragments: Int, bytes: Int, sha1: String) {
            self.file = file; self.fragments = fragments; self.bytes = bytes; self.sha1 = sha1
        }
    }

    public var name: String
    public var ranks: Int
    public var shards: [Shard]
    public var records: Int
    public var patents: Int
    public var rejects: Int
    public var rejectsFile: String
    public var rejectsSHA1: String
    public var summaryFile: String
    public var merged: Merged?

    public init(name: String, ranks: Int, shards: [Shard], records: Int, patents: Int, rejects: Int,
                rejectsFile: String, rejectsSHA1: String, summaryFile: String, merged: Merged? = nil) {
        self.name = name; self.ranks = ranks; self.shards = shards; self.records = records; self.patents = patents
        self.rejects = rejects; self.rejectsFile = rejectsFile; self.rejectsSHA1 = rejectsSHA1; self.summaryFile = summaryFile
        self.merged = merged
    }

    public var fragments: Int { shards.reduce(0) { $0 + $1.fragments } }

    public var jsonValue: JSONValue {
        func shard(_ sh: Shard) -> JSONValue {
            .object([("file", .string(sh.file)), ("fragments", .integer(sh.fragments)), ("patents", .integer(sh.patents)),
                     ("bytes", .integer(sh.bytes)), ("sha1", .string(sh.sha1))])
        }
        var members: [(String, JSONValue)] = [
            ("format", .string(Self.format)), ("name", .string(name)), ("ranks", .integer(ranks)),
            ("records", .integer(records)), ("patents", .integer(patents)), ("fragments", .integer(fragments)), ("rejects", .integer(rejects)),
            ("shards", .array(shards.map(shard))),
            ("rejects_file", .string(rejectsFile)), ("rejects_sha1", .string(rejectsSHA1)), ("summary_file", .string(summaryFile)),
        ]
        if let m = merged {
            members.append(("merged", .object([("file", .string(m.file)), ("fragments", .integer(m.fragments)),
                                               ("bytes", .integer(m.bytes)), ("sha1", .string(m.sha1))])))
        }
        return .object(members)
    }

    public func json() -> String { jsonValue.text(indent: 2) + "\n" }

    public func write(to path: String) throws {
        let writer = try FileWriter(path: path, atomic: true)
        try writer.write(json())
        try writer.commit()
    }

    public static func load(_ path: String) throws -> CorpusManifest {
        let object: JSONValue
        do { object = try JSONValue.parse(try FileSystem.readAll(path)) } catch let e as JSONSyntaxError {
            throw CorpusError.manifest(path: path, reason: e.description)
        }
        guard object.members != nil else { throw CorpusError.manifest(path: path, reason: "not a JSON object") }
        func int(_ o: JSONValue, _ key: String) throws -> Int {
            guard let v = o[key]?.int else { throw CorpusError.manifest(path: path, reason: "field \(key) is missing or not an integer") }
            return v
        }
        func string(_ o: JSONValue, _ key: String) throws -> String {
            guard let v = o[key]?.string else { throw CorpusError.manifest(path: path, reason: "field \(key) is missing or not a string") }
            return v
        }
        guard object["format"]?.string == format else {
            throw CorpusError.manifest(path: path, reason: "format is not \(format)")
        }
        guard let shardObjects = object["shards"]?.array else { throw CorpusError.manifest(path: path, reason: "field shards is missing or not an array") }
        let shards = try shardObjects.map { o in
            Shard(file: try string(o, "file"), fragments: try int(o, "fragments"),
                  patents: try int(o, "patents"), bytes: try int(o, "bytes"), sha1: try string(o, "sha1"))
        }
        var manifest = CorpusManifest(
            name: try string(object, "name"), ranks: try int(object, "ranks"), shards: shards,
            records: try int(object, "records"), patents: try int(object, "patents"),
            rejects: try int(object, "rejects"), rejectsFile: try string(object, "rejects_file"),
            rejectsSHA1: try string(object, "rejects_sha1"), summaryFile: try string(object, "summary_file"))
        if let m = object["merged"], !m.isNull {
            manifest.merged = Merged(file: try string(m, "file"), fragments: try int(m, "fragments"),
                                     bytes: try int(m, "bytes"), sha1: try string(m, "sha1"))
        }
        if manifest.shards.count != manifest.ranks { throw CorpusError.manifest(path: path, reason: "\(manifest.shards.count) shards for \(manifest.ranks) ranks") }
        return manifest
    }
}

/// A prepared corpus read through its manifest: the shards in order, as one
/// sequence of JSONL records (the input order), each shard checked against
/// its record count, byte count and SHA-1 as it is read. Later stages use
/// this instead of listing shard files themselves.
public struct PreparedCorpus {
    public let manifestPath: String
    public let manifest: CorpusManifest
    public let directory: String

    public init(manifestPath: String) throws {
        self.manifestPath = manifestPath
        manifest = try CorpusManifest.load(manifestPath)
        if let slash = manifestPath.lastIndex(of: "/") { directory = String(manifestPath[..<slash]) } else { directory = "." }
    }

    /// Shard files are relative to the manifest's directory (or absolute).
    public var shardPaths: [String] { manifest.shards.map { $0.file.hasPrefix("/") ? $0.file : directory + "/" + $0.file } }
    public var recordCount: Int { manifest.fragments }

    /// Records `[lo, hi)` of the corpus for `rank` of `size`: an even split
    /// by record count, in order.
    public func recordRange(rank: Int, size: Int) -> Range<Int> {
        let total = recordCount
        return (total * rank / size)..<(total * (rank + 1) / size)
    }

    /// Calls `body(index, line)` for records in `range` (all by default), in
    /// corpus order; `line` has no newline and is valid only during the call.
    /// Shards read whole are verified; `body` returns false to stop.
    public func forEachRecord(in range: Range<Int>? = nil, _ body: (Int, UnsafeBufferPointer<UInt8>) throws -> Bool) throws {
        let wanted = range ?? 0..<recordCount
        var first = 0
        for (shard, path) in zip(manifest.shards, shardPaths) {
            defer { first += shard.fragments }
            let shardRange = first..<(first + shard.fragments)
            // Empty shards are still checked (to be empty) when reading everything.
            guard shard.fragments == 0 ? range == nil : shardRange.overlaps(wanted) else { continue }
            let whole = wanted.lowerBound <= shardRange.lowerBound && wanted.upperBound >= shardRange.upperBound
            var tally = ShardTally()
            var count = 0
            var stopped = false
            try LineReader(path: path).forEachLine { _, line in
                let index = first + count
                count += 1
                if whole { tally.add(line) }
                if wanted.contains(index) {
                    if try !body(index, line) { stopped = true; return false }
                } else if index >= wanted.upperBound {
                    return false
                }
                return true
            }
            if stopped { return }
            if whole { try tally.check(against: shard, path: path) }
        }
    }

    /// The shards, each with its path and what the manifest says of it.
    public var shards: [PreparedShard] {
        zip(manifest.shards, shardPaths).map { PreparedShard(path: $1, expected: $0) }
    }

    /// Writes the shards, verified, as one file `NAME.jsonl` beside the manifest.
    public func merge() throws -> CorpusManifest.Merged {
        let file = manifest.name + ".jsonl"
        let writer = try FileWriter(path: directory + "/" + file, atomic: true, bufferSize: 4 << 20)
        var sha = SHA1()
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1 << 20)
        var count = 0
        try forEachRecord { _, line in
            buffer.append(contentsOf: line); buffer.append(0x0A)
            count += 1
            if buffer.count >= 1 << 20 {
                buffer.withUnsafeBytes { sha.update($0) }
                try writer.write(buffer)
                buffer.removeAll(keepingCapacity: true)
            }
            return true
        }
        buffer.withUnsafeBytes { sha.update($0) }
        try writer.write(buffer)
        try writer.commit()
        return CorpusManifest.Merged(file: file, fragments: count, bytes: writer.bytesWritten, sha1: sha.finalizeHex())
    }
}

/// One shard of a prepared corpus and what its manifest says of it.
public struct PreparedShard: Sendable, Equatable {
    public let path: String
    public let expected: CorpusManifest.Shard

    public init(path: String, expected: CorpusManifest.Shard) {
        self.path = path; self.expected = expected
    }

    /// Reads the whole shard and checks its record count, byte count and SHA-1.
    public func verify() throws {
        var tally = ShardTally()
        try LineReader(path: path).forEachLine { _, line in tally.add(line); return true }
        try tally.check(against: expected, path: path)
    }
}

/// Records, bytes and SHA-1 of a shard's lines as read, to check against its manifest entry.
struct ShardTally {
    private var sha = SHA1()
    private(set) var records = 0
    private(set) var bytes = 0
    private static let newline: [UInt8] = [0x0A]

    mutating func add(_ line: UnsafeBufferPointer<UInt8>) {
        sha.update(UnsafeRawBufferPointer(line))
        sha.update(Self.newline)
        bytes += line.count + 1
        records += 1
    }

    func check(against shard: CorpusManifest.Shard, path: String) throws {
        if records != shard.fragments { throw CorpusError.shardMismatch(path: path, reason: "\(records) records, manifest says \(shard.fragments)") }
        if bytes != shard.bytes { throw CorpusError.shardMismatch(path: path, reason: "\(bytes) bytes, manifest says \(shard.bytes)") }
        var digest = sha
        let hex = digest.finalizeHex()
        if hex != shard.sha1 { throw CorpusError.shardMismatch(path: path, reason: "SHA-1 \(hex), manifest says \(shard.sha1)") }
    }
}
