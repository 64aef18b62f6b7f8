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
        (with ppl, bucket, reason), rejects.jsonl, report.json and, with --scores, scores.jsonl. \
        Run under `mpirun -np N` to share the scoring; the output is the same for any N.
        """)

    @Option(name: .customLong("input"), help: "Input JSONL file (repeatable), read in this order as one corpus.")
    var inputs: [String] = []

    @Option(help: "Output directory.")
    var output: String

    @Option(help: "Reference model: a dapt checkpoint, run directory or Hugging Face Llama directory with tokenizer.json.")
    var model: String

    @Option(help: "YAML config; its filter: and cluster: sections apply.")
    var config: String?

    @Option(name: .customLong("high-quantile"), help: "Remove records above this quantile of their bucket's perplexity (filter.high_quantile).")
    var highQuantile: Double?

    @Option(name: .customLong("low-quantile"), help: "Remove records below this quantile (filter.low_quantile).")
    var lowQuantile: Double?

    @Option(help: "Tokens per scored sequence (filter.window).")
    var window: Int?

    @Flag(help: "Also write scores.jsonl (filter.write_scores).")
    var scores = false

    @Flag(help: "Stop at the first bad record.")
    var strict = false

    func run() throws {
        var config = try loadConfig(config)
        if let highQuantile { config.filter.cut.highQuantile = highQuantile }
        if let lowQuantile { config.filter.cut.lowQuantile = lowQuantile }
        if let window { config.filter.window = window }
        if scores { config.filter.writeScores = true }
        if strict { config.filter.strict = true }
        do { try DaptConfig.validate(config.filter, "filter") } catch let error as ConfigError {
            Console.error(error.description)
            throw ExitCode(2)
        }
        guard !inputs.isEmpty else {
            Console.error("--input: give at least one JSONL file")
            throw ExitCode(64)
        }
        for path in inputs where !FileSystem.exists(path) {
            Console.error("\(path): no such file")
            throw ExitCode(2)
        }
        let request = FilterRequest(inputs: inputs, output: output, model: model, config: config.filter)
        try Runtime.run(cluster: config.cluster) { ctx in
            let summary = try FilterJob(request: request, communicator: ctx.communicator, sink: ctx.sink).run()
            ctx.say(summary.text)
        }
    }
}
