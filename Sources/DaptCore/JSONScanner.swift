/// Why a text is not valid JSON (RFC 8259), and the byte where it stops
/// being valid.
///
/// One policy for every stage:
/// - a lone surrogate escape (`\ud800` without a following `\udc00`-`\udfff`,
///   or a low surrogate on its own) is an error, never U+FFFD;
/// - strings must be valid UTF-8 (no overlong forms, no encoded surrogates,
///   nothing past U+10FFFF) and raw U+0000-U+001F must be escaped;
/// - containers nest at most `JSON.maxDepth` deep;
/// - a UTF-8 byte-order mark is skipped at the very start of a document or of
///   a JSONL record (RFC 8259 §8.1 lets parsers ignore it); anywhere else it
///   is an unexpected byte;
/// - an object read as a value may not repeat a key; a JSONL record scan
///   rejects repeats of the fields it returns (others are not compared).
public struct JSONSyntaxError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Reason: Equatable, Sendable, CustomStringConvertible {
        /// Nothing but whitespace.
        case empty
        /// The input ended inside a value.
        case unexpectedEnd
        /// A byte that cannot start a value here.
        case unexpectedByte(UInt8)
        case expectedKey
        case expectedColon
        case expectedCommaOrBrace
        case expectedCommaOrBracket
        case invalidLiteral
        /// `01`, `-00`.
        case leadingZero
        /// `-`, `1.`, `1e` : a digit must follow.
        case missingDigits
        /// A raw U+0000-U+001F in a string.
        case controlCharacter(UInt8)
        /// A backslash followed by anything but `" \ / b f n r t u`.
        case invalidEscape(UInt8)
        /// `\u` not followed by four hex digits.
        case invalidUnicodeEscape
        /// A `\uD800`-`\uDFFF` escape that is not a high-low pair.
        case loneSurrogate(UInt16)
        case invalidUTF8
        case unterminatedString
        /// Containers nested deeper than `JSON.maxDepth`.
        case tooDeep
        /// Text after the value.
        case trailingData
        case duplicateKey(String)
        /// A JSONL record must be an object.
        case notAnObject

        public var description: String {
            switch self {
            case .empty: return "no JSON value (empty input)"
            case .unexpectedEnd: return "unexpected end of input"
            case .unexpectedByte(let b): return "unexpected \(JSONSyntaxError.show(b))"
            case .expectedKey: return "expected a string key"
            case .expectedColon: return "expected ':'"
            case .expectedCommaOrBrace: return "expected ',' or '}'"
            case .expectedCommaOrBracket: return "expected ',' or ']'"
            case .invalidLiteral: return "invalid literal (expected true, false or null)"
            case .leadingZero: return "number with a leading zero"
            case .missingDigits: return "number missing digits"
            case .controlCharacter(let b): return "raw control character \(JSONSyntaxError.show(b)) in a string (must be escaped)"
            case .invalidEscape(let b): return "invalid escape '\\\(JSONSyntaxError.printable(b))'"
            case .invalidUnicodeEscape: return "\\u not followed by four hex digits"
            case .loneSurrogate(let u): return "lone surrogate \\u\(String(u, radix: 16)) (not part of a pair)"
            case .invalidUTF8: return "invalid UTF-8"
            case .unterminatedString: return "unterminated string"
            case .tooDeep: return "nested deeper than \(JSON.maxDepth) levels"
            case .trailingData: return "unexpected text after the value"
            case .duplicateKey(let k): return "duplicate key \(JSONWriter.quoted(k))"
            case .notAnObject: return "a record must be a JSON object"
            }
        }
    }

    /// Byte offset (from 0) in the scanned text.
    public var offset: Int
    public var reason: Reason

    public init(offset: Int, reason: Reason) { self.offset = offset; self.reason = reason }

    /// `invalid JSON at byte N: reason`, with N counted from 1.
    public var description: String { "invalid JSON at byte \(offset + 1): \(reason)" }

    static func printable(_ b: UInt8) -> String { b >= 0x20 && b < 0x7F ? String(UnicodeScalar(b)) : "0x" + String(b, radix: 16) }
    static func show(_ b: UInt8) -> String {
        b >= 0x20 && b < 0x7F ? "'\(String(UnicodeScalar(b)))'" : "byte 0x" + (b < 0x10 ? "0" : "") + String(b, radix: 16)
    }
}

/// Shared limits of the JSON layer.
public enum JSON {
    /// Deepest nesting of arrays and objects accepted (a bare scalar is depth 0).
    public static let maxDepth = 128
}

/// A strict RFC 8259 scanner over a byte buffer: the one reader behind
/// `JSONValue.parse` and `JSONRecordScanner`. It never allocates except into
/// the buffers it is given.
public struct JSONScanner {
    public let bytes: UnsafeBufferPointer<UInt8>
    public var position: Int

    public init(_ bytes: UnsafeBufferPointer<UInt8>, position: Int = 0) {
        self.bytes = bytes
        self.position = position
    }

    @inline(__always) func fail(_ reason: JSONSyntaxError.Reason, at offset: Int? = nil) -> JSONSyntaxError {
        JSONSyntaxError(offset: offset ?? position, reason: reason)
    }

    /// Skips a UTF-8 byte-order mark at the cursor.
    public mutating func skipByteOrderMark() {
        if position + 3 <= bytes.count && bytes[position] == 0xEF && bytes[position + 1] == 0xBB && bytes[position + 2] == 0xBF {
            position += 3
        }
    }

    @inline(__always) public mutating func skipWhitespace() {
        while position < bytes.count {
            let b = bytes[position]
            guard b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 else { return }
            position += 1
        }
    }

    /// The next non-whitespace byte (not consumed).
    @inline(__always) mutating func next() throws(JSONSyntaxError) -> UInt8 {
        skipWhitespace()
        guard position < bytes.count else { throw fail(.unexpectedEnd) }
        return bytes[position]
    }

    /// After a value: fails unless only whitespace is left.
    public mutating func expectEnd() throws(JSONSyntaxError) {
        skipWhitespace()
        if position < bytes.count { throw fail(.trailingData) }
    }

    // MARK: strings

    /// Decodes the string at the cursor (on its opening quote), appending
    /// its UTF-8 bytes to `out`; the cursor ends after the closing quote.
    public mutating func scanString(into out: inout [UInt8]) throws(JSONSyntaxError) {
        _ = try string(into: &out, decode: true)
    }

    /// Checks the string at the cursor and steps over it; returns whether it
    /// has escapes (when not, its bytes between the quotes are its value).
    @discardableResult
    public mutating func skipString() throws(JSONSyntaxError) -> Bool {
        var unused: [UInt8] = []
        return try string(into: &unused, decode: false)
    }

    @inline(__always)
    private mutating func string(into out: inout [UInt8], decode: Bool) throws(JSONSyntaxError) -> Bool {
        let open = position
        let n = bytes.count
        let base = bytes.baseAddress!
        var i = position + 1
        var run = i
        var escaped = false
        while i < n {
            // Eight plain ASCII bytes at a time (no quote, backslash, control or non-ASCII byte).
            while i + 8 <= n {
                let w = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)
                let ones: UInt64 = 0x0101_0101_0101_0101, high: UInt64 = 0x8080_8080_8080_8080
                // Exact tests: a zero byte in w^0x22.. or w^0x5C.., a byte below 0x20, a high bit.
                let quote = w ^ (ones &* 0x22), backslash = w ^ (ones &* 0x5C)
                let special = (((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash)
                    | ((w &- ones &* 0x20) & ~w) | w) & high
                if special != 0 { break }
                i += 8
            }
            guard i < n else { break }
            let c = bytes[i]
            if c >= 0x20 && c < 0x80 && c != 0x22 && c != 0x5C { i += 1; continue }
            if c == 0x22 {
                if decode { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[run..<i])) }
                position = i + 1
                return escaped
            }
            if c == 0x5C {
                if decode { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[run..<i])) }
                escaped = true
                i = try escape(at: i, into: &out, decode: decode)
                run = i
                continue
            }
            if c < 0x20 { throw fail(.controlCharacter(c), at: i) }
            i = try utf8Sequence(at: i)
        }
        throw fail(.unterminatedString, at: open)
    }

    /// The escape at `i` (its backslash); returns the offset after it.
    @inline(__always)
    private func escape(at i: Int, into out: inout [UInt8], decode: Bool) throws(JSONSyntaxError) -> Int {
        guard i + 1 < bytes.count else { throw fail(.unterminatedString, at: i) }
        let e = bytes[i + 1]
        let simple: UInt8
        switch e {
        case UInt8(ascii: "\""): simple = 0x22
        case UInt8(ascii: "\\"): simple = 0x5C
        case UInt8(ascii: "/"): simple = 0x2F
        case UInt8(ascii: "b"): simple = 0x08
        case UInt8(ascii: "f"): simple = 0x0C
        case UInt8(ascii: "n"): simple = 0x0A
        case UInt8(ascii: "r"): simple = 0x0D
        case UInt8(ascii: "t"): simple = 0x09
        case UInt8(ascii: "u"):
            var code = try hex4(at: i)
            var end = i + 6
            if code >= 0xD800 && code < 0xDC00 {
                guard end + 1 < bytes.count, bytes[end] == UInt8(ascii: "\\"), bytes[end + 1] == UInt8(ascii: "u") else {
                    throw fail(.loneSurrogate(UInt16(code)), at: i)
                }
                let low = try hex4(at: end)
                guard low >= 0xDC00 && low < 0xE000 else { throw fail(.loneSurrogate(UInt16(code)), at: i) }
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                end += 6
            } else if code >= 0xDC00 && code < 0xE000 {
                throw fail(.loneSurrogate(UInt16(code)), at: i)
            }
            if decode { JSONScanner.appendUTF8(code, to: &out) }
            return end
        default:
            throw fail(.invalidEscape(e), at: i)
        }
        if decode { out.append(simple) }
        return i + 2
    }

    /// The four hex digits of the `\u` escape whose backslash is at `i`.
    private func hex4(at i: Int) throws(JSONSyntaxError) -> UInt32 {
        guard i + 6 <= bytes.count else { throw fail(.invalidUnicodeEscape, at: i) }
        var v: UInt32 = 0
        for k in 2..<6 {
            let c = bytes[i + k]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw fail(.invalidUnicodeEscape, at: i)
            }
            v = v << 4 | d
        }
        return v
    }

    /// Checks the multi-byte UTF-8 sequence whose lead byte is at `i`
    /// (Unicode table 3-7: no overlong forms, surrogates or values past
    /// U+10FFFF); returns the offset after it.
    @inline(__always)
    private func utf8Sequence(at i: Int) throws(JSONSyntaxError) -> Int {
        let n = bytes.count
        let b0 = bytes[i]
        @inline(__always) func cont(_ k: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool {
            i + k < n && bytes[i + k] >= lo && bytes[i + k] <= hi
        }
        switch b0 {
        case 0xC2...0xDF:
            if cont(1) { return i + 2 }
        case 0xE0:
            if cont(1, 0xA0), cont(2) { return i + 3 }
        case 0xE1...0xEC, 0xEE...0xEF:
            if cont(1), cont(2) { return i + 3 }
        case 0xED:
            if cont(1, 0x80, 0x9F), cont(2) { return i + 3 }
        case 0xF0:
            if cont(1, 0x90), cont(2), cont(3) { return i + 4 }
        case 0xF1...0xF3:
            if cont(1), cont(2), cont(3) { return i + 4 }
        case 0xF4:
            if cont(1, 0x80, 0x8F), cont(2), cont(3) { return i + 4 }
        default:
            break
        }
        throw fail(.invalidUTF8, at: i)
    }

    static func appendUTF8(_ v: UInt32, to out: inout [UInt8]) {
        if v < 0x80 {
            out.append(UInt8(v))
        } else if v < 0x800 {
            out.append(UInt8(0xC0 | v >> 6)); out.append(UInt8(0x80 | v & 0x3F))
        } else if v < 0x10000 {
            out.append(UInt8(0xE0 | v >> 12)); out.append(UInt8(0x80 | (v >> 6) & 0x3F)); out.append(UInt8(0x80 | v & 0x3F))
        } else {
            out.append(UInt8(0xF0 | v >> 18)); out.append(UInt8(0x80 | (v >> 12) & 0x3F))
            out.append(UInt8(0x80 | (v >> 6) & 0x3F)); out.append(UInt8(0x80 | v & 0x3F))
        }
    }

    // MARK: numbers and literals

    /// Steps over the number at the cursor (RFC 8259 grammar exactly) and
    /// returns its text's range.
    public mutating func scanNumber() throws(JSONSyntaxError) -> Range<Int> {
        let start = position
        let n = bytes.count
        var i = position
        @inline(__always) func isDigit(_ k: Int) -> Bool { k < n && bytes[k] >= 0x30 && bytes[k] <= 0x39 }
        if i < n && bytes[i] == UInt8(ascii: "-") { i += 1 }
        guard isDigit(i) else { throw fail(i < n ? .missingDigits : .unexpectedEnd, at: i) }
        if bytes[i] == 0x30 {
            i += 1
            if isDigit(i) { throw fail(.leadingZero, at: i) }
        } else {
            while isDigit(i) { i += 1 }
        }
        if i < n && bytes[i] == UInt8(ascii: ".") {
            i += 1
            guard isDigit(i) else { throw fail(.missingDigits, at: i) }
            while isDigit(i) { i += 1 }
        }
        if i < n && (bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E")) {
            i += 1
            if i < n && (bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-")) { i += 1 }
            guard isDigit(i) else { throw fail(.missingDigits, at: i) }
            while isDigit(i) { i += 1 }
        }
        position = i
        return start..<i
    }

    mutating func literal(_ word: StaticString) throws(JSONSyntaxError) {
        let count = word.utf8CodeUnitCount
        guard position + count <= bytes.count else { throw fail(.invalidLiteral) }
        for k in 0..<count where bytes[position + k] != word.utf8Start[k] { throw fail(.invalidLiteral) }
        position += count
    }

    // MARK: values

    /// Checks the value at the cursor (after whitespace) and steps over it.
    /// `depth` is the number of containers already open around it.
    public mutating func skipValue(depth: Int = 0) throws(JSONSyntaxError) {
        switch try next() {
        case UInt8(ascii: "\""): try skipString()
        case UInt8(ascii: "{"):
            try enter(depth)
            try forEachMember { (s: inout JSONScanner, _: Range<Int>, _: Bool) throws(JSONSyntaxError) in try s.skipValue(depth: depth + 1) }
        case UInt8(ascii: "["):
            try enter(depth)
            try forEachElement { (s: inout JSONScanner) throws(JSONSyntaxError) in try s.skipValue(depth: depth + 1) }
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        case UInt8(ascii: "-"), 0x30...0x39: _ = try scanNumber()
        case let b: throw fail(.unexpectedByte(b))
        }
    }

    @inline(__always) func enter(_ depth: Int) throws(JSONSyntaxError) {
        if depth >= JSON.maxDepth { throw fail(.tooDeep) }
    }

    /// Walks the object at the cursor (on its `{`): for each member, checks
    /// the key and calls `member(&self, rawKey, keyHasEscapes)` with the
    /// cursor before the value, which `member` must consume. `rawKey` is the
    /// range of the key's bytes between its quotes (its value when it has no
    /// escapes; `decodeKey` otherwise).
    public mutating func forEachMember(_ member: (inout JSONScanner, _ rawKey: Range<Int>, _ keyHasEscapes: Bool) throws(JSONSyntaxError) -> Void) throws(JSONSyntaxError) {
        position += 1
        if try next() == UInt8(ascii: "}") { position += 1; return }
        while true {
            guard try next() == UInt8(ascii: "\"") else { throw fail(.expectedKey) }
            let keyStart = position
            let escaped = try skipString()
            let rawKey = (keyStart + 1)..<(position - 1)
            guard try next() == UInt8(ascii: ":") else { throw fail(.expectedColon) }
            position += 1
            try member(&self, rawKey, escaped)
            let b = try next()
            if b == UInt8(ascii: "}") { position += 1; return }
            guard b == UInt8(ascii: ",") else { throw fail(.expectedCommaOrBrace) }
            position += 1
        }
    }

    /// Walks the array at the cursor (on its `[`), calling `element` before
    /// each element, which it must consume.
    public mutating func forEachElement(_ element: (inout JSONScanner) throws(JSONSyntaxError) -> Void) throws(JSONSyntaxError) {
        position += 1
        if try next() == UInt8(ascii: "]") { position += 1; return }
        while true {
            try element(&self)
            let b = try next()
            if b == UInt8(ascii: "]") { position += 1; return }
            guard b == UInt8(ascii: ",") else { throw fail(.expectedCommaOrBracket) }
            position += 1
        }
    }

    /// The decoded bytes of a key `forEachMember` reported.
    public func decodeKey(_ rawKey: Range<Int>, hasEscapes: Bool, into out: inout [UInt8]) {
        out.removeAll(keepingCapacity: true)
        if hasEscapes {
            var s = JSONScanner(bytes, position: rawKey.lowerBound - 1)
            try! s.scanString(into: &out)  // already checked by forEachMember
        } else {
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[rawKey]))
        }
    }
}
