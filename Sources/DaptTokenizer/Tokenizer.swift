import DaptCore

/// A token that is matched in the raw text before pre-tokenization and never
/// split (`<|bos|>`, chat markers, ...).
public struct AddedToken: Sendable, Equatable {
    public var id: UInt32
    public var content: String
    public var special: Bool
    public init(id: UInt32, content: String, special: Bool = true) {
        self.id = id; self.content = content; self.special = special
    }
}

public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    case unknownId(UInt32, vocabSize: Int)
    case invalidFile(path: String, field: String, reason: String)
    case missingToken(String)

    public var description: String {
        switch self {
        case .unknownId(let id, let n): return "token id \(id) is not in the vocabulary (size \(n))"
        case .invalidFile(let path, let field, let reason): return "\(path): \(field): \(reason)"
        case .missingToken(let t): return "token \"\(t)\" is not in the vocabulary"
        }
    }
}

/// The 256 byte tokens as the default special tokens dapt trains with.
public enum SpecialTokens {
    public static let bos = "<|bos|>"
    public static let eos = "<|eos|>"
    public static let pad = "<|pad|>"
    public static let defaults = [bos, eos, pad, "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
}

/// A byte-level BPE tokenizer: immutable tables, safe to share between
/// threads. Encoding goes through a `TokenEncoder` (one per thread, it owns
/// the cache and scratch buffers).
public struct BPETokenizer: Sendable {
    public let preTokenizer: PreTokenizerKind
    /// `ByteLevel.add_prefix_space`: a space is put before each text segment that lacks one.
    public let addPrefixSpace: Bool
    /// A pre-token that is itself in the vocabulary is taken whole (Llama 3 style).
    public let ignoreMerges: Bool
    /// Merges in rank order, as (left id, right id, merged id).
    public let merges: [(UInt32, UInt32, UInt32)]
    public let addedTokens: [AddedToken]
    /// One more than the largest id.
    public let vocabSize: Int

    let byteIds: [UInt32]
    let mergeTable: PairTable                // (left, right) -> rank << 32 | merged id
    let tokenBytes: [UInt8]                  // bytes of every id, concatenated
    let tokenStarts: [Int]                   // id -> range in tokenBytes (count vocabSize + 1)
    let present: [Bool]                      // id has a token
    let vocabIndex: ByteStringTable          // model token bytes -> index into vocabIndexIds
    let vocabIndexIds: [UInt32]
    let addedMatcher: AddedTokenMatcher

    /// `vocab`: every model token's bytes and id; `merges` as (left, right)
    /// token ids in rank order; `added` tokens may or may not also be in `vocab`.
    public init(vocab: [(bytes: [UInt8], id: UInt32)], merges: [(UInt32, UInt32)], added: [AddedToken],
                preTokenizer: PreTokenizerKind, addPrefixSpace: Bool = false, ignoreMerges: Bool = false) throws {
        self.preTokenizer = preTokenizer
        self.addPrefixSpace = addPrefixSpace
        self.ignoreMerges = ignoreMerges
        self.addedTokens = added
        let maxId = max(vocab.map(\.id).max() ?? 0, added.map(\.id).max() ?? 0)
        vocabSize = vocab.isEmpty && added.isEmpty ? 0 : Int(maxId) + 1
        var bytesOf = [[UInt8]?](repeating: nil, count: vocabSize)
        var index = ByteStringTable(capacity: vocab.count)
        var indexIds: [UInt32] = []
        for (bytes, id) in vocab {
            if bytesOf[Int(id)] != nil { throw TokenizerError.invalidFile(path: "", field: "model.vocab", reason: "id \(id) is used twice") }
            bytesOf[Int(id)] = bytes
            let r = bytes.withUnsafeBufferPointer { index.insert($0, hash: ByteStringTable.hash($0)) }
            if r.inserted { indexIds.append(id) }
        }
        for token in added where bytesOf[Int(token.id)] == nil { bytesOf[Int(token.id)] = Array(token.content.utf8) }
        var byteIds = [UInt32](repeating: 0, count: 256)
        for b in 0..<256 {
            let found = [UInt8(b)].withUnsafeBufferPointer { index.find($0, hash: ByteStringTable.hash($0)) }
            guard let found else {
                throw TokenizerError.invalidFile(path: "", field: "model.vocab", reason: "no token for byte \(b) (\"\(ByteLevel.encode([UInt8(b)]))\"): not a complete byte-level vocabulary")
            }
            byteIds[b] = indexIds[found]
        }
        var table = PairTable(capacity: merges.count)
        var full: [(UInt32, UInt32, UInt32)] = []
        full.reserveCapacity(merges.count)
        for (rank, (a, b)) in merges.enumerated() {
            guard Int(a) < vocabSize, Int(b) < vocabSize, let left = bytesOf[Int(a)], let right = bytesOf[Int(b)] else {
                throw TokenizerError.invalidFile(path: "", field: "model.merges[\(rank)]", reason: "refers to an unknown id")
            }
            let joined = left + right
            guard let m = joined.withUnsafeBufferPointer({ index.find($0, hash: ByteStringTable.hash($0)) }) else {
                throw TokenizerError.invalidFile(path: "", field: "model.merges[\(rank)]", reason: "merged token \"\(ByteLevel.encode(joined))\" is not in the vocabulary")
            }
            let key = PairTable.key(a, b)
            if table.get(key) == nil { table.set(key, UInt64(rank) << 32 | UInt64(indexIds[m])) }
            full.append((a, b, indexIds[m]))
        }
        var arena: [UInt8] = []
        var starts = [0]
        var present = [Bool](repeating: false, count: vocabSize)
        for id in 0..<vocabSize {
            if let bytes = bytesOf[id] { arena += bytes; present[id] = true }
            starts.append(arena.count)
        }
        self.byteIds = byteIds
        self.merges = full
        self.mergeTable = table
        self.tokenBytes = arena
        self.tokenStarts = starts
        self.present = present
        self.vocabIndex = index
        self.vocabIndexIds = indexIds
        self.addedMatcher = AddedTokenMatcher(added)
    }

    /// The id of an added token or vocabulary entry spelled `content`.
    public func id(of content: String) -> UInt32? {
        if let t = addedTokens.first(where: { $0.content == content }) { return t.id }
        let bytes = Array(content.utf8)
        return bytes.withUnsafeBufferPointer { vocabIndex.find($0, hash: ByteStringTable.hash($0)) }.map { vocabIndexIds[$0] }
    }

    /// The bytes of token `id`.
    public func bytes(of id: UInt32) throws -> ArraySlice<UInt8> {
        guard Int(id) < vocabSize, present[Int(id)] else { throw TokenizerError.unknownId(id, vocabSize: vocabSize) }
        return tokenBytes[tokenStarts[Int(id)]..<tokenStarts[Int(id) + 1]]
    }

    /// The exact bytes `ids` stand for (any byte sequence, valid UTF-8 or not).
    public func decode(_ ids: some Sequence<UInt32>) throws -> [UInt8] {
        var out: [UInt8] = []
        for id in ids { out += try bytes(of: id) }
        return out
    }

    /// The text `ids` stand for; invalid UTF-8 shows as U+FFFD.
    public func decodeText(_ ids: some Sequence<UInt32>) throws -> String {
        String(decoding: try decode(ids), as: UTF8.self)
    }

    /// Convenience: encodes with a fresh encoder (use a `TokenEncoder` for many texts).
    public func encode(_ text: String) -> [UInt32] { TokenEncoder(self).encode(text) }
}

/// Finds added tokens in raw bytes: leftmost, then longest match.
struct AddedTokenMatcher: Sendable {
    let tokens: [(bytes: [UInt8], id: UInt32)]   // longest first
    let firstBytes: [Bool]

    init(_ added: [AddedToken]) {
        tokens = added.map { (Array($0.content.utf8), $0.id) }.filter { !$0.0.isEmpty }
            .sorted { $0.0.count != $1.0.count ? $0.0.count > $1.0.count : $0.1 < $1.1 }
        var first = [Bool](repeating: false, count: 256)
        for t in tokens { first[Int(t.bytes[0])] = true }
        firstBytes = first
    }

    /// Calls `body(start, end, addedId)` for each segment of `text`: plain text with nil, added tokens with their id.
    @inline(__always) func segments(_ text: UnsafeBufferPointer<UInt8>, _ body: (Int, Int, UInt32?) -> Void) {
        if tokens.isEmpty { if text.count > 0 { body(0, text.count, nil) }; return }
        var start = 0
        var i = 0
        let n = text.count
        while i < n {
            if firstBytes[Int(text[i])], let (len, id) = match(text, i) {
                if start < i { body(start, i, nil) }
                body(i, i + len, id)
                i += len
                start = i
            } else {
                i += 1
            }
        }
        if start < n { body(start, n, nil) }
    }

    func match(_ text: UnsafeBufferPointer<UInt8>, _ at: Int) -> (Int, UInt32)? {
        for t in tokens where at + t.bytes.count <= text.count {
            var equal = true
            for k in 0..<t.bytes.count where text[at + k] != t.bytes[k] { equal = false; break }
            if equal { return (t.bytes.count, t.id) }
        }
        return nil
    }
}

/// Length of the valid UTF-8 prefix of `text[from...]` (stops before the first
/// invalid byte).
@inline(__always) func validUTF8Prefix(_ text: UnsafeBufferPointer<UInt8>, from: Int, to end: Int) -> Int {
    var i = from
    while i < end {
        let b0 = text[i]
        if b0 < 0x80 { i += 1; continue }
        var len = 0
        var minValue: UInt32 = 0
        var v: UInt32 = 0
        if b0 >= 0xC2 && b0 <= 0xDF { len = 2; v = UInt32(b0 & 0x1F); minValue = 0x80 }
        else if b0 >= 0xE0 && b0 <= 0xEF { len = 3; v = UInt32(b0 & 0x0F); minValue = 0x800 }
        else if b0 >= 0xF0 && b0 <= 0xF4 { len = 4; v = UInt32(b0 & 0x07); minValue = 0x10000 }
        else { break }
        if i + len > end { break }
        var ok = true
        for k in 1..<len {
            let b = text[i + k]
            if b & 0xC0 != 0x80 { ok = false; break }
            v = v << 6 | UInt32(b & 0x3F)
        }
        if !ok || v < minValue || v > 0x10FFFF || (v >= 0xD800 && v < 0xE000) { break }
        i += len
    }
    return i - from
}

/// Encodes text with one tokenizer, caching the ids of recent pre-tokens.
/// Not thread-safe: one per thread.
public final class TokenEncoder {
    public var tokenizer: BPETokenizer { core.tokenizer }
    private var core: EncoderCore
    public var cacheHits: Int { core.cacheHits }
    public var cacheMisses: Int { core.cacheMisses }

    /// `cacheEntries` pre-tokens are kept; the cache is emptied when full.
    public init(_ tokenizer: BPETokenizer, cacheEntries: Int = 1 << 16) {
        core = EncoderCore(tokenizer: tokenizer, cacheCapacity: cacheEntries)
    }

    public func encode(_ text: String) -> [UInt32] {
        var out: [UInt32] = []
        var text = text
        text.withUTF8 { core.encode(bytes: $0, into: &out) }
        return out
    }

    public func encode(bytes: [UInt8]) -> [UInt32] {
        var out: [UInt32] = []
        bytes.withUnsafeBufferPointer { core.encode(bytes: $0, into: &out) }
        return out
    }

    /// Appends the ids of `text` to `out`. Added tokens are matched first;
    /// bytes that are not valid UTF-8 become one byte token each.
    public func encode(bytes text: UnsafeBufferPointer<UInt8>, into out: inout [UInt32]) {
        core.encode(bytes: text, into: &out)
    }
}

/// The encoder's state as a value, so the hot path runs on one exclusive
/// `inout` (a class property would be access-checked at every touch).
struct EncoderCore {
    let tokenizer: BPETokenizer
    let cacheCapacity: Int
    private var pre: PreTokenizer
    private var pieces: [Int32] = []
    private var cache = ByteStringTable(capacity: 1 << 14)
    private var cacheIdStarts: [Int] = [0]
    private var cacheIds: [UInt32] = []
    private var work: [UInt32] = []
    private var ranks: [UInt64] = []
    private var symbolNext: [Int32] = []
    private var symbolPrev: [Int32] = []
    private var heap: [UInt64] = []
    private var segments: [Int] = []
    private(set) var cacheHits = 0
    private(set) var cacheMisses = 0

    init(tokenizer: BPETokenizer, cacheCapacity: Int) {
        self.tokenizer = tokenizer
        self.cacheCapacity = cacheCapacity
        self.pre = PreTokenizer(kind: tokenizer.preTokenizer)
    }

    mutating func encode(bytes text: UnsafeBufferPointer<UInt8>, into out: inout [UInt32]) {
        // Segments: (start, end, added id or -1).
        var segs = segments
        segments = []
        segs.removeAll(keepingCapacity: true)
        tokenizer.addedMatcher.segments(text) { start, end, added in
            segs.append(start); segs.append(end); segs.append(added.map { Int($0) } ?? -1)
        }
        var k = 0
        while k < segs.count {
            let start = segs[k], end = segs[k + 1], added = segs[k + 2]
            k += 3
            if added >= 0 { out.append(UInt32(added)); continue }
            if tokenizer.addPrefixSpace && text[start] != 0x20 {
                let prefixed = [0x20] + Array(UnsafeBufferPointer(rebasing: text[start..<end]))
                prefixed.withUnsafeBufferPointer { encodeSegment($0, 0, $0.count, into: &out) }
            } else {
                encodeSegment(text, start, end, into: &out)
            }
        }
        segments = segs
    }

    private mutating func encodeSegment(_ text: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, into out: inout [UInt32]) {
        var i = start
        while i < end {
            let valid = validUTF8Prefix(text, from: i, to: end)
            if valid > 0 {
                let run = UnsafeBufferPointer(rebasing: text[i..<(i + valid)])
                var list = pieces
                pieces = []
                list.removeAll(keepingCapacity: true)
                pre.split(run) { s, e in list.append(Int32(s)); list.append(Int32(e)) }
                var p = 0
                while p < list.count {
                    encodeWord(UnsafeBufferPointer(rebasing: run[Int(list[p])..<Int(list[p + 1])]), into: &out)
                    p += 2
                }
                pieces = list
                i += valid
            } else {
                out.append(tokenizer.byteIds[Int(text[i])])
                i += 1
            }
        }
    }

    /// Appends the ids of one pre-token.
    @inline(__always) private mutating func encodeWord(_ word: UnsafeBufferPointer<UInt8>, into out: inout [UInt32]) {
        if word.count == 1 { out.append(tokenizer.byteIds[Int(word[0])]); return }
        let hash = ByteStringTable.hash(word)
        if let hit = cache.find(word, hash: hash) {
            cacheHits += 1
            out.append(contentsOf: cacheIds[cacheIdStarts[hit]..<cacheIdStarts[hit + 1]])
            return
        }
        cacheMisses += 1
        let firstNew = out.count
        if tokenizer.ignoreMerges, let whole = tokenizer.vocabIndex.find(word, hash: hash) {
            out.append(tokenizer.vocabIndexIds[whole])
        } else if word.count > 24 {
            mergeLongWord(word, into: &out)
        } else {
            mergeWord(word, into: &out)
        }
        if cache.count >= cacheCapacity || cacheIds.count > cacheCapacity * 64 {
            cache.removeAll()
            cacheIds.removeAll(keepingCapacity: true)
            cacheIdStarts.removeAll(keepingCapacity: true)
            cacheIdStarts.append(0)
        }
        _ = cache.insert(word, hash: hash)
        cacheIds.append(contentsOf: out[firstNew...])
        cacheIdStarts.append(cacheIds.count)
    }

    /// BPE on one pre-token: repeatedly merge the adjacent pair of lowest rank
    /// (leftmost on ties).
    private mutating func mergeWord(_ word: UnsafeBufferPointer<UInt8>, into out: inout [UInt32]) {
        let n = word.count
        work.removeAll(keepingCapacity: true)
        ranks.removeAll(keepingCapacity: true)
        let byteIds = tokenizer.byteIds
        for b in word { work.append(byteIds[Int(b)]) }
        let table = tokenizer.mergeTable
        let none = UInt64.max
        for i in 0..<(n - 1) { ranks.append(table.get(PairTable.key(work[i], work[i + 1])) ?? none) }
        work.withUnsafeMutableBufferPointer { w in
            ranks.withUnsafeMutableBufferPointer { r in
                var count = n
                while count > 1 {
                    var best = none, at = -1
                    for i in 0..<(count - 1) where r[i] < best { best = r[i]; at = i }
                    if at < 0 { break }
                    w[at] = UInt32(truncatingIfNeeded: best)
                    // Remove symbol at+1 and pair rank at.
                    var k = at + 1
                    while k < count - 1 { w[k] = w[k + 1]; k += 1 }
                    k = at
                    while k < count - 2 { r[k] = r[k + 1]; k += 1 }
                    count -= 1
                    if at > 0 { r[at - 1] = table.get(PairTable.key(w[at - 1], w[at])) ?? none }
                    if at < count - 1 { r[at] = table.get(PairTable.key(w[at], w[at + 1])) ?? none }
                }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: w[0..<count]))
            }
        }
    }

    /// The same merges for long pre-tokens (runs of Han characters) in
    /// O(n log n): symbols in a linked list, candidate pairs in a min-heap of
    /// (rank, position), stale entries skipped when popped.
    private mutating func mergeLongWord(_ word: UnsafeBufferPointer<UInt8>, into out: inout [UInt32]) {
        let n = word.count
        let table = tokenizer.mergeTable
        let byteIds = tokenizer.byteIds
        work.removeAll(keepingCapacity: true)
        symbolNext.removeAll(keepingCapacity: true)
        symbolPrev.removeAll(keepingCapacity: true)
        heap.removeAll(keepingCapacity: true)
        for (i, b) in word.enumerated() {
            work.append(byteIds[Int(b)])
            symbolNext.append(Int32(i + 1))
            symbolPrev.append(Int32(i - 1))
        }
        symbolNext[n - 1] = -1
        heap.reserveCapacity(2 * n)
        var heapCount = 0
        work.withUnsafeMutableBufferPointer { w in
        symbolNext.withUnsafeMutableBufferPointer { next in
        symbolPrev.withUnsafeMutableBufferPointer { prev in
        heap.removeAll(keepingCapacity: true)
        heap.append(contentsOf: repeatElement(0, count: 2 * n))
        heap.withUnsafeMutableBufferPointer { h in
            @inline(__always) func push(_ entry: UInt64) {
                var i = heapCount
                heapCount += 1
                h[i] = entry
                while i > 0 {
                    let parent = (i - 1) >> 1
                    if h[parent] <= h[i] { break }
                    h.swapAt(parent, i); i = parent
                }
            }
            @inline(__always) func pop() -> UInt64 {
                let top = h[0]
                heapCount -= 1
                let last = heapCount
                h[0] = h[last]
                var i = 0
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var m = i
                    if l < last && h[l] < h[m] { m = l }
                    if r < last && h[r] < h[m] { m = r }
                    if m == i { break }
                    h.swapAt(i, m); i = m
                }
                return top
            }
            // Entry: rank (high 32 bits) then position, so ties go to the leftmost pair.
            @inline(__always) func candidate(_ i: Int) {
                let j = Int(next[i])
                guard j >= 0, let v = table.get(PairTable.key(w[i], w[j])) else { return }
                push((v >> 32) << 32 | UInt64(i))
            }
            for i in 0..<(n - 1) { candidate(i) }
            while heapCount > 0 {
                let entry = pop()
                let i = Int(entry & 0xFFFF_FFFF)
                let j = Int(next[i])
                // Stale when the symbol was merged away or its pair changed.
                guard w[i] != UInt32.max, j >= 0, let v = table.get(PairTable.key(w[i], w[j])), v >> 32 == entry >> 32 else { continue }
                w[i] = UInt32(truncatingIfNeeded: v)
                w[j] = UInt32.max
                let k = Int(next[j])
                next[i] = Int32(k)
                if k >= 0 { prev[k] = Int32(i) }
                if prev[i] >= 0 { candidate(Int(prev[i])) }
                candidate(i)
            }
            var i = 0
            while i >= 0 { out.append(w[i]); i = Int(next[i]) }
        }
        }
        }
        }
    }
}
