import Foundation

/// UTF-8 checks and the one normalisation prepare applies to text: Unicode
/// NFC plus `\n` line ends. Fragment text is written in NFC, so its `hash`
/// (SHA-1 of the NFC UTF-8) is also the SHA-1 of the `text` field's bytes.
public enum TextNormalization {
    /// The offset of the first byte that is not part of valid UTF-8, or nil.
    public static func firstInvalidUTF8(_ bytes: UnsafeRawBufferPointer) -> Int? {
        let n = bytes.count
        var i = 0
        while i < n {
            let b0 = bytes[i]
            if b0 < 0x80 { i += 1; continue }
            if b0 < 0xC2 { return i }
            if b0 < 0xE0 {
                guard i + 1 < n, bytes[i + 1] & 0xC0 == 0x80 else { return i }
                i += 2; continue
            }
            if b0 < 0xF0 {
                guard i + 2 < n else { return i }
                let b1 = bytes[i + 1], b2 = bytes[i + 2]
                guard b1 & 0xC0 == 0x80, b2 & 0xC0 == 0x80 else { return i }
                if b0 == 0xE0 && b1 < 0xA0 { return i }          // overlong
                if b0 == 0xED && b1 >= 0xA0 { return i }         // surrogate
                i += 3; continue
            }
            if b0 < 0xF5 {
                guard i + 3 < n else { return i }
                let b1 = bytes[i + 1], b2 = bytes[i + 2], b3 = bytes[i + 3]
                guard b1 & 0xC0 == 0x80, b2 & 0xC0 == 0x80, b3 & 0xC0 == 0x80 else { return i }
                if b0 == 0xF0 && b1 < 0x90 { return i }          // overlong
                if b0 == 0xF4 && b1 >= 0x90 { return i }         // > U+10FFFF
                i += 4; continue
            }
            return i
        }
        return nil
    }

    public static func firstInvalidUTF8(_ bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBytes { firstInvalidUTF8($0) }
    }

    /// Decodes the scalar starting at `i` of valid UTF-8; returns it and its length.
    @inline(__always)
    static func decodeScalar(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> (UInt32, Int) {
        let b0 = UInt32(p[i])
        if b0 < 0x80 { return (b0, 1) }
        if b0 < 0xE0 { return ((b0 & 0x1F) << 6 | UInt32(p[i + 1] & 0x3F), 2) }
        if b0 < 0xF0 { return ((b0 & 0x0F) << 12 | UInt32(p[i + 1] & 0x3F) << 6 | UInt32(p[i + 2] & 0x3F), 3) }
        return ((b0 & 0x07) << 18 | UInt32(p[i + 1] & 0x3F) << 12 | UInt32(p[i + 2] & 0x3F) << 6 | UInt32(p[i + 3] & 0x3F), 4)
    }

    /// True for scalars that are certainly unchanged by NFC in any context:
    /// no canonical decomposition, combining class 0, and never the second
    /// half of a canonical composition. Covers Latin, CJK ideographs and
    /// CJK/full-width punctuation, i.e. nearly all patent text; anything else
    /// goes through the full normaliser.
    @inline(__always)
    static func isNFCStable(_ s: UInt32) -> Bool {
        switch s {
        case 0x0000...0x02FF: return true
        case 0x2002...0x2027, 0x2030...0x205E: return true       // spaces, dashes, quotes, bullets
        case 0x2070...0x209F, 0x20A0...0x20C0: return true       // super/subscripts, currency
        case 0x2150...0x218B, 0x2460...0x24FF: return true       // number forms, enclosed numbers
        case 0x3000...0x3029, 0x3030...0x303F: return true       // CJK symbols and punctuation
        case 0x3400...0x4DBF, 0x4E00...0x9FFF: return true       // CJK unified ideographs
        case 0xFF01...0xFF9D, 0xFFA0...0xFFEF: return true       // half/full-width forms
        case 0x20000...0x2A6DF, 0x2A700...0x2EBEF: return true   // CJK extensions B-F
        default: return false
        }
    }

    /// True when `bytes` (valid UTF-8) is already in NFC by the quick check.
    public static func isQuickNFC(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { p in
            var i = 0
            let n = p.count
            while i < n {
                if p[i] < 0x80 { i += 1; continue }
                let (s, len) = decodeScalar(p, i)
                if !isNFCStable(s) { return false }
                i += len
            }
            return true
        }
    }

    /// NFC of valid UTF-8, with `\r\n` and lone `\r` turned into `\n` and
    /// form feeds (page breaks, handled by the caller) left in place.
    public static func normalize(_ bytes: [UInt8]) -> [UInt8] {
        var text = bytes
        if !isQuickNFC(text) {
            text = Array(String(decoding: text, as: UTF8.self).precomposedStringWithCanonicalMapping.utf8)
        }
        guard text.contains(0x0D) else { return text }
        var out = [UInt8](); out.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            if text[i] == 0x0D {
                out.append(0x0A)
                if i + 1 < text.count && text[i + 1] == 0x0A { i += 1 }
            } else {
                out.append(text[i])
            }
            i += 1
        }
        return out
    }

    /// Whitespace that trims off paragraph and fragment edges: ASCII
    /// whitespace, NBSP and the ideographic space used to indent Chinese text.
    @inline(__always)
    static func isSpace(_ s: UInt32) -> Bool {
        s == 0x20 || (s >= 0x09 && s <= 0x0D) || s == 0xA0 || s == 0x3000 || s == 0x2002 || s == 0x2003 || s == 0x2009
    }

    /// `bytes[range]` without leading and trailing whitespace (as UTF-8 offsets).
    static func trimmed(_ p: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> (Int, Int) {
        var s = start, e = end
        while s < e {
            let (scalar, len) = decodeScalar(p, s)
            if !isSpace(scalar) { break }
            s += len
        }
        while e > s {
            var b = e - 1
            while b > s && p[b] & 0xC0 == 0x80 { b -= 1 }
            let (scalar, _) = decodeScalar(p, b)
            if !isSpace(scalar) { break }
            e = b
        }
        return (s, e)
    }
}
