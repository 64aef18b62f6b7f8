import ArgumentParser
import DaptCore
import DaptReport
import Foundation

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
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

    func run() throws {
        try Runtime.work {
            let report = try RunReport.load(directory: runDirectory)
            if let path = output.output { try report.writePage(to: path) }
            for line in report.summaryLines() { Console.out(line) }
            if let path = output.output { Console.out("report     \(path)") }
        }
    }
}
