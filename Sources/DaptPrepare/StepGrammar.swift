import DaptCore

/// The numbering families a step identifier can belong to. A run of steps
/// uses one family throughout (S1, S2, S3 / (a), (b), (c) / 一, 二, 三).
public enum StepFamily: String, CaseIterable, Sendable {
    case sNumber = "S"          // S101, S3021, S3.1, Ｓ１
    case arabic = "N"           // 1, 302, １, 2.1
    case chinese = "C"          // 一, 十二
    case ordinal = "O"          // first, second, … tenth
    case parenArabic = "(N)"    // (1) （1）
    case closeArabic = "N)"     // 1) 1）
    case parenLetter = "(a)"    // (a) （a）
    case closeLetter = "a)"     // a)
    case parenRoman = "(i)"     // (i) (iv)
    case closeRoman = "i)"      // i) iv)

    /// Forms whose closing bracket already separates the marker from its text.
    var closesItself: Bool {
        switch self {
        case .parenArabic, .closeArabic, .parenLetter, .closeLetter, .parenRoman, .closeRoman: return true
        default: return false
        }
    }

    /// Families whose runs must count 1, 2, 3 (no gaps) from the first item.
    var countsByOne: Bool { self != .sNumber && self != .arabic }
}

/// One identifier as read: its family and value. S-numbers keep their digits
/// so sub-steps (S3021 under S302) are recognised by prefix; dotted forms
/// (S3.1, Step 2.1) keep each level.
struct StepIdentifier: Equatable {
    var family: StepFamily
    var levels: [Int]
    var digits: [UInt8] = []

    func isSubStep(of top: StepIdentifier) -> Bool {
        guard family == top.family else { return false }
        if levels.count > top.levels.count { return Array(levels.prefix(top.levels.count)) == top.levels }
        if family == .sNumber && levels.count == 1 && top.levels.count == 1 {
            return digits.count > top.digits.count && digits.starts(with: top.digits)
        }
        return false
    }

    func follows(_ top: StepIdentifier) -> Bool {
        guard family == top.family else { return false }
        if family.countsByOne { return levels.count == 1 && levels[0] == top.levels[0] + 1 }
        return levels[0] > top.levels[0]
    }

    var canStartRun: Bool { !family.countsByOne || (levels.count == 1 && levels[0] == 1) }
}

/// A step marker found in the text: where it starts, what it numbers, and
/// whether a lead word (步骤, Step, At block, …) introduced it.
struct StepMarkerHit {
    var offset: Int
    var candidates: [StepIdentifier]
    var hasLead: Bool
    /// The step's text starts with an English -ing word (`(a) measuring`).
    var gerund = false
}

/// Finds where a patent's steps start, by a small grammar rather than a list
/// of regular expressions: a marker is an optional lead word, an identifier
/// of one numbering family and a separator, at the start of a line or after
/// a sentence or clause boundary; a run of markers counts as steps only when
/// its identifiers increase within one family. Matching is on UTF-8 bytes.
public final class StepGrammar: Sendable {
    struct Template: Sendable {
        var prefix: [UInt8]
        var families: [StepFamily]
        var suffix: [UInt8]
    }

    struct Language: Sendable {
        var templates: [Template]
        var separators: [[UInt8]]
        /// A space separates when the next word is not a non-step word.
        var spaceSeparates: Bool
        /// Byte pairs a marker can start with (first byte × 256 + second byte).
        var firstPairs: [Bool]

        func mayStart(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> Bool {
            firstPairs[Int(p[i]) << 8 | (i + 1 < end ? Int(p[i + 1]) : 0)]
        }
    }

    let languages: [String: Language]
    let fallback: Language
    let boundaries: [[UInt8]]
    /// Bytes a boundary can start with, so most bytes are passed over at once.
    let boundaryFirst: [Bool]
    let connectors: [[UInt8]]
    let introWords: [[UInt8]]
    let nonStepWords: Set<[UInt8]>
    /// Words that may stand between a boundary and a marker (`; and (c)`,
    /// `. Next, at step 306`), ASCII case ignored.
    static let connectorWords = ["and", "or", "then", "next", "finally", "subsequently", "thereafter"]
    /// How far before a run of bare markers ((1), (a), i)) an introducing
    /// word (步骤, method, comprising) must occur.
    static let introWindow = 240

    public init(markers: [String: [String]], separators: [String: [String]], boundaries: [String],
                introWords: [String], nonStepWords: [String]) throws {
        func language(_ key: String, _ templates: [String], _ seps: [String]) throws -> Language {
            let parsed = try templates.enumerated().map { try Self.template($0.element, field: "step_markers.\(key)[\($0.offset)]") }
            var first = [Bool](repeating: false, count: 1 << 16)
            func allow(_ b: UInt8, then second: UInt8?) {
                for c in 0..<256 where second == nil || UInt8(c) == second { first[Int(b) << 8 | c] = true }
            }
            for t in parsed {
                if let b = t.prefix.first { allow(b, then: t.prefix.count > 1 ? t.prefix[1] : nil) } else {
                    for f in t.families { for b in Self.firstBytes(of: f) { allow(b, then: nil) } }
                }
            }
            let nonSpace = seps.filter { !$0.allSatisfy { $0 == " " } }.map { Array($0.utf8) }
            return Language(templates: parsed, separators: nonSpace.sorted { $0.count > $1.count },
                            spaceSeparates: seps.contains { !$0.isEmpty && $0.allSatisfy { $0 == " " } }, firstPairs: first)
        }
        var langs: [String: Language] = [:]
        var allTemplates: [String] = [], allSeparators: [String] = []
        for key in markers.keys.sorted() {
            let seps = separators[key] ?? separators["*"] ?? []
            langs[key] = try language(key, markers[key]!, seps)
            for t in markers[key]! where !allTemplates.contains(t) { allTemplates.append(t) }
            for s in seps where !allSeparators.contains(s) { allSeparators.append(s) }
        }
        languages = langs
        fallback = try language("*", allTemplates, allSeparators)
        self.boundaries = boundaries.map { Array($0.utf8) }.filter { !$0.isEmpty }.sorted { $0.count > $1.count }
        var first = [Bool](repeating: false, count: 256)
        for b in self.boundaries { first[Int(b[0])] = true }
        boundaryFirst = first
        connectors = Self.connectorWords.map { Array($0.utf8) }
        self.introWords = introWords.map { Self.lowercased(Array($0.utf8)) }
        self.nonStepWords = Set(nonStepWords.map { Self.lowercased(Array($0.utf8)) })
    }

    public convenience init(_ config: PrepareConfig) throws {
        try self.init(markers: config.stepMarkers, separators: config.stepSeparators, boundaries: config.stepBoundaries,
                      introWords: config.stepIntroWords, nonStepWords: config.nonStepWords)
    }

    /// Parses `步骤{S|N|C}`: literal lead, `{families}`, literal tail.
    static func template(_ text: String, field: String) throws -> Template {
        let bytes = Array(text.utf8)
        guard let open = bytes.firstIndex(of: UInt8(ascii: "{")), let close = bytes.lastIndex(of: UInt8(ascii: "}")), open < close,
              bytes.filter({ $0 == UInt8(ascii: "{") }).count == 1, bytes.filter({ $0 == UInt8(ascii: "}") }).count == 1 else {
            throw ConfigError(field: field, reason: "must hold one {families} slot such as {S|N}, got \"\(text)\"")
        }
        let names = String(decoding: bytes[(open + 1)..<close], as: UTF8.self).split(separator: "|").map(String.init)
        var families: [StepFamily] = []
        for name in names {
            guard let f = StepFamily(rawValue: name) else {
                throw ConfigError(field: field, reason: "unknown numbering family \"\(name)\" in \"\(text)\" (known: \(StepFamily.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            families.append(f)
        }
        if families.isEmpty { throw ConfigError(field: field, reason: "names no numbering family: \"\(text)\"") }
        // Spaces between the identifier and a tail are skipped when matching.
        return Template(prefix: Array(bytes[..<open]), families: families, suffix: Array(bytes[(close + 1)...].drop { $0 == 0x20 }))
    }

    static func firstBytes(of family: StepFamily) -> [UInt8] {
        let digits = Array(UInt8(ascii: "0")...UInt8(ascii: "9")) + [0xEF]   // ０-９ start with EF
        let open: [UInt8] = [UInt8(ascii: "("), 0xEF]                          // （ starts with EF
        switch family {
        case .sNumber: return [UInt8(ascii: "S"), UInt8(ascii: "s"), 0xEF]
        case .arabic, .closeArabic: return digits
        case .chinese: return [0xE4, 0xE5, 0xE3, 0xE9]
        case .ordinal: return Array("fstenFSTEN".utf8)
        case .parenArabic, .parenLetter, .parenRoman: return open
        case .closeLetter: return Array(UInt8(ascii: "a")...UInt8(ascii: "z"))
        case .closeRoman: return Array("ivx".utf8)
        }
    }

    func language(_ lang: String?) -> Language {
        guard let lang else { return fallback }
        if let exact = languages[lang] { return exact }
        var key = lang.lowercased()
        if let dash = key.firstIndex(where: { $0 == "-" || $0 == "_" }) { key = String(key[..<dash]) }
        return languages[key] ?? fallback
    }

    /// Start offsets of the steps of `text` (valid UTF-8, `\n` line ends).
    /// `marked` gives each marked line's paragraph number and section ends
    /// (from `MarkerMatcher`); a run of steps never crosses a section end.
    public func stepStarts(_ text: [UInt8], marked: [(offset: Int, marks: LineMarks)], lang: String?) -> [Int] {
        let grammar = language(lang)
        var hits: [StepMarkerHit] = []
        var sectionEnds: [Int] = []
        text.withUnsafeBufferPointer { p in
            var nextMarked = 0
            var lineStart = 0
            while lineStart < p.count {
                var lineEnd = lineStart
                while lineEnd < p.count && p[lineEnd] != 0x0A { lineEnd += 1 }
                while nextMarked < marked.count && marked[nextMarked].offset < lineStart { nextMarked += 1 }
                let marks = nextMarked < marked.count && marked[nextMarked].offset == lineStart ? marked[nextMarked].marks : LineMarks()
                if marks.endsSection {
                    sectionEnds.append(lineStart)
                } else {
                    scanLine(p, lineStart + marks.paragraphNumberLength, lineEnd, grammar, &hits)
                }
                lineStart = lineEnd + 1
            }
        }
        return Self.resolve(hits, sectionEnds: sectionEnds, text: text, introWords: introWords)
    }

    /// Markers at the line's start and after each boundary inside it.
    private func scanLine(_ p: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, _ g: Language, _ hits: inout [StepMarkerHit]) {
        var i = Self.skipSpaces(p, start, end)
        if i < end, g.mayStart(p, i, end), let hit = match(p, i, end, g) { hits.append(hit) }
        while i < end {
            guard boundaryFirst[Int(p[i])] else { i += 1; continue }
            var matched = 0
            for boundary in boundaries where Self.hasPrefix(p, i, end, boundary) { matched = boundary.count; break }
            guard matched > 0 else { i += 1; continue }
            i += matched
            var at = Self.skipSpaces(p, i, end)
            // Up to two connectors (`; and subsequently, in step S3`).
            for _ in 0..<2 where at < end && Self.isASCIILetter(p[at]) {
                for c in connectors where Self.hasPrefixIgnoringCase(p, at, end, c) && at + c.count < end && (p[at + c.count] == 0x20 || p[at + c.count] == 0x2C) {
                    at = Self.skipSpaces(p, at + c.count + (p[at + c.count] == 0x2C ? 1 : 0), end)
                    break
                }
            }
            if at < end, g.mayStart(p, at, end), let hit = match(p, at, end, g) { hits.append(hit) }
        }
    }

    /// The marker starting at `at`, if any template matches there.
    private func match(_ p: UnsafeBufferPointer<UInt8>, _ at: Int, _ end: Int, _ g: Language) -> StepMarkerHit? {
        for t in g.templates {
            guard Self.hasPrefix(p, at, end, t.prefix) else { continue }
            var i = at + t.prefix.count
            if !t.prefix.isEmpty { i = Self.skipSpaces(p, i, end) }
            var found: [StepIdentifier] = []
            var after = i
            for family in t.families {
                guard let (id, next) = Self.identifier(family, p, i, end) else { continue }
                if found.isEmpty { after = next; found.append(id) } else if next == after { found.append(id) }
            }
            guard !found.isEmpty else { continue }
            var j = after
            if !t.suffix.isEmpty {
                j = Self.skipSpaces(p, j, end)
                guard Self.hasPrefix(p, j, end, t.suffix) else { continue }
                j += t.suffix.count
            }
            let closed = found[0].family.closesItself
            guard separated(p, j, end, g, closed: closed) else { continue }
            return StepMarkerHit(offset: at, candidates: found, hasLead: !t.prefix.isEmpty, gerund: Self.startsWithGerund(p, j, end))
        }
        return nil
    }

    /// Whether the identifier ending at `j` is followed by a separator: one of
    /// the language's separators, the line end, or a space before a word that
    /// is not a non-step word (`Step 2 of the method` is a reference, not a step).
    private func separated(_ p: UnsafeBufferPointer<UInt8>, _ j: Int, _ end: Int, _ g: Language, closed: Bool) -> Bool {
        if j >= end { return true }
        for s in g.separators where Self.hasPrefix(p, j, end, s) { return true }
        let k = Self.skipSpaces(p, j, end)
        if k == j {
            // Nothing between: only a closing bracket or a tail word (第一步) separates.
            guard closed else { return false }
            return !Self.isASCIIAlnum(p[j])
        }
        guard g.spaceSeparates || closed else { return false }
        if k >= end { return true }
        let c = p[k]
        if Self.isASCIIDigit(c) || c == UInt8(ascii: "(") || c == UInt8(ascii: ",") || c == UInt8(ascii: ".") { return false }
        if Self.isASCIILetter(c) {
            var e = k
            while e < end && Self.isASCIILetter(p[e]) { e += 1 }
            return !nonStepWords.contains(Self.lowercased(Array(p[k..<e])))
        }
        return true
    }

    // MARK: identifiers

    /// Reads one identifier of `family` at `i`; returns it and where it ends.
    static func identifier(_ family: StepFamily, _ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> (StepIdentifier, Int)? {
        switch family {
        case .sNumber:
            var j = i
            if j < end && (p[j] == UInt8(ascii: "S") || p[j] == UInt8(ascii: "s")) { j += 1 }
            else if hasPrefix(p, j, end, 0xEF, 0xBC, 0xB3) || hasPrefix(p, j, end, 0xEF, 0xBD, 0x93) { j += 3 }   // Ｓ ｓ
            else { return nil }
            guard let (levels, digits, next) = dottedNumber(p, j, end) else { return nil }
            return (StepIdentifier(family: .sNumber, levels: levels, digits: digits), next)
        case .arabic:
            guard let (levels, _, next) = dottedNumber(p, i, end) else { return nil }
            return (StepIdentifier(family: .arabic, levels: levels), next)
        case .chinese:
            guard let (value, next) = chineseNumber(p, i, end) else { return nil }
            return (StepIdentifier(family: .chinese, levels: [value]), next)
        case .ordinal:
            for (k, word) in ordinals.enumerated() where hasPrefixIgnoringCase(p, i, end, word) {
                let next = i + word.count
                if next < end && isASCIILetter(p[next]) { continue }
                return (StepIdentifier(family: .ordinal, levels: [k + 1]), next)
            }
            return nil
        case .parenArabic, .parenLetter, .parenRoman:
            guard let inner = openBracket(p, i, end) else { return nil }
            let bare: StepFamily = family == .parenArabic ? .closeArabic : family == .parenLetter ? .closeLetter : .closeRoman
            guard let (id, next) = identifier(bare, p, inner, end) else { return nil }
            return (StepIdentifier(family: family, levels: id.levels), next)
        case .closeArabic:
            var j = i, value = 0, count = 0
            while let (d, len) = digit(p, j, end), count < 3 { value = value * 10 + d; j += len; count += 1 }
            guard count > 0, let next = closeBracket(p, j, end) else { return nil }
            return (StepIdentifier(family: family, levels: [value]), next)
        case .closeLetter:
            guard i < end, p[i] >= UInt8(ascii: "a"), p[i] <= UInt8(ascii: "z"), let next = closeBracket(p, i + 1, end) else { return nil }
            return (StepIdentifier(family: family, levels: [Int(p[i] - UInt8(ascii: "a")) + 1]), next)
        case .closeRoman:
            var j = i
            while j < end && j - i < 5 && (p[j] == UInt8(ascii: "i") || p[j] == UInt8(ascii: "v") || p[j] == UInt8(ascii: "x")) { j += 1 }
            guard j > i, let value = romanValue(Array(p[i..<j])), let next = closeBracket(p, j, end) else { return nil }
            return (StepIdentifier(family: family, levels: [value]), next)
        }
    }

    static let ordinals: [[UInt8]] = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"].map { Array($0.utf8) }

    static func romanValue(_ s: [UInt8]) -> Int? {
        let table = ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv"]
        return table.firstIndex(of: String(decoding: s, as: UTF8.self)).map { $0 + 1 }
    }

    /// ASCII or full-width digit at `i`: its value and byte length.
    static func digit(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> (Int, Int)? {
        guard i < end else { return nil }
        if isASCIIDigit(p[i]) { return (Int(p[i] - 0x30), 1) }
        if i + 2 < end && p[i] == 0xEF && p[i + 1] == 0xBC && p[i + 2] >= 0x90 && p[i + 2] <= 0x99 { return (Int(p[i + 2] - 0x90), 3) }
        return nil
    }

    /// Digits with optional `.`/`-` sub-levels (3.1, 302-2); a dot not
    /// followed by a digit is left for the separator.
    static func dottedNumber(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> ([Int], [UInt8], Int)? {
        var j = i, levels: [Int] = [], digits: [UInt8] = []
        while true {
            var value = 0, count = 0
            while let (d, len) = digit(p, j, end), count < 6 {
                value = value * 10 + d; j += len; count += 1
                if levels.isEmpty { digits.append(UInt8(0x30 + d)) }
            }
            guard count > 0 else { return levels.isEmpty ? nil : (levels, digits, j - 1) }
            if count == 6 && digit(p, j, end) != nil { return nil }   // a long number, not a step
            levels.append(value)
            guard j + 1 < end, p[j] == UInt8(ascii: ".") || p[j] == UInt8(ascii: "-"), digit(p, j + 1, end) != nil else { break }
            j += 1
        }
        if j < end && isASCIILetter(p[j]) { return nil }   // S101a, 3D: not a plain identifier
        return (levels, digits, j)
    }

    /// 一 … 九十九 (and 〇/零 inside): the value and where it ends.
    static func chineseNumber(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> (Int, Int)? {
        var j = i, tens = -1, units = 0, seen = 0
        while j + 3 <= end {
            let c = (UInt32(p[j]) << 16) | (UInt32(p[j + 1]) << 8) | UInt32(p[j + 2])
            if c == 0xE58D81 {                       // 十
                guard tens < 0 else { return nil }
                tens = seen > 0 ? units : 1; units = 0
            } else if let d = chineseDigits[c] {
                units = d
            } else { break }
            seen += 1; j += 3
            if seen > 3 { return nil }
        }
        guard seen > 0 else { return nil }
        let value = (tens >= 0 ? tens * 10 : 0) + units
        return value > 0 ? (value, j) : nil
    }

    static let chineseDigits: [UInt32: Int] = [
        0xE4B880: 1, 0xE4BA8C: 2, 0xE4B889: 3, 0xE59B9B: 4, 0xE4BA94: 5,   // 一 二 三 四 五
        0xE585AD: 6, 0xE4B883: 7, 0xE585AB: 8, 0xE4B99D: 9,                // 六 七 八 九
        0xE99BB6: 0, 0xE38087: 0,                                           // 零 〇
    ]

    static func openBracket(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> Int? {
        if i < end && p[i] == UInt8(ascii: "(") { return i + 1 }
        if hasPrefix(p, i, end, 0xEF, 0xBC, 0x88) { return i + 3 }   // （
        return nil
    }

    static func closeBracket(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> Int? {
        if i < end && p[i] == UInt8(ascii: ")") { return i + 1 }
        if hasPrefix(p, i, end, 0xEF, 0xBC, 0x89) { return i + 3 }   // ）
        return nil
    }

    // MARK: runs

    struct Run {
        var family: StepFamily
        var offsets: [Int]
        var top: StepIdentifier
        var strong: Bool
        var gerund: Bool
    }

    /// Keeps the markers that form increasing runs of one family, drops
    /// sub-steps and runs nested inside another run's steps.
    static func resolve(_ hits: [StepMarkerHit], sectionEnds: [Int], text: [UInt8], introWords: [[UInt8]]) -> [Int] {
        guard hits.count >= 2 else { return [] }
        // Per family: the run being extended, and a restart that is not yet
        // a run (a second embodiment's S1, or a stray reference to S101).
        var open: [StepFamily: Run] = [:]
        var restart: [StepFamily: Run] = [:]
        var finished: [Run] = []
        var nextEnd = 0
        for hit in hits {
            if nextEnd < sectionEnds.count && sectionEnds[nextEnd] < hit.offset {
                while nextEnd < sectionEnds.count && sectionEnds[nextEnd] < hit.offset { nextEnd += 1 }
                finished += open.values
                finished += restart.values
                open.removeAll()
                restart.removeAll()
            }
            var handled = false
            for id in hit.candidates {
                if var run = open[id.family] {
                    if id.isSubStep(of: run.top) { handled = true; break }
                    if id.follows(run.top) {
                        run.offsets.append(hit.offset); run.top = id
                        open[id.family] = run
                        // A lone restart between two steps of this run was a reference.
                        if let r = restart[id.family], r.offsets.count == 1 { restart[id.family] = nil }
                        handled = true; break
                    }
                }
                if var run = restart[id.family], id.follows(run.top) {
                    // The restart continues: it is a new run (the next embodiment).
                    run.offsets.append(hit.offset); run.top = id
                    if let old = open[id.family] { finished.append(old) }
                    open[id.family] = run
                    restart[id.family] = nil
                    handled = true; break
                }
            }
            if handled { continue }
            guard let id = hit.candidates.first(where: \.canStartRun) else { continue }
            let run = Run(family: id.family, offsets: [hit.offset], top: id, strong: hit.hasLead || id.family == .sNumber, gerund: hit.gerund)
            if open[id.family] == nil { open[id.family] = run } else { restart[id.family] = run }
        }
        finished += restart.values
        finished += open.values
        var runs = finished.filter { $0.offsets.count >= 2 }.sorted { $0.offsets[0] < $1.offsets[0] }
        // Bare (1)/(a)/i) lists count as steps only after a word that introduces
        // steps, or when the first one reads as an action (`(a) measuring`).
        runs = runs.filter { $0.strong || $0.gerund || hasIntroduction(text, before: $0.offsets[0], introWords) }
        var kept: [Run] = []
        for run in runs {
            let first = run.offsets[0]
            let nested = kept.contains { a in
                if first < a.offsets.last! { return true }
                // A bare list after a numbered run's last step, with no section end between, is that step's content.
                return !run.strong && a.strong && !sectionEnds.contains { $0 > a.offsets.last! && $0 < first }
            }
            if !nested { kept.append(run) }
        }
        return kept.flatMap(\.offsets).sorted()
    }

    static func startsWithGerund(_ p: UnsafeBufferPointer<UInt8>, _ j: Int, _ end: Int) -> Bool {
        var k = j
        while k < end && !isASCIILetter(p[k]) && k - j < 4 { k += 1 }
        var e = k
        while e < end && isASCIILetter(p[e]) { e += 1 }
        return e - k > 4 && p[e - 3] == UInt8(ascii: "i") && p[e - 2] == UInt8(ascii: "n") && p[e - 1] == UInt8(ascii: "g")
    }

    static func hasIntroduction(_ text: [UInt8], before offset: Int, _ words: [[UInt8]]) -> Bool {
        let from = max(0, offset - introWindow)
        return text.withUnsafeBufferPointer { p in
            for word in words where !word.isEmpty {
                var i = from
                while i + word.count <= offset {
                    if hasPrefixIgnoringCase(p, i, offset, word) { return true }
                    i += 1
                }
            }
            return false
        }
    }

    // MARK: bytes

    static func hasPrefix(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int, _ s: [UInt8]) -> Bool {
        guard i + s.count <= end else { return false }
        for k in 0..<s.count where p[i + k] != s[k] { return false }
        return true
    }

    static func hasPrefix(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int, _ b0: UInt8, _ b1: UInt8, _ b2: UInt8) -> Bool {
        i + 3 <= end && p[i] == b0 && p[i + 1] == b1 && p[i + 2] == b2
    }

    /// `s` is lower-case; ASCII letters in the text match either case.
    static func hasPrefixIgnoringCase(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int, _ s: [UInt8]) -> Bool {
        guard i + s.count <= end else { return false }
        for k in 0..<s.count {
            var c = p[i + k]
            if c >= 0x41 && c <= 0x5A { c += 0x20 }
            if c != s[k] { return false }
        }
        return true
    }

    /// Skips ASCII spaces, tabs and U+3000.
    static func skipSpaces(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> Int {
        var j = i
        while j < end {
            if p[j] == 0x20 || p[j] == 0x09 { j += 1 } else if hasPrefix(p, j, end, 0xE3, 0x80, 0x80) { j += 3 } else { break }
        }
        return j
    }

    static func lowercased(_ s: [UInt8]) -> [UInt8] { s.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 } }
    static func isASCIIDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
    static func isASCIILetter(_ c: UInt8) -> Bool { (c | 0x20) >= 0x61 && (c | 0x20) <= 0x7A }
    static func isASCIIAlnum(_ c: UInt8) -> Bool { isASCIIDigit(c) || isASCIILetter(c) }
}
