import DaptCore

/// One output fragment before it is written.
public struct PreparedFragment: Equatable, Sendable {
    public var step: Int
    public var paragraph: Int
    public var fragment: Int
    /// NFC UTF-8.
    public var text: [UInt8]
    public var page: Int?
    /// Token cost in thousandths.
    public var cost: Int

    public init(step: Int, paragraph: Int, fragment: Int, text: [UInt8], page: Int?, cost: Int) {
        self.step = step; self.paragraph = paragraph; self.fragment = fragment; self.text = text; self.page = page; self.cost = cost
    }
}

/// A patent cut into fragments, with the counts the summary needs.
public struct SplitPatent: Equatable, Sendable {
    public var fragments: [PreparedFragment] = []
    public var steps = 0
    public var paragraphs = 0
    /// True when steps were found and kept (false: the whole description was kept).
    public var keptSteps = true
}

/// patent → step → paragraph → fragment for one record.
public struct PatentSplitter: Sendable {
    public let matcher: MarkerMatcher
    public let grammar: StepGrammar
    public let counter: any TokenCounter
    public let fragmenter: Fragmenter
    public let keepAll: Bool
    /// `keep: steps_or_description`: a patent without steps keeps its whole text.
    public let keepAllWithoutSteps: Bool
    public let stripParagraphNumbers: Bool

    public init(config: PrepareConfig, counter: any TokenCounter) throws {
        matcher = try MarkerMatcher(config)
        grammar = try StepGrammar(config)
        self.counter = counter
        fragmenter = Fragmenter(budgetTokens: config.maxTokens, overlapTokens: config.overlapTokens)
        keepAll = config.keepsWholeDescription
        keepAllWithoutSteps = config.keepsDescriptionWithoutSteps
        stripParagraphNumbers = config.stripParagraphNumbers
    }

    /// The patent's text in NFC with `\n` line ends, pages joined by `\n`,
    /// and the offset where each page starts.
    public static func normalizedText(_ record: PatentRecord) -> (text: [UInt8], pageStarts: [Int]) {
        var text: [UInt8] = []
        var starts: [Int] = []
        for (i, page) in record.pages.enumerated() {
            if i > 0 { text.append(0x0A) }
            starts.append(text.count)
            text += TextNormalization.normalize(page)
        }
        return (text, starts)
    }

    /// The fragments of `record`, or why it has none (field, reason).
    public func split(_ record: PatentRecord) -> Result<SplitPatent, SplitFailure> {
        let (text, pageStarts) = Self.normalizedText(record)
        let hasText = text.withUnsafeBufferPointer { p in
            let (s, e) = TextNormalization.trimmed(p, 0, p.count)
            return s < e
        }
        guard hasText else { return .failure(SplitFailure(field: "text", reason: .emptyText)) }
        var structure = PatentStructure.parse(text, matcher: matcher, grammar: grammar, lang: record.lang,
                                              keepAll: keepAll, stripParagraphNumbers: stripParagraphNumbers)
        if !keepAll && structure.stepCount == 0 {
            guard keepAllWithoutSteps else { return .failure(SplitFailure(field: "text", reason: .noStepMarkers)) }
            structure = PatentStructure.parse(text, matcher: matcher, grammar: grammar, lang: record.lang,
                                              keepAll: true, stripParagraphNumbers: stripParagraphNumbers)
        }

        var result = SplitPatent()
        result.keptSteps = structure.stepCount > 0
        var lastStep = -1
        var pageIndex = 0
        for paragraph in structure.paragraphs {
            let pieces = counter.pieces(of: paragraph.text)
            let spans = fragmenter.spans(text: paragraph.text, pieces: pieces)
            guard !spans.isEmpty else { continue }
            if paragraph.step != lastStep { result.steps += 1; lastStep = paragraph.step }
            result.paragraphs += 1
            for (k, span) in spans.enumerated() {
                var page: Int?
                if record.paged {
                    let at = paragraph.offset + span.start
                    while pageIndex + 1 < pageStarts.count && pageStarts[pageIndex + 1] <= at { pageIndex += 1 }
                    page = pageIndex + 1
                }
                result.fragments.append(PreparedFragment(
                    step: paragraph.step, paragraph: paragraph.paragraph, fragment: k + 1,
                    text: Array(paragraph.text[span.start..<span.end]), page: page, cost: span.cost))
            }
        }
        guard !result.fragments.isEmpty else { return .failure(SplitFailure(field: "text", reason: .noFragments)) }
        return .success(result)
    }
}

public struct SplitFailure: Error, Equatable, Sendable {
    public var field: String
    public var reason: RejectReason
}

/// Writes fragments as JSONL in the schema's field order: `id`, `patent`,
/// `jurisdiction`, `title`, `step`, `paragraph`, `fragment`, `text`, `lang`,
/// `pub_date`, `source`, `page`, `hash`. Absent metadata is `null`.
/// `hash` is `sha1:` + hex SHA-1 of the text's UTF-8 (already NFC).
public enum FragmentJSON {
    public static func id(patent: String, step: Int, paragraph: Int, fragment: Int) -> String {
        "\(patent)-step\(step)-\(paragraph)-\(fragment)"
    }

    /// The record's fixed fields, pre-encoded once per patent.
    public struct PatentFields {
        let patent: [UInt8]          // "patent":"…"
        let idPrefix: [UInt8]        // patent id bytes, unescaped
        let metaHead: [UInt8]        // ,"jurisdiction":…,"title":…
        let metaTail: [UInt8]        // ,"lang":…,"pub_date":…,"source":…

        public init(_ record: PatentRecord) {
            var p: [UInt8] = []
            JSONWriter.appendString(record.patent, to: &p)
            patent = p
            idPrefix = Array(record.patent.utf8)
            var head: [UInt8] = Array(#","jurisdiction":"#.utf8)
            JSONWriter.appendOptionalString(record.jurisdiction, to: &head)
            head += Array(#","title":"#.utf8)
            JSONWriter.appendOptionalString(record.title, to: &head)
            metaHead = head
            var tail: [UInt8] = Array(#","lang":"#.utf8)
            JSONWriter.appendOptionalString(record.lang, to: &tail)
            tail += Array(#","pub_date":"#.utf8)
            JSONWriter.appendOptionalString(record.pubDate, to: &tail)
            tail += Array(#","source":"#.utf8)
            JSONWriter.appendOptionalString(record.source, to: &tail)
            metaTail = tail
        }
    }

    private static let openId: [UInt8] = Array(#"{"id":"#.utf8)
    private static let patentKey: [UInt8] = Array(#","patent":"#.utf8)
    private static let stepKey: [UInt8] = Array(#","step":"#.utf8)
    private static let paragraphKey: [UInt8] = Array(#","paragraph":"#.utf8)
    private static let fragmentKey: [UInt8] = Array(#","fragment":"#.utf8)
    private static let textKey: [UInt8] = Array(#","text":"#.utf8)
    private static let pageKey: [UInt8] = Array(#","page":"#.utf8)
    private static let hashKey: [UInt8] = Array(#","hash":"sha1:"#.utf8)
    private static let close: [UInt8] = Array("\"}\n".utf8)

    public static func append(_ f: PreparedFragment, of fields: PatentFields, to out: inout [UInt8]) {
        var id = fields.idPrefix
        id += Array("-step\(f.step)-\(f.paragraph)-\(f.fragment)".utf8)
        out += openId
        JSONWriter.appendString(id, to: &out)
        out += patentKey; out += fields.patent
        out += fields.metaHead
        out += stepKey; JSONWriter.appendInt(f.step, to: &out)
        out += paragraphKey; JSONWriter.appendInt(f.paragraph, to: &out)
        out += fragmentKey; JSONWriter.appendInt(f.fragment, to: &out)
        out += textKey; JSONWriter.appendString(f.text, to: &out)
        out += fields.metaTail
        out += pageKey
        if let page = f.page { JSONWriter.appendInt(page, to: &out) } else { out += JSONWriter.null }
        out += hashKey
        var sha = SHA1()
        sha.update(f.text)
        Hex.append(sha.finalize(), to: &out)
        out += close
    }
}
