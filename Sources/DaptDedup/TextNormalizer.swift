import Foundation

/// Text normalisation before shingling, and the NFC form the `hash` is taken of.
///
/// For shingling, the NFC text is mapped scalar by scalar:
/// - letters are lower-cased (Unicode lowercase mapping, so `Ａ`→`ａ`, `É`→`é`);
/// - every run of whitespace, control/format characters and punctuation
///   (Unicode general categories Z*, Cc, Cf, P*) becomes one space, and
///   leading and trailing runs are dropped: `"A,  b"` and `"a b"` shingle alike;
/// - everything else (letters, digits, symbols, CJK ideographs) is kept.
/// The result is a sequence of Unicode scalar values; shingles are runs of
/// `n` consecutive ones, so CJK text is shingled by character and Latin text
/// by character too (word boundaries show as the single space).
public enum TextNormalizer {
    /// Marks a separator in `bmpTable`.
    static let separator: UInt32 = 0xFFFF_FFFF
    /// Marks a scalar whose lowercase mapping is several scalars.
    static let multiScalar: UInt32 = 0xFFFF_FFFE

    /// For every BMP scalar: what it maps to (itself, its lowercase, or a marker).
    /// Built once from the Unicode properties of the running Swift runtime.
    static let bmpTable: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 0x10000)
        for v in 0..<0x10000 {
            guard let s = Unicode.Scalar(UInt32(v)) else { table[v] = UInt32(v); continue }
            table[v] = classify(s)
        }
        return table
    }()

    static func classify(_ s: Unicode.Scalar) -> UInt32 {
        let p = s.properties
        switch p.generalCategory {
        case .spaceSeparator, .lineSeparator, .paragraphSeparator, .control, .format,
             .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return separator
        default:
            break
        }
        if p.changesWhenLowercased {
            let lower = p.lowercaseMapping.unicodeScalars
            if lower.count == 1 { return lower.first!.value }
            return multiScalar
        }
        return s.value
    }

    /// True when `text` is certainly in NFC: every scalar lies in a range whose
    /// characters are NFC-stable and never combine with a neighbour (ASCII,
    /// Latin-1 and Latin Extended, CJK ideographs, kana except the combining
    /// voicing marks, CJK and general punctuation, full-width forms).
    public static func isQuickNFC(_ text: String) -> Bool {
        var text = text
        if text.withUTF8({ buf in !buf.contains { $0 >= 0x80 } }) { return true }
        return text.unicodeScalars.allSatisfy { isQuickNFCScalar($0.value) }
    }

    /// Unicode NFC of `text` (Foundation only when the quick check fails).
    public static func nfc(_ text: String) -> String {
        isQuickNFC(text) ? text : text.precomposedStringWithCanonicalMapping
    }

    /// Writes the normalised scalars of `text` to `out` (cleared first) and
    /// returns the number of Unicode scalars in `text`. Returns nil, leaving
    /// `out` unspecified, when `requireQuickNFC` is set and `text` fails the
    /// quick NFC check (so one pass serves the common, already-NFC case).
    @discardableResult
    public static func normalize(_ text: String, into out: inout [UInt32], requireQuickNFC: Bool = false) -> Int? {
        out.removeAll(keepingCapacity: true)
        var count = 0
        var pendingSpace = false
        var quick = true
        bmpTable.withUnsafeBufferPointer { t in
            for s in text.unicodeScalars {
                let v = s.value
                count += 1
                if requireQuickNFC && v >= 0x300 && quick && !isQuickNFCScalar(v) { quick = false; return }
                let mapped = v < 0x10000 ? t[Int(v)] : classify(s)
                if mapped == separator { pendingSpace = true; continue }
                if pendingSpace {
                    if !out.isEmpty { out.append(0x20) }
                    pendingSpace = false
                }
                if mapped == multiScalar {
                    for l in s.properties.lowercaseMapping.unicodeScalars { out.append(l.value) }
                } else {
                    out.append(mapped)
                }
            }
        }
        return quick ? count : nil
    }

    @inline(__always) static func isQuickNFCScalar(_ v: UInt32) -> Bool {
        if v < 0x300 { return true }
        if v >= 0x4E00 && v <= 0x9FFF { return true }
        if v >= 0x3400 && v <= 0x4DBF { return true }
        if v >= 0x3000 && v <= 0x30FF && !(v >= 0x302A && v <= 0x302F) && v != 0x3099 && v != 0x309A { return true }
        if v >= 0xFF01 && v <= 0xFFEF { return true }
        if v >= 0x2010 && v <= 0x205E && !(v >= 0x2028 && v <= 0x202F) { return true }
        return false
    }
}

/// Character shingles of normalised text, hashed with a seeded 64-bit hash.
public enum Shingler {
    /// Hashes every run of `size` consecutive scalars of `scalars` into `out`
    /// (cleared first). Text shorter than `size` gives one shingle of all of it;
    /// empty text gives none. The hash is a seeded multiply–xor fold of the
    /// scalar values finished by SplitMix64's mixer, so it is the same on
    /// every machine; MinHash uses its high 32 bits.
    public static func hashes(_ scalars: [UInt32], size: Int, seed: UInt64, into out: inout [UInt64]) {
        out.removeAll(keepingCapacity: true)
        let m = scalars.count
        if m == 0 { return }
        let n = min(size, m)
        let count = m - n + 1
        out.reserveCapacity(count)
        scalars.withUnsafeBufferPointer { c in
            for i in 0..<count {
                var h = seed
                for k in 0..<n { h = (h ^ UInt64(c[i + k])) &* 0x9E37_79B9_7F4A_7C15 }
                out.append(mix(h))
            }
        }
    }

    @inline(__always) static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The distinct shingle hashes, sorted: the set exact Jaccard works on.
    public static func set(_ hashes: [UInt64]) -> [UInt64] {
        var s = hashes
        s.sort()
        var w = 0
        for i in 0..<s.count where i == 0 || s[i] != s[i - 1] { s[w] = s[i]; w += 1 }
        s.removeLast(s.count - w)
        return s
    }

    /// |A ∩ B| / |A ∪ B| of two sorted sets; 0 when both are empty.
    public static func jaccard(_ a: [UInt64], _ b: [UInt64]) -> Double {
        if a.isEmpty && b.isEmpty { return 0 }
        var i = 0, j = 0, common = 0
        while i < a.count && j < b.count {
            if a[i] == b[j] { common += 1; i += 1; j += 1 } else if a[i] < b[j] { i += 1 } else { j += 1 }
        }
        return Double(common) / Double(a.count + b.count - common)
    }
}
