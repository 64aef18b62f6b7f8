import DaptCore

/// A parsed JSON value (for `tokenizer.json` and manifests). Objects keep
/// their keys in file order.
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)): return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members.first { $0.0 == key }?.1 }
        return nil
    }

    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var number: Double? { if case .number(let d) = self { return d }; return nil }
    public var int: Int? { number.flatMap { $0 == $0.rounded() && abs($0) < 9e15 ? Int($0) : nil } }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var array: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var members: [(String, JSONValue)]? { if case .object(let o) = self { return o }; return nil }
    public var isNull: Bool { if case .null = self { return true }; return false }

    public static func parse(_ bytes: [UInt8]) throws(JSONError) -> JSONValue {
        try bytes.withUnsafeBufferPointer { buf throws(JSONError) in
            var scanner = JSONScanner(buf)
            let value = try scanner.parseValue()
            scanner.skipWhitespace()
            if scanner.position != buf.count { throw JSONError(offset: scanner.position, reason: "unexpected data after the JSON value") }
            return value
        }
    }
}

public struct JSONError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Byte offset in the text.
    public var offset: Int
    public var reason: String
    public var description: String { "invalid JSON at byte \(offset + 1): \(reason)" }
}

/// A strict JSON reader over a byte buffer, used both to build `JSONValue`s
/// and to pull one string field out of a JSONL record without building the rest.
public struct JSONScanner {
    let bytes: UnsafeBufferPointer<UInt8>
    public private(set) var position = 0

    public init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    func fail(_ reason: String) -> JSONError { JSONError(offset: min(position, bytes.count), reason: reason) }

    public mutating func skipWhitespace() {
        while position < bytes.count {
            let b = bytes[position]
            if b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 { position += 1 } else { break }
        }
    }

    mutating func expect(_ b: UInt8, _ what: String) throws(JSONError) {
        skipWhitespace()
        guard position < bytes.count, bytes[position] == b else {
            throw fail(position < bytes.count ? "expected \(what)" : "unexpected end, expected \(what)")
        }
        position += 1
    }

    mutating func peek() throws(JSONError) -> UInt8 {
        skipWhitespace()
        guard position < bytes.count else { throw fail("unexpected end of input") }
        return bytes[position]
    }

    /// Calls `body(key)` for each member of the object at the cursor; `body`
    /// must consume the member's value (parse or skip it).
    public mutating func forEachMember(_ body: (inout JSONScanner, [UInt8]) throws(JSONError) -> Void) throws(JSONError) {
        try expect(UInt8(ascii: "{"), "'{'")
        if try peek() == UInt8(ascii: "}") { position += 1; return }
        while true {
            guard try peek() == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let key = try parseStringBytes()
            try expect(UInt8(ascii: ":"), "':'")
            try body(&self, key)
            let b = try peek()
            position += 1
            if b == UInt8(ascii: "}") { return }
            if b != UInt8(ascii: ",") { position -= 1; throw fail("expected ',' or '}'") }
        }
    }

    public mutating func parseValue(depth: Int = 0) throws(JSONError) -> JSONValue {
        guard depth < 512 else { throw fail("nested too deeply") }
        switch try peek() {
        case UInt8(ascii: "{"):
            var members: [(String, JSONValue)] = []
            try forEachMember { (s: inout JSONScanner, key: [UInt8]) throws(JSONError) in
                members.append((String(decoding: key, as: UTF8.self), try s.parseValue(depth: depth + 1)))
            }
            return .object(members)
        case UInt8(ascii: "["):
            position += 1
            var items: [JSONValue] = []
            if try peek() == UInt8(ascii: "]") { position += 1; return .array(items) }
            while true {
                items.append(try parseValue(depth: depth + 1))
                let b = try peek()
                position += 1
                if b == UInt8(ascii: "]") { return .array(items) }
                if b != UInt8(ascii: ",") { position -= 1; throw fail("expected ',' or ']'") }
            }
        case UInt8(ascii: "\""):
            return .string(String(decoding: try parseStringBytes(), as: UTF8.self))
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default:
            return .number(try parseNumber())
        }
    }

    /// Skips the value at the cursor, checking that it is well formed.
    public mutating func skipValue(depth: Int = 0) throws(JSONError) {
        guard depth < 512 else { throw fail("nested too deeply") }
        switch try peek() {
        case UInt8(ascii: "{"):
            try forEachMember { (s: inout JSONScanner, _: [UInt8]) throws(JSONError) in try s.skipValue(depth: depth + 1) }
        case UInt8(ascii: "["):
            position += 1
            if try peek() == UInt8(ascii: "]") { position += 1; return }
            while true {
                try skipValue(depth: depth + 1)
                let b = try peek()
                position += 1
                if b == UInt8(ascii: "]") { return }
                if b != UInt8(ascii: ",") { position -= 1; throw fail("expected ',' or ']'") }
            }
        case UInt8(ascii: "\""): try skipString()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default: _ = try parseNumber()
        }
    }

    mutating func literal(_ word: StaticString) throws(JSONError) {
        let n = word.utf8CodeUnitCount
        guard position + n <= bytes.count else { throw fail("unexpected end of input") }
        for k in 0..<n where bytes[position + k] != word.utf8Start[k] { throw fail("invalid literal") }
        position += n
    }

    mutating func parseNumber() throws(JSONError) -> Double {
        let start = position
        if position < bytes.count && bytes[position] == UInt8(ascii: "-") { position += 1 }
        var digits = 0
        while position < bytes.count {
            let b = bytes[position]
            if (b >= 0x30 && b <= 0x39) { digits += 1; position += 1 }
            else if b == UInt8(ascii: ".") || b == UInt8(ascii: "e") || b == UInt8(ascii: "E") || b == UInt8(ascii: "+") || b == UInt8(ascii: "-") { position += 1 }
            else { break }
        }
        guard digits > 0, let value = Double(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)) else {
            position = start
            throw fail("expected a value")
        }
        return value
    }

    mutating func skipString() throws(JSONError) {
        position += 1
        while position < bytes.count {
            let b = bytes[position]
            if b == UInt8(ascii: "\"") { position += 1; return }
            if b == UInt8(ascii: "\\") {
                position += 1
                guard position < bytes.count else { break }
                if bytes[position] == UInt8(ascii: "u") {
                    guard position + 4 < bytes.count, (1...4).allSatisfy({ Self.hexValue(bytes[position + $0]) != nil }) else { throw fail("bad \\u escape") }
                    position += 5
                    continue
                }
                guard Self.escaped(bytes[position]) != nil else { throw fail("bad escape") }
            } else if b < 0x20 {
                throw fail("control character in string")
            }
            position += 1
        }
        throw fail("unterminated string")
    }

    /// Parses the string at the cursor into its UTF-8 bytes (escapes resolved;
    /// a lone surrogate escape becomes U+FFFD).
    public mutating func parseStringBytes() throws(JSONError) -> [UInt8] {
        var out: [UInt8] = []
        try parseString(into: &out)
        return out
    }

    public mutating func parseString(into out: inout [UInt8]) throws(JSONError) {
        guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw fail("expected a string") }
        position += 1
        var runStart = position
        while position < bytes.count {
            let b = bytes[position]
            if b == UInt8(ascii: "\"") {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<position]))
                position += 1
                return
            }
            if b == UInt8(ascii: "\\") {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<position]))
                position += 1
                guard position < bytes.count else { break }
                let e = bytes[position]
                if e == UInt8(ascii: "u") {
                    var v = try hex4(position + 1)
                    position += 5
                    if v >= 0xD800 && v < 0xDC00 {
                        if position + 5 < bytes.count && bytes[position] == UInt8(ascii: "\\") && bytes[position + 1] == UInt8(ascii: "u"),
                           let low = try? hex4(position + 2), low >= 0xDC00 && low < 0xE000 {
                            v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                            position += 6
                        } else { v = 0xFFFD }
                    } else if v >= 0xDC00 && v < 0xE000 { v = 0xFFFD }
                    Self.appendUTF8(v, to: &out)
                } else {
                    guard let c = Self.escaped(e) else { throw fail("bad escape") }
                    out.append(c)
                    position += 1
                }
                runStart = position
                continue
            }
            if b < 0x20 { throw fail("control character in string") }
            position += 1
        }
        throw fail("unterminated string")
    }

    func hex4(_ at: Int) throws(JSONError) -> UInt32 {
        guard at + 4 <= bytes.count else { throw fail("bad \\u escape") }
        var v: UInt32 = 0
        for k in 0..<4 {
            guard let h = Self.hexValue(bytes[at + k]) else { throw fail("bad \\u escape") }
            v = v << 4 | h
        }
        return v
    }

    static func hexValue(_ b: UInt8) -> UInt32? {
        switch b {
        case 0x30...0x39: return UInt32(b - 0x30)
        case 0x41...0x46: return UInt32(b - 0x41 + 10)
        case 0x61...0x66: return UInt32(b - 0x61 + 10)
        default: return nil
        }
    }

    static func escaped(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "\""): return 0x22
        case UInt8(ascii: "\\"): return 0x5C
        case UInt8(ascii: "/"): return 0x2F
        case UInt8(ascii: "b"): return 0x08
        case UInt8(ascii: "f"): return 0x0C
        case UInt8(ascii: "n"): return 0x0A
        case UInt8(ascii: "r"): return 0x0D
        case UInt8(ascii: "t"): return 0x09
        default: return nil
        }
    }

    static func appendUTF8(_ v: UInt32, to out: inout [UInt8]) {
        if v < 0x80 { out.append(UInt8(v)) }
        else if v < 0x800 { out.append(UInt8(0xC0 | v >> 6)); out.append(UInt8(0x80 | v & 0x3F)) }
        else if v < 0x10000 {
            out.append(UInt8(0xE0 | v >> 12)); out.append(UInt8(0x80 | (v >> 6) & 0x3F)); out.append(UInt8(0x80 | v & 0x3F))
        } else {
            out.append(UInt8(0xF0 | v >> 18)); out.append(UInt8(0x80 | (v >> 12) & 0x3F))
            out.append(UInt8(0x80 | (v >> 6) & 0x3F)); out.append(UInt8(0x80 | v & 0x3F))
        }
    }
}

/// Writes JSON text: strings escaped the way `serde_json` does (non-ASCII kept as UTF-8).
public enum JSONText {
    public static func quote(_ s: String) -> String { JSONString.quote(s) }

    /// Compact or indented text of a value (members in their stored order).
    public static func write(_ value: JSONValue, indent: Int? = 2, level: Int = 0) -> String {
        let pad = indent.map { String(repeating: " ", count: $0 * (level + 1)) } ?? ""
        let close = indent.map { String(repeating: " ", count: $0 * level) } ?? ""
        let nl = indent == nil ? "" : "\n"
        let sep = indent == nil ? ":" : ": "
        switch value {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let d):
            if d == d.rounded() && abs(d) < 9e15 { return String(Int64(d)) }
            return "\(d)"
        case .string(let s): return quote(s)
        case .array(let items):
            if items.isEmpty { return "[]" }
            return "[" + nl + items.map { pad + write($0, indent: indent, level: level + 1) }.joined(separator: "," + nl) + nl + close + "]"
        case .object(let members):
            if members.isEmpty { return "{}" }
            return "{" + nl + members.map { pad + quote($0.0) + sep + write($0.1, indent: indent, level: level + 1) }.joined(separator: "," + nl) + nl + close + "}"
        }
    }
}
