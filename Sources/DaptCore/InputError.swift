/// A problem with one input record, located by file, line and field so a
/// user can go straight to it. Stages write these to their rejects file.
public struct InputError: Error, CustomStringConvertible, Equatable, Sendable {
    public var file: String
    public var line: Int
    public var field: String?
    public var reason: String

    public init(file: String, line: Int, field: String? = nil, reason: String) {
        self.file = file; self.line = line; self.field = field; self.reason = reason
    }

    /// `FILE:LINE: field: reason`.
    public var description: String {
        if let field { return "\(file):\(line): \(field): \(reason)" }
        return "\(file):\(line): \(reason)"
    }

    /// One line of a stage's rejects file (without its newline): `file`,
    /// `line`, `field` (null for the record as a whole), `reason` and
    /// `error` (the `FILE:LINE: field: reason` text).
    public var rejectJSON: String {
        JSONValue.object([("file", .string(file)), ("line", .integer(line)), ("field", field.map { .string($0) } ?? .null),
                          ("reason", .string(reason)), ("error", .string(description))]).text()
    }
}
