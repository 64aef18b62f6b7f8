import DaptCore

/// Byte-level BPE training. Text streams in through `add(text:)`, which keeps
/// only the count of each distinct pre-token; `train()` then learns merges
/// with incremental pair counts and a priority queue.
///
/// Deterministic: ids are specials, then the 256 bytes in the order of their
/// byte-level spelling, then merges; the next merge is the pair with the
/// highest count, ties broken by the smaller (left id, right id). No step
/// depends on hash-table order. These are the rules of Hugging Face's
/// `BpeTrainer`, so both learn the same merges from the same pre-tokens.
public struct BPETrainer {
    public let vocabSize: Int
    public let minFrequency: Int
    public let specialTokens: [String]
    public let preTokenizer: PreTokenizerKind
    private var words = ByteStringTable(capacity: 1 << 16)
    private var wordCounts: [Int64] = []
    private var pre: PreTokenizer
    private let added: AddedTokenMatcher
    public private(set) var bytesSeen = 0
    public private(set) var textsSeen = 0

    /// Distinct pre-tokens kept while counting. When the table grows past
    /// this, the rarest words (count 1, then 2, ...) are dropped until it is
    /// at most half full, so memory stays bounded whatever the corpus size.
    /// Below the cap counting is exact.
    public let maxWords: Int
    /// Words dropped by that pruning, and the highest count dropped.
    public private(set) var prunedWords = 0
    public private(set) var prunedBelowCount: Int64 = 0

    public init(vocabSize: Int, minFrequency: Int = 2, specialTokens: [String] = SpecialTokens.defaults,
                preTokenizer: PreTokenizerKind = .dapt, maxWords: Int = 8_000_000) {
        self.maxWords = max(16, maxWords)
        self.vocabSize = vocabSize
        self.minFrequency = max(1, minFrequency)
        self.specialTokens = specialTokens
        self.preTokenizer = preTokenizer
        self.pre = PreTokenizer(kind: preTokenizer)
        self.added = AddedTokenMatcher(specialTokens.enumerated().map { AddedToken(id: UInt32($0.offset), content: $0.element) })
    }

    public var distinctWords: Int { words.count }

    /// Counts the pre-tokens of one text (special tokens in it are left out).
    public mutating func add(text: UnsafeBufferPointer<UInt8>) {
        textsSeen += 1
        bytesSeen += text.count
        // The splitter is taken out of self while `count` mutates self.
        var splitter = pre
        pre = PreTokenizer(kind: preTokenizer)
        defer { pre = splitter }
        added.segments(text) { start, end, id in
            guard id == nil else { return }
            var i = start
            while i < end {
                let valid = validUTF8Prefix(text, from: i, to: end)
                if valid > 0 {
                    let run = UnsafeBufferPointer(rebasing: text[i..<(i + valid)])
                    splitter.split(run) { s, e in count(UnsafeBufferPointer(rebasing: run[s..<e])) }
                    i += valid
                } else {
                    count(UnsafeBufferPointer(rebasing: text[i..<(i + 1)]))
                    i += 1
                }
            }
        }
    }

    public mutating func add(_ text: String) {
        var text = text
        text.withUTF8 { add(text: $0) }
    }

    @inline(__always) private mutating func count(_ word: UnsafeBufferPointer<UInt8>) {
        let r = words.insert(word, hash: ByteStringTable.hash(word))
        if r.inserted { wordCounts.append(1); if words.count > maxWords { prune() } } else { wordCounts[r.index] += 1 }
    }

    /// Drops the words of the lowest counts until at most half of `maxWords`
    /// remain (keeping first-seen order).
    private mutating func prune() {
        var threshold: Int64 = 1
        while true {
            let kept = wordCounts.reduce(0) { $0 + ($1 > threshold ? 1 : 0) }
            if kept <= maxWords / 2 { break }
            threshold += 1
        }
        var table = ByteStringTable(capacity: maxWords)
        var counts: [Int64] = []
        for w in 0..<words.count where wordCounts[w] > threshold {
            let key = Array(words.key(w))
            _ = key.withUnsafeBufferPointer { table.insert($0, hash: ByteStringTable.hash($0)) }
            counts.append(wordCounts[w])
        }
        prunedWords += words.count - table.count
        prunedBelowCount = max(prunedBelowCount, threshold)
        words = table
        wordCounts = counts
    }

    /// Adds another trainer's counts (same configuration), e.g. from another rank.
    public mutating func merge(serializedCounts bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { buf in
            var i = 0
            while i + 12 <= buf.count {
                let len = Int(readLE32(buf, i)); i += 4
                let c = Int64(bitPattern: readLE64(buf, i)); i += 8
                let word = UnsafeBufferPointer(rebasing: buf[i..<(i + len)]); i += len
                let r = words.insert(word, hash: ByteStringTable.hash(word))
                if r.inserted { wordCounts.append(c); if words.count > maxWords { prune() } } else { wordCounts[r.index] += c }
            }
        }
    }

    /// The word counts as bytes: (u32 length, u64 count, bytes) per word, in first-seen order.
    public func serializedCounts() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(words.arenaBytes + words.count * 12)
        for w in 0..<words.count {
            let key = words.key(w)
            appendLE32(&out, UInt32(key.count))
            appendLE64(&out, UInt64(bitPattern: wordCounts[w]))
            out += key
        }
        return out
    }

    /// Learns merges until the vocabulary has `vocabSize` tokens or no pair
    /// occurs `minFrequency` times. `progress(merges done)` is called now and then.
    public func train(progress: (Int) -> Void = { _ in }) throws -> BPETokenizer {
        let specials = UInt32(specialTokens.count)
        // Every token's bytes (for the vocabulary and to find repeats).
        var tokenIndex = ByteStringTable(capacity: vocabSize)
        var tokenIdsByIndex: [UInt32] = []
        var tokenSpelling: [[UInt8]] = specialTokens.map { Array($0.utf8) }
        // Byte tokens in the order of their byte-level spelling (as Hugging Face's
        // trainer sorts its alphabet), so ties between pairs resolve the same way.
        let byteOrder = (0..<256).sorted { ByteLevel.byteToScalar[$0] < ByteLevel.byteToScalar[$1] }
        var byteId = [UInt32](repeating: 0, count: 256)
        for (rank, b) in byteOrder.enumerated() {
            byteId[b] = specials + UInt32(rank)
            tokenSpelling.append([UInt8(b)])
            _ = [UInt8(b)].withUnsafeBufferPointer { tokenIndex.insert($0, hash: ByteStringTable.hash($0)) }
            tokenIdsByIndex.append(specials + UInt32(rank))
        }

        // Words as symbol sequences in one flat array (merging only shrinks them).
        let wordCount = words.count
        var symbols: [UInt32] = []
        symbols.reserveCapacity(words.arenaBytes)
        var wordStart = [Int](repeating: 0, count: wordCount)
        var wordLength = [Int32](repeating: 0, count: wordCount)
        for w in 0..<wordCount {
            wordStart[w] = symbols.count
            let key = words.key(w)
            wordLength[w] = Int32(key.count)
            for b in key { symbols.append(byteId[Int(b)]) }
        }

        // Pair statistics: key -> pair index; per pair its count and the words it occurs in.
        var pairIndex = PairTable(capacity: 1 << 16)
        var pairKeys: [UInt64] = []
        var pairCounts: [Int64] = []
        var pairWords: [[Int32]] = []
        var pairStamp: [Int32] = []
        func indexOf(_ a: UInt32, _ b: UInt32) -> Int {
            let key = PairTable.key(a, b)
            let slot = pairIndex.slotInserting(key, initial: UInt64(pairKeys.count))
            let p = Int(pairIndex.value(at: slot))
            if p == pairKeys.count {
                pairKeys.append(key); pairCounts.append(0); pairWords.append([]); pairStamp.append(-1)
            }
            return p
        }
        for w in 0..<wordCount where wordLength[w] > 1 {
            let c = wordCounts[w], s = wordStart[w]
            for i in s..<(s + Int(wordLength[w]) - 1) {
                let p = indexOf(symbols[i], symbols[i + 1])
                pairCounts[p] += c
                if pairWords[p].last != Int32(w) { pairWords[p].append(Int32(w)) }
            }
        }
        var heap = PairHeap()
        for p in 0..<pairKeys.count where pairCounts[p] > 0 { heap.push(count: pairCounts[p], key: pairKeys[p]) }

        var merges: [(UInt32, UInt32)] = []
        var nextId = specials + 256
        var wordStamp = [Int32](repeating: -1, count: wordCount)
        var changed: [Int] = []
        var step: Int32 = 0
        while Int(nextId) < vocabSize, let top = heap.pop() {
            let a = UInt32(top.key >> 32), b = UInt32(truncatingIfNeeded: top.key)
            let p = indexOf(a, b)
            if pairCounts[p] != top.count { continue }   // stale entry
            if top.count < Int64(minFrequency) { break }
            // The merged token (an existing id when another merge already made these bytes).
            let joined = tokenSpelling[Int(a)] + tokenSpelling[Int(b)]
            let r = joined.withUnsafeBufferPointer { tokenIndex.insert($0, hash: ByteStringTable.hash($0)) }
            let c: UInt32
            if r.inserted {
                c = nextId; nextId += 1
                tokenIdsByIndex.append(c)
                tokenSpelling.append(joined)
            } else {
                c = tokenIdsByIndex[r.index]
            }
            merges.append((a, b))
            step += 1
            changed.removeAll(keepingCapacity: true)
            let occurrences = pairWords[p]
            pairWords[p] = []
            for w32 in occurrences {
                let w = Int(w32)
                if wordStamp[w] == step { continue }
                wordStamp[w] = step
                let wc = wordCounts[w], s = wordStart[w], n = Int(wordLength[w])
                var read = s, write = s
                let end = s + n
                @inline(__always) func change(_ x: UInt32, _ y: UInt32, _ delta: Int64) {
                    let q = indexOf(x, y)
                    if pairStamp[q] != step { pairStamp[q] = step; changed.append(q) }
                    pairCounts[q] += delta * wc
                    if delta > 0 && pairWords[q].last != w32 { pairWords[q].append(w32) }
                }
                while read < end {
                    if read + 1 < end && symbols[read] == a && symbols[read + 1] == b {
                        if write > s {
                            let prev = symbols[write - 1]
                            change(prev, a, -1); change(prev, c, 1)
                        }
                        if read + 2 < end {
                            let next = symbols[read + 2]
                            change(b, next, -1); change(c, next, 1)
                        }
                        symbols[write] = c
                        write += 1; read += 2
                    } else {
                        symbols[write] = symbols[read]
                        write += 1; read += 1
                    }
                }
                wordLength[w] = Int32(write - s)
            }
            pairCounts[p] = 0
            for q in changed where q != p && pairCounts[q] > 0 { heap.push(count: pairCounts[q], key: pairKeys[q]) }
            if merges.count % 1000 == 0 { progress(merges.count) }
        }
        progress(merges.count)

        var vocab: [(bytes: [UInt8], id: UInt32)] = []
        for (i, s) in specialTokens.enumerated() { vocab.append((Array(s.utf8), UInt32(i))) }
        for id in Int(specials)..<Int(nextId) { vocab.append((tokenSpelling[id], UInt32(id))) }
        let added = specialTokens.enumerated().map { AddedToken(id: UInt32($0.offset), content: $0.element) }
        return try BPETokenizer(vocab: vocab, merges: merges, added: added, preTokenizer: preTokenizer)
    }
}

/// Max-heap of (count, pair key): higher count first, then smaller key.
struct PairHeap {
    private var counts: [Int64] = []
    private var keys: [UInt64] = []

    @inline(__always) private func before(_ i: Int, _ j: Int) -> Bool {
        counts[i] != counts[j] ? counts[i] > counts[j] : keys[i] < keys[j]
    }

    private mutating func swapAt(_ i: Int, _ j: Int) { counts.swapAt(i, j); keys.swapAt(i, j) }

    mutating func push(count: Int64, key: UInt64) {
        counts.append(count); keys.append(key)
        var i = counts.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if before(i, parent) { swapAt(i, parent); i = parent } else { break }
        }
    }

    mutating func pop() -> (count: Int64, key: UInt64)? {
        guard !counts.isEmpty else { return nil }
        let top = (counts[0], keys[0])
        let last = counts.count - 1
        swapAt(0, last)
        counts.removeLast(); keys.removeLast()
        var i = 0
        let n = counts.count
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < n && before(l, m) { m = l }
            if r < n && before(r, m) { m = r }
            if m == i { break }
            swapAt(i, m); i = m
        }
        return top
    }
}

@inline(__always) func appendLE32(_ out: inout [UInt8], _ v: UInt32) {
    out.append(UInt8(v & 0xFF)); out.append(UInt8((v >> 8) & 0xFF)); out.append(UInt8((v >> 16) & 0xFF)); out.append(UInt8(v >> 24))
}
@inline(__always) func appendLE64(_ out: inout [UInt8], _ v: UInt64) {
    for k in 0..<8 { out.append(UInt8((v >> (8 * UInt64(k))) & 0xFF)) }
}
@inline(__always) func readLE32(_ b: UnsafeBufferPointer<UInt8>, _ i: Int) -> UInt32 {
    UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
}
@inline(__always) func readLE64(_ b: UnsafeBufferPointer<UInt8>, _ i: Int) -> UInt64 {
    var v: UInt64 = 0
    for k in 0..<8 { v |= UInt64(b[i + k]) << (8 * UInt64(k)) }
    return v
}
