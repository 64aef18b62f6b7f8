import DaptCore
import Foundation

/// report.html: per group a histogram of log-perplexity with the cut lines
/// (inline SVG), and the records nearest each cut on both sides, to check
/// by hand that the cut falls between noise and text.
public enum FilterReportPage {
    static let perSide = 3
    static let bins = 30

    /// Records worth showing: per group and cut, the `perSide` removed ones
    /// nearest the cut and the `perSide` kept ones nearest it.
    static func samples(_ scored: [ScoredRecord], _ d: FilterDecisions) -> Set<Int> {
        var chosen = Set<Int>()
        for g in d.groups {
            let sorted = g.members.sorted { (scored[$0].perplexity, $0) < (scored[$1].perplexity, $1) }
            if let h = g.thresholds.high {
                chosen.formUnion(sorted.filter { scored[$0].perplexity > h }.prefix(perSide))
                chosen.formUnion(sorted.filter { scored[$0].perplexity <= h }.suffix(perSide))
            }
            if let l = g.thresholds.low {
                chosen.formUnion(sorted.filter { scored[$0].perplexity < l }.suffix(perSide))
                chosen.formUnion(sorted.filter { scored[$0].perplexity >= l }.prefix(perSide))
            }
        }
        return chosen
    }

    /// A group's log-perplexity histogram, spanning its cuts too: drawn in
    /// report.html and written to report.json for other pages to draw.
    static func logPerplexityHistogram(_ ppl: [Double], high: Double?, low: Double?) -> SVGPlot.Histogram {
        SVGPlot.Histogram(values: ppl.map { Foundation.log($0) }, bins: bins,
                          including: [high, low].compactMap { $0 }.filter { $0 > 0 }.map { Foundation.log($0) })
    }

    /// The cut lines on a log-perplexity axis.
    public static func cutMarkers(high: Double?, low: Double?) -> [SVGPlot.Marker] {
        [(high, "#c0392b", "high"), (low, "#d68910", "low")].compactMap { t, colour, name in
            guard let t, t > 0 else { return nil }
            return SVGPlot.Marker(x: Foundation.log(t), label: "\(name) cut: ppl \(FilterJob.decimal(t))", colour: colour)
        }
    }

    static func histogram(_ ppl: [Double], high: Double?, low: Double?) -> String {
        SVGPlot.histogram(logPerplexityHistogram(ppl, high: high, low: low), markers: cutMarkers(high: high, low: low), axis: "ln ppl")
    }

    static func html(_ scored: [ScoredRecord], _ d: FilterDecisions, texts: [Int: String], places: [Int: String], summary: FilterSummary) -> String {
        var s = "<!doctype html><html><head><meta charset=\"utf-8\"><title>dapt filter report</title><style>"
        s += "body{font-family:sans-serif;max-width:60em;margin:1em auto}td,th{padding:2px 6px;text-align:left;vertical-align:top}"
        s += ".removed{color:#c0392b}.kept{color:#1e8449}td.text{font-family:monospace;font-size:90%;word-break:break-all}</style></head><body>"
        s += "<h1>dapt filter</h1><p>\(summary.lines - summary.blankLines) records in = \(summary.kept) kept + \(summary.removedHigh + summary.removedLow) removed "
        s += "(\(summary.removedHigh) high, \(summary.removedLow) low) + \(summary.rejected) rejected. Corpus perplexity "
        s += "\(FilterJob.decimal(summary.perplexityBefore)) before, \(FilterJob.decimal(summary.perplexityAfter)) after.</p>"
        for g in d.groups {
            let range = d.buckets.range(of: g.bucket)
            let ppl = g.members.map { scored[$0].perplexity }
            s += "<h2>bucket \(g.bucket): \(range.lower)" + (range.upper.map { "–\($0 - 1)" } ?? "+") + " tokens"
            s += g.lang.isEmpty ? "" : ", lang \(SVGPlot.escape(g.lang))"
            s += " (\(g.members.count) records)</h2>"
            s += "<p>cuts: high " + (g.thresholds.high.map(FilterJob.decimal) ?? "none") + ", low " + (g.thresholds.low.map(FilterJob.decimal) ?? "none") + "</p>"
            s += histogram(ppl, high: g.thresholds.high, low: g.thresholds.low)
            let shown = g.members.filter { texts[$0] != nil }.sorted { (scored[$0].perplexity, $0) > (scored[$1].perplexity, $1) }
            guard !shown.isEmpty else { continue }
            s += "<table><tr><th>ppl</th><th></th><th>record</th><th>text</th></tr>"
            for i in shown {
                let reason = d.reasons[i]
                s += "<tr class=\"\(reason == nil ? "kept" : "removed")\"><td>\(FilterJob.decimal(scored[i].perplexity))</td>"
                s += "<td>\(reason.map { "removed (\($0.rawValue))" } ?? "kept")</td><td>\(SVGPlot.escape(places[i] ?? ""))</td>"
                s += "<td class=\"text\">\(SVGPlot.escape(texts[i]!))</td></tr>"
            }
            s += "</table>"
        }
        return s + "</body></html>\n"
    }
}
