import ArgumentParser
import DaptCore
import DaptModel
import DaptTokenizer
import DaptTrain
import Foundation

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a checkpoint.",
        subcommands: [Perplexity.self, JSONAnswers.self]
    )

    struct Perplexity: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ppl",
            abstract: "Perplexity of a checkpoint (or Hugging Face model directory) on JSONL text or token shards (--input).",
            discussion: "Documents are packed into sequences (document-masked, positions restarting per document); the tail shorter than one sequence is left out and reported. Settings come from the config's eval: section; --set KEY=VALUE sets any of its keys. --output DIR: the eval report folder; the ppl section of its report.json is written (its other sections, e.g. mc, are kept).")

        @Option(name: [.customLong("checkpoint"), .customLong("model")],
                help: "Checkpoint directory (config.json, model.safetensors; tokenizer.json for JSONL input), a run directory (its newest checkpoint) or a Hugging Face model directory.")
        var checkpoint: String

        @OptionGroup var outputOptions: OutputOptions
        var output: String? { outputOptions.output }

        @OptionGroup var input: InputOptions

        @Option(help: "tokenizer.json for JSONL input (default: the checkpoint's).")
        var tokenizer: String?

        @Option(name: .customLong("sequence-length"), parsing: .unconditional, help: "Tokens per sequence (sequence_length; default 256).")
        var sequenceLength: Int?

        @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Sequences per forward pass (batch_size; default 4).")
        var batchSize: Int?

        @Option(name: .customLong("max-sequences"), parsing: .unconditional, help: "Evaluate at most this many sequences, 0: all (max_sequences).")
        var maxSequences: Int?

        @Flag(name: .customLong("add-bos"), inversion: .prefixedNo, help: "JSONL input: start each document with <|bos|> (add_bos; as tokenizer encode).")
        var addBos: Bool?

        @Flag(name: .customLong("add-eos"), inversion: .prefixedNo, help: "JSONL input: end each document with <|eos|> (add_eos; as tokenizer encode).")
        var addEos: Bool?

        @OptionGroup var options: ConfigOptions

        func run() throws {
            var shortcuts = Overrides()
            shortcuts.add("sequence_length", sequenceLength, "--sequence-length")
            shortcuts.add("batch_size", batchSize, "--batch-size")
            shortcuts.add("max_sequences", maxSequences, "--max-sequences")
            shortcuts.add("add_bos", addBos, "--add-bos")
            shortcuts.add("add_eos", addEos, "--add-eos")
            let daptConfig = try DaptConfig.load(options, section: "eval", shortcuts: shortcuts)
            guard let input = try input.single() else { throw ValidationError("--input (JSONL or a token shard directory) is required") }
            let request = daptConfig.eval.request(model: checkpoint, input: input, tokenizer: tokenizer)
            try Runtime.run(cluster: daptConfig.cluster) { ctx in
                guard ctx.isRoot || output == nil else { return }
                let result = try output.map { try PerplexityEvaluation.run(request, output: $0, sink: ctx.sink) }
                    ?? PerplexityEvaluation.run(request, sink: ctx.sink)
                ctx.say(String(format: "perplexity %.4f  loss %.6f  tokens %d  sequences %d  (documents %d, %d blank lines skipped, %d tail tokens not evaluated)",
                               result.perplexity, result.loss, result.tokens, result.sequences, result.documents, result.blankLines, result.leftOutTokens))
                if let output { ctx.say("report: \(output)/\(EvalReport.fileName)") }
            }
        }
    }
}
