/// A fragment of a paragraph: UTF-8 offsets `start..<end` (trailing
/// whitespace excluded) and its token cost in thousandths.
public struct FragmentSpan: Equatable, Sendable {
    public var start: Int
    public var end: Int
    public var cost: Int
    /// Pieces `firstPiece..<endPiece` of the paragraph.
    public var firstPiece: Int
    public var endPiece: Int
}

/// Cuts a paragraph into fragments that fill a token budget, each repeating
/// the last `overlap` tokens of the one before it.
///
/// A fragment takes as many pieces as fit in `budget`; if that stops short of
/// the paragraph's end, it is shortened to the last sentence end (`。！？；`,
/// or `.!?;` before a space) that keeps it at least half the budget. The
/// next fragment starts at the longest suffix of this one costing at most
/// `overlap`. Requires `2 * overlap < budget`, so every step moves forward.
public struct Fragmenter: Sendable {
    public let budget: Int
    public let overlap: Int

    /// `budgetTokens` and `overlapTokens` in whole tokens.
    public init(budgetTokens: Int, overlapTokens: Int) {
        precondition(overlapTokens * 2 < budgetTokens, "overlap must be under half the budget")
        budget = budgetTokens * 1000
        overlap = overlapTokens * 1000
    }

    public func spans(text utf8: [UInt8], pieces: [TokenPiece]) -> [FragmentSpan] {
        let n = pieces.count
        guard n > 0 else { return [] }
        var prefix = [Int](repeating: 0, count: n + 1)
        for i in 0..<n { prefix[i + 1] = prefix[i] + pieces[i].cost }
        func startOffset(_ piece: Int) -> Int { piece == 0 ? 0 : pieces[piece - 1].end }
        let sentenceEnds = utf8.withUnsafeBufferPointer { p in pieces.map { Self.endsSentence(p, $0.end) } }

        var spans: [FragmentSpan] = []
        var a = 0
        var b = 0
        while true {
            if b < a { b = a }
            while b < n && prefix[b + 1] - prefix[a] <= budget { b += 1 }
            if b == a { b = a + 1 }                      // a single piece over budget: cannot be cut
            if b < n {
                var j = b
                while j > a && prefix[j] - prefix[a] >= budget / 2 {
                    if sentenceEnds[j - 1] { break }
                    j -= 1
                }
                if j > a && prefix[j] - prefix[a] >= budget / 2 && sentenceEnds[j - 1] { b = j }
            }
            let start = startOffset(a)
            var end = pieces[b - 1].end
            utf8.withUnsafeBufferPointer { p in end = TextNormalization.trimmed(p, start, end).1 }
            spans.append(FragmentSpan(start: start, end: end, cost: prefix[b] - prefix[a], firstPiece: a, endPiece: b))
            if b >= n { break }
            var next = b
            while next > a + 1 && prefix[b] - prefix[next - 1] <= overlap { next -= 1 }
            a = next
        }
        return spans
    }

    /// True when the text before `end` (ignoring trailing whitespace) ends a sentence.
    static func endsSentence(_ p: UnsafeBufferPointer<UInt8>, _ end: Int) -> Bool {
        var e = end
        var sawSpace = e >= p.count
        while e > 0 {
            let c = p[e - 1]
            if c == 0x20 || c == 0x0A || c == 0x09 { e -= 1; sawSpace = true; continue }
            break
        }
        guard e > 0 else { return false }
        let c = p[e - 1]
        if c == UInt8(ascii: ".") || c == UInt8(ascii: "!") || c == UInt8(ascii: "?") || c == UInt8(ascii: ";") { return sawSpace }
        if e >= 3 && p[e - 3] == 0xE3 && p[e - 2] == 0x80 && p[e - 1] == 0x82 { return true }     // 。
        if e >= 3 && p[e - 3] == 0xEF && p[e - 2] == 0xBC {
            return p[e - 1] == 0x81 || p[e - 1] == 0x9F || p[e - 1] == 0x9B                       // ！ ？ ；
        }
        return false
    }
}
