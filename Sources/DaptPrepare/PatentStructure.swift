import Foundation

/// What the start of a line says about the patent's structure.
public struct LineMarks: Equatable, Sendable {
    /// UTF-8 length of a leading paragraph number (`[0023]`) plus the
    /// whitespace after it, or 0.
    public var paragraphNumberLength = 0
    public var endsSection = false
}

/// Recognises paragraph numbers and section ends at line starts (step
/// markers are `StepGrammar`'s). One multi-line ICU regular expression runs
/// over the heads of a whole patent's lines (a call per line costs far more
/// than the matching). With the default paragraph number, numbers are read
/// by bytes and ICU sees only the lines that can hold a section-end heading.
public final class MarkerMatcher: @unchecked Sendable {
    // NSRegularExpression is immutable and documented thread-safe.
    private let regex: NSRegularExpression
    private let paraGroup: Int
    private let endGroups: (Int, Int)
    /// The paragraph number is the default `[0023]` / `【0023】` form, read by `bytesParagraphNumber`.
    private let paragraphNumberByBytes: Bool
    /// Every section-end pattern ends in `$`, so a line longer than a head cannot match one.
    private let headingsOnly: Bool

    public init(paragraphNumber: String, sectionEndMarkers: [String]) throws {
        func alternation(_ patterns: [String]) -> String {
            patterns.isEmpty ? "(?!)" : patterns.map { "(?:\($0))" }.joined(separator: "|")
        }
        func groups(_ pattern: String) throws -> Int { try NSRegularExpression(pattern: pattern).numberOfCaptureGroups }
        let para = paragraphNumber, end = alternation(sectionEndMarkers)
        let nP = try groups(para), nE = try groups(end)
        let space = "[ \\t\u{3000}]"
        paragraphNumberByBytes = paragraphNumber == PrepareConfig.defaultParagraphNumber
        headingsOnly = sectionEndMarkers.allSatisfy { $0.hasSuffix("$") && !$0.hasSuffix("\\$") }
        if paragraphNumberByBytes {
            // Heads start after any paragraph number: (end).
            regex = try NSRegularExpression(pattern: "^\(space)*(\(end))", options: .anchorsMatchLines)
            paraGroup = 0
            endGroups = (1, 1)
        } else {
            // (para + spaces)(end)?  or  (end); groups numbered in that order.
            let pattern = "^\(space)*(?:((?:\(para))\(space)*)(\(end))?|(\(end)))"
            regex = try NSRegularExpression(pattern: pattern, options: .anchorsMatchLines)
            paraGroup = 1
            let end1 = 2 + nP, end2 = end1 + 1 + nE
            endGroups = (end1, end2)
        }
    }

    public convenience init(_ config: PrepareConfig) throws {
        try self.init(paragraphNumber: config.paragraphNumber, sectionEndMarkers: config.sectionEndMarkers)
    }

    /// Markers are looked for in the first `headBytes` of each line: ICU
    /// then scans line heads only, not whole paragraphs. A longer line's
    /// head ends in U+FFFF, so a pattern ending in `$` (a heading) never
    /// matches a line longer than this.
    public static let headBytes = 64

    /// The default paragraph number (`[\[【]\d{3,5}[\]】]`, digits ASCII or
    /// full-width) with the spaces around it: its length at `start`, or 0.
    static func bytesParagraphNumber(_ p: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Int {
        var i = StepGrammar.skipSpaces(p, start, end)
        if i < end && p[i] == UInt8(ascii: "[") { i += 1 } else if StepGrammar.hasPrefix(p, i, end, 0xE3, 0x80, 0x90) { i += 3 } else { return 0 }
        var digits = 0
        while let (_, len) = StepGrammar.digit(p, i, end) { i += len; digits += 1 }
        guard digits >= 3 && digits <= 5 else { return 0 }
        if i < end && p[i] == UInt8(ascii: "]") { i += 1 } else if StepGrammar.hasPrefix(p, i, end, 0xE3, 0x80, 0x91) { i += 3 } else { return 0 }
        return StepGrammar.skipSpaces(p, i, end) - start
    }

    /// The marks of every marked line of `text` (valid UTF-8, `\n` line
    /// ends), keyed by the line's start offset, in order.
    public func markedLines(_ text: [UInt8]) -> [(offset: Int, marks: LineMarks)] {
        // Lines with a paragraph number read by bytes or a head for ICU, in order;
        // heads joined by "\n", and which entry each head belongs to.
        var entries: [(offset: Int, marks: LineMarks)] = []
        var heads: [UInt8] = []
        heads.reserveCapacity(min(text.count, 4096))
        var headEntries: [Int] = []
        text.withUnsafeBufferPointer { p in
            var start = 0
            while start <= p.count {
                var end = start
                while end < p.count && p[end] != 0x0A { end += 1 }
                if end > start {
                    let paraLength = paragraphNumberByBytes ? Self.bytesParagraphNumber(p, start, end) : 0
                    let headStart = start + paraLength
                    let needsHead = !paragraphNumberByBytes || !headingsOnly || end - headStart <= Self.headBytes
                    if paraLength > 0 || needsHead {
                        entries.append((start, LineMarks(paragraphNumberLength: paraLength, endsSection: false)))
                    }
                    if needsHead && headStart < end {
                        headEntries.append(entries.count - 1)
                        var cut = min(end, headStart + Self.headBytes)
                        while cut < end && p[cut] & 0xC0 == 0x80 { cut -= 1 }
                        heads.append(contentsOf: UnsafeBufferPointer(rebasing: p[headStart..<cut]))
                        if cut < end { heads += [0xEF, 0xBF, 0xBF] }
                        heads.append(0x0A)
                    }
                }
                start = end + 1
            }
        }
        if !heads.isEmpty {
            let string = String(decoding: heads, as: UTF8.self)
            let matches = regex.matches(in: string, options: [], range: NSRange(location: 0, length: string.utf16.count))
            heads.withUnsafeBufferPointer { p in
                // Walks UTF-16 positions forward, tracking the UTF-8 offset and line.
                var at8 = 0, at16 = 0, line = 0, lineHead = 0
                func utf8Offset(_ target16: Int) -> Int {
                    while at16 < target16 && at8 < p.count {
                        let b = p[at8]
                        let len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4
                        if b == 0x0A { line += 1; lineHead = at8 + 1 }
                        at8 += len
                        at16 += len == 4 ? 2 : 1
                    }
                    return at8
                }
                func found(_ m: NSTextCheckingResult, _ g: Int) -> Bool { m.range(at: g).location != NSNotFound }
                for m in matches {
                    let start = utf8Offset(m.range.location)
                    // ICU also starts lines after U+2028 and friends; only `\n` counts here.
                    guard start == lineHead, line < headEntries.count else { continue }
                    let k = headEntries[line]
                    if paraGroup > 0 {
                        let para = m.range(at: paraGroup)
                        if para.location != NSNotFound { entries[k].marks.paragraphNumberLength = utf8Offset(para.location + para.length) - start }
                    }
                    entries[k].marks.endsSection = found(m, endGroups.0) || found(m, endGroups.1)
                }
            }
        }
        return entries.filter { $0.marks.paragraphNumberLength > 0 || $0.marks.endsSection }
    }

    /// Marks of the single line `line` (for tests and tools).
    public func marks(ofLine line: String) -> LineMarks {
        markedLines(Array(line.utf8)).first { $0.offset == 0 }?.marks ?? LineMarks()
    }
}

/// One paragraph kept from a patent: its text (NFC UTF-8, trimmed) and
/// where it starts in the patent's normalised text (for page numbers).
public struct PatentParagraph: Equatable, Sendable {
    public var step: Int
    public var paragraph: Int
    public var text: [UInt8]
    public var offset: Int
}

/// The structure of one patent: its kept paragraphs in order, how many
/// step sections were found, and where each step starts in the text.
public struct PatentStructure: Equatable, Sendable {
    public var paragraphs: [PatentParagraph] = []
    public var stepCount = 0
    public var stepStarts: [Int] = []
}

extension PatentStructure {
    /// Splits normalised text (`\n` line ends, form feeds already turned into
    /// `\n`) into step sections and paragraphs.
    ///
    /// Each step start found by `grammar` opens a new step (numbered 1, 2, …
    /// in order; the marker's own number is not used, as markers like `(a)` or
    /// `S101` repeat across embodiments), at a line start or inside a
    /// paragraph (`包括以下步骤：S1、…；S2、…`: the text before S1 stays with
    /// what came before). A blank line or a paragraph number starts a new
    /// paragraph; a section-end heading closes the step. With `keepAll`, text
    /// outside steps is kept as step 0.
    public static func parse(_ text: [UInt8], matcher: MarkerMatcher, grammar: StepGrammar, lang: String?,
                             keepAll: Bool, stripParagraphNumbers: Bool) -> PatentStructure {
        var result = PatentStructure()
        let marked = matcher.markedLines(text)
        let starts = grammar.stepStarts(text, marked: marked, lang: lang)
        result.stepStarts = starts
        var nextMarked = 0
        var nextStart = 0
        text.withUnsafeBufferPointer { p in
            var step = 0                 // current step ordinal; 0 = outside any step
            var inStep = false
            var paragraphCounts: [Int: Int] = [:]   // paragraphs so far per step (lookup only)
            var paraStart = -1           // start of the open paragraph, or -1
            var paraEnd = -1

            func closeParagraph() {
                defer { paraStart = -1 }
                guard paraStart >= 0 else { return }
                let keptStep = inStep ? step : 0
                guard inStep || keepAll else { return }
                let (s, e) = TextNormalization.trimmed(p, paraStart, paraEnd)
                guard s < e else { return }
                let number = (paragraphCounts[keptStep] ?? 0) + 1
                paragraphCounts[keptStep] = number
                result.paragraphs.append(PatentParagraph(step: keptStep, paragraph: number,
                                                         text: Array(UnsafeBufferPointer(rebasing: p[s..<e])), offset: s))
            }

            func openStep() {
                step += 1
                inStep = true
                result.stepCount = step
            }

            var lineStart = 0
            while lineStart <= p.count {
                var lineEnd = lineStart
                while lineEnd < p.count && p[lineEnd] != 0x0A { lineEnd += 1 }
                let (ts, te) = TextNormalization.trimmed(p, lineStart, lineEnd)
                if ts == te {
                    closeParagraph()
                } else {
                    while nextMarked < marked.count && marked[nextMarked].offset < lineStart { nextMarked += 1 }
                    let marks = nextMarked < marked.count && marked[nextMarked].offset == lineStart ? marked[nextMarked].marks : LineMarks()
                    var contentStart = lineStart
                    if marks.paragraphNumberLength > 0 {
                        closeParagraph()
                        if stripParagraphNumbers { contentStart = lineStart + marks.paragraphNumberLength }
                    }
                    while nextStart < starts.count && starts[nextStart] < lineStart { nextStart += 1 }
                    if marks.endsSection {
                        closeParagraph()
                        inStep = false
                        // The heading itself is structure, not technical text.
                    } else {
                        // The first non-space byte after any paragraph number: a marker there starts the line.
                        let (lineText, _) = TextNormalization.trimmed(p, lineStart + marks.paragraphNumberLength, lineEnd)
                        var segment = contentStart
                        while nextStart < starts.count && starts[nextStart] < lineEnd {
                            let s = starts[nextStart]
                            nextStart += 1
                            if s > lineText {
                                if paraStart < 0 { paraStart = segment }
                                paraEnd = s
                                segment = s
                            }
                            closeParagraph()
                            openStep()
                        }
                        if paraStart < 0 { paraStart = segment }
                        paraEnd = lineEnd
                    }
                }
                if lineEnd >= p.count { break }
                lineStart = lineEnd + 1
            }
            closeParagraph()
        }
        return result
    }
}
