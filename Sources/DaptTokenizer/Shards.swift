import DaptCluster
import DaptCore
#if canImport(Glibc)
import Glibc
#endif

// Token shard directory (written by `dapt tokenizer encode`, read by `TokenShardReader`):
//
//   manifest.json        format "dapt-token-shards", version 1, token_bytes (2: uint16, 4: uint32),
//                        vocab_size, tokenizer_xxh64, add_bos/add_eos, totals (lines, documents,
//                        rejected, tokens), inputs (path, lines), languages (tokens per character
//                        by zh/en/other), and per shard: index, name, first_line, lines, documents,
//                        rejected, tokens, tokens_xxh64, index_xxh64.
//   tokenizer.json       the tokenizer the ids come from (its xxh64 is in the manifest).
//   shard-NNNNN.tokens   the documents' ids back to back, little-endian uint16 or uint32.
//   shard-NNNNN.index    documents + 1 little-endian uint64 token offsets (0 first, tokens last):
//                        document i of the shard is tokens[index[i] ..< index[i + 1]].
//   shard-NNNNN.rejects.jsonl   bad input lines (file, line, field, reason), only when not strict.
//
// Shard k holds input lines [k * shard_lines, (k + 1) * shard_lines) counted over all inputs in
// order, so documents keep corpus order and the files do not depend on the number of ranks.
// Checksums are XXH64 (seed 0) of the whole file, as `xxhsum -H64` prints them.

/// Token counts by document language, for "tokens per character" budgets.
public struct LanguageStats: Equatable, Sendable {
    public static let languages = ["zh", "en", "other"]
    public var documents = [Int64](repeating: 0, count: 3)
    public var characters = [Int64](repeating: 0, count: 3)
    public var hanCharacters = [Int64](repeating: 0, count: 3)
    public var tokens = [Int64](repeating: 0, count: 3)

    public init() {}

    /// Adds one document: its text and the number of tokens it became (without bos/eos).
    /// A document is zh when it has Han characters and at least as many of them as
    /// ASCII letters, en when it has ASCII letters otherwise, else other.
    public mutating func add(text: UnsafeBufferPointer<UInt8>, tokens count: Int) {
        var chars = 0, han = 0, latin = 0
        var i = 0
        let n = text.count
        while i < n {
            let b = text[i]
            if b < 0x80 {
                chars += 1
                if (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A { latin += 1 }
                i += 1
            } else if b >= 0xE0 && b < 0xF0 && i + 2 < n {
                let v = UInt32(b & 0x0F) << 12 | UInt32(text[i + 1] & 0x3F) << 6 | UInt32(text[i + 2] & 0x3F)
                chars += 1
                if CharClass.isHan(v) { han += 1 }
                i += 3
            } else if b >= 0xF0 && i + 3 < n {
                let v = UInt32(b & 0x07) << 18 | UInt32(text[i + 1] & 0x3F) << 12 | UInt32(text[i + 2] & 0x3F) << 6 | UInt32(text[i + 3] & 0x3F)
                chars += 1
                if CharClass.isHan(v) { han += 1 }
                i += 4
            } else {
                if b & 0xC0 != 0x80 { chars += 1 }
                i += 1
            }
        }
        let lang = han > 0 && han >= latin ? 0 : (latin > 0 ? 1 : 2)
        documents[lang] += 1
        characters[lang] += Int64(chars)
        hanCharacters[lang] += Int64(han)
        tokens[lang] += Int64(count)
    }

    var flat: [Int64] { documents + characters + hanCharacters + tokens }
    init(flat: [Int64]) {
        documents = Array(flat[0..<3]); characters = Array(flat[3..<6])
        hanCharacters = Array(flat[6..<9]); tokens = Array(flat[9..<12])
    }

    public func tokensPerCharacter(_ lang: Int) -> Double { characters[lang] > 0 ? Double(tokens[lang]) / Double(characters[lang]) : 0 }
    public func tokensPerHanCharacter(_ lang: Int) -> Double { hanCharacters[lang] > 0 ? Double(tokens[lang]) / Double(hanCharacters[lang]) : 0 }

    public var json: JSONValue {
        .object(Self.languages.indices.map { l in
            (Self.languages[l], .object([
                ("documents", .integer(documents[l])), ("characters", .integer(characters[l])),
                ("han_characters", .integer(hanCharacters[l])), ("tokens", .integer(tokens[l])),
                ("tokens_per_character", .float((tokensPerCharacter(l) * 1e4).rounded() / 1e4)),
            ]))
        })
    }
}

/// One shard's files and figures, as listed in the manifest.
public struct ShardInfo: Equatable, Sendable {
    public var index: Int
    public var name: String
    /// Global line numbers (0-based, over all inputs in order) this shard covers.
    public var firstLine: Int
    public var lines: Int
    public var documents: Int
    public var rejected: Int
    /// Blank lines skipped: lines = documents + rejected + blank lines.
    public var blankLines = 0
    public var tokens: Int
    public var tokensChecksum: String
    public var indexChecksum: String

    public var tokensFile: String { name + ".tokens" }
    public var indexFile: String { name + ".index" }
    public var rejectsFile: String { name + ".rejects.jsonl" }

    var json: JSONValue {
        .object([("index", .integer(index)), ("name", .string(name)), ("first_line", .integer(firstLine)),
                 ("lines", .integer(lines)), ("documents", .integer(documents)), ("rejected", .integer(rejected)),
                 ("blank_lines", .integer(blankLines)), ("tokens", .integer(tokens)), ("tokens_xxh64", .string(tokensChecksum)), ("index_xxh64", .string(indexChecksum))])
    }

    init(index: Int, name: String, firstLine: Int, lines: Int, documents: Int, rejected: Int, tokens: Int, tokensChecksum: String, indexChecksum: String) {
        self.index = index; self.name = name; self.firstLine = firstLine; self.lines = lines; self.documents = documents
        self.rejected = rejected; self.tokens = tokens; self.tokensChecksum = tokensChecksum; self.indexChecksum = indexChecksum
    }

    init(json v: JSONValue, field: String) throws {
        func int(_ k: String) throws -> Int {
            guard let x = v[k]?.int, x >= 0 else { throw TokenShardError.invalidManifest(field: "\(field).\(k)", reason: "missing or not a non-negative integer") }
            return x
        }
        func str(_ k: String) throws -> String {
            guard let x = v[k]?.string else { throw TokenShardError.invalidManifest(field: "\(field).\(k)", reason: "missing or not a string") }
            return x
        }
        self.init(index: try int("index"), name: try str("name"), firstLine: try int("first_line"), lines: try int("lines"),
                  documents: try int("documents"), rejected: try int("rejected"), tokens: try int("tokens"),
                  tokensChecksum: try str("tokens_xxh64"), indexChecksum: try str("index_xxh64"))
        if v["blank_lines"] != nil { blankLines = try int("blank_lines") }  // absent in manifests written before blank lines were counted
        if name.contains("/") { throw TokenShardError.invalidManifest(field: "\(field).name", reason: "must be a plain file name") }
    }
}

/// `manifest.json` of a token shard directory.
public struct TokenManifest: Equatable, Sendable {
    public static let format = "dapt-token-shards"
    public var version = 1
    /// 2 (uint16) or 4 (uint32), little-endian.
    public var tokenBytes: Int
    public var vocabSize: Int
    public var tokenizerChecksum: String
    public var addBos: Bool
    public var addEos: Bool
    public var inputs: [(path: String, lines: Int)]
    public var shards: [ShardInfo]
    public var languages: LanguageStats

    public var documents: Int { shards.reduce(0) { $0 + $1.documents } }
    public var tokens: Int { shards.reduce(0) { $0 + $1.tokens } }
    public var rejected: Int { shards.reduce(0) { $0 + $1.rejected } }
    public var blankLines: Int { shards.reduce(0) { $0 + $1.blankLines } }
    public var lines: Int { inputs.reduce(0) { $0 + $1.lines } }

    public static func == (a: TokenManifest, b: TokenManifest) -> Bool { a.json == b.json }

    public var json: JSONValue {
        .object([
            ("format", .string(Self.format)), ("version", .integer(version)),
            ("token_bytes", .integer(tokenBytes)), ("vocab_size", .integer(vocabSize)),
            ("tokenizer", .string("tokenizer.json")), ("tokenizer_xxh64", .string(tokenizerChecksum)),
            ("add_bos", .bool(addBos)), ("add_eos", .bool(addEos)),
            ("lines", .integer(lines)), ("documents", .integer(documents)),
            ("rejected", .integer(rejected)), ("blank_lines", .integer(blankLines)), ("tokens", .integer(tokens)),
            ("inputs", .array(inputs.map { .object([("path", .string($0.path)), ("lines", .integer($0.lines))]) })),
            ("languages", languages.json),
            ("shards", .array(shards.map(\.json))),
        ])
    }

    public init(tokenBytes: Int, vocabSize: Int, tokenizerChecksum: String, addBos: Bool, addEos: Bool,
                inputs: [(path: String, lines: Int)], shards: [ShardInfo], languages: LanguageStats) {
        self.tokenBytes = tokenBytes; self.vocabSize = vocabSize; self.tokenizerChecksum = tokenizerChecksum
        self.addBos = addBos; self.addEos = addEos; self.inputs = inputs; self.shards = shards; self.languages = languages
    }

    public init(json v: JSONValue) throws {
        func bad(_ f: String, _ r: String) -> TokenShardError { .invalidManifest(field: f, reason: r) }
        guard v["format"]?.string == Self.format else { throw bad("format", "expected \"\(Self.format)\"") }
        guard v["version"]?.int == 1 else { throw bad("version", "expected 1") }
        guard let tb = v["token_bytes"]?.int, tb == 2 || tb == 4 else { throw bad("token_bytes", "expected 2 or 4") }
        guard let vs = v["vocab_size"]?.int, vs > 0 else { throw bad("vocab_size", "expected a positive integer") }
        guard let tc = v["tokenizer_xxh64"]?.string else { throw bad("tokenizer_xxh64", "missing") }
        var inputs: [(path: String, lines: Int)] = []
        for (i, input) in (v["inputs"]?.array ?? []).enumerated() {
            guard let p = input["path"]?.string, let l = input["lines"]?.int else { throw bad("inputs[\(i)]", "needs path and lines") }
            inputs.append((p, l))
        }
        guard let list = v["shards"]?.array else { throw bad("shards", "missing") }
        let shards = try list.enumerated().map { try ShardInfo(json: $0.element, field: "shards[\($0.offset)]") }
        for (i, s) in shards.enumerated() where s.index != i { throw bad("shards[\(i)].index", "expected \(i), got \(s.index)") }
        var stats = LanguageStats()
        for (l, name) in LanguageStats.languages.enumerated() {
            guard let s = v["languages"]?[name] else { continue }
            stats.documents[l] = Int64(s["documents"]?.int ?? 0); stats.characters[l] = Int64(s["characters"]?.int ?? 0)
            stats.hanCharacters[l] = Int64(s["han_characters"]?.int ?? 0); stats.tokens[l] = Int64(s["tokens"]?.int ?? 0)
        }
        self.init(tokenBytes: tb, vocabSize: vs, tokenizerChecksum: tc, addBos: v["add_bos"]?.bool ?? false,
                  addEos: v["add_eos"]?.bool ?? false, inputs: inputs, shards: shards, languages: stats)
        for (field, claimed, actual) in [("documents", v["documents"]?.int, documents), ("tokens", v["tokens"]?.int, tokens),
                                         ("rejected", v["rejected"]?.int, rejected), ("lines", v["lines"]?.int, lines)] where claimed != actual {
            throw bad(field, "says \(claimed.map(String.init) ?? "nothing") but the shards add up to \(actual)")
        }
    }
}

public enum TokenShardError: Error, CustomStringConvertible, Equatable {
    case invalidManifest(field: String, reason: String)
    case sizeMismatch(file: String, expectedBytes: Int, actualBytes: Int)
    case checksumMismatch(file: String, expected: String, actual: String)
    case invalidIndex(file: String, entry: Int, reason: String)
    case tokenOutOfRange(file: String, offset: Int, id: UInt32, vocabSize: Int)
    case documentOutOfRange(Int, count: Int)

    public var description: String {
        switch self {
        case .invalidManifest(let f, let r): return "manifest.json: \(f): \(r)"
        case .sizeMismatch(let f, let e, let a): return "\(f): size is \(a) bytes but the manifest implies \(e) bytes"
        case .checksumMismatch(let f, let e, let a): return "\(f): xxh64 is \(a) but the manifest says \(e): the file is corrupt or from another run"
        case .invalidIndex(let f, let i, let r): return "\(f): entry \(i) (byte offset \(i * 8)): \(r)"
        case .tokenOutOfRange(let f, let o, let id, let n): return "\(f): token at byte offset \(o) is \(id), outside the vocabulary of \(n)"
        case .documentOutOfRange(let i, let n): return "document \(i) is outside 0..<\(n)"
        }
    }
}

/// The xxh64 of a file's bytes, as 16 hex digits.
public func fileChecksum(_ path: String) throws -> String {
    let file = try MappedFile(path: path)
    return file.withRawBytes { hex64(StableHash.xxh64($0)) }
}

func hex64(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}

/// Reads a token shard directory: documents by global index, their token
/// counts, with sizes (always) and checksums (when asked) verified against
/// the manifest. Immutable after opening; safe to share between threads.
public final class TokenShardReader: @unchecked Sendable {
    public let directory: String
    public let manifest: TokenManifest
    private let tokenFiles: [MappedFile]
    private let indexFiles: [MappedFile]
    /// Global index of each shard's first document (and the total at the end).
    private let firstDocument: [Int]

    public var documentCount: Int { firstDocument.last ?? 0 }
    public var tokenCount: Int { manifest.tokens }
    public var vocabSize: Int { manifest.vocabSize }

    /// Opens `directory`; with `verify`, every file's checksum and every
    /// token id are checked too (reads all the data once).
    public init(directory: String, verify: Bool = true) throws {
        self.directory = directory
        // Only a folder `tokenizer encode` published complete is read.
        try OutputPublisher.requireComplete(directory)
        let manifestPath = directory + "/manifest.json"
        let bytes = try FileSystem.readAll(manifestPath)
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch { throw TokenShardError.invalidManifest(field: "", reason: error.description) }
        manifest = try TokenManifest(json: json)
        var tokenFiles: [MappedFile] = [], indexFiles: [MappedFile] = []
        var first = [0]
        for shard in manifest.shards {
            let t = try MappedFile(path: directory + "/" + shard.tokensFile)
            let x = try MappedFile(path: directory + "/" + shard.indexFile)
            if t.count != shard.tokens * manifest.tokenBytes {
                throw TokenShardError.sizeMismatch(file: t.path, expectedBytes: shard.tokens * manifest.tokenBytes, actualBytes: t.count)
            }
            if x.count != (shard.documents + 1) * 8 {
                throw TokenShardError.sizeMismatch(file: x.path, expectedBytes: (shard.documents + 1) * 8, actualBytes: x.count)
            }
            if verify {
                for (file, expected) in [(t, shard.tokensChecksum), (x, shard.indexChecksum)] {
                    let actual = file.withRawBytes { hex64(StableHash.xxh64($0)) }
                    if actual != expected { throw TokenShardError.checksumMismatch(file: file.path, expected: expected, actual: actual) }
                }
            }
            // The index must start at 0, never go down, and end at the token count.
            try x.withRawBytes { raw in
                var previous: UInt64 = 0
                for i in 0...shard.documents {
                    let v = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
                    if i == 0 && v != 0 { throw TokenShardError.invalidIndex(file: x.path, entry: 0, reason: "first offset is \(v), not 0") }
                    if v < previous { throw TokenShardError.invalidIndex(file: x.path, entry: i, reason: "offset \(v) is below the previous \(previous)") }
                    if i == shard.documents && v != UInt64(shard.tokens) {
                        throw TokenShardError.invalidIndex(file: x.path, entry: i, reason: "last offset is \(v), not the token count \(shard.tokens)")
                    }
                    previous = v
                }
            }
            if verify {
                let tb = manifest.tokenBytes, vocab = manifest.vocabSize
                try t.withRawBytes { raw in
                    for k in 0..<shard.tokens {
                        let id = tb == 2 ? UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: k * 2, as: UInt16.self)))
                                         : UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: k * 4, as: UInt32.self))
                        if Int(id) >= vocab { throw TokenShardError.tokenOutOfRange(file: t.path, offset: k * tb, id: id, vocabSize: vocab) }
                    }
                }
            }
            tokenFiles.append(t); indexFiles.append(x)
            first.append(first.last! + shard.documents)
        }
        self.tokenFiles = tokenFiles
        self.indexFiles = indexFiles
        self.firstDocument = first
    }

    /// The shard and local index of global document `i`.
    private func locate(_ i: Int) throws -> (shard: Int, local: Int) {
        guard i >= 0 && i < documentCount else { throw TokenShardError.documentOutOfRange(i, count: documentCount) }
        var lo = 0, hi = firstDocument.count - 1   // firstDocument[lo] <= i < firstDocument[hi]
        while hi - lo > 1 {
            let mid = (lo + hi) / 2
            if firstDocument[mid] <= i { lo = mid } else { hi = mid }
        }
        return (lo, i - firstDocument[lo])
    }

    private func bounds(_ shard: Int, _ local: Int) -> (Int, Int) {
        indexFiles[shard].withRawBytes { raw in
            (Int(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: local * 8, as: UInt64.self))),
             Int(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: local * 8 + 8, as: UInt64.self))))
        }
    }

    /// Number of tokens of document `i` (bos/eos included when the shards have them).
    public func documentLength(_ i: Int) throws -> Int {
        let (s, l) = try locate(i)
        let (a, b) = bounds(s, l)
        return b - a
    }

    /// Token counts of every document, in order (for packing plans).
    public func documentLengths() -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(documentCount)
        for (s, shard) in manifest.shards.enumerated() where shard.documents > 0 {
            indexFiles[s].withRawBytes { raw in
                var previous = 0
                for i in 1...shard.documents {
                    let v = Int(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)))
                    out.append(v - previous)
                    previous = v
                }
            }
        }
        return out
    }

    /// Appends tokens `range` (positions within the document) of document `i` to `out`.
    public func appendTokens(document i: Int, range: Range<Int>, to out: inout [UInt32]) throws {
        let (s, l) = try locate(i)
        let (a, b) = bounds(s, l)
        guard range.lowerBound >= 0 && range.upperBound <= b - a else {
            throw TokenShardError.invalidIndex(file: indexFiles[s].path, entry: l, reason: "token range \(range) is outside the document's \(b - a) tokens")
        }
        let tb = manifest.tokenBytes
        tokenFiles[s].withRawBytes { raw in
            for k in (a + range.lowerBound)..<(a + range.upperBound) {
                out.append(tb == 2 ? UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: k * 2, as: UInt16.self)))
                                   : UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: k * 4, as: UInt32.self)))
            }
        }
    }

    /// Appends the tokens of document `i` to `out`.
    public func appendDocument(_ i: Int, to out: inout [UInt32]) throws {
        let (s, l) = try locate(i)
        let (a, b) = bounds(s, l)
        let tb = manifest.tokenBytes
        tokenFiles[s].withRawBytes { raw in
            out.reserveCapacity(out.count + b - a)
            if tb == 2 {
                for k in a..<b { out.append(UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: k * 2, as: UInt16.self)))) }
            } else {
                for k in a..<b { out.append(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: k * 4, as: UInt32.self))) }
            }
        }
    }

    public func document(_ i: Int) throws -> [UInt32] {
        var out: [UInt32] = []
        try appendDocument(i, to: &out)
        return out
    }

    /// The tokenizer the shards were made with (checked against the manifest).
    public func tokenizer() throws -> BPETokenizer {
        let path = directory + "/tokenizer.json"
        let actual = try fileChecksum(path)
        if actual != manifest.tokenizerChecksum { throw TokenShardError.checksumMismatch(file: path, expected: manifest.tokenizerChecksum, actual: actual) }
        return try BPETokenizer.load(path: path)
    }
}
