/// A JSON document as written: object members keep their order and numbers
/// keep their text, so parse → write gives the same values back (used for
/// `tokenizer.json`, manifests and other small documents; JSONL records go
/// through `JSONRecordScanner` instead).
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// A number's text exactly as written (valid RFC 8259 number syntax).
    case number(String)
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

    /// A number value of an integer.
    public static func integer<I: BinaryInteger>(_ value: I) -> JSONValue { .number(String(value)) }

    /// A number value of a finite double, written in its shortest exact form.
    public static func float(_ value: Double) -> JSONValue {
        precondition(value.isFinite, "JSON has no \(value)")
        if value == value.rounded(), abs(value) < 1e15 { return .number(String(Int64(value))) }
        return .number("\(value)")
    }

    // MARK: accessors

    /// The first member named `key` of an object.
    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members.first { $0.0 == key }?.1 }
        return nil
    }

    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var array: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var members: [(String, JSONValue)]? { if case .object(let o) = self { return o }; return nil }
    public var isNull: Bool { if case .null = self { return true }; return false }

    /// The number as an `Int` when it is written as an integer (no fraction
    /// or exponent) that fits; nil otherwise (`1e2`, `1.0`, 100 digits).
    public var int: Int? {
        guard case .number(let text) = self, !text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }) else { return nil }
        return Int(text)
    }

    /// The number as the nearest `Double`; a magnitude past the `Double`
    /// range (`1e999`) gives ±infinity, as strtod does.
    public var double: Double? {
        if case .number(let text) = self { return Double(text) }
        return nil
    }

    public var kind: JSONRecordScanner.Kind {
        switch self {
        case .null: return .null
        case .bool: return .bool
        case .number: return .number
        case .string: return .string
        case .array: return .array
        case .object: return .object
        }
    }

    /// `string`, `number`, `boolean`, `null`, `array` or `object`.
    public var typeName: String { kind.name }

    // MARK: reading

    /// Parses one whole JSON document (a byte-order mark at its start is skipped).
    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONSyntaxError) -> JSONValue {
        var scanner = JSONScanner(bytes)
        scanner.skipByteOrderMark()
        scanner.skipWhitespace()
        if scanner.position == bytes.count { throw JSONSyntaxError(offset: scanner.position, reason: .empty) }
        var scratch: [UInt8] = []
        let value = try scanner.parseValue(depth: 0, scratch: &scratch)
        try scanner.expectEnd()
        return value
    }

    public static func parse(_ bytes: [UInt8]) throws(JSONSyntaxError) -> JSONValue {
        try bytes.withUnsafeBufferPointer { b throws(JSONSyntaxError) in try parse(b) }
    }

    public static func parse(_ text: String) throws(JSONSyntaxError) -> JSONValue {
        try parse(Array(text.utf8))
    }
}

extension JSONScanner {
    /// Builds the value at the cursor (after whitespace). Objects may not repeat a key.
    mutating func parseValue(depth: Int, scratch: inout [UInt8]) throws(JSONSyntaxError) -> JSONValue {
        switch try next() {
        case UInt8(ascii: "\""):
            scratch.removeAll(keepingCapacity: true)
            try scanString(into: &scratch)
            return .string(String(decoding: scratch, as: UTF8.self))
        case UInt8(ascii: "{"):
            try enter(depth)
            var members: [(String, JSONValue)] = []
            var seen = Set<String>()
            var key: [UInt8] = []
            try forEachMember { (s: inout JSONScanner, rawKey: Range<Int>, escaped: Bool) throws(JSONSyntaxError) in
                s.decodeKey(rawKey, hasEscapes: escaped, into: &key)
                let name = String(decoding: key, as: UTF8.self)
                guard seen.insert(name).inserted else { throw s.fail(.duplicateKey(name), at: rawKey.lowerBound - 1) }
                members.append((name, try s.parseValue(depth: depth + 1, scratch: &scratch)))
            }
            return .object(members)
        case UInt8(ascii: "["):
            try enter(depth)
            var items: [JSONValue] = []
            try forEachElement { (s: inout JSONScanner) throws(JSONSyntaxError) in
                items.append(try s.parseValue(depth: depth + 1, scratch: &scratch))
            }
            return .array(items)
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), 0x30...0x39:
            let range = try scanNumber()
            return .number(String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self))
        case let b:
            throw fail(.unexpectedByte(b))
        }
    }
}

// MARK: writing

extension JSONValue {
    /// Compact text (`indent == nil`) or text indented by `indent` spaces per
    /// level, `"key": value`, members in their stored order.
    public func text(indent: Int? = nil, level: Int = 0) -> String {
        var out: [UInt8] = []
        write(to: &out, indent: indent, level: level)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the value's text; `level` is the nesting level it starts at
    /// (for indented output placed inside hand-written text).
    public func write(to out: inout [UInt8], indent: Int? = nil, level: Int = 0) {
        switch self {
        case .null: out.append(contentsOf: JSONWriter.null)
        case .bool(let b): out.append(contentsOf: b ? JSONWriter.true : JSONWriter.false)
        case .number(let text): out.append(contentsOf: text.utf8)
        case .string(let s): JSONWriter.appendString(s, to: &out)
        case .array(let items):
            if items.isEmpty { out.append(contentsOf: [0x5B, 0x5D]); return }
            out.append(0x5B)
            for (k, item) in items.enumerated() {
                if k > 0 { out.append(0x2C) }
                Self.newline(&out, indent, level + 1)
                item.write(to: &out, indent: indent, level: level + 1)
            }
            Self.newline(&out, indent, level)
            out.append(0x5D)
        case .object(let members):
            if members.isEmpty { out.append(contentsOf: [0x7B, 0x7D]); return }
            out.append(0x7B)
            for (k, member) in members.enumerated() {
                if k > 0 { out.append(0x2C) }
                Self.newline(&out, indent, level + 1)
                JSONWriter.appendString(member.0, to: &out)
                out.append(0x3A)
                if indent != nil { out.append(0x20) }
                member.1.write(to: &out, indent: indent, level: level + 1)
            }
            Self.newline(&out, indent, level)
            out.append(0x7D)
        }
    }

    private static func newline(_ out: inout [UInt8], _ indent: Int?, _ level: Int) {
        guard let indent else { return }
        out.append(0x0A)
        out.append(contentsOf: repeatElement(0x20, count: indent * level))
    }
}
