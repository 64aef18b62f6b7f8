import DaptCore
import Foundation

/// The `prepare:` section. Every key is optional; these are the defaults.
public struct PrepareConfig: StageConfig, Equatable {
    /// JSONL files (one patent per line) and folders (searched recursively,
    /// in name order, for `.jsonl`, `.txt` and `.md` files).
    public var inputs: [String] = []
    /// Output directory: shards, manifest.json, rejects.jsonl, summary.json.
    public var output: String = "out/prepare"
    /// Shard names are `NAME-RRRR-of-NNNN.jsonl`; the merged corpus is `NAME.jsonl`.
    public var name: String = "fragments"
    /// Token budget of one fragment.
    public var maxTokens: Int = 512
    /// Tokens repeated from the end of one fragment at the start of the next.
    public var overlapTokens: Int = 64
    /// `steps`: keep only step sections (a patent without steps is rejected);
    /// `description`: keep the whole text (text outside steps becomes step 0);
    /// `steps_or_description`: steps when the patent has them, else its whole text.
    public var keep: String = "steps"
    /// Step markers per language (the record's `lang`, `zh-CN` → `zh`; a
    /// language not listed uses them all). A marker is a lead word, one
    /// `{families}` slot naming the numbering families it accepts, and an
    /// optional tail: `步骤{S|N|C|(N)}`, `第{C|N}步`, `At step {S|N}`, or a bare
    /// `{S}`. Families: S (S101, S3.1), N (1, 302, 2.1), C (一, 十二),
    /// O (first … tenth), (N) and N) ((1), 1）), (a) and a), (i) and i).
    public var stepMarkers: [String: [String]] = PrepareConfig.defaultStepMarkers
    /// What may follow a marker, per language. `" "` means a space before a
    /// word that is not in `non_step_words` (a verb, usually). Bracketed
    /// forms ((1), a)) and markers with a tail (第一步) need no separator.
    public var stepSeparators: [String: [String]] = PrepareConfig.defaultStepSeparators
    /// Besides a line start, a marker may follow one of these (and spaces,
    /// and a connector such as `and` or `Next,`): sentence and clause ends
    /// inside a paragraph.
    public var stepBoundaries: [String] = PrepareConfig.defaultStepBoundaries
    /// A run of bare bracketed markers ((1), (a), i)) counts as steps only
    /// when one of these words occurs shortly before it (ASCII case ignored).
    public var stepIntroWords: [String] = PrepareConfig.defaultStepIntroWords
    /// Words that, right after a marker and a space, show a reference or a
    /// list of parts rather than a step (`step 2 of the method`, `(a) a housing`).
    public var nonStepWords: [String] = PrepareConfig.defaultNonStepWords
    /// Paragraph numbers such as `[0023]` or `【0023】`, matched at line start.
    public var paragraphNumber: String = PrepareConfig.defaultParagraphNumber
    /// Remove the paragraph number from the text.
    public var stripParagraphNumbers: Bool = true
    /// Lines (headings) that end a step section, e.g. the claims.
    public var sectionEndMarkers: [String] = PrepareConfig.defaultSectionEndMarkers
    /// The token estimate: tokens per CJK character (ideographs, kana, hangul,
    /// CJK and full-width punctuation), per Latin word (a run of letters or
    /// digits), and per other symbol (ASCII punctuation and the rest).
    public var cjkTokensPerChar: Double = 1.6
    public var latinTokensPerWord: Double = 1.3
    public var symbolTokensPerChar: Double = 1.0
    /// The first bad record ends the run (non-zero exit) instead of going to rejects.
    public var strict: Bool = false

    public static let defaultStepMarkers: [String: [String]] = [
        "zh": ["步骤{S|N|C|(N)}", "第{C|N}步", "在步骤{S|N}中", "{S}", "{(N)|N)}"],
        "en": ["Step {S|N}", "step {S|N}", "STEP {S|N}", "At step {S|N}", "In step {S|N}", "At block {N}", "In block {N}",
               "At operation {N}", "In operation {N}", "Block {N}", "Operation {N}", "In a {O} step",
               "at step {S|N}", "in step {S|N}", "at block {N}", "at operation {N}", "{S}",
               "{(a)|(i)|(N)|a)|i)|N)}"],
        "ja": ["ステップ{S|N}", "工程{S|N|(N)}", "{S}", "{(N)|N)}"],
    ]

    public static let defaultStepSeparators: [String: [String]] = [
        "zh": ["：", ":", "、", "，", ",", "．", ".", " "],
        "en": [":", ",", ".", "-", " "],
        "ja": ["において", "では", "で、", "にて", "：", ":", "、", "，", " "],
    ]

    public static let defaultStepBoundaries: [String] = ["。", "；", ";", "：", ":", "，", ". ", "！", "？", "! ", "? ", "は、", "と、"]

    public static let defaultStepIntroWords: [String] = [
        "步骤", "方法", "工艺", "工序", "流程", "过程",
        "step", "method", "process", "procedure", "comprising", "comprises", "as follows",
        "ステップ", "工程", "手順",
    ]

    public static let defaultNonStepWords: [String] = [
        "a", "an", "the", "said", "each", "one", "two", "of", "in", "on", "at", "to", "is", "are", "was", "were", "be",
        "been", "as", "above", "below", "and", "or", "with", "from", "for", "by", "may", "can", "which", "that", "this",
        "these", "those", "it", "its", "described", "shown", "illustrated", "includes", "comprises", "has", "have", "will",
        "further", "then",
    ]

    public static let defaultParagraphNumber = #"[\[【]\d{3,5}[\]】]"#

    public static let defaultSectionEndMarkers: [String] = [
        #"权\s*利\s*要\s*求\s*书?\s*$"#,
        #"说\s*明\s*书\s*摘\s*要\s*$"#,
        #"摘\s*要\s*$"#,
        #"附\s*图\s*说\s*明\s*$"#,
        #"(?i:what\s+is\s+claimed\s+is|we\s+claim|i\s+claim)\s*:?\s*$"#,
        #"(?i:claims|abstract|abstract of the disclosure|brief description of the drawings)\s*:?\s*$"#,
    ]

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case inputs, output, name, keep, strict
        case maxTokens = "max_tokens"
        case overlapTokens = "overlap_tokens"
        case stepMarkers = "step_markers"
        case stepSeparators = "step_separators"
        case stepBoundaries = "step_boundaries"
        case stepIntroWords = "step_intro_words"
        case nonStepWords = "non_step_words"
        case paragraphNumber = "paragraph_number"
        case stripParagraphNumbers = "strip_paragraph_numbers"
        case sectionEndMarkers = "section_end_markers"
        case cjkTokensPerChar = "cjk_tokens_per_char"
        case latinTokensPerWord = "latin_tokens_per_word"
        case symbolTokensPerChar = "symbol_tokens_per_char"
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = PrepareConfig()
        inputs = try c.value(.inputs, default: d.inputs)
        output = try c.value(.output, default: d.output)
        name = try c.value(.name, default: d.name)
        maxTokens = try c.value(.maxTokens, default: d.maxTokens)
        overlapTokens = try c.value(.overlapTokens, default: d.overlapTokens)
        keep = try c.value(.keep, default: d.keep)
        stepMarkers = try c.value(.stepMarkers, default: d.stepMarkers)
        stepSeparators = try c.value(.stepSeparators, default: d.stepSeparators)
        stepBoundaries = try c.value(.stepBoundaries, default: d.stepBoundaries)
        stepIntroWords = try c.value(.stepIntroWords, default: d.stepIntroWords)
        nonStepWords = try c.value(.nonStepWords, default: d.nonStepWords)
        paragraphNumber = try c.value(.paragraphNumber, default: d.paragraphNumber)
        stripParagraphNumbers = try c.value(.stripParagraphNumbers, default: d.stripParagraphNumbers)
        sectionEndMarkers = try c.value(.sectionEndMarkers, default: d.sectionEndMarkers)
        cjkTokensPerChar = try c.value(.cjkTokensPerChar, default: d.cjkTokensPerChar)
        latinTokensPerWord = try c.value(.latinTokensPerWord, default: d.latinTokensPerWord)
        symbolTokensPerChar = try c.value(.symbolTokensPerChar, default: d.symbolTokensPerChar)
        strict = try c.value(.strict, default: d.strict)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(inputs, forKey: .inputs); try c.encode(output, forKey: .output); try c.encode(name, forKey: .name)
        try c.encode(maxTokens, forKey: .maxTokens); try c.encode(overlapTokens, forKey: .overlapTokens)
        try c.encode(keep, forKey: .keep); try c.encode(stepMarkers, forKey: .stepMarkers)
        try c.encode(stepSeparators, forKey: .stepSeparators); try c.encode(stepBoundaries, forKey: .stepBoundaries)
        try c.encode(stepIntroWords, forKey: .stepIntroWords); try c.encode(nonStepWords, forKey: .nonStepWords)
        try c.encode(paragraphNumber, forKey: .paragraphNumber); try c.encode(stripParagraphNumbers, forKey: .stripParagraphNumbers)
        try c.encode(sectionEndMarkers, forKey: .sectionEndMarkers); try c.encode(cjkTokensPerChar, forKey: .cjkTokensPerChar)
        try c.encode(latinTokensPerWord, forKey: .latinTokensPerWord); try c.encode(symbolTokensPerChar, forKey: .symbolTokensPerChar)
        try c.encode(strict, forKey: .strict)
    }

    public var keepsWholeDescription: Bool { keep == "description" }
    /// `steps_or_description`: a patent without steps keeps its whole text.
    public var keepsDescriptionWithoutSteps: Bool { keep == "steps_or_description" }

    public func validate() throws {
        if output.isEmpty { throw ConfigError(field: "output", reason: "must not be empty") }
        if name.isEmpty || name.contains("/") { throw ConfigError(field: "name", reason: "must be a non-empty file name without '/', got \"\(name)\"") }
        try Check.positive(maxTokens, "max_tokens")
        try Check.inRange(maxTokens, 16...1_000_000, "max_tokens")
        try Check.nonNegative(overlapTokens, "overlap_tokens")
        if overlapTokens * 2 >= maxTokens {
            throw ConfigError(field: "overlap_tokens", reason: "must be less than half of max_tokens (\(maxTokens)), got \(overlapTokens)")
        }
        try Check.oneOf(keep, ["steps", "description", "steps_or_description"], "keep")
        if stepMarkers.values.allSatisfy(\.isEmpty) && keep == "steps" { throw ConfigError(field: "step_markers", reason: "must not be empty when keep is \"steps\"") }
        for (lang, seps) in stepSeparators.sorted(by: { $0.key < $1.key }) {
            for (i, s) in seps.enumerated() where s.isEmpty { throw ConfigError(field: "step_separators.\(lang)[\(i)]", reason: "must not be empty") }
        }
        for (i, s) in stepBoundaries.enumerated() where s.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ConfigError(field: "step_boundaries[\(i)]", reason: "must hold a punctuation mark, got \"\(s)\"")
        }
        _ = try StepGrammar(self)   // names the first bad template (step_markers.LANG[i])
        for (i, pattern) in sectionEndMarkers.enumerated() { try Self.checkPattern(pattern, "section_end_markers[\(i)]") }
        try Self.checkPattern(paragraphNumber, "paragraph_number")
        try Check.inRange(cjkTokensPerChar, 0.05...20, "cjk_tokens_per_char")
        try Check.inRange(latinTokensPerWord, 0.05...20, "latin_tokens_per_word")
        try Check.inRange(symbolTokensPerChar, 0...20, "symbol_tokens_per_char")
    }

    static func checkPattern(_ pattern: String, _ field: String) throws {
        if pattern.isEmpty { throw ConfigError(field: field, reason: "must not be empty") }
        do { _ = try NSRegularExpression(pattern: pattern) } catch {
            throw ConfigError(field: field, reason: "not a valid regular expression: \(pattern)")
        }
        if (try? NSRegularExpression(pattern: "(?:\(pattern))"))?.firstMatch(in: "", range: NSRange(location: 0, length: 0)) != nil {
            throw ConfigError(field: field, reason: "matches the empty string, so it would match every line: \(pattern)")
        }
    }
}
