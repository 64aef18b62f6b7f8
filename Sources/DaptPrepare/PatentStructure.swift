import Foundation

/// What the start of a line says about the patent's structure.
public struct LineMarks: Equatable, Sendable {
    /// UTF-8 length of a leading paragraph number (`[0023]`) plus the
    /// whitespace after it, or 0.
    public var paragraphNumberLength = 0
    public var startsStep = false
    public var endsSection = false
}

/// Recognises paragraph numbers, step markers and section ends at the start
/// of a line with one anchored regular expression (one ICU call per line).
public final class MarkerMatcher: @unchecked Sendable {
    // NSRegularExpression is immutable and documented thread-safe.
    private let regex: NSRegularExpression
    /// Only the first bytes of a line are matched: markers are short.
    static let prefixBytes = 96

    public init(stepMarkers: [String], paragraphNumber: String, sectionEndMarkers: [String]) throws {
        func group(_ name: String, _ patterns: [String]) -> String {
            patterns.isEmpty ? "(?<\(name)>(?!))" : "(?<\(name)>" + patterns.map { "(?:\($0))" }.joined(separator: "|") + ")"
        }
        let pattern = "[\\s\u{3000}]*(?:(?<para>\(paragraphNumber))[\\s\u{3000}]*)?(?:\(group("step", stepMarkers))|\(group("end", sectionEndMarkers)))?"
        regex = try NSRegularExpression(pattern: pattern)
    }

    public convenience init(_ config: PrepareConfig) throws {
        try self.init(stepMarkers: config.stepMarkers, paragraphNumber: config.paragraphNumber,
                      sectionEndMarkers: config.sectionEndMarkers)
    }

    /// Marks of the line `p[start..<end]` (valid UTF-8, no newline). Section
    /// ends are headings: they count only on lines shorter than the prefix.
    public func marks(_ p: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> LineMarks {
        var cut = min(end, start + Self.prefixBytes)
        while cut < end && p[cut] & 0xC0 == 0x80 { cut -= 1 }
        let line = String(decoding: UnsafeBufferPointer(rebasing: p[start..<cut]), as: UTF8.self)
        let ns = line as NSString
        guard let m = regex.firstMatch(in: line, options: [.anchored], range: NSRange(location: 0, length: ns.length)) else { return LineMarks() }
        var marks = LineMarks()
        let para = m.range(withName: "para")
        if para.location != NSNotFound {
            // Number plus following whitespace, up to where step/end matching began.
            var after = para.location + para.length
            while after < ns.length, let u = Unicode.Scalar(ns.character(at: after)), TextNormalization.isSpace(u.value) { after += 1 }
            marks.paragraphNumberLength = ns.substring(to: after).utf8.count
        }
        marks.startsStep = m.range(withName: "step").location != NSNotFound
        let endRange = m.range(withName: "end")
        marks.endsSection = endRange.location != NSNotFound && cut == end
        return marks
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

/// The structure of one patent: its kept paragraphs in order and how many
/// step sections were found.
public struct PatentStructure: Equatable, Sendable {
    public var paragraphs: [PatentParagraph] = []
    public var stepCount = 0
}

extension PatentStructure {
    /// Splits normalised text (`\n` line ends, form feeds already turned into
    /// `\n`) into step sections and paragraphs.
    ///
    /// A line starting with a step marker opens a new step (numbered 1, 2, …
    /// in order; the marker's own number is not used, as markers like `(a)` or
    /// `S101` repeat across embodiments). A blank line or a paragraph number
    /// starts a new paragraph; a section-end heading closes the step. With
    /// `keepAll`, text outside steps is kept as step 0.
    public static func parse(_ text: [UInt8], matcher: MarkerMatcher, keepAll: Bool, stripParagraphNumbers: Bool) -> PatentStructure {
        var result = PatentStructure()
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

            var lineStart = 0
            while lineStart <= p.count {
                var lineEnd = lineStart
                while lineEnd < p.count && p[lineEnd] != 0x0A { lineEnd += 1 }
                let (ts, te) = TextNormalization.trimmed(p, lineStart, lineEnd)
                if ts == te {
                    closeParagraph()
                } else {
                    let marks = matcher.marks(p, lineStart, lineEnd)
                    var contentStart = lineStart
                    if marks.paragraphNumberLength > 0 {
                        closeParagraph()
                        if stripParagraphNumbers { contentStart = lineStart + marks.paragraphNumberLength }
                    }
                    if marks.endsSection {
                        closeParagraph()
                        inStep = false
                        // The heading itself is structure, not technical text.
                    } else {
                        if marks.startsStep {
                            closeParagraph()
                            step += 1
                            inStep = true
                            result.stepCount = step
                        }
                        if paraStart < 0 { paraStart = contentStart }
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
