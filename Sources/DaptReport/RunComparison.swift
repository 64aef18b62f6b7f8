import DaptCore
import DaptTrain
import Foundation

/// Training runs side by side, from their metrics.jsonl: loss spikes as
/// pretrain's own detector (`SpikeDetector`, median + k·MAD over a window)
/// finds them in the recorded losses, last losses, and one plot of the
/// training losses with the spikes marked.
public struct RunComparison: Sendable {
    public struct Run: Sendable {
        public var name: String
        public var curve: TrainingCurve
        /// The spikes the detector finds in the run's losses, in step order.
        public var spikes: [Spike]
        /// Spike and rollback events the run itself wrote (when its detector was on).
        public var recordedEvents: Int
        public var steps: Int { curve.steps.filter { $0.loss != nil }.count }
        public var lastHeldOut: StepMetrics? { curve.steps.last { $0.evalLoss != nil } }
    }

    public var runs: [Run]
    public var detector: PretrainConfig.Spikes

    /// Reads `name=directory` runs (each a pretrain run directory).
    public static func load(_ runs: [(name: String, directory: String)], detector: PretrainConfig.Spikes = .init()) throws -> RunComparison {
        RunComparison(runs: try runs.map { name, directory in
            let curve = try TrainingCurve.read(directory + "/" + RunDirectory.metricsFile)
            return Run(name: name, curve: curve, spikes: spikes(in: curve.steps, detector: detector),
                       recordedEvents: curve.events.count)
        }, detector: detector)
    }

    /// Runs the detector over the recorded steps, in order, as it runs
    /// during training (a spike's losses are not added to its window).
    public static func spikes(in steps: [StepMetrics], detector config: PretrainConfig.Spikes) -> [Spike] {
        let detector = SpikeDetector(config: config)
        var history = SpikeHistory()
        var found: [Spike] = []
        for m in steps where m.loss != nil || m.skipped == true {
            if let spike = detector.observe(step: m.step, loss: m.loss, gradientsFinite: m.skipped != true, history: &history) {
                found.append(spike)
            }
        }
        return found
    }

    /// A Markdown table: a row per run.
    public func table() -> [String] {
        var lines = ["| run | steps | spikes (first step) | last train loss | final held-out loss | final held-out ppl |",
                     "| --- | ---: | --- | ---: | ---: | ---: |"]
        for r in runs {
            let spikes = r.spikes.isEmpty ? "0" : "\(r.spikes.count) (" + r.spikes.map { "\($0.firstStep)" }.joined(separator: ", ") + ")"
            let last = r.curve.lastTrainLoss.map { String(format: "%.4f", $0) } ?? "–"
            let held = r.lastHeldOut
            lines.append("| \(r.name) | \(r.steps) | \(spikes) | \(last) | " + (held?.evalLoss.map { String(format: "%.4f", $0) } ?? "–")
                         + " | " + (held?.evalPerplexity.map { String(format: "%.2f", $0) } ?? "–") + " |")
        }
        return lines
    }

    /// The training losses of every run on one plot, spikes as vertical lines.
    public func plot(title: String) -> String {
        let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
        var series: [SVGPlot.Series] = [], markers: [SVGPlot.Marker] = []
        for (i, r) in runs.enumerated() {
            let colour = colours[i % colours.count]
            series.append(SVGPlot.Series(name: "\(r.name) train loss", colour: colour, style: .line, points: r.curve.steps.compactMap { m in
                guard m.skipped != true, let loss = m.loss else { return nil }
                return (Double(m.step), loss)
            }))
            series.append(SVGPlot.Series(name: "\(r.name) held-out loss", colour: colour, style: .dots,
                                         points: r.curve.steps.compactMap { m in m.evalLoss.map { (Double(m.step), $0) } }))
            markers += r.spikes.map { SVGPlot.Marker(x: Double($0.firstStep), label: "\(r.name): spike at step \($0.firstStep)", colour: colour) }
        }
        return SVGPlot.lineChart(series, markers: markers, title: title, xAxis: "step", yAxis: "loss")
    }
}
