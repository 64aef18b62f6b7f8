import DaptCore

/// One patent as read from the input, before any splitting.
public struct PatentRecord: Equatable, Sendable {
    public var patent: String
    public var jurisdiction: String?
    public var title: String?
    public var lang: String?
    public var pubDate: String?
    public var source: String?
    /// Page texts (raw UTF-8). One element when the source has no pages.
    public var pages: [[UInt8]]
    /// True when the input gave pages (a `pages` list or form feeds), so
    /// fragments carry a `page` number.
    public var paged: Bool

    public init(patent: String, jurisdiction: String? = nil, title: String? = nil, lang: String? = nil,
                pubDate: String? = nil, source: String? = nil, pages: [[UInt8]], paged: Bool) {
        self.patent = patent; self.jurisdiction = jurisdiction; self.title = title; self.lang = lang
        self.pubDate = pubDate; self.source = source; self.pages = pages; self.paged = paged
    }
}

/// Why a record was rejected; `code` names the reason in summaries.
public enum RejectReason: Equatable, Sendable, CustomStringConvertible {
    case malformedJSON(String)
    case invalidUTF8(byte: Int)
    case missingField
    case wrongType(expected: String, got: String)
    case emptyText
    case badFrontMatter(String)
    case noStepMarkers
    case noFragments

    /// Every code, in the order summaries list them.
    public static let codes = ["malformed_json", "invalid_utf8", "missing_field", "wrong_type",
                               "empty_text", "bad_front_matter", "no_step_markers", "no_fragments"]

    public var code: String {
        switch self {
        case .malformedJSON: return "malformed_json"
        case .invalidUTF8: return "invalid_utf8"
        case .missingField: return "missing_field"
        case .wrongType: return "wrong_type"
        case .emptyText: return "empty_text"
        case .badFrontMatter: return "bad_front_matter"
        case .noStepMarkers: return "no_step_markers"
        case .noFragments: return "no_fragments"
        }
    }

    public var description: String {
        switch self {
        case .malformedJSON(let m): return "malformed JSON: \(m)"
        case .invalidUTF8(let b): return "invalid UTF-8 at byte \(b + 1)"
        case .missingField: return "required field is missing"
        case .wrongType(let expected, let got): return "expected \(expected), got \(got)"
        case .emptyText: return "patent has no text"
        case .badFrontMatter(let m): return "bad front matter: \(m)"
        case .noStepMarkers: return "no steps found (keep: steps needs a numbered run such as 步骤S101, 步骤S102 or Step 1, Step 2; keep: steps_or_description keeps such a patent whole)"
        case .noFragments: return "no text left to split"
        }
    }
}

/// A rejected record: where it is, what is wrong, and its raw bytes for a
/// JSONL line (a text file stays where it is and is named by path).
public struct PrepareReject: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var field: String?
    public var reason: RejectReason
    public var patent: String?
    public var raw: [UInt8]?

    public var inputError: InputError { InputError(file: file, line: line, field: field, reason: reason.description) }
    public var description: String { inputError.description }

    /// One line of `rejects.jsonl`.
    public func jsonLine() -> [UInt8] {
        var out: [UInt8] = []
        out += Array(#"{"file":"#.utf8); JSONWriter.appendString(file, to: &out)
        out += Array(#","line":"#.utf8); JSONWriter.appendInt(line, to: &out)
        out += Array(#","field":"#.utf8); JSONWriter.appendOptionalString(field, to: &out)
        out += Array(#","reason":"#.utf8); JSONWriter.appendString(reason.code, to: &out)
        out += Array(#","message":"#.utf8); JSONWriter.appendString(description, to: &out)
        out += Array(#","patent":"#.utf8); JSONWriter.appendOptionalString(patent, to: &out)
        if let raw {
            if TextNormalization.firstInvalidUTF8(raw) == nil {
                out += Array(#","record":"#.utf8); JSONWriter.appendString(raw, to: &out)
            } else {
                out += Array(#","record_base64":"#.utf8); JSONWriter.appendString(Base64.encode(raw), to: &out)
            }
        } else {
            out += Array(#","record":null"#.utf8)
        }
        out += Array("}\n".utf8)
        return out
    }
}

enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8](); out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = Int(bytes[i]), b1 = i + 1 < bytes.count ? Int(bytes[i + 1]) : 0, b2 = i + 2 < bytes.count ? Int(bytes[i + 2]) : 0
            out.append(alphabet[b0 >> 2]); out.append(alphabet[(b0 & 3) << 4 | b1 >> 4])
            out.append(i + 1 < bytes.count ? alphabet[(b1 & 15) << 2 | b2 >> 6] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[b2 & 63] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Reads patents from JSONL lines and from text files with front matter.
public enum PatentReader {
    static let metadataFields = ["jurisdiction", "title", "lang", "pub_date", "source"]

    /// A JSONL line → a record, or the reason it is rejected.
    public static func parseJSONLine(_ line: UnsafeBufferPointer<UInt8>, file: String, lineNumber: Int) -> Result<PatentRecord, PrepareReject> {
        var reader = PatentLineReader()
        return reader.parse(line, file: file, lineNumber: lineNumber)
    }

    /// Text with form feeds → pages.
    static func splitPages(_ bytes: [UInt8]) -> ([[UInt8]], Bool) {
        guard bytes.contains(0x0C) else { return ([bytes], false) }
        return (bytes.split(separator: 0x0C, omittingEmptySubsequences: false).map(Array.init), true)
    }

    /// A `.txt`/`.md` file: a `---` front-matter block of `key: value` lines
    /// (flat YAML: plain, "double-" or 'single-quoted' scalars) and the body.
    public static func parseTextFile(_ bytes: UnsafeBufferPointer<UInt8>, file: String) -> Result<PatentRecord, PrepareReject> {
        func reject(_ line: Int, _ field: String?, _ reason: RejectReason, patent: String? = nil) -> Result<PatentRecord, PrepareReject> {
            .failure(PrepareReject(file: file, line: line, field: field, reason: reason, patent: patent, raw: nil))
        }
        if let bad = TextNormalization.firstInvalidUTF8(UnsafeRawBufferPointer(bytes)) {
            let line = 1 + bytes[0..<bad].reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
            return reject(line, nil, .invalidUTF8(byte: bad))
        }
        var text = Array(bytes)
        if text.starts(with: [0xEF, 0xBB, 0xBF]) { text.removeFirst(3) }
        let lines = text.split(separator: 0x0A, omittingEmptySubsequences: false)
        func lineText(_ i: Int) -> String {
            var s = String(decoding: lines[i], as: UTF8.self)
            if s.hasSuffix("\r") { s.removeLast() }
            return s
        }
        guard !lines.isEmpty, lineText(0).trimmingTrailingSpaces() == "---" else {
            return reject(1, "patent", .badFrontMatter("no front matter: the file must start with a '---' line, then 'patent: ID' and other metadata, then '---'"))
        }
        var fields: [(String, String?)] = []
        var closing = -1
        var i = 1
        while i < lines.count {
            let raw = lineText(i)
            let trimmed = raw.trimmingTrailingSpaces()
            if trimmed == "---" || trimmed == "..." { closing = i; break }
            if trimmed.isEmpty || trimmed.hasPrefix("#") { i += 1; continue }
            guard let colon = raw.firstIndex(of: ":"), !raw.hasPrefix(" "), !raw.hasPrefix("\t") else {
                return reject(i + 1, nil, .badFrontMatter("expected 'key: value', got \"\(raw.prefix(60))\""))
            }
            let key = String(raw[..<colon]).trimmingTrailingSpaces()
            let rest = String(raw[raw.index(after: colon)...])
            switch FrontMatterScalar.parse(rest) {
            case .success(let value): fields.append((key, value))
            case .failure(let message): return reject(i + 1, key, .badFrontMatter(message.description))
            }
            i += 1
        }
        guard closing > 0 else { return reject(1, nil, .badFrontMatter("the '---' block is never closed")) }
        func value(_ key: String) -> String? { fields.last { $0.0 == key }?.1 }
        guard let patent = value("patent"), !patent.allSatisfy(\.isWhitespace) else {
            return reject(1, "patent", .missingField)
        }
        // The body starts on the line after the closing `---`.
        var bodyStart = 0
        for k in 0...closing { bodyStart += lines[k].count + 1 }
        let body = bodyStart < text.count ? Array(text[bodyStart...]) : []
        let (pages, paged) = splitPages(body)
        let meta = metadataFields.map { value($0).map { String(decoding: TextNormalization.normalize(Array($0.utf8)), as: UTF8.self) } }
        return .success(PatentRecord(patent: patent, jurisdiction: meta[0], title: meta[1], lang: meta[2],
                                     pubDate: meta[3], source: meta[4], pages: pages, paged: paged))
    }
}

enum FrontMatterScalar {
    /// The value after `key:`: nil for empty/`~`/`null`.
    static func parse(_ rest: String) -> Result<String?, FrontMatterError> {
        var s = Substring(rest)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        if s.first == "\"" {
            var out = ""
            var i = s.index(after: s.startIndex)
            while i < s.endIndex {
                let c = s[i]
                i = s.index(after: i)
                if c == "\"" {
                    let tail = String(s[i...]).trimmingTrailingSpaces().drop { $0 == " " || $0 == "\t" }
                    guard tail.isEmpty || tail.hasPrefix("#") else { return .failure("text after the closing quote") }
                    return .success(out)
                }
                if c == "\\" {
                    guard i < s.endIndex else { break }
                    let e = s[i]
                    i = s.index(after: i)
                    switch e {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "\"": out.append("\"")
                    case "\\": out.append("\\")
                    case "/": out.append("/")
                    default: return .failure(FrontMatterError(description: "unknown escape \\\(e)"))
                    }
                } else {
                    out.append(c)
                }
            }
            return .failure("unterminated double-quoted value")
        }
        if s.first == "'" {
            var out = ""
            var chars = Array(s.dropFirst())
            var k = 0
            while k < chars.count {
                if chars[k] == "'" {
                    if k + 1 < chars.count && chars[k + 1] == "'" { out.append("'"); k += 2; continue }
                    chars.removeFirst(k + 1)
                    let tail = String(chars).trimmingTrailingSpaces().drop { $0 == " " || $0 == "\t" }
                    guard tail.isEmpty || tail.hasPrefix("#") else { return .failure("text after the closing quote") }
                    return .success(out)
                }
                out.append(chars[k]); k += 1
            }
            return .failure("unterminated single-quoted value")
        }
        var value = String(s)
        if let hash = value.range(of: " #") { value = String(value[..<hash.lowerBound]) }
        value = value.trimmingTrailingSpaces()
        if value.isEmpty || value == "~" || value == "null" { return .success(nil) }
        if value.hasPrefix("[") || value.hasPrefix("{") || value.hasPrefix("|") || value.hasPrefix(">") {
            return .failure("only plain or quoted one-line values are supported")
        }
        return .success(value)
    }
}

struct FrontMatterError: Error, ExpressibleByStringLiteral, CustomStringConvertible {
    var description: String
    init(description: String) { self.description = description }
    init(stringLiteral value: String) { description = value }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = Substring(self)
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s.removeLast() }
        return String(s)
    }
}

/// Reads patents from JSONL lines, reusing one record scanner.
public struct PatentLineReader {
    private static let fields = ["patent", "text", "pages"] + PatentReader.metadataFields
    private static let (patent, text, pages, firstMetadata) = (0, 1, 2, 3)
    private var scanner = JSONRecordScanner(fields: fields)

    public init() {}

    /// A JSONL line → a record, or the reason it is rejected. A byte-order
    /// mark (first line of a file saved by some editors) is skipped.
    public mutating func parse(_ line: UnsafeBufferPointer<UInt8>, file: String, lineNumber: Int) -> Result<PatentRecord, PrepareReject> {
        func reject(_ field: String?, _ reason: RejectReason, patent: String? = nil) -> Result<PatentRecord, PrepareReject> {
            .failure(PrepareReject(file: file, line: lineNumber, field: field, reason: reason, patent: patent, raw: Array(line)))
        }
        do {
            try scanner.scan(line)
        } catch {
            if let syntax = error.syntax, syntax.reason == .invalidUTF8 { return reject(error.field, .invalidUTF8(byte: syntax.offset)) }
            return reject(error.field, .malformedJSON(error.syntax?.description ?? error.reason))
        }
        func typeName(_ k: Int) -> String { scanner.kind(k).name }
        func given(_ k: Int) -> Bool { scanner.kind(k) != .absent && scanner.kind(k) != .null }

        guard given(Self.patent) else { return reject("patent", .missingField) }
        guard let patent = scanner.string(Self.patent) else { return reject("patent", .wrongType(expected: "a string", got: typeName(Self.patent))) }
        if patent.allSatisfy(\.isWhitespace) { return reject("patent", .missingField) }

        var metadata: [String?] = []
        for (m, field) in PatentReader.metadataFields.enumerated() {
            let k = Self.firstMetadata + m
            if !given(k) { metadata.append(nil); continue }
            guard let bytes = scanner.bytes(k) else { return reject(field, .wrongType(expected: "a string", got: typeName(k)), patent: patent) }
            metadata.append(String(decoding: TextNormalization.normalize(Array(bytes)), as: UTF8.self))
        }

        var pages: [[UInt8]]
        var paged: Bool
        if given(Self.text) && given(Self.pages) {
            return reject("text", .malformedJSON("both text and pages given; give one"), patent: patent)
        } else if given(Self.pages) {
            guard scanner.kind(Self.pages) == .array else {
                return reject("pages", .wrongType(expected: "an array of strings", got: typeName(Self.pages)), patent: patent)
            }
            // Rare (most records give `text`): the array is read as a value.
            let token = scanner.fields[Self.pages].token
            let items = (try? JSONValue.parse(UnsafeBufferPointer(rebasing: line[token])))?.array ?? []
            pages = []
            for (i, item) in items.enumerated() {
                guard let string = item.string else {
                    return reject("pages[\(i)]", .wrongType(expected: "a string", got: item.typeName), patent: patent)
                }
                pages.append(Array(string.utf8))
            }
            paged = true
        } else if let bytes = scanner.bytes(Self.text) {
            (pages, paged) = PatentReader.splitPages(Array(bytes))
        } else if given(Self.text) {
            return reject("text", .wrongType(expected: "a string", got: typeName(Self.text)), patent: patent)
        } else {
            return reject("text", .missingField, patent: patent)
        }
        return .success(PatentRecord(patent: patent, jurisdiction: metadata[0], title: metadata[1], lang: metadata[2],
                                     pubDate: metadata[3], source: metadata[4], pages: pages, paged: paged))
    }
}
