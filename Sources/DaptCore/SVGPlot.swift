import Foundation

/// The plots of dapt's pages (filter's report.html, the run report,
/// loss_curve.svg, the recipe report): inline SVG with no script or style
/// sheet, so a page is one self-contained file.
public enum SVGPlot {
    /// Text for HTML or SVG content and attribute values.
    public static func escape(_ s: String) -> String {
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

    /// Counts of values in equal bins from `lower` to `upper`.
    public struct Histogram: Equatable, Sendable {
        public var lower: Double
        public var upper: Double
        public var counts: [Int]

        public init(lower: Double, upper: Double, counts: [Int]) {
            self.lower = lower; self.upper = upper; self.counts = counts
        }

        /// `values` in `bins` equal bins spanning them and every value of
        /// `including` (lines to be drawn on the same axis, such as cuts).
        public init(values: [Double], bins: Int, including: [Double] = []) {
            precondition(bins > 0)
            let span = values + including
            var lo = span.min() ?? 0, hi = span.max() ?? 1
            if hi - lo < 1e-9 { hi = lo + 1 }
            var counts = [Int](repeating: 0, count: bins)
            for x in values { counts[max(0, min(bins - 1, Int((x - lo) / (hi - lo) * Double(bins))))] += 1 }
            self.init(lower: lo, upper: hi, counts: counts)
        }

        /// Where `value` falls on the axis, 0 at `lower` and 1 at `upper`.
        public func fraction(_ value: Double) -> Double { (value - lower) / (upper - lower) }
    }

    /// A vertical line across a plot at `x` (on the plot's own axis), with
    /// its label as a tooltip and, when `caption` is set, printed at the top.
    public struct Marker: Equatable, Sendable {
        public var x: Double
        public var label: String
        public var colour: String
        public var caption: Bool

        public init(x: Double, label: String, colour: String, caption: Bool = false) {
            self.x = x; self.label = label; self.colour = colour; self.caption = caption
        }
    }

    /// A histogram as bars, with the markers drawn on its axis; the ends of
    /// the axis are labelled `axis` lower … upper.
    public static func histogram(_ h: Histogram, markers: [Marker] = [], axis: String) -> String {
        bars(h.counts, ends: (String(format: "\(axis) %.2f", h.lower), String(format: "%.2f", h.upper)),
             markers: markers.map { ($0, h.fraction($0.x)) })
    }

    /// One bar per category, each labelled under it (a few dozen at most).
    public static func categories(_ items: [(label: String, count: Int)], axis: String) -> String {
        bars(items.map(\.count), ends: (axis, ""), markers: [], labels: items.map(\.label))
    }

    static func bars(_ counts: [Int], ends: (String, String), markers: [(Marker, Double)], labels: [String] = []) -> String {
        let width = 480.0, height = 120.0, left = 20.0, top = 10.0
        let highest = max(counts.max() ?? 1, 1), slot = width / Double(max(counts.count, 1))
        let labelRows = labels.isEmpty ? 0.0 : 12.0
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"520\" height=\"\(Int(150 + labelRows))\" font-family=\"sans-serif\">"
        for (b, c) in counts.enumerated() where c > 0 {
            let h = Double(c) / Double(highest) * height
            svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#6a8caf\"><title>%@%d</title></rect>",
                          left + Double(b) * slot, top + height - h, max(slot - 1, 0.5), h,
                          labels.indices.contains(b) ? escape(labels[b]) + ": " : "", c)
        }
        for (b, label) in labels.enumerated() {
            svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"9\" text-anchor=\"middle\">%@</text>",
                          left + (Double(b) + 0.5) * slot, top + height + 11, escape(label))
        }
        let base = top + height
        svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>", left, base, left + width, base)
        svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\">%@</text>", left, base + 15 + labelRows, escape(ends.0))
        svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%@</text>", left + width, base + 15 + labelRows, escape(ends.1))
        svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%d</text>", left + width, top + 8, highest)
        for (m, at) in markers {
            let x = left + at * width
            svg += String(format: "<line class=\"marker\" x1=\"%.1f\" y1=\"5\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%@\" stroke-width=\"2\"><title>%@</title></line>",
                          x, x, base, m.colour, escape(m.label))
        }
        return svg + "</svg>"
    }

    /// A series of (x, y) points: a line, or dots.
    public struct Series: Sendable {
        public enum Style: Sendable { case line, dots }
        public var name: String
        public var colour: String
        public var style: Style
        public var points: [(x: Double, y: Double)]

        public init(name: String, colour: String, style: Style, points: [(x: Double, y: Double)]) {
            self.name = name; self.colour = colour; self.style = style; self.points = points
        }
    }

    /// Series on shared axes with a legend, and markers as dashed vertical
    /// lines (events at a step, say). Non-finite points are left out.
    public static func lineChart(_ series: [Series], markers: [Marker] = [], title: String, xAxis: String, yAxis: String) -> String {
        let width = 720.0, height = 420.0, left = 64.0, right = 20.0, top = 36.0, bottom = 48.0
        let series = series.map { s in
            var s = s
            s.points = s.points.filter { $0.x.isFinite && $0.y.isFinite }
            return s
        }
        let all = series.flatMap(\.points)
        guard !all.isEmpty else {
            return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\"><text x=\"20\" y=\"40\">no data</text></svg>\n"
        }
        let xs = all.map(\.x) + markers.map(\.x).filter(\.isFinite)
        let xMin = xs.min()!, xMax = max(xs.max()!, xMin + 1)
        var yMin = all.map(\.y).min()!, yMax = all.map(\.y).max()!
        if yMax - yMin < 1e-6 { yMin -= 0.5; yMax += 0.5 }
        func px(_ x: Double) -> Double { left + (x - xMin) / (xMax - xMin) * (width - left - right) }
        func py(_ y: Double) -> Double { top + (yMax - y) / (yMax - yMin) * (height - top - bottom) }
        func f(_ v: Double) -> String { String(format: "%.2f", v) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"\(f(width / 2))\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">\(escape(title))</text>\n"
        svg += "<line x1=\"\(f(left))\" y1=\"\(f(height - bottom))\" x2=\"\(f(width - right))\" y2=\"\(f(height - bottom))\" stroke=\"black\"/>\n"
        svg += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(height - bottom))\" stroke=\"black\"/>\n"
        for k in 0...4 {
            let y = yMin + (yMax - yMin) * Double(k) / 4
            svg += "<text x=\"\(f(left - 6))\" y=\"\(f(py(y) + 4))\" text-anchor=\"end\">\(String(format: "%.3g", y))</text>\n"
            let x = xMin + (xMax - xMin) * Double(k) / 4
            svg += "<text x=\"\(f(px(x)))\" y=\"\(f(height - bottom + 16))\" text-anchor=\"middle\">\(Int(x.rounded()))</text>\n"
        }
        svg += "<text x=\"\(f(width / 2))\" y=\"\(f(height - 10))\" text-anchor=\"middle\">\(escape(xAxis))</text>\n"
        svg += "<text x=\"14\" y=\"\(f(height / 2))\" transform=\"rotate(-90 14 \(f(height / 2)))\" text-anchor=\"middle\">\(escape(yAxis))</text>\n"
        for m in markers where m.x.isFinite {
            let x = f(px(m.x))
            svg += "<line class=\"marker\" x1=\"\(x)\" y1=\"\(f(top))\" x2=\"\(x)\" y2=\"\(f(height - bottom))\" stroke=\"\(m.colour)\" stroke-dasharray=\"4 3\"><title>\(escape(m.label))</title></line>\n"
            if m.caption {
                svg += "<text x=\"\(x)\" y=\"\(f(top - 4))\" font-size=\"10\" fill=\"\(m.colour)\" text-anchor=\"middle\">\(escape(m.label))</text>\n"
            }
        }
        var legend = 0.0
        for s in series where !s.points.isEmpty {
            switch s.style {
            case .line:
                svg += "<polyline fill=\"none\" stroke=\"\(s.colour)\" stroke-width=\"1.5\" points=\""
                svg += s.points.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
                svg += "\"/>\n"
            case .dots:
                for p in s.points { svg += "<circle cx=\"\(f(px(p.x)))\" cy=\"\(f(py(p.y)))\" r=\"3.5\" fill=\"\(s.colour)\"/>\n" }
            }
            let symbol = s.style == .line ? "—" : "●"
            svg += "<text x=\"\(f(width - right - 170))\" y=\"\(f(top + 4 + legend))\" fill=\"\(s.colour)\">\(symbol) \(escape(s.name))</text>\n"
            legend += 16
        }
        return svg + "</svg>\n"
    }
}
