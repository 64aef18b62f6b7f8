import DaptCore

/// The fields dedup needs from one JSONL record, found by a small validating
/// JSON scanner: the whole line must be one JSON object; other fields are
/// checked for syntax and skipped.
public struct ScannedRecord: Sendable {
    /// The `id` token exactly as it appears (a JSON string with its quotes, or a number).
    public var idToken: Range<Int>
    /// The decoded `text` (UTF-8, validated).
    public var text: String
    /// The decoded `hash`, when present.
    public var hash: String?
    /// Offset of the object's closing brace, where `removed.jsonl` adds fields.
    public var closingBrace: Int
}

public struct JSONLineScanner {
    private var scratch: [UInt8] = []
    private var keyScratch: [UInt8] = []

    public init() {}

    public mutating func scan(_ line: UnsafeBufferPointer<UInt8>) throws(RecordProblem) -> ScannedRecord {
        var i = skipSpace(line, 0)
        guard i < line.count, line[i] == UInt8(ascii: "{") else { throw RecordProblem(field: nil, reason: "not a JSON object") }
        i += 1
        var idToken: Range<Int>?
        var text: String?
        var hash: String?
        var hashSeen = false
        i = skipSpace(line, i)
        var closing = -1
        if i < line.count && line[i] == UInt8(ascii: "}") {
            closing = i
        } else {
            while true {
                i = skipSpace(line, i)
                guard i < line.count, line[i] == UInt8(ascii: "\"") else { throw syntax(i, "expected a key") }
                i = try decodeString(line, i, into: &keyScratch)
                i = skipSpace(line, i)
                guard i < line.count, line[i] == UInt8(ascii: ":") else { throw syntax(i, "expected ':'") }
                i = skipSpace(line, i + 1)
                guard i < line.count else { throw syntax(i, "missing value") }
                let valueStart = i
                switch key(keyScratch) {
                case .id:
                    if idToken != nil { throw RecordProblem(field: "id", reason: "duplicate key") }
                    if line[i] == UInt8(ascii: "\"") {
                        i = try decodeString(line, i, into: &scratch)
                        if scratch.isEmpty { throw RecordProblem(field: "id", reason: "empty") }
                        if String(validating: scratch, as: UTF8.self) == nil { throw RecordProblem(field: "id", reason: "invalid UTF-8") }
                    } else if line[i] == UInt8(ascii: "-") || (line[i] >= 0x30 && line[i] <= 0x39) {
                        i = try skipValue(line, i, depth: 0)
                    } else {
                        throw RecordProblem(field: "id", reason: "must be a string or a number")
                    }
                    idToken = valueStart..<i
                case .text:
                    if text != nil { throw RecordProblem(field: "text", reason: "duplicate key") }
                    guard line[i] == UInt8(ascii: "\"") else {
                        if line[i] == UInt8(ascii: "n") { throw RecordProblem(field: "text", reason: "is null") }
                        throw RecordProblem(field: "text", reason: "must be a string")
                    }
                    i = try decodeString(line, i, into: &scratch)
                    guard let decoded = String(validating: scratch, as: UTF8.self) else {
                        throw RecordProblem(field: "text", reason: "invalid UTF-8")
                    }
                    text = decoded
                case .hash:
                    if hashSeen { throw RecordProblem(field: "hash", reason: "duplicate key") }
                    hashSeen = true
                    if line[i] == UInt8(ascii: "\"") {
                        i = try decodeString(line, i, into: &scratch)
                        hash = String(decoding: scratch, as: UTF8.self)
                    } else {
                        i = try skipValue(line, i, depth: 0)
                        if !(i - valueStart == 4 && line[valueStart] == UInt8(ascii: "n")) {
                            throw RecordProblem(field: "hash", reason: "must be a string")
                        }
                    }
                case .other:
                    i = try skipValue(line, i, depth: 0)
                }
                i = skipSpace(line, i)
                guard i < line.count else { throw syntax(i, "unterminated object") }
                if line[i] == UInt8(ascii: ",") { i += 1; continue }
                if line[i] == UInt8(ascii: "}") { closing = i; break }
                throw syntax(i, "expected ',' or '}'")
            }
        }
        if skipSpace(line, closing + 1) != line.count { throw syntax(closing + 1, "text after the object") }
        guard let idToken else { throw RecordProblem(field: "id", reason: "missing") }
        guard let text else { throw RecordProblem(field: "text", reason: "missing") }
        return ScannedRecord(idToken: idToken, text: text, hash: hash, closingBrace: closing)
    }

    private enum Key { case id, text, hash, other }

    private func key(_ k: [UInt8]) -> Key {
        if k.count == 2 && k[0] == UInt8(ascii: "i") && k[1] == UInt8(ascii: "d") { return .id }
        if k.count == 4 && k.elementsEqual("text".utf8) { return .text }
        if k.count == 4 && k.elementsEqual("hash".utf8) { return .hash }
        return .other
    }

    private func syntax(_ offset: Int, _ reason: String) -> RecordProblem {
        RecordProblem(field: nil, reason: "invalid JSON at byte \(offset + 1): \(reason)")
    }

    @inline(__always) private func skipSpace(_ s: UnsafeBufferPointer<UInt8>, _ start: Int) -> Int {
        var i = start
        while i < s.count, s[i] == 0x20 || s[i] == 0x09 || s[i] == 0x0D || s[i] == 0x0A { i += 1 }
        return i
    }

    /// Decodes the JSON string starting at the quote at `start` into `out`;
    /// returns the offset after its closing quote.
    private func decodeString(_ s: UnsafeBufferPointer<UInt8>, _ start: Int, into out: inout [UInt8]) throws(RecordProblem) -> Int {
        out.removeAll(keepingCapacity: true)
        var i = start + 1
        var runStart = i
        while i < s.count {
            let c = s[i]
            if c == UInt8(ascii: "\"") {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: s[runStart..<i]))
                return i + 1
            }
            if c < 0x20 { throw syntax(i, "control character in a string") }
            if c == UInt8(ascii: "\\") {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: s[runStart..<i]))
                guard i + 1 < s.count else { break }
                let e = s[i + 1]
                i += 2
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4(s, i)
                    i += 4
                    if code >= 0xD800 && code < 0xDC00 {
                        guard i + 6 <= s.count, s[i] == UInt8(ascii: "\\"), s[i + 1] == UInt8(ascii: "u") else {
                            throw syntax(i, "unpaired surrogate")
                        }
                        let low = try hex4(s, i + 2)
                        guard low >= 0xDC00 && low < 0xE000 else { throw syntax(i, "unpaired surrogate") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                    } else if code >= 0xDC00 && code < 0xE000 {
                        throw syntax(i, "unpaired surrogate")
                    }
                    appendUTF8(code, to: &out)
                default:
                    throw syntax(i - 1, "bad escape")
                }
                runStart = i
                continue
            }
            i += 1
        }
        throw syntax(start, "unterminated string")
    }

    private func hex4(_ s: UnsafeBufferPointer<UInt8>, _ at: Int) throws(RecordProblem) -> UInt32 {
        guard at + 4 <= s.count else { throw syntax(at, "short \\u escape") }
        var v: UInt32 = 0
        for k in 0..<4 {
            let c = s[at + k]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw syntax(at + k, "bad \\u escape")
            }
            v = v << 4 | d
        }
        return v
    }

    private func appendUTF8(_ code: UInt32, to out: inout [UInt8]) {
        switch code {
        case 0..<0x80: out.append(UInt8(code))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | (code >> 6))); out.append(UInt8(0x80 | (code & 0x3F)))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | (code >> 12))); out.append(UInt8(0x80 | ((code >> 6) & 0x3F))); out.append(UInt8(0x80 | (code & 0x3F)))
        default:
            out.append(UInt8(0xF0 | (code >> 18))); out.append(UInt8(0x80 | ((code >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((code >> 6) & 0x3F))); out.append(UInt8(0x80 | (code & 0x3F)))
        }
    }

    /// Skips any JSON value starting at `start`.
    private func skipValue(_ s: UnsafeBufferPointer<UInt8>, _ start: Int, depth: Int) throws(RecordProblem) -> Int {
        guard depth < 64 else { throw syntax(start, "nested too deeply") }
        guard start < s.count else { throw syntax(start, "missing value") }
        var i = start
        switch s[i] {
        case UInt8(ascii: "\""):
            i += 1
            while i < s.count {
                let c = s[i]
                if c == UInt8(ascii: "\"") { return i + 1 }
                if c < 0x20 { throw syntax(i, "control character in a string") }
                i += c == UInt8(ascii: "\\") ? 2 : 1
            }
            throw syntax(start, "unterminated string")
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let isObject = s[i] == UInt8(ascii: "{")
            let close = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
            i = skipSpace(s, i + 1)
            if i < s.count && s[i] == close { return i + 1 }
            while true {
                if isObject {
                    guard i < s.count, s[i] == UInt8(ascii: "\"") else { throw syntax(i, "expected a key") }
                    i = try skipValue(s, i, depth: depth + 1)
                    i = skipSpace(s, i)
                    guard i < s.count, s[i] == UInt8(ascii: ":") else { throw syntax(i, "expected ':'") }
                    i = skipSpace(s, i + 1)
                }
                i = try skipValue(s, i, depth: depth + 1)
                i = skipSpace(s, i)
                guard i < s.count else { throw syntax(i, "unterminated \(isObject ? "object" : "array")") }
                if s[i] == UInt8(ascii: ",") { i = skipSpace(s, i + 1); continue }
                if s[i] == close { return i + 1 }
                throw syntax(i, "expected ',' or '\(Character(Unicode.Scalar(close)))'")
            }
        case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
            for word in ["true", "false", "null"] where s.count - i >= word.utf8.count {
                if UnsafeBufferPointer(rebasing: s[i..<(i + word.utf8.count)]).elementsEqual(word.utf8) { return i + word.utf8.count }
            }
            throw syntax(i, "bad literal")
        default:
            let numberStart = i
            while i < s.count, let c = Optional(s[i]),
                  (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+") || c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") {
                i += 1
            }
            if i == numberStart { throw syntax(i, "unexpected character") }
            return i
        }
    }
}

