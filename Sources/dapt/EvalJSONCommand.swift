import ArgumentParser
import DaptCore
import DaptGenerate
import DaptTrain
import Foundation

extension EvalCommand {
    struct JSONAnswers: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "json",
            abstract: "JSON validity of a model's answers, generated unconstrained and constrained.",
            discussion: """
            Each --input line is a prompt ({"id", "prompt"} or {"id", "messages"}) with a `reference` \
            answer, or a chat whose last message is the assistant's JSON answer (it becomes the \
            reference). Reports, for unconstrained and constrained generation, the rate of answers \
            that are one JSON value, the rate that fit --json-schema, and the accuracy over the \
            reference's fields. Generation settings come from the config's generate: section \
            (greedy by default). --output DIR: the eval report folder; the json section of its \
            report.json is written, with every answer in json.items.jsonl.
            """)

        @Option(help: ArgumentHelp("A dapt checkpoint, run directory or Hugging Face Llama directory, with its tokenizer.json.", valueName: "dir"))
        var model: String

        @OptionGroup var input: InputOptions

        @OptionGroup var outputOptions: OutputOptions

        @Option(name: .customLong("json-schema"), help: ArgumentHelp("JSON Schema the answers are checked against (and constrained generation follows).", valueName: "file"))
        var schema: String?

        @Option(help: "tokenizer.json (default: the model's).")
        var tokenizer: String?

        @Option(help: ArgumentHelp("A LoRA adapter (PEFT's or dapt finetune's: adapter_config.json, adapter_model.safetensors, or a finetune run directory) merged into the model; the report records it.", valueName: "dir"))
        var adapter: String?

        @Option(name: .customLong("max-new-tokens"), parsing: .unconditional, help: "Tokens per answer at most (max_new_tokens; default 128).")
        var maxNewTokens: Int?

        @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Prompts decoded together (batch_size; default 8).")
        var batchSize: Int?

        @OptionGroup var options: ConfigOptions

        func run() throws {
            var shortcuts = Overrides()
            shortcuts.add("max_new_tokens", maxNewTokens, "--max-new-tokens")
            shortcuts.add("batch_size", batchSize, "--batch-size")
            let config = try DaptConfig.load(options, section: "generate", shortcuts: shortcuts)
            guard let input = try input.single() else { throw ValidationError("--input (a JSONL file of prompts) is required") }
            if let schema, !FileSystem.exists(schema) { throw ConfigError(source: "--json-schema \(schema)", field: "", reason: "no such file") }
            if let adapter, !FileSystem.exists(adapter) { throw ConfigError(source: "--adapter \(adapter)", field: "", reason: "no such directory") }
            var request = JSONEvalRequest(model: model, input: input, tokenizer: tokenizer, schema: schema, adapter: adapter)
            request.generation = config.generate
            let output = outputOptions.output
            try Runtime.run(cluster: config.cluster) { ctx in
                guard ctx.isRoot else { return }
                let (section, modelInfo) = try JSONEvaluation.run(request, sink: ctx.sink)
                for (mode, figures) in section.results.members ?? [] {
                    var line = String(format: "%@: JSON valid %.3f", mode, figures["json_valid_rate"]?.double ?? 0)
                    if let rate = figures["schema_valid_rate"]?.double { line += String(format: "  schema valid %.3f", rate) }
                    line += String(format: "  field accuracy %.3f  (%d answers)", figures["field_accuracy"]?.double ?? 0, figures["records"]?.int ?? 0)
                    ctx.say(line)
                }
                if !section.rejects.isEmpty { ctx.say("\(section.rejects.count) record(s) rejected, e.g. \(section.rejects[0])") }
                if let output {
                    try EvalReport.write(section, model: modelInfo, to: output)
                    ctx.say("report: \(output)/\(EvalReport.fileName)")
                }
            }
        }
    }
}
