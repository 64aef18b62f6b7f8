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
        subcommands: [Perplexity.self]
    )

    struct Perplexity: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ppl",
            abstract: "Perplexity of a checkpoint (or Hugging Face model directory) on JSONL text or token shards (--input).",
            discussion: "Documents are packed into sequences (document-masked, positions restarting per document); the tail shorter than one sequence is left out and reported.")

        @Option(help: "Checkpoint directory (config.json, model.safetensors; tokenizer.json for JSONL input), or a run directory (its newest checkpoint).")
        var checkpoint: String

        @OptionGroup var input: InputOptions

        @Option(help: "tokenizer.json for JSONL input (default: the checkpoint's).")
        var tokenizer: String?

        @Option(name: .customLong("sequence-length"), parsing: .unconditional, help: "Tokens per sequence.")
        var sequenceLength: Int = 256

        @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Sequences per forward pass.")
        var batchSize: Int = 4

        @Option(name: .customLong("max-sequences"), parsing: .unconditional, help: "Evaluate at most this many sequences (0: all).")
        var maxSequences: Int = 0

        @Flag(name: .customLong("add-bos"), inversion: .prefixedNo, help: "JSONL input: start each document with <|bos|> (as tokenizer encode).")
        var addBos = false

        @Flag(name: .customLong("add-eos"), inversion: .prefixedNo, help: "JSONL input: end each document with <|eos|> (as tokenizer encode).")
        var addEos = true

        @OptionGroup var options: ConfigOptions

        func run() throws {
            try Check.positive(sequenceLength, "--sequence-length \(sequenceLength)")
            try Check.positive(batchSize, "--batch-size \(batchSize)")
            try Check.nonNegative(maxSequences, "--max-sequences \(maxSequences)")
            guard let input = try input.single() else { throw ValidationError("--input (JSONL or a token shard directory) is required") }
            // Eval has no section of its own: --set keys name theirs (cluster.blas_threads=1).
            let daptConfig = try DaptConfig.load(options, section: nil)
            try Runtime.run(cluster: daptConfig.cluster) { ctx in
                var request = PerplexityRequest(model: checkpoint, input: input, tokenizer: tokenizer)
                request.sequenceLength = sequenceLength
                request.batchSize = batchSize
                request.maxSequences = maxSequences
                request.addBos = addBos
                request.addEos = addEos
                let result = try PerplexityEvaluation.run(request, sink: ctx.sink)
                ctx.say(String(format: "perplexity %.4f  loss %.6f  tokens %d  sequences %d  (documents %d, %d blank lines skipped, %d tail tokens not evaluated)",
                               result.perplexity, result.loss, result.tokens, result.sequences, result.documents, result.blankLines, result.leftOutTokens))
            }
        }
    }
}
