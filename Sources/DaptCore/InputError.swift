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
}
