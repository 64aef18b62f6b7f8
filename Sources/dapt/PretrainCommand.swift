import ArgumentParser
import DaptCore
import DaptModel
import DaptTokenizer
import DaptTrain
import Foundation
import Yams

struct PretrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pretrain",
        abstract: "Train a decoder-only LM on token shards (data parallel under mpirun): AdamW, warmup + cosine, fp32/fp16/bf16, checkpoints.",
        discussion: """
        Settings come from the config's pretrain: section (model, data, optimizer, schedule, precision,
        checkpoint, eval, parallel); any of them can be set on the command line with --set, e.g.
        --set optimizer.lr=3e-4 --set data.sequence_length=512. --input is the token shard directory
        (data.shards), --output the run directory (checkpoint.directory). Prints one progress line per step,
        writes metrics.jsonl, checkpoints and loss_curve.svg into checkpoint.directory.
        """)

    @OptionGroup var options: StageOptions

    @Option(parsing: .unconditional, help: "Total optimizer steps (schedule.total_steps).")
    var steps: Int?

    @Option(help: "fp32, fp16 or bf16 (precision.mode).")
    var precision: String?

    @Option(name: .customLong("from"), help: "Start from a Hugging Face model directory (model.from).")
    var from: String?

    @Option(help: "Continue from a checkpoint directory, or the newest checkpoint of a run directory.")
    var resume: String?

    @Option(name: .customLong("stop-after"), parsing: .unconditional, help: "Stop (with a checkpoint) after this many steps in this invocation.")
    var stopAfter: Int?

    @Flag(help: "Replace a run already in the run directory (it is removed before the new run starts).")
    var overwrite = false

    @Flag(name: .customLong("allow-data-change"),
          help: "With --resume: continue although the data seed, shuffling, batch size, held-out fraction or corpus changed (the run then no longer matches an uninterrupted one).")
    var allowDataChange = false

    func run() throws {
        if let stopAfter, stopAfter < 0 {
            throw ConfigError(source: "--stop-after \(stopAfter)", field: "", reason: "must be >= 0, got \(stopAfter)")
        }
        if let from, resume != nil {
            throw ConfigError(source: "--from \(from)", field: "", reason: "cannot be used with --resume: --resume continues a run from its checkpoint (which names the model it started from), --from starts a new run from a model")
        }
        if allowDataChange, resume == nil {
            throw ConfigError(source: ResumeCheck.overrideOption, field: "", reason: "only applies with --resume (it accepts a resumed run's changed data settings)")
        }
        if let resume, !FileSystem.exists(resume) {
            throw ConfigError(source: "--resume \(resume)", field: "", reason: "no such file or directory")
        }
        var shortcuts = Overrides()
        shortcuts.add("data.shards", try options.input.single(checked: false), "--input")
        shortcuts.add("checkpoint.directory", options.output.output, "--output")
        shortcuts.add("schedule.total_steps", steps, "--steps")
        shortcuts.add("precision.mode", precision, "--precision")
        shortcuts.add("model.from", from, "--from")
        // Without a config, a resumed run continues with the settings saved in its checkpoint.
        var saved: DaptConfig.Document?
        if let resume, options.config.config == nil {
            let settings = try PretrainRun.savedConfig(checkpoint: resume)
            saved = DaptConfig.Document(section: "pretrain", yaml: try YAMLEncoder().encode(settings), origin: "--resume \(resume)")
        }
        let daptConfig = try DaptConfig.load(options.config, section: "pretrain", shortcuts: shortcuts, instead: saved) { config in
            let pretrain = config.pretrain
            if pretrain.data.shards.isEmpty {
                throw ConfigError(field: "pretrain.data.shards", reason: "no token shard directory given (set it in the config or with --input)")
            }
            try Check.exists(pretrain.data.shards, "pretrain.data.shards")
        }
        let resume = self.resume, stopAfter = self.stopAfter, overwrite = self.overwrite, allowDataChange = self.allowDataChange
        try Runtime.run(cluster: daptConfig.cluster) { ctx in
            let options = PretrainOptions(resume: resume, stopAfter: stopAfter, overwrite: overwrite, allowDataChange: allowDataChange)
            try PretrainRun.run(config: daptConfig.pretrain, options: options, world: ctx.communicator, sink: ctx.sink)
        }
    }
}
