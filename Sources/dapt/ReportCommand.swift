import ArgumentParser
import DaptCore
import DaptReport
import DaptTrain
import Foundation

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Report on runs: a run directory's page and summary (the default), or training runs compared.",
        subcommands: [Page.self, Compare.self],
        defaultSubcommand: Page.self)

    struct Page: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "page",
            abstract: "Report on a run directory (as scripts/run-sample.sh writes): one HTML page and a one-screen summary.",
            discussion: """
            Reads each stage's own outputs under --run (prepare/summary.json, dedup/report.json, filter/report.json, \
            tokens/manifest.json, pretrain/metrics.jsonl, finetune/metrics.jsonl, eval/report.json), prints a line per \
            stage with its counts and key figures, and with --output writes the page: stage counts, the duplicate and \
            perplexity histograms, loss curves with events marked, the evaluation tables. A stage whose outputs are \
            absent is reported as not run; an output that is malformed is an error naming its file and field.
            """)

        @Option(name: .customLong("run"), help: ArgumentHelp("The run directory.", valueName: "dir"))
        var runDirectory: String

        @OptionGroup var output: OutputOptions

        @Option(help: ArgumentHelp("Also write each plot as its own SVG file into this folder.", valueName: "dir"))
        var plots: String?

        func run() throws {
            try Runtime.work {
                let report = try RunReport.load(directory: runDirectory)
                if let path = output.output { try report.writePage(to: path) }
                if let plots {
                    try FileSystem.makeDirectories(plots)
                    for (file, svg) in report.plots() { try writeText(svg, to: plots + "/" + file) }
                }
                for line in report.summaryLines() { Console.out(line) }
                if let path = output.output { Console.out("report     \(path)") }
            }
        }
    }

    struct Compare: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Training runs side by side: loss spikes by pretrain's detector (median + k·MAD) over each run's metrics.jsonl, last losses, one plot.",
            discussion: "Prints a Markdown table, a row per run. The detector's settings are pretrain's spikes: section defaults unless set with --window, --warmup, -k, --consecutive.")

        @Option(name: .customLong("run"), help: ArgumentHelp("NAME=DIR: a pretrain run directory and its name in the table (repeatable).", valueName: "name=dir"))
        var runs: [String] = []

        @Option(help: ArgumentHelp("Write the plot of the training losses here (SVG).", valueName: "file"))
        var plot: String?

        @Option(help: "Title of the plot.")
        var title = "training loss"

        @Option(help: "Detector window (spikes.window).") var window: Int?
        @Option(help: "Losses needed before a spike can count (spikes.warmup).") var warmup: Int?
        @Option(name: .customShort("k"), help: "Deviations above the median (spikes.k).") var k: Double?
        @Option(help: "Suspicious steps in a row that make a spike (spikes.consecutive).") var consecutive: Int?

        func validate() throws {
            if runs.isEmpty { throw ValidationError("--run NAME=DIR is required") }
            for r in runs where !r.contains("=") { throw ValidationError("--run: expected NAME=DIR, got \(r)") }
        }

        func run() throws {
            var detector = PretrainConfig.Spikes()
            if let window { detector.window = window }
            if let warmup { detector.warmup = warmup }
            if let k { detector.k = k }
            if let consecutive { detector.consecutive = consecutive }
            try detector.validate(checkpointEvery: 0)
            let named = runs.map { r -> (name: String, directory: String) in
                let i = r.firstIndex(of: "=")!
                return (String(r[..<i]), String(r[r.index(after: i)...]))
            }
            try Runtime.work {
                let comparison = try RunComparison.load(named, detector: detector)
                if let plot { try writeText(comparison.plot(title: title), to: plot) }
                for line in comparison.table() { Console.out(line) }
            }
        }
    }
}

/// Writes `text` to `path` as a whole (beside it, then renamed).
private func writeText(_ text: String, to path: String) throws {
    let writer = try FileWriter(path: path, atomic: true)
    try writer.write(text)
    try writer.commit()
}
