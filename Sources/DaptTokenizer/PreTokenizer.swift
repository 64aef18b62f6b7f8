/// Character classes the pre-tokenizer patterns test, one bit each.
enum CharClass {
    static let letter: UInt8 = 1        // \p{L}
    static let number: UInt8 = 2        // \p{N}
    static let han: UInt8 = 4           // \p{Han} (script)
    static let white: UInt8 = 8         // \s (White_Space)
    static let lineBreak: UInt8 = 16    // \r or \n

    /// Classes of the Basic Multilingual Plane, computed once.
    static let bmp: [UInt8] = (0..<0x10000).map { compute(UInt32($0)) }

    @inline(__always) static func of(_ v: UInt32) -> UInt8 {
        v < 0x10000 ? bmp[Int(v)] : compute(v)
    }

    static func compute(_ v: UInt32) -> UInt8 {
        guard let scalar = Unicode.Scalar(v) else { return 0 }
        var c: UInt8 = 0
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: c |= letter
        case .decimalNumber, .letterNumber, .otherNumber: c |= number
        default: break
        }
        if isHan(v) { c |= han }
        if scalar.properties.isWhitespace { c |= white }
        if v == 0x0A || v == 0x0D { c |= lineBreak }
        return c
    }

    /// The Han script (Unicode Scripts.txt), which Swift does not expose.
    static func isHan(_ v: UInt32) -> Bool {
        switch v {
        case 0x2E80...0x2E99, 0x2E9B...0x2EF3, 0x2F00...0x2FD5, 0x3005, 0x3007, 0x3021...0x3029,
             0x3038...0x303B, 0x3400...0x4DBF, 0x4E00...0x9FFF, 0xF900...0xFA6D, 0xFA70...0xFAD9,
             0x16FE2, 0x16FE3, 0x16FF0...0x16FF1, 0x20000...0x2A6DF, 0x2A700...0x2B739, 0x2B740...0x2B81D,
             0x2B820...0x2CEA1, 0x2CEB0...0x2EBE0, 0x2EBF0...0x2EE5D, 0x2F800...0x2FA1D, 0x30000...0x3134A,
             0x31350...0x323AF:
            return true
        default:
            return false
        }
    }
}

/// How text is cut into pre-tokens before BPE. Each form is a hand-written
/// matcher equivalent to one regular expression (leftmost alternative wins,
/// with the regex's backtracking), so the `tokenizer.json` can give Hugging
/// Face `tokenizers` the same pattern and get the same pieces.
public enum PreTokenizerKind: String, Sendable, Codable, CaseIterable {
    /// GPT-4 style with runs of Han characters as their own pieces.
    case dapt
    /// GPT-4 (cl100k / Llama 3) pattern.
    case gpt4
    /// GPT-2 pattern (the default of `ByteLevel` with `use_regex: true`).
    case gpt2

    public var pattern: String {
        switch self {
        case .dapt:
            return #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|\p{Han}+|[^\r\n\p{L}\p{N}]?[\p{L}&&[^\p{Han}]]+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        case .gpt4:
            return #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        case .gpt2:
            return #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
        }
    }

    /// The kind whose pattern is `pattern`, if dapt implements it.
    public init?(pattern: String) {
        guard let kind = PreTokenizerKind.allCases.first(where: { $0.pattern == pattern }) else { return nil }
        self = kind
    }
}

/// Splits UTF-8 text into pre-token byte ranges. Reuses its buffers, so one
/// instance per thread.
public struct PreTokenizer {
    public let kind: PreTokenizerKind
    private var scalars: [UInt32] = []
    private var classes: [UInt8] = []
    private var offsets: [Int32] = []

    public init(kind: PreTokenizerKind) { self.kind = kind }

    /// Calls `body(start, end)` with the byte range of each pre-token of the
    /// valid UTF-8 `text`, in order.
    public mutating func split(_ text: UnsafeBufferPointer<UInt8>, _ body: (Int, Int) -> Void) {
        decode(text)
        let n = scalars.count
        guard n > 0 else { return }
        let kind = self.kind
        scalars.withUnsafeBufferPointer { cp in
            classes.withUnsafeBufferPointer { cls in
                offsets.withUnsafeBufferPointer { off in
                    var i = 0
                    while i < n {
                        let e: Int
                        switch kind {
                        case .dapt: e = Self.matchGPT4(cp, cls, i, n, hanRuns: true)
                        case .gpt4: e = Self.matchGPT4(cp, cls, i, n, hanRuns: false)
                        case .gpt2: e = Self.matchGPT2(cp, cls, i, n)
                        }
                        body(Int(off[i]), Int(off[e]))
                        i = e
                    }
                }
            }
        }
    }

    /// Decodes valid UTF-8 into code points, their classes and byte offsets
    /// (with one extra offset for the end).
    private mutating func decode(_ text: UnsafeBufferPointer<UInt8>) {
        scalars.removeAll(keepingCapacity: true)
        classes.removeAll(keepingCapacity: true)
        offsets.removeAll(keepingCapacity: true)
        var i = 0
        let n = text.count
        while i < n {
            let b0 = UInt32(text[i])
            var v: UInt32
            var len: Int
            if b0 < 0x80 { v = b0; len = 1 }
            else if b0 < 0xE0 { v = b0 & 0x1F; len = 2 }
            else if b0 < 0xF0 { v = b0 & 0x0F; len = 3 }
            else { v = b0 & 0x07; len = 4 }
            if i + len > n { len = n - i }
            var k = 1
            while k < len { v = (v << 6) | (UInt32(text[i + k]) & 0x3F); k += 1 }
            scalars.append(v)
            classes.append(CharClass.of(v))
            offsets.append(Int32(i))
            i += len
        }
        offsets.append(Int32(n))
    }

    @inline(__always) static func contraction(_ cp: UnsafeBufferPointer<UInt32>, _ i: Int, _ n: Int, caseInsensitive: Bool) -> Int? {
        guard i + 1 < n else { return nil }
        @inline(__always) func lower(_ v: UInt32) -> UInt32 {
            guard caseInsensitive else { return v }
            if v >= 0x41 && v <= 0x5A { return v + 32 }
            if v == 0x17F { return 0x73 }  // long s folds to s
            return v
        }
        let a = lower(cp[i + 1])
        switch a {
        case 0x73, 0x74, 0x6D, 0x64: return i + 2  // s t m d
        case 0x72, 0x76:                            // re ve
            if i + 2 < n && lower(cp[i + 2]) == 0x65 { return i + 3 }
        case 0x6C:                                  // ll
            if i + 2 < n && lower(cp[i + 2]) == 0x6C { return i + 3 }
        default: break
        }
        return nil
    }

    @inline(__always) static func runEnd(_ cls: UnsafeBufferPointer<UInt8>, _ from: Int, _ n: Int, _ test: (UInt8) -> Bool) -> Int {
        var e = from
        while e < n && test(cls[e]) { e += 1 }
        return e
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[\p{Han}+|]?[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    /// at scalar `i`; returns the end of the match.
    static func matchGPT4(_ cp: UnsafeBufferPointer<UInt32>, _ cls: UnsafeBufferPointer<UInt8>, _ i: Int, _ n: Int, hanRuns: Bool) -> Int {
        let L = CharClass.letter, N = CharClass.number, H = CharClass.han, W = CharClass.white, BR = CharClass.lineBreak
        if cp[i] == 0x27, let e = contraction(cp, i, n, caseInsensitive: true) { return e }
        let c = cls[i]
        let prefixOK = c & (L | N | BR) == 0
        if hanRuns {
            if c & H != 0 { return runEnd(cls, i + 1, n) { $0 & H != 0 } }
            let word: (UInt8) -> Bool = { $0 & (L | H) == L }
            if prefixOK && i + 1 < n && word(cls[i + 1]) { return runEnd(cls, i + 2, n, word) }
            if word(c) { return runEnd(cls, i + 1, n, word) }
        } else {
            if prefixOK && i + 1 < n && cls[i + 1] & L != 0 { return runEnd(cls, i + 2, n) { $0 & L != 0 } }
            if c & L != 0 { return runEnd(cls, i + 1, n) { $0 & L != 0 } }
        }
        if c & N != 0 {
            var e = i + 1
            while e < n && e < i + 3 && cls[e] & N != 0 { e += 1 }
            return e
        }
        let punct: (UInt8) -> Bool = { $0 & (W | L | N) == 0 }
        var s = i
        if cp[i] == 0x20 && i + 1 < n && punct(cls[i + 1]) { s = i + 1 }
        if punct(cls[s]) {
            let e = runEnd(cls, s + 1, n, punct)
            return runEnd(cls, e, n) { $0 & BR != 0 }
        }
        // Whitespace from here on.
        let j = runEnd(cls, i, n) { $0 & W != 0 }
        var k = j - 1
        while k >= i && cls[k] & BR == 0 { k -= 1 }
        if k >= i { return k + 1 }         // \s*[\r\n]+
        if j == n { return j }             // \s+(?!\S) at the end
        if j - i >= 2 { return j - 1 }     // \s+(?!\S) leaves the last space
        return j                           // \s+
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` at scalar `i`.
    static func matchGPT2(_ cp: UnsafeBufferPointer<UInt32>, _ cls: UnsafeBufferPointer<UInt8>, _ i: Int, _ n: Int) -> Int {
        let L = CharClass.letter, N = CharClass.number, W = CharClass.white
        if cp[i] == 0x27, let e = contraction(cp, i, n, caseInsensitive: false) { return e }
        let space = cp[i] == 0x20 && i + 1 < n
        let c = cls[i]
        if space && cls[i + 1] & L != 0 { return runEnd(cls, i + 2, n) { $0 & L != 0 } }
        if c & L != 0 { return runEnd(cls, i + 1, n) { $0 & L != 0 } }
        if space && cls[i + 1] & N != 0 { return runEnd(cls, i + 2, n) { $0 & N != 0 } }
        if c & N != 0 { return runEnd(cls, i + 1, n) { $0 & N != 0 } }
        if space && cls[i + 1] & (W | L | N) == 0 { return runEnd(cls, i + 2, n) { $0 & (W | L | N) == 0 } }
        if c & (W | L | N) == 0 { return runEnd(cls, i + 1, n) { $0 & (W | L | N) == 0 } }
        let j = runEnd(cls, i, n) { $0 & W != 0 }
        if j == n { return j }
        if j - i >= 2 { return j - 1 }
        return j
    }
}

/// GPT-2's reversible map from bytes to printable characters, which byte-level
/// BPE vocabularies use to spell tokens.
public enum ByteLevel {
    /// The character (code point) that spells byte `b`.
    public static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var printable = Set<Int>()
        for r in [0x21...0x7E, 0xA1...0xAC, 0xAE...0xFF] { for b in r { printable.insert(b) } }
        var next: UInt32 = 256
        for b in 0..<256 {
            if printable.contains(b) { table[b] = UInt32(b) } else { table[b] = next; next += 1 }
        }
        return table
    }()

    /// The byte a code point spells, or nil when it spells none.
    public static func byte(of scalar: UInt32) -> UInt8? {
        if scalar < 256 {
            return byteToScalar[Int(scalar)] == scalar ? UInt8(scalar) : nil
        }
        if scalar < 256 + 68 { return scalarToByteHigh[Int(scalar - 256)] }
        return nil
    }

    private static let scalarToByteHigh: [UInt8] = {
        var table = [UInt8](repeating: 0, count: 68)
        for b in 0..<256 where byteToScalar[b] >= 256 { table[Int(byteToScalar[b] - 256)] = UInt8(b) }
        return table
    }()

    /// The byte-level spelling of `bytes`.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(Unicode.Scalar(byteToScalar[Int(b)])!) }
        return String(s)
    }

    /// The bytes a byte-level spelling stands for, or nil if a character is not one of the 256.
    public static func decode(_ spelling: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(spelling.unicodeScalars.count)
        for s in spelling.unicodeScalars {
            guard let b = byte(of: s.value) else { return nil }
            out.append(b)
        }
        return out
    }
}
