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
        subcommands: [Perplexity.self, MultipleChoice.self, JSONAnswers.self]
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

    struct MultipleChoice: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "mc",
            abstract: "Multiple-choice accuracy (MMLU or C-Eval CSV files) by the log-likelihood of each answer letter.",
            discussion: """
            --input: a <subject>_test.csv (MMLU: no header; question,A,B,C,D,answer) or <subject>_val.csv (C-Eval: header             id,question,A,B,C,D,answer[,explanation]) file, or a folder of them. --shots K puts the first K items of             <subject>_dev.csv (in --dev DIR, else beside the input or in ../dev) before each question; when the prompt is longer             than the model's context, examples are dropped from the end, and a question too long alone goes to mc.rejects.jsonl.             A malformed row goes there too (--strict: it is an error). --output DIR: the eval report folder (report.json's mc             section, mc.items.jsonl, mc.rejects.jsonl; its other sections are kept).
            """)

        @Option(help: "Checkpoint directory, run directory (its newest checkpoint) or Hugging Face model directory.")
        var model: String

        @OptionGroup var input: InputOptions
        @OptionGroup var outputOptions: OutputOptions

        @Option(help: "tokenizer.json (default: the model's).")
        var tokenizer: String?

        @Option(help: "mmlu or ceval (default: detected from the first file: C-Eval files start with their header).")
        var format: String?

        @Option(parsing: .unconditional, help: "Examples from the dev split before each question (default 0).")
        var shots: Int = 0

        @Option(help: "Folder of the <subject>_dev.csv files.")
        var dev: String?

        @Option(name: .customLong("max-length"), parsing: .unconditional, help: "Tokens the model may see (default: its position limit).")
        var maxLength: Int?

        @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Prompts scored in one forward pass, sorted by length (default 8).")
        var batchSize: Int = 8

        @OptionGroup var records: RecordOptions
        @OptionGroup var options: ConfigOptions

        func run() throws {
            let daptConfig = try DaptConfig.load(options, section: "eval")
            guard let input = try input.single() else { throw ValidationError("--input (a CSV file or a folder of them) is required") }
            guard let output = outputOptions.output else { throw ValidationError("--output (the eval report folder) is required") }
            var request = MultipleChoiceRequest(model: model, input: input, tokenizer: tokenizer)
            if let format {
                guard let known = MultipleChoiceFormat(rawValue: format) else { throw ValidationError("--format: \(format) is not mmlu or ceval") }
                request.format = known
            }
            if shots < 0 { throw ValidationError("--shots: must be >= 0, got \(shots)") }
            request.shots = shots
            request.devDirectory = dev
            request.maxLength = maxLength
            request.batchSize = batchSize
            request.strict = records.strict ?? false
            try Runtime.run(cluster: daptConfig.cluster) { ctx in
                // One rank scores every item: the items are few and the report is written once.
                guard ctx.isRoot else { return }
                let report = try MultipleChoiceEvaluation.run(request, output: output, sink: ctx.sink)
                ctx.say(Self.table(report))
                ctx.say(String(format: "scored %d items in %.3f s (encoding and forward passes, after loading)", report.results.count, report.scoringSeconds))
                ctx.say("report: \(output)/\(EvalReport.fileName)")
            }
        }

        static func table(_ report: MultipleChoiceReport) -> String {
            let width = max(7, report.subjects.map(\.subject.count).max() ?? 0)
            func row(_ name: String, _ items: String, _ correct: String, _ rejected: String, _ accuracy: String) -> String {
                name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + [items, correct, rejected, accuracy].map {
                    String(repeating: " ", count: max(0, 9 - $0.count)) + $0
                }.joined(separator: " ")
            }
            var lines = [row("subject", "items", "correct", "rejected", "accuracy")]
            for s in report.subjects {
                lines.append(row(s.subject, "\(s.items)", "\(s.correct)", "\(s.rejected)", String(format: "%.4f", s.accuracy)))
            }
            let items = report.results.count, correct = report.results.filter(\.correct).count
            lines.append(row("micro", "\(items)", "\(correct)", "\(report.rejects.count)", String(format: "%.4f", report.microAccuracy)))
            lines.append(row("macro", "", "", "", String(format: "%.4f", report.macroAccuracy)))
            if report.truncatedShots > 0 { lines.append("\(report.truncatedShots) items had examples dropped to fit the model's \(report.maxLength) tokens") }
            return lines.joined(separator: "\n")
        }
    }
}
