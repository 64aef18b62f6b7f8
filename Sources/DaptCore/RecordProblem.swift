/// Why one input record cannot be used: the field (nil for the record as a
/// whole) and the reason, without its place. `located(file:line:)` adds the
/// place for the `FILE:LINE: field: reason` line a user sees.
public struct RecordProblem: Error, Equatable, Sendable, CustomStringConvertible {
    public var field: String?
    public var reason: String
    /// The JSON syntax error behind the problem, when it is one (its offset
    /// is within the record).
    public var syntax: JSONSyntaxError?

    public init(field: String?, reason: String) {
        self.field = field; self.reason = reason; self.syntax = nil
    }

    /// A record that is not valid JSON (or repeats a field it must have once).
    public init(_ syntax: JSONSyntaxError, field: String? = nil) {
        self.field = field; self.reason = syntax.description; self.syntax = syntax
    }

    /// `field: reason`, or `reason` for the record as a whole.
    public var description: String { field.map { "\($0): \(reason)" } ?? reason }

    public func located(file: String, line: Int) -> InputError {
        InputError(file: file, line: line, field: field, reason: reason)
    }

    /// The bad-input policy's blank line (empty, or spaces and tabs only):
    /// every stage skips and counts it; it is neither a record nor a reject.
    public static func isBlank(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x09 }
    }
}
