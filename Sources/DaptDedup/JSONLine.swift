import DaptCore

/// The fields dedup needs from one JSONL record. The whole line must be one
/// JSON object (checked by DaptCore's record scan); other fields are checked
/// and skipped.
public struct ScannedRecord: Sendable {
    /// The `id` token exactly as it appears (a JSON string with its quotes, or a number).
    public var idToken: Range<Int>
    /// The decoded `text`.
    public var text: String
    /// The decoded `hash`, when present.
    public var hash: String?
    /// Offset of the object's closing brace, where `removed.jsonl` adds fields.
    public var closingBrace: Int
}

/// Reads `id`, `text` and `hash` from records, reusing one record scanner.
public struct JSONLineScanner {
    private var scanner = JSONRecordScanner(fields: ["id", "text", "hash"])
    private static let (id, text, hash) = (0, 1, 2)

    public init() {}

    public mutating func scan(_ line: UnsafeBufferPointer<UInt8>) throws(RecordProblem) -> ScannedRecord {
        try scanner.scan(line)
        switch scanner.kind(Self.id) {
        case .absent: throw RecordProblem(field: "id", reason: "missing")
        case .string: if scanner.bytes(Self.id)!.isEmpty { throw RecordProblem(field: "id", reason: "empty") }
        case .number: break
        default: throw RecordProblem(field: "id", reason: "must be a string or a number")
        }
        let text: String
        switch scanner.kind(Self.text) {
        case .absent: throw RecordProblem(field: "text", reason: "missing")
        case .null: throw RecordProblem(field: "text", reason: "is null")
        case .string:
            text = scanner.string(Self.text)!
            // As prepare: a record without text is unusable, not a record to keep.
            if text.unicodeScalars.allSatisfy(\.properties.isWhitespace) { throw RecordProblem(field: "text", reason: "empty") }
        default: throw RecordProblem(field: "text", reason: "must be a string")
        }
        let hash: String?
        switch scanner.kind(Self.hash) {
        case .absent, .null: hash = nil
        case .string: hash = scanner.string(Self.hash)
        default: throw RecordProblem(field: "hash", reason: "must be a string")
        }
        return ScannedRecord(idToken: scanner.fields[Self.id].token, text: text, hash: hash, closingBrace: scanner.closingBrace)
    }
}
