/// A JSON value as prepare needs it: strings as UTF-8 bytes (escapes
/// decoded), numbers as their source text, containers kept for arrays only
/// (object members of nested objects are checked for syntax and dropped).
public enum JSONValue: Equatable, Sendable {
    case string([UInt8])
    case number(String)
    case bool(Bool)
    case null
    case array([JSONValue])
    case object

    var typeName: String {
        switch self {
        case .string: return "string"
        case .number: return "number"
        case .bool: return "boolean"
        case .null: return "null"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

public struct JSONSyntaxError: Error, Equatable, Sendable, CustomStringConvertible {
    public var offset: Int
    public var message: String
    public var description: String { "\(message) at byte \(offset + 1)" }
}

/// Parses one JSON object (a JSONL line) into its top-level members, in
/// order. Input must already be valid UTF-8. Duplicate keys are an error:
/// silently keeping one of two `text` values would lose data.
public struct JSONObjectParser {
    private static let maxDepth = 64

    public static func parseObject(_ bytes: UnsafeBufferPointer<UInt8>) throws -> [(key: String, value: JSONValue)] {
        var parser = Cursor(p: bytes)
        parser.skipSpace()
        guard parser.peek == UInt8(ascii: "{") else { throw parser.error(parser.atEnd ? "empty line, expected a JSON object" : "expected a JSON object") }
        var members: [(key: String, value: JSONValue)] = []
        try parser.parseObject(depth: 0) { key, value in
            if members.contains(where: { $0.key == key }) { return false }
            members.append((key, value))
            return true
        }
        parser.skipSpace()
        guard parser.atEnd else { throw parser.error("unexpected text after the object") }
        return members
    }

    public static func parseObject(_ bytes: [UInt8]) throws -> [(key: String, value: JSONValue)] {
        try bytes.withUnsafeBufferPointer { try parseObject($0) }
    }

    struct Cursor {
        let p: UnsafeBufferPointer<UInt8>
        var i = 0

        var atEnd: Bool { i >= p.count }
        var peek: UInt8? { i < p.count ? p[i] : nil }

        func error(_ message: String) -> JSONSyntaxError { JSONSyntaxError(offset: min(i, max(0, p.count - 1)), message: message) }

        mutating func skipSpace() {
            while i < p.count, p[i] == 0x20 || p[i] == 0x09 || p[i] == 0x0A || p[i] == 0x0D { i += 1 }
        }

        mutating func expect(_ c: UInt8) throws {
            skipSpace()
            guard i < p.count, p[i] == c else { throw error("expected '\(Character(Unicode.Scalar(c)))'") }
            i += 1
        }

        /// Calls `member` for each member of the object at the cursor; it
        /// returns false for a duplicate key.
        mutating func parseObject(depth: Int, _ member: (String, JSONValue) throws -> Bool) throws {
            try expect(UInt8(ascii: "{"))
            skipSpace()
            if peek == UInt8(ascii: "}") { i += 1; return }
            while true {
                skipSpace()
                guard peek == UInt8(ascii: "\"") else { throw error("expected a string key") }
                let key = String(decoding: try parseString(), as: UTF8.self)
                try expect(UInt8(ascii: ":"))
                let value = try parseValue(depth: depth + 1)
                if try !member(key, value) { throw error("duplicate key \"\(key)\"") }
                skipSpace()
                guard let c = peek else { throw error("unterminated object") }
                i += 1
                if c == UInt8(ascii: "}") { return }
                if c != UInt8(ascii: ",") { i -= 1; throw error("expected ',' or '}'") }
            }
        }

        mutating func parseValue(depth: Int) throws -> JSONValue {
            guard depth <= JSONObjectParser.maxDepth else { throw error("nested deeper than \(JSONObjectParser.maxDepth) levels") }
            skipSpace()
            guard let c = peek else { throw error("missing value") }
            switch c {
            case UInt8(ascii: "\""):
                return .string(try parseString())
            case UInt8(ascii: "{"):
                var keys: [String] = []
                try parseObject(depth: depth) { key, _ in
                    if keys.contains(key) { return false }
                    keys.append(key)
                    return true
                }
                return .object
            case UInt8(ascii: "["):
                i += 1
                var items: [JSONValue] = []
                skipSpace()
                if peek == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    items.append(try parseValue(depth: depth + 1))
                    skipSpace()
                    guard let d = peek else { throw error("unterminated array") }
                    i += 1
                    if d == UInt8(ascii: "]") { return .array(items) }
                    if d != UInt8(ascii: ",") { i -= 1; throw error("expected ',' or ']'") }
                }
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return .number(try parseNumber())
            default:
                throw error("unexpected character '\(Character(Unicode.Scalar(c)))'")
            }
        }

        mutating func literal(_ word: StaticString) throws {
            let n = word.utf8CodeUnitCount
            guard i + n <= p.count else { throw error("invalid literal") }
            for k in 0..<n where p[i + k] != word.utf8Start[k] { throw error("invalid literal") }
            i += n
        }

        mutating func parseNumber() throws -> String {
            let start = i
            if peek == UInt8(ascii: "-") { i += 1 }
            guard let first = peek, first >= 0x30 && first <= 0x39 else { throw error("invalid number") }
            if first == 0x30 { i += 1 } else { while let d = peek, d >= 0x30 && d <= 0x39 { i += 1 } }
            if peek == UInt8(ascii: ".") {
                i += 1
                guard let d = peek, d >= 0x30 && d <= 0x39 else { throw error("invalid number") }
                while let d = peek, d >= 0x30 && d <= 0x39 { i += 1 }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                i += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { i += 1 }
                guard let d = peek, d >= 0x30 && d <= 0x39 else { throw error("invalid number") }
                while let d = peek, d >= 0x30 && d <= 0x39 { i += 1 }
            }
            return String(decoding: UnsafeBufferPointer(rebasing: p[start..<i]), as: UTF8.self)
        }

        /// The string at the cursor (opening quote included), escapes decoded.
        mutating func parseString() throws -> [UInt8] {
            i += 1
            let start = i
            // Fast path: no escapes.
            while i < p.count {
                let c = p[i]
                if c == UInt8(ascii: "\"") {
                    let out = Array(UnsafeBufferPointer(rebasing: p[start..<i]))
                    i += 1
                    return out
                }
                if c == UInt8(ascii: "\\") { break }
                if c < 0x20 { throw error("control character in string (must be escaped)") }
                i += 1
            }
            var out = Array(UnsafeBufferPointer(rebasing: p[start..<i]))
            while i < p.count {
                let c = p[i]
                if c == UInt8(ascii: "\"") { i += 1; return out }
                if c < 0x20 { throw error("control character in string (must be escaped)") }
                if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
                i += 1
                guard let e = peek else { break }
                i += 1
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
                    var scalar = try hex4()
                    if scalar >= 0xD800 && scalar < 0xDC00 {
                        guard i + 1 < p.count, p[i] == UInt8(ascii: "\\"), p[i + 1] == UInt8(ascii: "u") else {
                            throw error("unpaired surrogate \\u\(String(scalar, radix: 16))")
                        }
                        i += 2
                        let low = try hex4()
                        guard low >= 0xDC00 && low < 0xE000 else { throw error("unpaired surrogate \\u\(String(scalar, radix: 16))") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if scalar >= 0xDC00 && scalar < 0xE000 {
                        throw error("unpaired surrogate \\u\(String(scalar, radix: 16))")
                    }
                    appendUTF8(Unicode.Scalar(scalar)!, to: &out)
                default:
                    i -= 1
                    throw error("invalid escape '\\\(Character(Unicode.Scalar(e)))'")
                }
            }
            throw error("unterminated string")
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= p.count else { throw error("truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = p[i]
                let d: UInt32
                switch c {
                case 0x30...0x39: d = UInt32(c - 0x30)
                case 0x41...0x46: d = UInt32(c - 0x41 + 10)
                case 0x61...0x66: d = UInt32(c - 0x61 + 10)
                default: throw error("invalid \\u escape")
                }
                v = v << 4 | d
                i += 1
            }
            return v
        }
    }
}

func appendUTF8(_ s: Unicode.Scalar, to out: inout [UInt8]) {
    let v = s.value
    switch v {
    case 0..<0x80: out.append(UInt8(v))
    case 0x80..<0x800:
        out.append(UInt8(0xC0 | (v >> 6))); out.append(UInt8(0x80 | (v & 0x3F)))
    case 0x800..<0x10000:
        out.append(UInt8(0xE0 | (v >> 12))); out.append(UInt8(0x80 | ((v >> 6) & 0x3F))); out.append(UInt8(0x80 | (v & 0x3F)))
    default:
        out.append(UInt8(0xF0 | (v >> 18))); out.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
        out.append(UInt8(0x80 | ((v >> 6) & 0x3F))); out.append(UInt8(0x80 | (v & 0x3F)))
    }
}

/// Hand-written JSON output: fields in a fixed order, raw UTF-8 for text,
/// escapes only where JSON requires them (`"`, `\`, control characters).
public enum JSONWriter {
    private static let hex = Array("0123456789abcdef".utf8)

    public static func appendString(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        out.append(0x22)
        var runStart = 0
        for i in 0..<bytes.count {
            let c = bytes[i]
            guard c < 0x20 || c == 0x22 || c == 0x5C else { continue }
            if runStart < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i])) }
            runStart = i + 1
            switch c {
            case 0x22: out.append(0x5C); out.append(0x22)
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            case 0x08: out.append(0x5C); out.append(UInt8(ascii: "b"))
            case 0x0C: out.append(0x5C); out.append(UInt8(ascii: "f"))
            default:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hex[Int(c >> 4)]); out.append(hex[Int(c & 15)])
            }
        }
        if runStart < bytes.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<bytes.count])) }
        out.append(0x22)
    }

    public static func appendString(_ bytes: [UInt8], to out: inout [UInt8]) {
        bytes.withUnsafeBufferPointer { appendString($0, to: &out) }
    }

    public static func appendString(_ string: String, to out: inout [UInt8]) {
        var s = string
        s.withUTF8 { appendString($0, to: &out) }
    }

    public static func appendOptionalString(_ string: String?, to out: inout [UInt8]) {
        if let string { appendString(string, to: &out) } else { out.append(contentsOf: nullBytes) }
    }

    public static func appendInt(_ value: Int, to out: inout [UInt8]) {
        out.append(contentsOf: Array(String(value).utf8))
    }

    static let nullBytes: [UInt8] = Array("null".utf8)

    /// `string` as a JSON string literal.
    public static func quoted(_ string: String) -> String {
        var out = [UInt8](); appendString(string, to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}
