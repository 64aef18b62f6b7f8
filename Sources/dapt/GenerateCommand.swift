import ArgumentParser
import DaptCore
import DaptGenerate

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue prompts with a model (KV-cache decoding; greedy or seeded sampling).",
        discussion: """
        Each --input line is {"id": ..., "prompt": "text"}. Writes one line per prompt, in input \
        order, to --output: {"id", "text", "prompt_tokens", "completion_tokens", "finish_reason"} \
        with finish_reason stop (a stop string), length (max new tokens) or eos. With --json or \
        --json-schema the output follows a grammar token by token; when the budget runs out it \
        is closed (closed) where the grammar allows, else marked truncated. Sampling is \
        seeded per record (seed and id), so the output does not depend on batching. Run under \
        `mpirun -np N` to share the batches; the output is the same for any N. Settings come \
        from the config's generate: section; --set KEY=VALUE sets any of its keys.
        """)

    @Option(help: ArgumentHelp("A dapt checkpoint, run directory or Hugging Face Llama directory, with its tokenizer.json.", valueName: "dir"))
    var model: String

    @OptionGroup var input: InputOptions

    @OptionGroup var output: OutputOptions

    @Option(help: "tokenizer.json (default: the model's).")
    var tokenizer: String?

    @Option(help: ArgumentHelp("A LoRA adapter (PEFT's or dapt finetune's: adapter_config.json, adapter_model.safetensors, or a finetune run directory) merged into the model.", valueName: "dir"))
    var adapter: String?

    @Option(parsing: .unconditional, help: "0: greedy; otherwise sample from softmax(logits / temperature) (temperature).")
    var temperature: Double?

    @Option(name: .customLong("top-k"), parsing: .unconditional, help: "Sample among the k most likely tokens, 0: all (top_k).")
    var topK: Int?

    @Option(name: .customLong("top-p"), parsing: .unconditional, help: "Sample among the most likely tokens whose probabilities reach p (top_p).")
    var topP: Double?

    @Option(parsing: .unconditional, help: "Seed of the sampling (seed).")
    var seed: Int?

    @Option(name: .customLong("max-new-tokens"), parsing: .unconditional, help: "Tokens generated per prompt at most (max_new_tokens; default 128).")
    var maxNewTokens: Int?

    @Option(parsing: .unconditionalSingleValue, help: "Text that ends a record, cut from its output (repeatable; stop).")
    var stop: [String] = []

    @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Prompts decoded together (batch_size; default 8).")
    var batchSize: Int?

    @Flag(name: .customLong("add-bos"), inversion: .prefixedNo, help: "Start each prompt with <|bos|> (add_bos).")
    var addBos: Bool?

    @Flag(help: "Constrained decoding: every output is one JSON object.")
    var json = false

    @Option(name: .customLong("json-schema"), help: ArgumentHelp("Constrained decoding: every output is a value this JSON Schema allows.", valueName: "file"))
    var jsonSchema: String?

    @OptionGroup var options: ConfigOptions

    func run() throws {
        var shortcuts = Overrides()
        shortcuts.add("temperature", temperature, "--temperature")
        shortcuts.add("top_k", topK, "--top-k")
        shortcuts.add("top_p", topP, "--top-p")
        shortcuts.add("seed", seed, "--seed")
        shortcuts.add("max_new_tokens", maxNewTokens, "--max-new-tokens")
        shortcuts.add("stop", stop, "--stop")
        shortcuts.add("batch_size", batchSize, "--batch-size")
        shortcuts.add("add_bos", addBos, "--add-bos")
        let config = try DaptConfig.load(options, section: "generate", shortcuts: shortcuts)
        guard let input = try input.single() else { throw ValidationError("--input (a JSONL file of prompts) is required") }
        guard let output = output.output else { throw ValidationError("--output (the JSONL file to write) is required") }
        if let adapter, !FileSystem.exists(adapter) { throw ConfigError(source: "--adapter \(adapter)", field: "", reason: "no such directory") }
        var request = GenerateRequest(model: model, input: input, output: output, tokenizer: tokenizer, adapter: adapter)
        request.generation = config.generate
        if json && jsonSchema != nil { throw ValidationError("--json and --json-schema: give one (the schema already makes the output JSON)") }
        if let jsonSchema {
            if !FileSystem.exists(jsonSchema) { throw ConfigError(source: "--json-schema \(jsonSchema)", field: "", reason: "no such file") }
            request.json = .schema(jsonSchema)
        } else if json {
            request.json = .object
        }
        try Runtime.run(cluster: config.cluster) { ctx in
            let summary = try GenerateRun.run(request, communicator: ctx.communicator, sink: ctx.sink)
            let reasons = FinishReason.allCases.compactMap { r in summary.finishReasons[r].map { "\(r.rawValue) \($0)" } }
            ctx.say("generated \(summary.records) records: \(summary.promptTokens) prompt tokens, \(summary.completionTokens) new tokens (\(reasons.joined(separator: ", ")))")
        }
    }
}
