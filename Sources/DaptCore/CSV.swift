/// One CSV record: its fields and the line each starts on (1-based; a
/// quoted field may span lines, so a record's fields can start on different lines).
public struct CSVRecord: Equatable, Sendable {
    public var fields: [String]
    public var fieldLines: [Int]
    /// The line the record starts on.
    public var line: Int { fieldLines.first ?? 0 }

    public init(fields: [String], fieldLines: [Int]) {
        self.fields = fields; self.fieldLines = fieldLines
    }
}

/// RFC 4180 CSV: fields separated by commas, records by CRLF or LF; a field
/// in double quotes may hold commas, line breaks and doubled quotes (`""`).
/// A byte-order mark at the start is skipped and empty lines between
/// records are skipped. Anything else — a quote inside an unquoted field,
/// text after a closing quote, a quote left open at the end, bytes that are
/// not UTF-8 — is an `InputError` naming the file, the line and the field
/// (`field N`, counted from 1).
public enum CSV {
    public static func read(path: String) throws -> [CSVRecord] {
        try parse(try FileSystem.readAll(path), file: path)
    }

    public static func parse(_ bytes: [UInt8], file: String) throws -> [CSVRecord] {
        try bytes.withUnsafeBufferPointer { try parse($0, file: file) }
    }

    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>, file: String) throws -> [CSVRecord] {
        let quote = UInt8(ascii: "\""), comma = UInt8(ascii: ","), cr: UInt8 = 0x0D, lf: UInt8 = 0x0A
        var records: [CSVRecord] = []
        var i = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        var line = 1
        var fields: [String] = [], fieldLines: [Int] = []
        var field: [UInt8] = []

        func fail(_ reason: String, line: Int) -> InputError {
            InputError(file: file, line: line, field: "field \(fields.count + 1)", reason: reason)
        }
        func finishField(startLine: Int) throws {
            guard let text = String(validating: field, as: UTF8.self) else { throw fail("not valid UTF-8", line: startLine) }
            fields.append(text); fieldLines.append(startLine)
            field.removeAll(keepingCapacity: true)
        }
        /// At a line break (CRLF, LF or a lone CR): the index after it.
        func lineBreak(at j: Int) -> Int? {
            if bytes[j] == lf { return j + 1 }
            if bytes[j] == cr { return j + 1 < bytes.count && bytes[j + 1] == lf ? j + 2 : j + 1 }
            return nil
        }

        while i < bytes.count {
            // At the start of a record: skip empty lines.
            if fields.isEmpty, let next = lineBreak(at: i) { i = next; line += 1; continue }
            // At the start of a field.
            let startLine = line
            if bytes[i] == quote {
                i += 1
                var closed = false
                while i < bytes.count {
                    let b = bytes[i]
                    if b == quote {
                        if i + 1 < bytes.count && bytes[i + 1] == quote { field.append(quote); i += 2; continue }
                        i += 1; closed = true; break
                    }
                    if let next = lineBreak(at: i) {
                        field.append(contentsOf: bytes[i..<next]); i = next; line += 1; continue
                    }
                    field.append(b); i += 1
                }
                if !closed { throw fail("quoted field is not closed (the quote opened on this line is still open at the end of the file)", line: startLine) }
                if i < bytes.count && bytes[i] != comma && lineBreak(at: i) == nil {
                    throw fail("unexpected \(describe(bytes[i])) after the closing quote (a quote inside a quoted field is written \"\")", line: line)
                }
            } else {
                while i < bytes.count && bytes[i] != comma && lineBreak(at: i) == nil {
                    if bytes[i] == quote { throw fail("quote inside an unquoted field (quote the whole field and double the quote)", line: line) }
                    field.append(bytes[i]); i += 1
                }
            }
            try finishField(startLine: startLine)
            if i < bytes.count && bytes[i] == comma {
                i += 1
                // A comma at the very end of the input or line ends with an empty field.
                if i == bytes.count || lineBreak(at: i) != nil { try finishField(startLine: line) }
            }
            if i < bytes.count, let next = lineBreak(at: i) {
                i = next; line += 1
                records.append(CSVRecord(fields: fields, fieldLines: fieldLines))
                fields.removeAll(); fieldLines.removeAll()
            }
        }
        if !fields.isEmpty { records.append(CSVRecord(fields: fields, fieldLines: fieldLines)) }
        return records
    }

    static func describe(_ byte: UInt8) -> String {
        (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x" + String(byte, radix: 16)
    }
}
