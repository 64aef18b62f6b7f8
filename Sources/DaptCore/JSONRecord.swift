/// Reads chosen fields of JSONL records without building the rest: the
/// hot path of prepare, dedup and the tokenizer. The whole record is checked
/// (it must be one JSON object, by the same rules as `JSONValue.parse`); the
/// fields asked for are located, and their strings decoded into one reused
/// buffer; other members are checked and skipped without allocating.
///
/// A field asked for may appear once: a repeat is a problem for that field
/// (keeping one of two `text` values would lose data). Other keys are not
/// compared.
public struct JSONRecordScanner {
    public enum Kind: Equatable, Sendable {
        case absent, null, bool, number, string, array, object

        /// `string`, `number`, ... for messages about a value of the wrong type.
        public var name: String {
            switch self {
            case .absent: return "nothing"
            case .null: return "null"
            case .bool: return "boolean"
            case .number: return "number"
            case .string: return "string"
            case .array: return "array"
            case .object: return "object"
            }
        }
    }

    /// Where one field asked for is.
    public struct Field: Sendable {
        public var kind: Kind
        /// The value's text in the record (quotes included for a string).
        public var token: Range<Int>
        /// For a string: its decoded UTF-8 bytes in `decoded`.
        public var decodedRange: Range<Int>
    }

    private let names: [String]
    private let keys: [[UInt8]]
    /// The fields asked for, in the order given to `init`, after `scan`.
    public private(set) var fields: [Field]
    /// Decoded strings of the fields asked for (see `Field.decodedRange`).
    public private(set) var decoded: [UInt8] = []
    /// Offset of the record's closing brace.
    public private(set) var closingBrace = 0
    private var keyScratch: [UInt8] = []

    public init(fields names: [String]) {
        self.names = names
        keys = names.map { Array($0.utf8) }
        fields = Array(repeating: Field(kind: .absent, token: 0..<0, decodedRange: 0..<0), count: names.count)
    }

    /// Scans one record (a line without its newline). A byte-order mark at
    /// its start is skipped. Throws a problem with the syntax error (and its
    /// offset), naming the field asked for when the error is in its value
    /// or is its repeat.
    public mutating func scan(_ line: UnsafeBufferPointer<UInt8>) throws(RecordProblem) {
        for k in fields.indices { fields[k].kind = .absent }
        decoded.removeAll(keepingCapacity: true)
        var s = JSONScanner(line)
        s.skipByteOrderMark()
        s.skipWhitespace()
        guard s.position < line.count else { throw RecordProblem(JSONSyntaxError(offset: s.position, reason: .empty)) }
        guard line[s.position] == UInt8(ascii: "{") else { throw RecordProblem(JSONSyntaxError(offset: s.position, reason: .notAnObject)) }
        // The field asked for whose value is being read, to name it in an error.
        var reading: Int?
        do throws(JSONSyntaxError) {
            try s.forEachMember { (s: inout JSONScanner, rawKey: Range<Int>, escaped: Bool) throws(JSONSyntaxError) in
                guard let k = wanted(line, rawKey, escaped) else { try s.skipValue(depth: 1); return }
                let keyOffset = rawKey.lowerBound - 1
                if fields[k].kind != .absent { throw JSONSyntaxError(offset: keyOffset, reason: .duplicateKey(names[k])) }
                reading = k
                let b = try s.next()
                let start = s.position
                var kind: Kind
                switch b {
                case UInt8(ascii: "\""):
                    let from = decoded.count
                    try s.scanString(into: &decoded)
                    fields[k].decodedRange = from..<decoded.count
                    kind = .string
                case UInt8(ascii: "-"), 0x30...0x39: _ = try s.scanNumber(); kind = .number
                case UInt8(ascii: "n"): try s.skipValue(depth: 1); kind = .null
                case UInt8(ascii: "t"), UInt8(ascii: "f"): try s.skipValue(depth: 1); kind = .bool
                case UInt8(ascii: "["): try s.skipValue(depth: 1); kind = .array
                case UInt8(ascii: "{"): try s.skipValue(depth: 1); kind = .object
                default: try s.skipValue(depth: 1); kind = .absent  // throws
                }
                fields[k].kind = kind
                fields[k].token = start..<s.position
                reading = nil
            }
            closingBrace = s.position - 1
            try s.expectEnd()
        } catch {
            if case .duplicateKey(let name) = error.reason { throw RecordProblem(error, field: name) }
            throw RecordProblem(error, field: reading.map { names[$0] })
        }
    }

    public mutating func scan(_ line: [UInt8]) throws(RecordProblem) {
        try line.withUnsafeBufferPointer { b throws(RecordProblem) in try scan(b) }
    }

    /// Index of the field asked for whose key is at `rawKey`, if any.
    @inline(__always)
    private mutating func wanted(_ line: UnsafeBufferPointer<UInt8>, _ rawKey: Range<Int>, _ escaped: Bool) -> Int? {
        if escaped {
            JSONScanner(line).decodeKey(rawKey, hasEscapes: true, into: &keyScratch)
            return keys.firstIndex(of: keyScratch)
        }
        let count = rawKey.count
        for k in 0..<keys.count where keys[k].count == count {
            if keys[k].withUnsafeBufferPointer({ $0.elementsEqual(UnsafeBufferPointer(rebasing: line[rawKey])) }) { return k }
        }
        return nil
    }

    // MARK: the fields after a scan

    public func kind(_ field: Int) -> Kind { fields[field].kind }

    /// The decoded bytes of a string field; nil when it is not a string.
    public func bytes(_ field: Int) -> ArraySlice<UInt8>? {
        fields[field].kind == .string ? decoded[fields[field].decodedRange] : nil
    }

    /// A string field; nil when it is not a string.
    public func string(_ field: Int) -> String? {
        bytes(field).map { String(decoding: $0, as: UTF8.self) }
    }
}
