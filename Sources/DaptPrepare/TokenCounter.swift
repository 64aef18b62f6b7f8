/// One cut point of a text: the piece ends at UTF-8 offset `end` (it starts
/// where the previous piece ended) and costs `cost` thousandths of a token.
/// Fragments are cut only between pieces, so pieces never split a character.
public struct TokenPiece: Equatable, Sendable {
    public var end: Int
    public var cost: Int
    public init(end: Int, cost: Int) { self.end = end; self.cost = cost }
}

/// Counts tokens for the fragment budget. `pieces(of:)` cuts valid UTF-8
/// into consecutive pieces covering it all, each with its token cost in
/// thousandths (so estimates like 1.6 per character add up exactly).
///
/// The estimate below is the default. An exact counter from a tokenizer is
/// one adapter: encode the text with offsets and return one piece per token
/// (cost 1000), merging tokens that end inside a multi-byte character.
public protocol TokenCounter: Sendable {
    /// A short name for summaries (`estimate`, `tokenizer:FILE`).
    var name: String { get }
    func pieces(of utf8: [UInt8]) -> [TokenPiece]
}

extension TokenCounter {
    /// Whole tokens in `utf8` (thousandths rounded to nearest).
    public func tokens(in utf8: [UInt8]) -> Int {
        (pieces(of: utf8).reduce(0) { $0 + $1.cost } + 500) / 1000
    }
}

/// The default estimate: CJK characters (ideographs, kana, hangul, CJK and
/// full-width punctuation) cost `cjk` each, a Latin word (a run of letters or
/// digits, capped at 24 characters per piece) costs `word`, any other symbol
/// costs `symbol`; whitespace is free and rides on the piece before it, and
/// combining marks, variation selectors and joiners stay with their base.
public struct EstimatedTokenCounter: TokenCounter {
    public let cjk: Int
    public let word: Int
    public let symbol: Int
    public var name: String { "estimate" }
    static let maxWordScalars = 24

    public init(cjkTokensPerChar: Double = 1.6, latinTokensPerWord: Double = 1.3, symbolTokensPerChar: Double = 1.0) {
        cjk = Int((cjkTokensPerChar * 1000).rounded())
        word = Int((latinTokensPerWord * 1000).rounded())
        symbol = Int((symbolTokensPerChar * 1000).rounded())
    }

    public init(_ config: PrepareConfig) {
        self.init(cjkTokensPerChar: config.cjkTokensPerChar, latinTokensPerWord: config.latinTokensPerWord,
                  symbolTokensPerChar: config.symbolTokensPerChar)
    }

    enum Kind { case space, cjk, word, symbol, attach }

    @inline(__always)
    static func kind(_ s: UInt32) -> Kind {
        if s < 0x80 {
            if s == 0x20 || (s >= 0x09 && s <= 0x0D) { return .space }
            if (s >= 0x30 && s <= 0x39) || ((s | 0x20) >= 0x61 && (s | 0x20) <= 0x7A) { return .word }
            return .symbol
        }
        switch s {
        case 0x3400...0x4DBF, 0x4E00...0x9FFF, 0xF900...0xFAFF, 0x20000...0x3134F: return .cjk   // ideographs
        case 0x3001...0x303F, 0x3040...0x30FF, 0x3100...0x31FF, 0xAC00...0xD7AF: return .cjk      // punctuation, kana, bopomofo, hangul
        case 0xFF01...0xFF60, 0xFE30...0xFE4F: return .cjk                                         // full-width forms
        case 0x3000, 0xA0, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F: return .space
        case 0x0300...0x036F, 0x200C, 0x200D, 0xFE00...0xFE0F, 0x1F3FB...0x1F3FF, 0x1AB0...0x1AFF, 0x1DC0...0x1DFF, 0x20D0...0x20FF, 0xE0100...0xE01EF:
            return .attach
        case 0x00C0...0x024F, 0x0370...0x03FF, 0x0400...0x04FF: return .word                      // accented Latin, Greek, Cyrillic
        default:
            if let scalar = Unicode.Scalar(s) {
                let p = scalar.properties
                if p.generalCategory == .nonspacingMark || p.generalCategory == .enclosingMark || p.generalCategory == .spacingMark { return .attach }
                if p.isAlphabetic || p.numericType != nil { return .word }
                if p.isWhitespace { return .space }
            }
            return .symbol
        }
    }

    public func pieces(of utf8: [UInt8]) -> [TokenPiece] {
        var out: [TokenPiece] = []
        out.reserveCapacity(utf8.count / 2)
        utf8.withUnsafeBufferPointer { p in
            var i = 0
            var wordScalars = 0     // > 0 while inside a word piece
            while i < p.count {
                let (s, len) = TextNormalization.decodeScalar(p, i)
                let k = Self.kind(s)
                i += len
                switch k {
                case .space, .attach:
                    if out.isEmpty { out.append(TokenPiece(end: i, cost: k == .space ? 0 : symbol)) } else { out[out.count - 1].end = i }
                    if k == .space { wordScalars = 0 }
                case .word:
                    if wordScalars > 0 && wordScalars < Self.maxWordScalars && out[out.count - 1].end == i - len {
                        out[out.count - 1].end = i
                        wordScalars += 1
                    } else {
                        out.append(TokenPiece(end: i, cost: word))
                        wordScalars = 1
                    }
                case .cjk:
                    out.append(TokenPiece(end: i, cost: cjk)); wordScalars = 0
                case .symbol:
                    out.append(TokenPiece(end: i, cost: symbol)); wordScalars = 0
                }
            }
        }
        return out
    }
}
