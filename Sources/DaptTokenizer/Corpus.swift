import DaptCore

/// Reads the `text` field of JSONL records.
public enum JSONLText {
    /// Extracts the string field `field` of one JSONL line into `out`
    /// (replacing its contents). Throws a reason (without file/line).
    public static func extract(_ line: UnsafeBufferPointer<UInt8>, field: String, into out: inout [UInt8]) throws(RecordProblem) {
        out.removeAll(keepingCapacity: true)
        var scanner = JSONScanner(line)
        let wanted = Array(field.utf8)
        var found = false
        do {
            scanner.skipWhitespace()
            if scanner.position == line.count { throw RecordProblem(field: nil, reason: "empty line (not a JSON object)") }
            guard line[scanner.position] == UInt8(ascii: "{") else { throw RecordProblem(field: nil, reason: "invalid JSON: a record must be an object") }
            var typeProblem = false
            try scanner.forEachMember { (s: inout JSONScanner, key: [UInt8]) throws(JSONError) in
                if key == wanted && !found {
                    s.skipWhitespace()
                    if s.position < line.count && line[s.position] == UInt8(ascii: "\"") {
                        try s.parseString(into: &out)
                        found = true
                    } else {
                        typeProblem = true
                        try s.skipValue()
                    }
                } else {
                    try s.skipValue()
                }
            }
            scanner.skipWhitespace()
            if scanner.position != line.count { throw RecordProblem(field: nil, reason: "invalid JSON: unexpected data after the object at byte \(scanner.position + 1)") }
            if typeProblem && !found { throw RecordProblem(field: field, reason: "must be a string") }
        } catch let e as JSONError {
            throw RecordProblem(field: nil, reason: e.description)
        } catch let e as RecordProblem {
            throw e
        } catch {
            throw RecordProblem(field: nil, reason: "\(error)")
        }
        if !found { throw RecordProblem(field: field, reason: "missing") }
    }

    /// Calls `body(lineNumber, text)` for every record of `path`; a bad line
    /// goes to `reject` (which may throw to stop, as strict mode does).
    public static func forEachText(path: String, field: String = "text",
                                   reject: (InputError) throws -> Void,
                                   _ body: (Int, UnsafeBufferPointer<UInt8>) throws -> Void) throws {
        var text: [UInt8] = []
        try LineReader(path: path).forEachLine { number, line in
            do {
                try extract(line, field: field, into: &text)
            } catch let problem as RecordProblem {
                try reject(InputError(file: path, line: number, field: problem.field, reason: problem.reason))
                return true
            }
            try text.withUnsafeBufferPointer { try body(number, $0) }
            return true
        }
    }
}

/// Why one record cannot be used.
public struct RecordProblem: Error, Equatable {
    public var field: String?
    public var reason: String
    public init(field: String?, reason: String) { self.field = field; self.reason = reason }
}
