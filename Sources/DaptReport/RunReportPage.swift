import DaptCore
import DaptFilter
import DaptTrain
import Foundation

extension RunReport {
    /// The report as one self-contained HTML page (inline SVG, no scripts):
    /// stage counts, the duplicate cluster sizes, the filter's perplexity
    /// histograms with their cuts, loss curves with events marked, and the
    /// evaluation tables. Parts whose stage did not run are noted as missing.
    public func html() -> String {
        func e(_ s: String) -> String { SVGPlot.escape(s) }
        func count(_ n: Int?) -> String { n.map(String.init) ?? "" }
        var s = "<!doctype html><html><head><meta charset=\"utf-8\"><title>dapt run report: \(e(directory))</title><style>"
        s += "body{font-family:sans-serif;max-width:62em;margin:1em auto}td,th{padding:2px 8px;text-align:left;vertical-align:top}"
        s += "td.n{text-align:right}.bad{color:#c0392b;font-weight:bold}.ok{color:#1e8449}.missing{color:#888}</style></head><body>"
        s += "<h1>dapt run report</h1><p>Run directory <code>\(e(directory))</code>.</p>"

        s += "<h2 id=\"stages\">Stages</h2><table><tr><th>stage</th><th>in</th><th>out</th><th>removed</th><th>rejected</th><th>check</th><th>outputs</th></tr>"
        for st in stages {
            if let missing = st.missing {
                s += "<tr class=\"missing\"><td>\(e(st.name))</td><td colspan=\"5\">missing: \(e(missing))</td><td><code>\(e(st.output))</code></td></tr>"
                continue
            }
            let check = st.balanced.map { $0 ? "<span class=\"ok\">ok</span>: " : "<span class=\"bad\">MISMATCH</span>: " } ?? ""
            s += "<tr><td>\(e(st.name))</td><td class=\"n\">\(count(st.recordsIn))</td><td class=\"n\">\(count(st.recordsOut)) \(e(st.unit))</td>"
            s += "<td class=\"n\">\(count(st.removed))</td><td class=\"n\">\(count(st.rejected))</td><td>\(check)\(e(st.check ?? ""))</td>"
            s += "<td><code>\(e(st.output))</code></td></tr>"
        }
        s += "</table><h3>Key figures</h3><table>"
        for st in stages where st.missing == nil {
            for (i, f) in st.figures.enumerated() {
                s += "<tr><td>\(i == 0 ? e(st.name) : "")</td><td>\(e(f.name))</td><td>\(e(f.value))</td></tr>"
            }
        }
        s += "</table>"

        s += "<h2 id=\"dedup\">Duplicates</h2>"
        if stage("dedup")?.missing != nil {
            s += "<p class=\"missing\">dedup did not run: no duplicate histogram.</p>"
        } else if clusterSizes.isEmpty {
            s += "<p>No duplicate clusters.</p>"
        } else {
            s += "<p>Duplicate clusters by size (records in the cluster); one record of each is kept.</p>"
            s += duplicatePlot()
        }

        s += "<h2 id=\"filter\">Perplexity filter</h2>"
        if stage("filter")?.missing != nil {
            s += "<p class=\"missing\">filter did not run: no perplexity histograms.</p>"
        }
        for g in filterGroups {
            s += "<h3>bucket \(g.bucket): \(g.tokensFrom)" + (g.tokensBelow.map { "–\($0 - 1)" } ?? "+") + " tokens"
            s += (g.lang.isEmpty ? "" : ", lang \(e(g.lang))") + " (\(g.count) records)</h3>"
            s += "<p>cuts: high " + (g.thresholdHigh.map(FilterJob.decimal) ?? "none") + " (\(g.removedHigh) removed), low "
            s += (g.thresholdLow.map(FilterJob.decimal) ?? "none") + " (\(g.removedLow) removed); perplexity "
            s += "\(FilterJob.decimal(g.perplexityBefore)) before, \(FilterJob.decimal(g.perplexityAfter)) after</p>"
            s += filterPlot(g)
        }

        for (name, curve) in [("pretrain", pretrain), ("finetune", finetune)] {
            s += "<h2 id=\"\(name)\">\(name) loss</h2>"
            guard let curve else {
                s += "<p class=\"missing\">\(name) did not run: no loss curve.</p>"
                continue
            }
            s += lossPlot(name, curve)
            if curve.events.isEmpty {
                s += "<p>No events (rollbacks, curriculum changes) in <code>\(e(curve.file))</code>.</p>"
            } else {
                s += "<table><tr><th>step</th><th>event</th><th>details</th></tr>"
                for ev in curve.events { s += "<tr><td class=\"n\">\(ev.step)</td><td>\(e(ev.name))</td><td>\(e(ev.details))</td></tr>" }
                s += "</table>"
            }
        }

        s += "<h2 id=\"eval\">Evaluation</h2>"
        if stage("eval")?.missing != nil {
            s += "<p class=\"missing\">eval wrote no report.json: no evaluation table.</p>"
        }
        for run in evals {
            // Which model and which adapter: base and base + adapter are different models.
            s += "<p><code>\(e(run.name))</code>: model <code>\(e(run.model.path))</code> (weights xxh64 \(e(run.model.weightsChecksum))), adapter "
                + (run.model.adapterPath.map { "<code>\(e($0))</code> (adapter_model.safetensors xxh64 \(e(run.model.adapterChecksum ?? "?")))" } ?? "none (the model alone)")
                + ".</p>"
            for section in run.sections {
                s += "<h3>\(e(section.kind))</h3><table>"
                for (n, v) in section.counts { s += "<tr><td>\(e(n))</td><td class=\"n\">\(e(v))</td></tr>" }
                for (n, v) in section.results { s += "<tr><td>\(e(n))</td><td>\(e(v))</td></tr>" }
                s += "</table>"
            }
        }
        return s + "</body></html>\n"
    }

    func duplicatePlot() -> String {
        SVGPlot.categories(clusterSizes.map { (String($0.size), $0.clusters) }, axis: "cluster size")
    }

    func filterPlot(_ g: FilterGroupSummary) -> String {
        SVGPlot.histogram(g.histogram, markers: FilterReportPage.cutMarkers(high: g.thresholdHigh, low: g.thresholdLow), axis: "ln ppl")
    }

    func lossPlot(_ name: String, _ curve: TrainingCurve) -> String {
        lossCurveSVG(curve.steps, events: curve.markers, title: "dapt \(name)")
    }

    /// The page's plots as standalone SVG files, by file name:
    /// `duplicates.svg`, `filter-bucket<B>[-<lang>].svg`, `<stage>-loss.svg`.
    public func plots() -> [(file: String, svg: String)] {
        var out: [(String, String)] = []
        if !clusterSizes.isEmpty { out.append(("duplicates.svg", duplicatePlot())) }
        for g in filterGroups { out.append(("filter-bucket\(g.bucket)" + (g.lang.isEmpty ? "" : "-\(g.lang)") + ".svg", filterPlot(g))) }
        if let pretrain { out.append(("pretrain-loss.svg", lossPlot("pretrain", pretrain))) }
        if let finetune { out.append(("finetune-loss.svg", lossPlot("finetune", finetune))) }
        return out
    }

    /// Writes the page to `path` (replaced as a whole: written beside it, then renamed).
    public func writePage(to path: String) throws {
        let writer = try FileWriter(path: path, atomic: true)
        try writer.write(html())
        try writer.commit()
    }

    /// The one-screen summary: a line per stage (counts, check, where its
    /// outputs are) and its key figures indented under it.
    public func summaryLines() -> [String] {
        var lines: [String] = []
        for st in stages {
            let name = st.name.padding(toLength: 10, withPad: " ", startingAt: 0)
            if let missing = st.missing {
                lines.append("\(name) not run (\(missing))")
                continue
            }
            var counts: [String] = []
            if let i = st.recordsIn { counts.append("\(i) in") }
            if let o = st.recordsOut { counts.append("\(o) \(st.unit) out") }
            if let r = st.removed, r > 0 { counts.append("\(r) removed") }
            if let r = st.rejected { counts.append("\(r) rejected") }
            let check = st.balanced.map { $0 ? ", counts ok" : ", COUNTS DO NOT ADD UP: \(st.check ?? "")" } ?? ""
            lines.append("\(name) \(counts.joined(separator: ", "))\(check) → \(st.output)")
            for f in st.figures { lines.append("           \(f.name): \(f.value)") }
        }
        return lines
    }
}
