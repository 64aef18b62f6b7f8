import ArgumentParser
import DaptCore
import DaptTrain
import Foundation
import Yams

struct FinetuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "LoRA fine-tuning on chat JSONL (data parallel under mpirun); adapters in PEFT's format.",
        subcommands: [Train.self, Merge.self],
        defaultSubcommand: Train.self
    )

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train",
            abstract: "Train LoRA adapters over a frozen base model on JSONL `messages` (the default subcommand).",
            discussion: """
            --model is a dapt checkpoint, a pretrain run directory or a Hugging Face Llama directory with
            tokenizer.json; --input a JSONL file whose records hold `messages` (system / user / assistant),
            rendered by dapt's chat template; the loss is taken on assistant tokens only. --output is the
            run directory: every checkpoint-N in it is a PEFT adapter directory (adapter_config.json,
            adapter_model.safetensors, tokenizer.json, tokenizer_config.json with the chat template) with
            the optimizer state beside it. Settings come from the config's finetune: section (data, lora,
            optimizer, schedule, precision, checkpoint, eval); --set KEY=VALUE sets any of them.
            """)

        @OptionGroup var options: StageOptions

        @Option(help: "Base model: a dapt checkpoint or run directory, or a Hugging Face Llama directory (model).")
        var model: String?

        @Option(parsing: .unconditional, help: "Total optimizer steps (schedule.total_steps).")
        var steps: Int?

        @Option(help: "fp32, fp16 or bf16 (precision.mode).")
        var precision: String?

        @Option(help: "Continue from a finetune checkpoint, or the newest checkpoint of a finetune run directory.")
        var resume: String?

        @Option(name: .customLong("stop-after"), parsing: .unconditional, help: "Stop (with a checkpoint) after this many steps in this invocation.")
        var stopAfter: Int?

        @Flag(help: "Replace a run already in the run directory.")
        var overwrite = false

        func run() throws {
            if let stopAfter, stopAfter < 0 {
                throw ConfigError(source: "--stop-after \(stopAfter)", field: "", reason: "must be >= 0, got \(stopAfter)")
            }
            if let resume, !FileSystem.exists(resume) {
                throw ConfigError(source: "--resume \(resume)", field: "", reason: "no such file or directory")
            }
            var shortcuts = Overrides()
            shortcuts.add("data.train", try options.input.single(checked: false), "--input")
            shortcuts.add("checkpoint.directory", options.output.output, "--output")
            shortcuts.add("model", model, "--model")
            shortcuts.add("schedule.total_steps", steps, "--steps")
            shortcuts.add("precision.mode", precision, "--precision")
            var saved: DaptConfig.Document?
            if let resume, options.config.config == nil {
                let settings = try FinetuneRun.savedConfig(checkpoint: resume)
                saved = DaptConfig.Document(section: "finetune", yaml: try YAMLEncoder().encode(settings), origin: "--resume \(resume)")
            }
            let daptConfig = try DaptConfig.load(options.config, section: "finetune", shortcuts: shortcuts, instead: saved) { config in
                let finetune = config.finetune
                if finetune.model.isEmpty { throw ConfigError(field: "finetune.model", reason: "no base model given (set it in the config or with --model)") }
                if finetune.data.train.isEmpty { throw ConfigError(field: "finetune.data.train", reason: "no training JSONL given (set it in the config or with --input)") }
                try Check.exists(finetune.model, "finetune.model")
                try Check.exists(finetune.data.train, "finetune.data.train")
                if let heldOut = finetune.data.heldOut { try Check.exists(heldOut, "finetune.data.held_out") }
            }
            let options = FinetuneOptions(resume: resume, stopAfter: stopAfter, overwrite: overwrite)
            try Runtime.run(cluster: daptConfig.cluster) { ctx in
                try FinetuneRun.run(config: daptConfig.finetune, options: options, world: ctx.communicator, sink: ctx.sink)
            }
        }
    }

    struct Merge: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "merge",
            abstract: "Write BASE with a LoRA adapter (dapt's or PEFT's) merged into its weights as a Hugging Face model directory.")

        @Option(help: "Base model: a dapt checkpoint or a Hugging Face Llama directory.")
        var model: String

        @Option(help: "Adapter directory (adapter_config.json, adapter_model.safetensors) or a finetune run directory (its newest checkpoint).")
        var adapter: String

        @Option(help: "The merged model's directory (must not exist).")
        var output: String

        func run() throws {
            try Check.exists(model, "--model")
            try Check.exists(adapter, "--adapter")
            let model = self.model, adapter = self.adapter, output = self.output
            try Runtime.run(cluster: DaptConfig().cluster) { ctx in
                try FinetuneRun.merge(model: model, adapter: adapter, output: output, sink: ctx.sink)
            }
        }
    }
}
