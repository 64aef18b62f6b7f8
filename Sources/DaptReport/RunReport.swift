import DaptCore
import DaptFilter
import DaptTrain
import Foundation

/// Where a run directory keeps each stage's outputs (as scripts/run-sample.sh
/// lays them out), relative to the directory.
public struct RunLayout: Sendable {
    public var prepare = "prepare"
    public var dedup = "dedup"
    public var filter = "filter"
    public var tokenizer = "tokenizer.json"
    public var tokens = "tokens"
    public var pretrain = "pretrain"
    public var finetune = "finetune"
    public var eval = "eval"
    public init() {}
}

/// One stage as its outputs tell it: record counts (and whether they add
/// up), key figures, and where the outputs are. A stage whose outputs are
/// absent has `missing` set and nothing else.
public struct StageSummary: Sendable {
    public var name: String
    /// The stage's output folder or file.
    public var output: String
    /// Why the stage is left out (its outputs are not there).
    public var missing: String?
    public var recordsIn: Int?
    public var recordsOut: Int?
    /// What `recordsOut` counts (fragments, records, documents, steps).
    public var unit = "records"
    public var rejected: Int?
    public var removed: Int?
    /// The count check as text, `in = out + removed + rejected`, and whether it holds.
    public var check: String?
    public var balanced: Bool?
    public var figures: [(name: String, value: String)] = []

    init(name: String, output: String) { self.name = name; self.output = output }
}

/// A filter group (length bucket and language) with its cuts and its
/// log-perplexity histogram.
public struct FilterGroupSummary: Sendable {
    public var bucket: Int
    public var lang: String
    public var tokensFrom: Int
    public var tokensBelow: Int?
    public var count: Int
    public var thresholdHigh: Double?
    public var thresholdLow: Double?
    public var removedHigh: Int
    public var removedLow: Int
    public var perplexityBefore: Double
    public var perplexityAfter: Double
    public var histogram: SVGPlot.Histogram
}

/// One section of eval's report.json (ppl, mc, json): its counts and its
/// figures flattened to `name: value` rows.
public struct EvalSectionSummary: Sendable {
    public var kind: String
    public var counts: [(name: String, value: String)]
    public var results: [(name: String, value: String)]
}

/// One eval output folder (`eval`, or an `eval-*` folder beside it, e.g.
/// run-sample's `eval-json` on the finetuned adapter): the model and LoRA
/// adapter its report is on, and its sections.
public struct EvalRunSummary: Sendable {
    /// The folder's name in the run directory.
    public var name: String
    public var directory: String
    public var model: EvalModelInfo
    public var sections: [EvalSectionSummary]

    /// The adapter as one line: its folder and the xxh64 of its weights, or that there is none.
    public var adapterText: String {
        guard let path = model.adapterPath else { return "none (the model alone)" }
        return "\(path) (adapter_model.safetensors xxh64 \(model.adapterChecksum ?? "?"))"
    }
}

/// Everything the run report shows, read from a run directory's stage
/// outputs; `html()` is the page, `summaryLines()` the one-screen summary.
public struct RunReport: Sendable {
    public var directory: String
    public var stages: [StageSummary] = []
    /// Dedup's clusters by size: (records in the cluster, clusters of that size).
    public var clusterSizes: [(size: Int, clusters: Int)] = []
    public var filterGroups: [FilterGroupSummary] = []
    public var pretrain: TrainingCurve?
    public var finetune: TrainingCurve?
    /// Every eval folder found, `eval` first, then `eval-*` by name.
    public var evals: [EvalRunSummary] = []
    /// The sections of every eval folder, in order.
    public var evalSections: [EvalSectionSummary] { evals.flatMap(\.sections) }

    public func stage(_ name: String) -> StageSummary? { stages.first { $0.name == name } }

    /// Reads every stage's outputs that exist under `directory`. An absent
    /// stage is noted as missing; an output that is there but malformed is
    /// an error naming its file and field.
    public static func load(directory: String, layout: RunLayout = RunLayout()) throws -> RunReport {
        guard FileSystem.isDirectory(directory) else {
            throw RunReportError(file: directory, field: "", reason: "not a directory")
        }
        var report = RunReport(directory: directory)
        func path(_ relative: String) -> String { directory + "/" + relative }
        func absent(_ name: String, _ output: String, _ file: String) -> StageSummary {
            var s = StageSummary(name: name, output: output)
            s.missing = "\(file) not found"
            return s
        }

        // prepare: summary.json
        let prepareSummary = path(layout.prepare) + "/summary.json"
        if FileSystem.exists(prepareSummary) {
            let doc = try JSONDocument(file: prepareSummary)
            var s = StageSummary(name: "prepare", output: path(layout.prepare))
            let patents = try doc.int("patents")
            s.recordsIn = try doc.int("records_in")
            s.rejected = try doc.int("rejects")
            s.recordsOut = try doc.int("fragments")
            s.unit = "fragments"
            s.removed = 0
            s.check = "records \(s.recordsIn!) = patents \(patents) + rejected \(s.rejected!)"
            s.balanced = s.recordsIn! == patents + s.rejected!
            s.figures = [("patents", "\(patents)"), ("steps", "\(try doc.int("steps"))"),
                         ("estimated tokens", "\(try doc.int("estimated_tokens"))")]
            report.stages.append(s)
        } else {
            report.stages.append(absent("prepare", path(layout.prepare), prepareSummary))
        }

        // dedup: report.json
        let dedupReport = path(layout.dedup) + "/report.json"
        if FileSystem.exists(dedupReport) {
            let doc = try JSONDocument(file: dedupReport)
            var s = StageSummary(name: "dedup", output: path(layout.dedup))
            let lines = try doc.int("lines"), blank = try doc.int("blank_lines"), records = try doc.int("records")
            s.recordsIn = lines - blank
            s.rejected = try doc.int("rejected")
            s.removed = try doc.int("removed")
            s.recordsOut = try doc.int("kept")
            s.check = "records \(s.recordsIn!) = kept \(s.recordsOut!) + removed \(s.removed!) + rejected \(s.rejected!)"
            s.balanced = s.recordsIn! == records + s.rejected! && records == s.recordsOut! + s.removed!
            s.figures = [("exact duplicates removed", "\(try doc.int("removed_exact"))"),
                         ("near duplicates removed", "\(try doc.int("removed_near"))"),
                         ("clusters", "\(try doc.int("clusters"))"), ("largest cluster", "\(try doc.int("largest_cluster"))")]
            if let upper = try doc.optionalDouble("remaining_duplicate_rate.upper") {
                s.figures.append(("remaining duplicate rate (95% upper bound)", String(format: "%.4f", upper)))
            }
            for (i, pair) in try doc.array("cluster_sizes").enumerated() {
                guard let a = pair.array, a.count == 2, let size = a[0].int, let count = a[1].int else {
                    throw RunReportError(file: dedupReport, field: "cluster_sizes[\(i)]", reason: "expected [size, clusters], got \(doc.describe(pair))")
                }
                report.clusterSizes.append((size, count))
            }
            report.stages.append(s)
        } else {
            report.stages.append(absent("dedup", path(layout.dedup), dedupReport))
        }

        // filter: report.json
        let filterReport = path(layout.filter) + "/" + FilterJob.outputNames.report
        if FileSystem.exists(filterReport) {
            let doc = try JSONDocument(file: filterReport)
            var s = StageSummary(name: "filter", output: path(layout.filter))
            let lines = try doc.int("lines"), blank = try doc.int("blank_lines"), records = try doc.int("records")
            let high = try doc.int("removed_high"), low = try doc.int("removed_low")
            s.recordsIn = lines - blank
            s.rejected = try doc.int("rejected")
            s.removed = high + low
            s.recordsOut = try doc.int("kept")
            s.check = "records \(s.recordsIn!) = kept \(s.recordsOut!) + removed \(s.removed!) + rejected \(s.rejected!)"
            s.balanced = s.recordsIn! == records + s.rejected! && records == s.recordsOut! + s.removed!
            let before = try doc.double("perplexity_before"), after = try doc.double("perplexity_after")
            s.figures = [("removed high / low", "\(high) / \(low)"),
                         ("corpus perplexity before → after", String(format: "%.4g → %.4g", before, after))]
            for g in try doc.elements("groups") {
                let h = try g.value("log_perplexity_histogram")
                let hd = JSONDocument(file: g.file, root: h, prefix: g.prefix + ".log_perplexity_histogram")
                let counts = try hd.array("counts").enumerated().map { i, c in
                    guard let n = c.int, n >= 0 else { throw hd.problem("counts[\(i)]", "expected a count, got \(hd.describe(c))") }
                    return n
                }
                report.filterGroups.append(FilterGroupSummary(
                    bucket: try g.int("bucket"), lang: try g.string("lang"), tokensFrom: try g.int("tokens_from"),
                    tokensBelow: try g.optionalDouble("tokens_below").map { Int($0) }, count: try g.int("count"),
                    thresholdHigh: try g.optionalDouble("threshold_high"), thresholdLow: try g.optionalDouble("threshold_low"),
                    removedHigh: try g.int("removed_high"), removedLow: try g.int("removed_low"),
                    perplexityBefore: try g.double("perplexity_before"), perplexityAfter: try g.double("perplexity_after"),
                    histogram: SVGPlot.Histogram(lower: try hd.double("from"), upper: try hd.double("to"), counts: counts)))
            }
            s.figures.append(("groups (bucket × language)", "\(report.filterGroups.count)"))
            report.stages.append(s)
        } else {
            report.stages.append(absent("filter", path(layout.filter), filterReport))
        }

        // tokenizer: the trained tokenizer.json, and the encoder's shard manifest.
        let tokensManifest = path(layout.tokens) + "/manifest.json"
        if FileSystem.exists(tokensManifest) {
            let doc = try JSONDocument(file: tokensManifest)
            var s = StageSummary(name: "tokenizer", output: path(layout.tokens))
            let lines = try doc.int("lines"), blank = try doc.int("blank_lines")
            s.recordsIn = lines - blank
            s.rejected = try doc.int("rejected")
            s.removed = 0
            s.recordsOut = try doc.int("documents")
            s.unit = "documents"
            s.check = "records \(s.recordsIn!) = documents \(s.recordsOut!) + rejected \(s.rejected!)"
            s.balanced = s.recordsIn! == s.recordsOut! + s.rejected!
            s.figures = [("vocabulary", "\(try doc.int("vocab_size"))"), ("tokens", "\(try doc.int("tokens"))")]
            if let languages = doc.optional("languages")?.members {
                for (lang, _) in languages where try doc.int("languages.\(lang).documents") > 0 {
                    s.figures.append(("tokens per character (\(lang))", String(format: "%.4f", try doc.double("languages.\(lang).tokens_per_character"))))
                }
            }
            if FileSystem.exists(path(layout.tokenizer)) { s.figures.append(("tokenizer", path(layout.tokenizer))) }
            report.stages.append(s)
        } else {
            report.stages.append(absent("tokenizer", path(layout.tokens), tokensManifest))
        }

        // pretrain and finetune: metrics.jsonl
        for (name, folder) in [("pretrain", layout.pretrain), ("finetune", layout.finetune)] {
            let metrics = path(folder) + "/" + RunDirectory.metricsFile
            guard FileSystem.exists(metrics) else {
                report.stages.append(absent(name, path(folder), metrics))
                continue
            }
            let curve = try TrainingCurve.read(metrics)
            var s = StageSummary(name: name, output: path(folder))
            s.recordsOut = curve.steps.filter { $0.loss != nil }.count
            s.unit = "steps"
            s.figures = []
            if let loss = curve.lastTrainLoss { s.figures.append(("last train loss", String(format: "%.4f", loss))) }
            let heldOut = curve.heldOut
            if !heldOut.isEmpty {
                s.figures.append(("held-out perplexity (at step)", heldOut.map { String(format: "%.4g (%d)", $0.perplexity, $0.step) }.joined(separator: " → ")))
            }
            let skipped = curve.steps.filter { $0.skipped == true }.count
            if skipped > 0 { s.figures.append(("skipped steps", "\(skipped)")) }
            if !curve.events.isEmpty {
                s.figures.append(("events", Dictionary(grouping: curve.events, by: \.name).sorted { $0.key < $1.key }
                    .map { "\($0.value.count) \($0.key)" }.joined(separator: ", ")))
            }
            if name == "pretrain" { report.pretrain = curve } else { report.finetune = curve }
            report.stages.append(s)
        }

        // eval: report.json (sections ppl, mc, json; whichever exist) in
        // `eval` and in any `eval-*` folder (another model or adapter: a
        // report covers one model).
        let others = ((try? FileSystem.list(directory)) ?? []).filter { $0.hasPrefix(layout.eval + "-") && FileSystem.isDirectory(path($0)) }.sorted()
        if !FileSystem.exists(path(layout.eval) + "/" + EvalReport.fileName) {
            report.stages.append(absent("eval", path(layout.eval), path(layout.eval) + "/" + EvalReport.fileName))
        }
        for name in [layout.eval] + others {
            let evalReport = path(name) + "/" + EvalReport.fileName
            guard FileSystem.exists(evalReport) else { continue }
            // EvalReport checks the format, version and completion marker.
            let doc = JSONDocument(file: evalReport, root: try EvalReport.load(directory: path(name)))
            var s = StageSummary(name: name, output: path(name))
            let model = try EvalModelInfo(json: try doc.value("model"), file: evalReport)
            var run = EvalRunSummary(name: name, directory: path(name), model: model, sections: [])
            s.figures.append(("model", model.path))
            s.figures.append(("adapter", run.adapterText))
            guard let sections = try doc.value("sections").members else {
                throw doc.problem("sections", "expected an object of sections, got \(doc.describe(try doc.value("sections")))")
            }
            for (kind, section) in sections {
                let sd = JSONDocument(file: evalReport, root: section, prefix: "sections.\(kind)")
                let counts = try sd.value("counts")
                guard let countMembers = counts.members else { throw sd.problem("counts", "expected an object, got \(sd.describe(counts))") }
                run.sections.append(EvalSectionSummary(
                    kind: kind, counts: countMembers.map { ($0.0, $0.1.string ?? $0.1.text()) },
                    results: flatten(try sd.value("results"))))
                s.figures.append((kind, headline(run.sections.last!.results).map { "\($0.name) \($0.value)" }.joined(separator: ", ")))
            }
            report.evals.append(run)
            report.stages.append(s)
        }

        guard report.stages.contains(where: { $0.missing == nil }) else {
            throw RunReportError(file: directory, field: "", reason: "no stage outputs found (is this a run directory of scripts/run-sample.sh?)")
        }
        return report
    }

    /// The results an evaluation's summary line shows, at most four: its
    /// loss and perplexity, accuracies and validity rates (for JSON, each
    /// decoding mode's), else the first four.
    static func headline(_ results: [(name: String, value: String)]) -> [(name: String, value: String)] {
        let keys = ["loss", "perplexity", "accuracy_micro", "accuracy_macro", "json_valid_rate", "schema_valid_rate"]
        let picked = results.filter { r in keys.contains { r.name == $0 || r.name.hasSuffix("." + $0) } }
        return Array((picked.isEmpty ? results : picked).prefix(4))
    }

    /// A JSON value's scalar leaves as `a.b: value` rows (lists of scalars
    /// joined; lists of objects by index).
    static func flatten(_ value: JSONValue, prefix: String = "") -> [(name: String, value: String)] {
        switch value {
        case .object(let members):
            return members.flatMap { flatten($0.1, prefix: prefix.isEmpty ? $0.0 : "\(prefix).\($0.0)") }
        case .array(let items) where items.allSatisfy({ $0.members == nil && $0.array == nil }):
            return [(prefix, items.map { $0.string ?? $0.text() }.joined(separator: ", "))]
        case .array(let items):
            return items.enumerated().flatMap { flatten($1, prefix: "\(prefix)[\($0)]") }
        case .string(let s):
            return [(prefix, s)]
        case .number(let text):
            guard let d = Double(text), text.contains(".") || text.contains("e") || text.contains("E") else { return [(prefix, text)] }
            return [(prefix, String(format: "%.4g", d))]
        default:
            return [(prefix, value.text())]
        }
    }
}
