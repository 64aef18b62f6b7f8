import ArgumentParser
import DaptCore
import DaptFilter

struct FilterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "filter",
        abstract: "Cut the high- and low-perplexity tails of each length bucket under a reference model.",
        discussion: """
        Scores each record's text with the reference model (mean negative log-likelihood per \
        token → perplexity), groups records into length buckets by token count (and by `lang`), \
        and removes those above the high cut (noise) and below the low cut (boilerplate) of \
        their group. Writes kept.jsonl (input lines byte for byte, input order), removed.jsonl \
        (with ppl, bucket, reason), rejects.jsonl, report.json, report.html (histograms with \
        the cuts, records either side of each cut) and, with --scores, scores.jsonl \
        to --output. Each --input is a JSONL file, read in this order as one corpus. Run under \
        `mpirun -np N` to share the scoring; the output is the same for any N.
        """)

    @OptionGroup var options: StageOptions

    @OptionGroup var records: RecordOptions

    @Option(help: ArgumentHelp("Reference model: a dapt checkpoint, run directory or Hugging Face Llama directory, with its tokenizer.json.", valueName: "dir"))
    var model: String

    @Option(name: .customLong("high-quantile"), parsing: .unconditional, help: "Remove records above this quantile of their group's perplexity (high_quantile).")
    var highQuantile: Double?

    @Option(name: .customLong("low-quantile"), parsing: .unconditional, help: "Remove records below this quantile (low_quantile).")
    var lowQuantile: Double?

    @Option(help: "Tokens per scored sequence (window).")
    var window: Int?

    @Flag(name: .customLong("scores"), help: "Also write scores.jsonl (write_scores).")
    var scores = false

    func run() throws {
        var shortcuts = Overrides()
        shortcuts.add("high_quantile", highQuantile, "--high-quantile")
        shortcuts.add("low_quantile", lowQuantile, "--low-quantile")
        shortcuts.add("window", window, "--window")
        if scores { shortcuts.add("write_scores", true, "--scores") }
        shortcuts.add("strict", records.strict, "--strict")
        let config = try DaptConfig.load(options.config, section: "filter", shortcuts: shortcuts)
        let inputs = try options.input.existing()
        guard !inputs.isEmpty else { throw ValidationError("at least one --input is required") }
        guard let output = options.output.output else { throw ValidationError("--output (the output directory) is required") }
        guard FileSystem.isDirectory(model) else {
            throw ConfigError(source: "--model \(model)", field: "", reason: FileSystem.exists(model) ? "not a directory" : "no such directory")
        }
        let request = FilterRequest(inputs: inputs, output: output, model: model, config: config.filter)
        try Runtime.run(cluster: config.cluster) { ctx in
            let summary = try FilterJob(request: request, communicator: ctx.communicator, sink: ctx.sink).run()
            ctx.say(summary.text)
        }
    }
}
