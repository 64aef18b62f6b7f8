import DaptCore
import DaptTokenizer

/// A decoder's vocabulary as byte strings, arranged as a trie so the tokens
/// a grammar state allows are found in one walk (shared prefixes are fed to
/// the automaton once). Immutable; share one value between sequences.
public final class TokenVocabulary: Sendable {
    /// The bytes of every token id (empty for ids never generated).
    public let tokens: [[UInt8]]
    /// End-of-sequence ids: allowed exactly when the output is complete.
    public let endTokens: Set<Int>
    /// Ids never allowed inside the output (special tokens other than the end ones).
    public let excludedTokens: Set<Int>

    // The trie, flattened: node i's children are childByte/childNode[childStart[i]..<childStart[i+1]]
    // (sorted by byte); the tokens spelled exactly by node i are tokenIds[tokenStart[i]..<tokenStart[i+1]].
    let childStart: [Int32]
    let childByte: [UInt8]
    let childNode: [Int32]
    let tokenStart: [Int32]
    let tokenIds: [Int32]
    /// The longest allowed token, in bytes.
    let maxTokenLength: Int32
    /// The most commas in an allowed token (the items it can start in an array).
    let mostCommas: Int32
    /// The most whitespace bytes an allowed token starts with.
    let longestLeadingWhitespace: Int32
    /// `plainTextUpTo[c]`: the plain-text tokens (`plainText(upTo:)`) of at
    /// most `c` characters, c up to the longest token (the last: all of them).
    private let plainTextUpTo: [TokenMask]
    /// Trie node i's subtree (i included) spells plain-text tokens only.
    let onlyPlainBelow: [Bool]

    /// `tokens[id]` is the byte string of token `id`; `endTokens` are the
    /// end-of-sequence ids; `excludedTokens` (e.g. other special tokens) are
    /// never allowed. Empty byte strings are never allowed either.
    public init(tokens: [[UInt8]], endTokens: Set<Int>, excludedTokens: Set<Int> = []) {
        self.tokens = tokens
        self.endTokens = endTokens
        self.excludedTokens = excludedTokens
        var longest = 0, commas = 0, leadingWhitespace = 0
        // Build with per-node child lists, then number nodes breadth-first.
        var children: [[(UInt8, Int32)]] = [[]]
        var ending: [[Int32]] = [[]]
        for (id, bytes) in tokens.enumerated() where !bytes.isEmpty && !endTokens.contains(id) && !excludedTokens.contains(id) {
            var node = 0
            for b in bytes {
                if let next = children[node].first(where: { $0.0 == b })?.1 {
                    node = Int(next)
                } else {
                    children.append([]); ending.append([])
                    children[node].append((b, Int32(children.count - 1)))
                    node = children.count - 1
                }
            }
            ending[node].append(Int32(id))
            longest = max(longest, bytes.count)
            commas = max(commas, bytes.count { $0 == UInt8(ascii: ",") })
            leadingWhitespace = max(leadingWhitespace, bytes.prefix { isWhitespace($0) }.count)
        }
        var order: [Int32] = [0]
        var number = [Int32](repeating: 0, count: children.count)
        var k = 0
        while k < order.count {
            let node = Int(order[k])
            children[node].sort { $0.0 < $1.0 }
            for (_, c) in children[node] { number[Int(c)] = Int32(order.count); order.append(c) }
            k += 1
        }
        var childStart: [Int32] = [0], childByte: [UInt8] = [], childNode: [Int32] = []
        var tokenStart: [Int32] = [0], tokenIds: [Int32] = []
        for old in order {
            for (b, c) in children[Int(old)] { childByte.append(b); childNode.append(number[Int(c)]) }
            childStart.append(Int32(childByte.count))
            tokenIds += ending[Int(old)]
            tokenStart.append(Int32(tokenIds.count))
        }
        self.childStart = childStart
        self.childByte = childByte
        self.childNode = childNode
        self.tokenStart = tokenStart
        self.tokenIds = tokenIds
        maxTokenLength = Int32(longest)
        mostCommas = Int32(commas)
        longestLeadingWhitespace = Int32(leadingWhitespace)
        var plain = TokenMask(count: tokens.count)
        for id in tokenIds where Self.isPlainText(tokens[Int(id)]) { plain[Int(id)] = true }
        var byCharacters = [[Int32]](repeating: [], count: longest + 1)
        for id in tokenIds where plain[Int(id)] { byCharacters[String(decoding: tokens[Int(id)], as: UTF8.self).unicodeScalars.count].append(id) }
        var upTo: [TokenMask] = []
        var fitting = TokenMask(count: tokens.count)
        for ids in byCharacters {
            for id in ids { fitting[Int(id)] = true }
            upTo.append(fitting)
        }
        plainTextUpTo = upTo
        // Children are numbered after their parents: one reverse pass.
        let nodes = childStart.count - 1
        var only = [Bool](repeating: true, count: nodes)
        for node in stride(from: nodes - 1, through: 0, by: -1) {
            for k in Int(tokenStart[node])..<Int(tokenStart[node + 1]) where !plain[Int(tokenIds[k])] { only[node] = false }
            for e in Int(childStart[node])..<Int(childStart[node + 1]) where !only[Int(childNode[e])] { only[node] = false }
        }
        onlyPlainBelow = only
    }

    public var count: Int { tokens.count }

    /// The plain-text tokens of at most `characters` characters: tokens of
    /// whole UTF-8 characters, none a quote, backslash or control character.
    /// Inside a string each such token that fits is allowed and leaves the
    /// state as it was but for the count (all of them without length bounds).
    func plainText(upTo characters: Int32) -> TokenMask {
        plainTextUpTo[Int(min(max(characters, 0), maxTokenLength))]
    }

    static func isPlainText(_ bytes: [UInt8]) -> Bool {
        guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) else { return false }
        return String(validating: bytes, as: UTF8.self) != nil
    }

    /// Allows in `mask` the tokens spelled exactly by trie node `node`.
    @inline(__always) func mark(tokensOf node: Int32, _ mask: inout TokenMask) {
        for k in Int(tokenStart[Int(node)])..<Int(tokenStart[Int(node) + 1]) { mask[Int(tokenIds[k])] = true }
    }

    /// Trie nodes (for figures).
    public var nodeCount: Int { childStart.count - 1 }

    /// The fewest allowed tokens spelling exactly `bytes`, or nil if none do.
    public func tokenize(_ bytes: [UInt8]) -> [Int]? {
        let n = bytes.count
        var best = [Int](repeating: Int.max, count: n + 1)
        var back = [(from: Int, token: Int)](repeating: (0, 0), count: n + 1)
        best[0] = 0
        for i in 0..<n where best[i] != Int.max {
            var node: Int32 = 0
            var j = i
            while j < n, let next = child(node, bytes[j]) {
                node = next
                j += 1
                if tokenStart[Int(node)] < tokenStart[Int(node) + 1], best[i] + 1 < best[j] {
                    best[j] = best[i] + 1
                    back[j] = (i, Int(tokenIds[Int(tokenStart[Int(node)])]))
                }
            }
        }
        guard best[n] != Int.max else { return nil }
        var out: [Int] = []
        var j = n
        while j > 0 { out.append(back[j].token); j = back[j].from }
        return out.reversed()
    }

    @inline(__always) func child(_ node: Int32, _ b: UInt8) -> Int32? {
        edge(node, b).map { childNode[$0] }
    }

    /// The index of trie node `node`'s edge on byte `b` (into `childByte`/`childNode`), nil if none.
    @inline(__always) func edge(_ node: Int32, _ b: UInt8) -> Int? {
        var lo = Int(childStart[Int(node)]), hi = Int(childStart[Int(node) + 1])
        let end = hi
        while lo < hi {
            let mid = (lo + hi) >> 1
            if childByte[mid] < b { lo = mid + 1 } else { hi = mid }
        }
        return lo < end && childByte[lo] == b ? lo : nil
    }
}

extension TokenVocabulary {
    /// The vocabulary of a byte-level BPE tokenizer: `<|eos|>` (and
    /// `endTokens` when given) end the output; the other special added tokens
    /// are never generated inside it.
    public convenience init(tokenizer: BPETokenizer, endTokens: Set<Int>? = nil) {
        var tokens: [[UInt8]] = []
        tokens.reserveCapacity(tokenizer.vocabSize)
        for id in 0..<tokenizer.vocabSize { tokens.append(Array((try? tokenizer.bytes(of: UInt32(id))) ?? [])) }
        let ends = endTokens ?? Set(tokenizer.id(of: SpecialTokens.eos).map { [Int($0)] } ?? [])
        let special = Set(tokenizer.addedTokens.filter(\.special).map { Int($0.id) }).subtracting(ends)
        self.init(tokens: tokens, endTokens: ends, excludedTokens: special)
    }
}
