import DaptCore

/// The run's figures as `summary.json` and as one screen of text. The JSON
/// holds no timings, so it is identical for any number of ranks.
public struct PrepareSummary: Equatable, Sendable {
    public var stats: PrepareStats
    public var maxTokens: Int
    public var overlapTokens: Int
    public var keep: String
    public var counter: String
    public var inputFiles: Int
    public var ignoredFiles: Int
    public var duplicatePatentIDs: Int

    public init(stats: PrepareStats, config: PrepareConfig, counter: String, inputFiles: Int, ignoredFiles: Int, duplicatePatentIDs: Int) {
        self.stats = stats; maxTokens = config.maxTokens; overlapTokens = config.overlapTokens; keep = config.keep
        self.counter = counter; self.inputFiles = inputFiles; self.ignoredFiles = ignoredFiles; self.duplicatePatentIDs = duplicatePatentIDs
    }

    /// Token range of histogram bin `i` (inclusive bounds).
    public func binRange(_ i: Int) -> (Int, Int?) {
        let lo = i * maxTokens / PrepareStats.histogramBins
        let hi = (i + 1) * maxTokens / PrepareStats.histogramBins - 1
        return (lo, i == PrepareStats.histogramBins - 1 ? nil : hi)
    }

    public var balanced: Bool { stats.records == stats.patents + stats.rejects }

    public var jsonValue: JSONValue {
        let s = stats
        let histogram: [JSONValue] = (0..<PrepareStats.histogramBins).map { i in
            let (lo, hi) = binRange(i)
            return .object([("from", .integer(lo)), ("to", hi.map { .integer($0) } ?? .null), ("fragments", .integer(s.histogram[i]))])
        }
        return .object([
            ("input_files", .integer(inputFiles)), ("ignored_files", .integer(ignoredFiles)), ("input_bytes", .integer(s.inputBytes)),
            ("records_in", .integer(s.records)), ("blank_lines", .integer(s.blankLines)),
            ("patents", .integer(s.patents)),
            ("patents_by_path", .object([("steps", .integer(s.patentsBySteps)), ("description", .integer(s.patentsByDescription)),
                                         ("rejected_no_steps", .integer(s.rejectsByReason[RejectReason.codes.firstIndex(of: "no_step_markers")!]))])),
            ("steps", .integer(s.steps)), ("paragraphs", .integer(s.paragraphs)), ("fragments", .integer(s.fragments)),
            ("characters", .integer(s.characters)), ("estimated_tokens", .integer(s.estimatedTokens)),
            ("token_counter", .string(counter)), ("keep", .string(keep)),
            ("max_tokens", .integer(maxTokens)), ("overlap_tokens", .integer(overlapTokens)),
            ("fragment_tokens_histogram", .array(histogram)),
            ("rejects", .integer(s.rejects)),
            ("rejects_by_reason", .object(RejectReason.codes.enumerated().map { ($0.element, .integer(s.rejectsByReason[$0.offset])) })),
            ("duplicate_patent_ids", .integer(duplicatePatentIDs)),
            ("check", .object([("records_in", .integer(s.records)), ("patents_out", .integer(s.patents)),
                               ("rejects", .integer(s.rejects)), ("balanced", .bool(balanced))])),
        ])
    }

    public func json() -> String { jsonValue.text(indent: 2) + "\n" }

    /// One screen of text for the console.
    public func lines() -> [String] {
        let s = stats
        var out: [String] = []
        out.append("prepare: \(s.records) records from \(inputFiles) files (\(mb(s.inputBytes)) MB) → \(s.patents) patents, \(s.steps) steps, \(s.paragraphs) paragraphs, \(s.fragments) fragments")
        let noSteps = s.rejectsByReason[RejectReason.codes.firstIndex(of: "no_step_markers")!]
        out.append("  patents: \(s.patentsBySteps) kept by steps, \(s.patentsByDescription) without steps kept whole, \(noSteps) without steps rejected (keep \(keep))")
        let mean = s.fragments > 0 ? Double(s.tokenThousandths) / 1000 / Double(s.fragments) : 0
        out.append("  text: \(s.characters) characters, \(s.estimatedTokens) tokens (\(counter)), mean \(String(format1: mean)) tokens/fragment; budget \(maxTokens), overlap \(overlapTokens), keep \(keep)")
        out.append("  fragment tokens:")
        let peak = max(1, s.histogram.max() ?? 1)
        for i in 0..<PrepareStats.histogramBins {
            let (lo, hi) = binRange(i)
            let label = hi.map { "\(lo)-\($0)" } ?? "\(lo)+"
            let bar = String(repeating: "#", count: (s.histogram[i] * 40 + peak - 1) / peak)
            out.append("    " + label.padding(toLength: 10) + String(s.histogram[i]).leftPadding(toLength: 9) + "  " + bar)
        }
        let reasons = RejectReason.codes.enumerated().filter { s.rejectsByReason[$0.offset] > 0 }
            .map { "\($0.element) \(s.rejectsByReason[$0.offset])" }
        out.append("  rejects: \(s.rejects)" + (reasons.isEmpty ? "" : " (" + reasons.joined(separator: ", ") + ")"))
        if s.blankLines > 0 || ignoredFiles > 0 { out.append("  skipped: \(s.blankLines) blank lines, \(ignoredFiles) files of other kinds in input folders") }
        if duplicatePatentIDs > 0 { out.append("  warning: \(duplicatePatentIDs) patent ids occur more than once (their fragment ids repeat)") }
        out.append("  check: records in \(s.records) = patents \(s.patents) + rejects \(s.rejects): " + (balanced ? "ok" : "MISMATCH"))
        return out
    }

    private func mb(_ bytes: Int) -> String { String(format1: Double(bytes) / 1e6) }
}

extension String {
    /// One decimal place, without Foundation.
    init(format1 value: Double) {
        let tenths = Int((value * 10).rounded())
        self = "\(tenths / 10).\(abs(tenths % 10))"
    }

    func padding(toLength n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
    func leftPadding(toLength n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
