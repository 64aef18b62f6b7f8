import DaptBLAS
import DaptCluster
import DaptCore
import DaptModel
import DaptTokenizer
import DaptTrain
import Foundation

/// What can stop a filter run, said exactly.
public enum FilterError: Error, CustomStringConvertible, Equatable {
    /// The model's tokenizer has ids its embedding table does not.
    case tokenizerVocabulary(model: String, tokenizerSize: Int, modelSize: Int)
    case noTokenizer(model: String)
    case missingSpecialToken(tokenizer: String, token: String)
    case countMismatch(lines: Int, blank: Int, kept: Int, removed: Int, rejected: Int)

    public var description: String {
        switch self {
        case let .tokenizerVocabulary(model, t, m):
            return "\(model): its tokenizer has \(t) tokens but the model's vocab_size is \(m): this tokenizer is not the model's"
        case let .noTokenizer(model):
            return "\(model): no \(Trainer.tokenizerFile) beside the model: the reference model needs its own tokenizer"
        case let .missingSpecialToken(tokenizer, token):
            return "\(tokenizer): no \(token) token (filter.add_bos needs it)"
        case let .countMismatch(lines, blank, kept, removed, rejected):
            return "internal error: \(lines) lines − \(blank) blank ≠ \(kept) kept + \(removed) removed + \(rejected) rejected"
        }
    }
}

/// A `dapt filter` run: inputs, where the outputs go, and the reference model.
public struct FilterRequest: Sendable {
    public var inputs: [String]
    public var output: String
    /// A dapt checkpoint, a run directory or a Hugging Face Llama directory, with tokenizer.json.
    public var model: String
    public var config: FilterConfig

    public init(inputs: [String], output: String, model: String, config: FilterConfig = FilterConfig()) {
        self.inputs = inputs; self.output = output; self.model = model; self.config = config
    }
}

/// What a run did, for the summary and the tests.
public struct FilterSummary: Equatable, Sendable {
    public var ranks = 1
    public var lines = 0
    public var blankLines = 0
    public var rejected = 0
    public var records = 0
    public var kept = 0
    public var removedHigh = 0
    public var removedLow = 0
    public var buckets = 0
    public var scoredTokens = 0
    public var perplexityBefore = 0.0
    public var perplexityAfter = 0.0
    public var seconds = 0.0
    /// Of `seconds`, the time spent scoring (this rank's batches and the
    /// all-reduce of the sums; reading, tokenising and writing excluded).
    public var scoringSeconds = 0.0
    /// Records that passed the JSON checks, and how many of them this rank tokenised (its share).
    public var tokenizableRecords = 0
    public var tokenizedHere = 0
    public var firstReject: String?
    public var output = ""

    /// The one-screen summary the command prints; in = kept + removed + rejected is checked before.
    public var text: String {
        var s = "filter: \(lines - blankLines) records in (\(blankLines) blank line(s) skipped) = \(kept) kept + \(removedHigh + removedLow) removed (\(removedHigh) high, \(removedLow) low) + \(rejected) rejected\n"
        s += "  \(buckets) length bucket(s), \(scoredTokens) tokens scored on \(ranks) rank(s) in \(String(format: "%.1f", seconds)) s"
        if seconds > 0 { s += " (\(Int(Double(scoredTokens) / seconds)) tokens/s)" }
        if scoringSeconds > 0 {
            s += "\n  scoring alone \(String(format: "%.1f", scoringSeconds)) s (\(Int(Double(scoredTokens) / scoringSeconds)) scoring tokens/s)"
        }
        s += "\n  rank 0 tokenised \(tokenizedHere) of \(tokenizableRecords) records"
        s += "\n  corpus perplexity \(FilterJob.decimal(perplexityBefore)) before, \(FilterJob.decimal(perplexityAfter)) after\n"
        if let firstReject { s += "  first reject: \(firstReject)\n" }
        s += "  outputs in \(output): kept.jsonl, removed.jsonl, rejects.jsonl, report.json, report.html"
        return s
    }
}

/// One record that will be scored, by place.
struct FilterRecord {
    var file: Int
    var line: Int
    var lang: String
}

/// One line that cannot be scored, by place.
struct FilterReject {
    var file: Int
    var line: Int
    var problem: RecordProblem
}

/// Scores every record with the reference model and cuts each length
/// bucket's tails. Every rank reads the whole input (the JSON checks are
/// cheap) but tokenises only its share of the records (record k on rank
/// k mod size); the token ids meet in one all-gather, so all derive the
/// same scoring plan; each scores its share of the batches; the sums meet
/// in one all-reduce; rank 0 writes.
public final class FilterJob {
    public static let outputNames = (kept: "kept.jsonl", removed: "removed.jsonl", scores: "scores.jsonl",
                                     rejects: "rejects.jsonl", report: "report.json", page: "report.html")

    let request: FilterRequest
    let comm: any Communicator
    let sink: any EventSink
    var config: FilterConfig { request.config }

    public init(request: FilterRequest, communicator: any Communicator, sink: any EventSink = SilentSink()) {
        self.request = request; self.comm = communicator; self.sink = sink
    }

    /// The reference model and its tokenizer, checked against each other.
    public static func loadReference(_ path: String) throws -> (model: LlamaModel, tokenizer: BPETokenizer, directory: ModelDirectory) {
        let directory = try ModelDirectory.resolve(path)
        guard let tokenizerPath = directory.tokenizerPath else { throw FilterError.noTokenizer(model: directory.path) }
        let tokenizer = try BPETokenizer.load(path: tokenizerPath)
        let config = try LlamaConfig.load(path: directory.path + "/" + Trainer.configFile)
        if tokenizer.vocabSize > config.vocabSize {
            throw FilterError.tokenizerVocabulary(model: directory.path, tokenizerSize: tokenizer.vocabSize, modelSize: config.vocabSize)
        }
        return (try directory.loadModel(), tokenizer, directory)
    }

    public func run() throws -> FilterSummary {
        let publisher = OutputPublisher(directory: request.output)
        do {
            return try run(publisher)
        } catch {
            // The earlier output stays as it was; no half-written staging folder is left.
            if comm.rank == 0 { publisher.discard() }
            throw error
        }
    }

    func run(_ publisher: OutputPublisher) throws -> FilterSummary {
        let started = monotonicSeconds()
        let (model, tokenizer, directory) = try Self.loadReference(request.model)
        // Attention and the other kernels outside BLAS use as many threads
        // as BLAS does (the results do not depend on it).
        model.threads = BLAS.threads
        let (window, overlap) = config.scoringWindow(positions: model.config.positionLimit)
        if window > model.config.positionLimit {
            throw ConfigError(field: "filter.window", reason: "\(window) exceeds the positions of \(directory.path) (\(model.config.positionLimit))")
        }
        if overlap >= window { throw ConfigError(field: "filter.overlap", reason: "must be less than the window (\(window)), got \(overlap)") }
        var bos: Int32?
        if config.addBos {
            guard let id = tokenizer.id(of: SpecialTokens.bos) else {
                throw FilterError.missingSpecialToken(tokenizer: directory.tokenizerPath!, token: SpecialTokens.bos)
            }
            bos = Int32(id)
        }

        // A folder that cannot be replaced is refused before any work.
        try publisher.begin(comm)

        // Read every record (every rank, same result) and tokenise this rank's share.
        var summary = FilterSummary()
        summary.ranks = comm.size
        summary.output = request.output
        var records: [FilterRecord] = []
        var rejects: [FilterReject] = []
        let encoder = TokenEncoder(tokenizer)
        var scanner = JSONRecordScanner(fields: [config.textField, config.langField])
        var ids: [UInt32] = []
        // This rank's records' ids, one after another, and their counts.
        var ownIds: [Int32] = [], ownCounts: [Int32] = []
        reading: for (f, path) in request.inputs.enumerated() {
            var stop = false
            try LineReader(path: path).forEachLine { number, line in
                summary.lines += 1
                if RecordProblem.isBlank(line) { summary.blankLines += 1; return true }
                do throws(RecordProblem) {
                    try scanner.scan(line)
                    guard let text = scanner.fields[0].kind == .string ? scanner.fields[0].decodedRange : nil else {
                        let kind = scanner.kind(0)
                        throw RecordProblem(field: config.textField, reason: kind == .absent ? "missing" : "expected a string, got \(kind.name)")
                    }
                    var lang = ""
                    switch scanner.kind(1) {
                    case .string: lang = scanner.string(1)!
                    case .absent, .null: break
                    default: throw RecordProblem(field: config.langField, reason: "expected a string, got \(scanner.kind(1).name)")
                    }
                    if records.count % comm.size == comm.rank {
                        ids.removeAll(keepingCapacity: true)
                        if let bos { ids.append(UInt32(bos)) }
                        scanner.decoded.withUnsafeBufferPointer { d in
                            encoder.encode(bytes: UnsafeBufferPointer(rebasing: d[text]), into: &ids)
                        }
                        ownIds.append(contentsOf: ids.lazy.map { Int32(bitPattern: $0) })
                        ownCounts.append(Int32(ids.count))
                    }
                    records.append(FilterRecord(file: f, line: number, lang: lang))
                } catch {
                    rejects.append(FilterReject(file: f, line: number, problem: error))
                    // Every rank reads the whole input, so all stop at the same first bad line; a
                    // record too short to score may still come before it (found after the gather).
                    if config.strict { stop = true; return false }
                }
                return true
            }
            if stop { break reading }
        }
        summary.tokenizableRecords = records.count
        summary.tokenizedHere = ownCounts.count
        let sequences = try gatherSequences(recordCount: records.count, ownIds: ownIds, ownCounts: ownCounts)
        // Records too short to score are rejects, in input order among the others.
        var scorable: [Int] = []
        for (i, sequence) in sequences.enumerated() {
            if sequence.count >= 2 { scorable.append(i); continue }
            rejects.append(FilterReject(file: records[i].file, line: records[i].line, problem: RecordProblem(field: config.textField,
                reason: "\(sequence.count) token(s): too short to score (a record needs two tokens, or one with add_bos)")))
        }
        rejects.sort { ($0.file, $0.line) < ($1.file, $1.line) }
        if config.strict, let first = rejects.first {
            throw FirstBadRecord(message: first.problem.located(file: request.inputs[first.file], line: first.line).description)
        }
        if scorable.count < records.count {
            records = scorable.map { records[$0] }
        }
        let scoredSequences = scorable.count < sequences.count ? scorable.map { sequences[$0] } : sequences
        summary.records = records.count
        summary.rejected = rejects.count
        if let r = rejects.first { summary.firstReject = r.problem.located(file: request.inputs[r.file], line: r.line).description }

        // Score this rank's batches; the sums meet in one all-reduce (each
        // piece is scored by one rank, so the sum is exact).
        let plan = ScoringPlan(lengths: scoredSequences.map(\.count), window: window, overlap: overlap, batchSize: config.batchSize)
        let scorer = SequenceScorer(model: model, window: window, overlap: overlap, batchSize: config.batchSize)
        let total = plan.batchCount
        let scoringStarted = monotonicSeconds()
        var sums = try scorer.pieceSums(plan, sequences: scoredSequences, take: { $0 % self.comm.size == self.comm.rank }) { b in
            if b % 16 == 0 { self.sink.report(.progress(stage: "filter", done: b + 1, total: total, unit: "batches")) }
        }
        try comm.allReduce(&sums, op: .sum)
        summary.scoringSeconds = monotonicSeconds() - scoringStarted
        let recordSums = SequenceScorer.recordSums(plan, pieceSums: sums)
        let scored = zip(records, recordSums).map { ScoredRecord(tokens: $1.count, nll: $1.nll, lang: $0.lang) }
        let decisions = FilterDecisions(records: scored, config: config)
        summary.buckets = decisions.buckets.count
        summary.scoredTokens = scored.reduce(0) { $0 + $1.tokens }
        summary.removedHigh = decisions.reasons.filter { $0 == .high }.count
        summary.removedLow = decisions.reasons.filter { $0 == .low }.count
        summary.kept = records.count - summary.removedHigh - summary.removedLow
        summary.perplexityBefore = Self.corpusPerplexity(scored, where: { _ in true })
        summary.perplexityAfter = Self.corpusPerplexity(scored, where: { decisions.reasons[$0] == nil })

        if comm.rank == 0 {
            let report = Self.report(scored, decisions, summary: summary, window: window, model: directory.path)
            try writeOutputs(publisher, records: records, scored: scored, decisions: decisions, rejects: rejects, report: report, summary: summary)
        }
        try publisher.finish(stage: "filter", comm)
        summary.seconds = monotonicSeconds() - started
        return summary
    }

    /// Every record's token ids on every rank, in input order: record k was
    /// tokenised by rank k mod size, which sends its ids in one all-gather.
    func gatherSequences(recordCount: Int, ownIds: [Int32], ownCounts: [Int32]) throws -> [[Int32]] {
        let ids = try comm.allGatherV(ownIds), counts = try comm.allGatherV(ownCounts)
        var offsets = [Int](repeating: 0, count: comm.size)
        return (0..<recordCount).map { k in
            let r = k % comm.size, n = Int(counts[r][k / comm.size])
            defer { offsets[r] += n }
            return Array(ids[r][offsets[r]..<(offsets[r] + n)])
        }
    }

    static func corpusPerplexity(_ scored: [ScoredRecord], where keep: (Int) -> Bool) -> Double {
        var nll = 0.0, tokens = 0
        for (i, r) in scored.enumerated() where keep(i) { nll += r.nll; tokens += r.tokens }
        return tokens == 0 ? 0 : exp(nll / Double(tokens))
    }

    /// A perplexity as written in the outputs: four decimals, so the files do
    /// not depend on the last bits of a sum.
    public static func decimal(_ x: Double) -> String { String(format: "%.4f", x) }

    static func number(_ x: Double) -> JSONValue { .number(decimal(x)) }

    static func report(_ scored: [ScoredRecord], _ d: FilterDecisions, summary: FilterSummary, window: Int, model: String) -> JSONValue {
        var groups: [JSONValue] = []
        func optional(_ x: Double?) -> JSONValue { x.map(number) ?? .null }
        for g in d.groups {
            let ppl = g.members.map { scored[$0].perplexity }.sorted()
            let range = d.buckets.range(of: g.bucket)
            let members = g.members.map { scored[$0] }
            let keptFlags = g.members.map { d.reasons[$0] == nil }
            let quantiles: [(String, JSONValue)] = [0, 5, 25, 50, 75, 95, 100].map { q in
                (String(format: "p%02d", q), number(Quantile.of(sorted: ppl, Double(q) / 100)))
            }
            let cut: JSONValue = .object([
                ("high_quantile", optional(g.cut.highQuantile)), ("low_quantile", optional(g.cut.lowQuantile)),
                ("max_perplexity", optional(g.cut.maxPerplexity)), ("min_perplexity", optional(g.cut.minPerplexity)),
            ])
            let high = g.members.filter { d.reasons[$0] == .high }.count
            let low = g.members.filter { d.reasons[$0] == .low }.count
            var fields: [(String, JSONValue)] = [("bucket", .integer(g.bucket)), ("lang", .string(g.lang))]
            fields.append(("tokens_from", .integer(range.lower)))
            fields.append(("tokens_below", range.upper.map { JSONValue.integer($0) } ?? .null))
            fields.append(("count", .integer(g.members.count)))
            fields.append(("perplexity_quantiles", .object(quantiles)))
            fields.append(("cut", cut))
            fields.append(("threshold_high", optional(g.thresholds.high)))
            fields.append(("threshold_low", optional(g.thresholds.low)))
            fields.append(("removed_high", .integer(high)))
            fields.append(("removed_low", .integer(low)))
            fields.append(("perplexity_before", number(corpusPerplexity(members, where: { _ in true }))))
            fields.append(("perplexity_after", number(corpusPerplexity(members, where: { keptFlags[$0] }))))
            let histogram = FilterReportPage.logPerplexityHistogram(ppl, high: g.thresholds.high, low: g.thresholds.low)
            fields.append(("log_perplexity_histogram", .object([
                ("from", number(histogram.lower)), ("to", number(histogram.upper)),
                ("counts", .array(histogram.counts.map { .integer($0) })),
            ])))
            groups.append(.object(fields))
        }
        return .object([
            ("model", .string(model)), ("window", .integer(window)),
            ("lines", .integer(summary.lines)), ("blank_lines", .integer(summary.blankLines)),
            ("records", .integer(summary.records)), ("rejected", .integer(summary.rejected)),
            ("kept", .integer(summary.kept)), ("removed_high", .integer(summary.removedHigh)), ("removed_low", .integer(summary.removedLow)),
            ("scored_tokens", .integer(summary.scoredTokens)),
            ("bucket_edges", .array(d.buckets.edges.map { .integer($0) })),
            ("perplexity_before", number(summary.perplexityBefore)), ("perplexity_after", number(summary.perplexityAfter)),
            ("groups", .array(groups)),
        ])
    }

    /// Writes every output into the publisher's staging folder (rank 0).
    func writeOutputs(_ staging: OutputPublisher, records: [FilterRecord], scored: [ScoredRecord], decisions: FilterDecisions,
                      rejects: [FilterReject], report: JSONValue, summary: FilterSummary) throws {
        let names = Self.outputNames
        let kept = try FileWriter(path: staging.path(names.kept))
        let removed = try FileWriter(path: staging.path(names.removed))
        let scores = config.writeScores ? try FileWriter(path: staging.path(names.scores)) : nil
        var scanner = JSONRecordScanner(fields: [config.textField])
        let sampled = FilterReportPage.samples(scored, decisions)
        var texts: [Int: String] = [:], places: [Int: String] = [:]
        var next = 0, keptCount = 0, removedCount = 0
        var out: [UInt8] = []
        for (f, path) in request.inputs.enumerated() {
            try LineReader(path: path).forEachLine { number, line in
                guard next < records.count, records[next].file == f, records[next].line == number else { return true }
                let i = next
                next += 1
                let ppl = Self.decimal(scored[i].perplexity)
                if sampled.contains(i) {
                    try? scanner.scan(line)
                    texts[i] = String((scanner.string(0) ?? "").prefix(400))
                    places[i] = "\(path):\(number)"
                }
                if let reason = decisions.reasons[i] {
                    try? scanner.scan(line)
                    out.removeAll(keepingCapacity: true)
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: line[0..<scanner.closingBrace]))
                    out.append(contentsOf: ",\"ppl\":\(ppl),\"bucket\":\(decisions.bucketOf[i]),\"reason\":\"\(reason.rawValue)\"}\n".utf8)
                    try removed.write(out)
                    removedCount += 1
                } else {
                    try kept.write(UnsafeRawBufferPointer(line))
                    try kept.write([0x0A])
                    keptCount += 1
                }
                if let scores {
                    out.removeAll(keepingCapacity: true)
                    out.append(contentsOf: "{\"file\":".utf8); JSONWriter.appendString(path, to: &out)
                    out.append(contentsOf: ",\"line\":\(number),\"tokens\":\(scored[i].tokens),\"ppl\":\(ppl),\"bucket\":\(decisions.bucketOf[i]),\"lang\":".utf8)
                    JSONWriter.appendString(records[i].lang, to: &out)
                    out.append(contentsOf: "}\n".utf8)
                    try scores.write(out)
                }
                return true
            }
        }
        let rejectsFile = try FileWriter(path: staging.path(names.rejects))
        for r in rejects {
            try rejectsFile.write(r.problem.located(file: request.inputs[r.file], line: r.line).rejectJSON + "\n")
        }
        guard next == records.count, keptCount + removedCount + rejects.count == summary.lines - summary.blankLines,
              keptCount == summary.kept, removedCount == summary.removedHigh + summary.removedLow else {
            throw FilterError.countMismatch(lines: summary.lines, blank: summary.blankLines, kept: keptCount, removed: removedCount, rejected: rejects.count)
        }
        for w in [kept, removed, rejectsFile] + (scores.map { [$0] } ?? []) { try w.commit() }
        let page = try FileWriter(path: staging.path(names.page))
        try page.write(FilterReportPage.html(scored, decisions, texts: texts, places: places, summary: summary))
        try page.commit()
        let reportFile = try FileWriter(path: staging.path(names.report))
        try reportFile.write(report.text(indent: 2) + "\n")
        try reportFile.commit()
    }
}
