import Foundation

/// report.html: per group a histogram of log-perplexity with the cut lines
/// (inline SVG), and the records nearest each cut on both sides, to check
/// by hand that the cut falls between noise and text.
enum FilterReportPage {
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

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }

    static func histogram(_ ppl: [Double], high: Double?, low: Double?) -> String {
        let logs = ppl.map { Foundation.log($0) }
        var lo = logs.min() ?? 0, hi = logs.max() ?? 1
        for t in [high, low].compactMap({ $0 }) where t > 0 { lo = min(lo, Foundation.log(t)); hi = max(hi, Foundation.log(t)) }
        if hi - lo < 1e-9 { hi = lo + 1 }
        var counts = [Int](repeating: 0, count: bins)
        for x in logs { counts[min(bins - 1, Int((x - lo) / (hi - lo) * Double(bins)))] += 1 }
        let width = 480.0, height = 120.0, top = max(counts.max() ?? 1, 1)
        func x(_ v: Double) -> Double { 20 + (v - lo) / (hi - lo) * width }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"520\" height=\"150\">"
        for (b, c) in counts.enumerated() where c > 0 {
            let h = Double(c) / Double(top) * height
            svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#6a8caf\"><title>%d</title></rect>",
                          20 + Double(b) * width / Double(bins), 10 + height - h, width / Double(bins) - 1, h, c)
        }
        svg += String(format: "<line x1=\"20\" y1=\"130\" x2=\"500\" y2=\"130\" stroke=\"#333\"/>")
        svg += String(format: "<text x=\"20\" y=\"145\" font-size=\"10\">ln ppl %.2f</text><text x=\"440\" y=\"145\" font-size=\"10\">%.2f</text>", lo, hi)
        for (t, colour, name) in [(high, "#c0392b", "high"), (low, "#d68910", "low")] {
            guard let t, t > 0 else { continue }
            svg += String(format: "<line x1=\"%.1f\" y1=\"5\" x2=\"%.1f\" y2=\"130\" stroke=\"%@\" stroke-width=\"2\"><title>%@ cut: ppl %.4f</title></line>",
                          x(Foundation.log(t)), x(Foundation.log(t)), colour, name, t)
        }
        return svg + "</svg>"
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
            s += g.lang.isEmpty ? "" : ", lang \(escape(g.lang))"
            s += " (\(g.members.count) records)</h2>"
            s += "<p>cuts: high " + (g.thresholds.high.map(FilterJob.decimal) ?? "none") + ", low " + (g.thresholds.low.map(FilterJob.decimal) ?? "none") + "</p>"
            s += histogram(ppl, high: g.thresholds.high, low: g.thresholds.low)
            let shown = g.members.filter { texts[$0] != nil }.sorted { (scored[$0].perplexity, $0) > (scored[$1].perplexity, $1) }
            guard !shown.isEmpty else { continue }
            s += "<table><tr><th>ppl</th><th></th><th>record</th><th>text</th></tr>"
            for i in shown {
                let reason = d.reasons[i]
                s += "<tr class=\"\(reason == nil ? "kept" : "removed")\"><td>\(FilterJob.decimal(scored[i].perplexity))</td>"
                s += "<td>\(reason.map { "removed (\($0.rawValue))" } ?? "kept")</td><td>\(escape(places[i] ?? ""))</td>"
                s += "<td class=\"text\">\(escape(texts[i]!))</td></tr>"
            }
            s += "</table>"
        }
        return s + "</body></html>\n"
    }
}
