import DaptCore

/// Reads one string field (`text` by default) of JSONL records.
public struct JSONLText {
    private var scanner: JSONRecordScanner
    private let field: String

    public init(field: String = "text") {
        self.field = field
        scanner = JSONRecordScanner(fields: [field])
    }

    /// The field of one JSONL line into `out` (replacing its contents).
    /// Throws a reason (without file/line).
    public mutating func extract(_ line: UnsafeBufferPointer<UInt8>, into out: inout [UInt8]) throws(RecordProblem) {
        out.removeAll(keepingCapacity: true)
        try scanner.scan(line)
        switch scanner.kind(0) {
        case .string: out.append(contentsOf: scanner.bytes(0)!)
        case .absent: throw RecordProblem(field: field, reason: "missing")
        case let other: throw RecordProblem(field: field, reason: "must be a string, not \(other.name)")
        }
    }

    /// One line's field, for callers reading a few lines.
    public static func extract(_ line: UnsafeBufferPointer<UInt8>, field: String, into out: inout [UInt8]) throws(RecordProblem) {
        var reader = JSONLText(field: field)
        try reader.extract(line, into: &out)
    }

    /// Lines read, and how many were blank, rejected or texts.
    public struct Counts: Equatable, Sendable {
        public var lines = 0
        public var blank = 0
        public var rejected = 0
        public var texts: Int { lines - blank - rejected }

        public init(lines: Int = 0, blank: Int = 0, rejected: Int = 0) {
            self.lines = lines; self.blank = blank; self.rejected = rejected
        }
    }

    /// Calls `body(lineNumber, text)` for every record of `path`; blank lines
    /// are skipped and counted, a bad line goes to `reject` (which may throw
    /// to stop, as strict mode does).
    @discardableResult
    public static func forEachText(path: String, field: String = "text",
                                   reject: (InputError) throws -> Void,
                                   _ body: (Int, UnsafeBufferPointer<UInt8>) throws -> Void) throws -> Counts {
        var text: [UInt8] = []
        var reader = JSONLText(field: field)
        var counts = Counts()
        try LineReader(path: path).forEachLine { number, line in
            counts.lines += 1
            if RecordProblem.isBlank(line) { counts.blank += 1; return true }
            do {
                try reader.extract(line, into: &text)
            } catch let problem as RecordProblem {
                counts.rejected += 1
                try reject(problem.located(file: path, line: number))
                return true
            }
            try text.withUnsafeBufferPointer { try body(number, $0) }
            return true
        }
        return counts
    }
}
