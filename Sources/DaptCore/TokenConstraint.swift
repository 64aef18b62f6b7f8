/// One bit per vocabulary entry: which tokens a decoder may emit next.
public struct TokenMask: Equatable, Sendable {
    public private(set) var words: [UInt64]
    public let count: Int

    /// A mask over `count` tokens, all allowed or all refused.
    public init(count: Int, allowed: Bool = false) {
        self.count = count
        words = [UInt64](repeating: allowed ? ~0 : 0, count: (count + 63) / 64)
        if allowed, count % 64 != 0 { words[words.count - 1] = (UInt64(1) << UInt64(count % 64)) - 1 }
    }

    public subscript(token: Int) -> Bool {
        get { words[token >> 6] & (UInt64(1) << UInt64(token & 63)) != 0 }
        set {
            if newValue { words[token >> 6] |= UInt64(1) << UInt64(token & 63) }
            else { words[token >> 6] &= ~(UInt64(1) << UInt64(token & 63)) }
        }
    }

    public mutating func setAll(_ allowed: Bool) { self = TokenMask(count: count, allowed: allowed) }

    /// `self = self ∪ other` (same count).
    public mutating func formUnion(_ other: TokenMask) {
        precondition(other.count == count, "TokenMask.formUnion: counts differ (\(count) vs \(other.count))")
        for i in words.indices { words[i] |= other.words[i] }
    }

    public var allowedCount: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// The allowed token ids in ascending order.
    public var allowedTokens: [Int] {
        var out: [Int] = []
        for (w, word) in words.enumerated() where word != 0 {
            var bits = word
            while bits != 0 { out.append(w * 64 + bits.trailingZeroBitCount); bits &= bits - 1 }
        }
        return out
    }
}

/// Restricts what a decoder may generate, token by token (grammar-constrained
/// decoding). The decoder asks for the mask before each step, samples only among
/// allowed tokens, then reports the chosen token with `accept`.
/// Implementations own their automaton state; one value per sequence being generated.
public protocol TokenConstraint {
    /// Sets `mask` to exactly the tokens that keep the output a valid prefix.
    /// End-of-sequence tokens are allowed only when `isComplete`.
    mutating func fillMask(_ mask: inout TokenMask)
    /// Advances past `token`; throws if it was not allowed.
    mutating func accept(_ token: Int) throws
    /// The output so far is a complete value: the decoder may stop here.
    var isComplete: Bool { get }
    /// Tokens that close the output validly from the current state (shortest
    /// completion the grammar allows), or nil if it cannot be closed, in which
    /// case the decoder marks the record truncated. Used when the token budget runs out.
    func closingTokens() -> [Int]?
}
