import ArgumentParser
import DaptCluster
import DaptCore
import DaptTokenizer
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// CPU time of the calling thread (unaffected by other processes on the machine).
func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Byte-level BPE: train, encode JSONL to token shards, decode, verify.",
        subcommands: [Train.self, Encode.self, Tokenize.self, Decode.self, Verify.self]
    )

    /// The `tokenizer:` section with `--config`, `--set` and the shortcuts applied, validated.
    static func settings(_ options: ConfigOptions, _ shortcuts: Overrides) throws -> DaptConfig {
        try DaptConfig.load(options, section: "tokenizer", shortcuts: shortcuts)
    }

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train a byte-level BPE on JSONL text and write tokenizer.json (--output).",
            discussion: """
            Settings come from the config's tokenizer: section; --set KEY=VALUE sets any of its keys. \
            Under mpirun each rank counts the pre-tokens of every size-th line; rank 0 learns the merges. \
            When the corpus has too few repeated pairs to fill --vocab-size, the vocabulary is smaller and the run says so.
            """)
        @OptionGroup var options: StageOptions
        @OptionGroup var records: RecordOptions
        @Option(name: .customLong("vocab-size"), parsing: .unconditional, help: "Vocabulary size, special tokens included (vocab_size).")
        var vocabSize: Int?
        @Option(name: .customLong("min-frequency"), parsing: .unconditional, help: "Pairs seen fewer times are never merged (min_frequency).")
        var minFrequency: Int?
        @Option(name: .customLong("pre-tokenizer"), help: "dapt, gpt4 or gpt2 (pre_tokenizer).")
        var preTokenizer: String?
        @Option(name: .customLong("text-field"), help: "JSONL field holding the text (text_field).")
        var textField: String?

        func run() throws {
            var shortcuts = Overrides()
            shortcuts.add("vocab_size", vocabSize, "--vocab-size")
            shortcuts.add("min_frequency", minFrequency, "--min-frequency")
            shortcuts.add("pre_tokenizer", preTokenizer, "--pre-tokenizer")
            shortcuts.add("text_field", textField, "--text-field")
            shortcuts.add("strict", records.strict, "--strict")
            let config = try TokenizerCommand.settings(options.config, shortcuts)
            let inputs = try options.input.existing()
            guard !inputs.isEmpty else { throw ValidationError("at least one --input is required") }
            guard let output = options.output.output else { throw ValidationError("--output (where to write tokenizer.json) is required") }
            try Runtime.run(cluster: config.cluster) { ctx in
                let outcome = try BPETraining.run(config: config.tokenizer, inputs: inputs, output: output,
                                                  communicator: ctx.communicator, sink: ctx.sink)
                outcome.summary.forEach(ctx.say)
            }
        }
    }

    struct Encode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Encode JSONL text into token shards with a document index and a manifest (--output: a directory).",
            discussion: "Under mpirun the shards are divided between ranks; the output is the same for any number of ranks.")
        @OptionGroup var options: StageOptions
        @OptionGroup var records: RecordOptions
        @Option(help: "tokenizer.json (dapt's or one written by Hugging Face tokenizers).")
        var tokenizer: String
        @Option(name: .customLong("text-field"), help: "JSONL field holding the text (text_field).")
        var textField: String?
        @Option(name: .customLong("shard-lines"), parsing: .unconditional, help: "Input lines per shard (shard_lines).")
        var shardLines: Int?
        @Flag(name: .customLong("add-bos"), inversion: .prefixedNo, help: "Start each document with <|bos|> (add_bos).")
        var addBos: Bool?
        @Flag(name: .customLong("add-eos"), inversion: .prefixedNo, help: "End each document with <|eos|> (add_eos).")
        var addEos: Bool?

        func run() throws {
            var shortcuts = Overrides()
            shortcuts.add("text_field", textField, "--text-field")
            shortcuts.add("shard_lines", shardLines, "--shard-lines")
            shortcuts.add("add_bos", addBos, "--add-bos")
            shortcuts.add("add_eos", addEos, "--add-eos")
            shortcuts.add("strict", records.strict, "--strict")
            let config = try TokenizerCommand.settings(options.config, shortcuts)
            let t = config.tokenizer
            let inputs = try options.input.existing()
            guard !inputs.isEmpty else { throw ValidationError("at least one --input is required") }
            guard let output = options.output.output else { throw ValidationError("--output (the shard directory) is required") }
            let json = try FileSystem.readAll(tokenizer)
            let bpe = try BPETokenizer.load(json: json, path: tokenizer)
            try Runtime.run(cluster: config.cluster) { ctx in
                let started = monotonicSeconds()
                let encoder = ShardEncoder(tokenizer: bpe, tokenizerJSON: json, options: .init(t))
                let manifest = try encoder.run(inputs: inputs, output: output, communicator: ctx.communicator, sink: ctx.sink)
                let seconds = monotonicSeconds() - started
                var inputBytes = 0
                for path in inputs { inputBytes += try FileSystem.size(path) }
                ctx.say(String(format: "encoded %d lines: %d documents, %d rejected, %d blank, %d tokens in %d shards (uint%d) in %.2f s (%.1f MB/s of JSONL over %d ranks)",
                               manifest.lines, manifest.documents, manifest.rejected, manifest.blankLines, manifest.tokens, manifest.shards.count,
                               manifest.tokenBytes * 8, seconds, Double(inputBytes) / 1e6 / seconds, ctx.size))
                let s = manifest.languages
                for (l, name) in LanguageStats.languages.enumerated() where s.documents[l] > 0 {
                    ctx.say(String(format: "  %@: %d documents, %d characters (%d Han), %d tokens: %.3f tokens/character%@", name,
                                   s.documents[l], s.characters[l], s.hanCharacters[l], s.tokens[l], s.tokensPerCharacter(l),
                                   name == "zh" ? String(format: ", %.3f tokens/Han character", s.tokensPerHanCharacter(l)) : ""))
                }
                ctx.say("manifest: \(output)/manifest.json")
            }
        }
    }

    struct Tokenize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Encode each JSONL record's text on one thread; with --output, write one line of space-separated ids per record.",
            discussion: "Prints the encoding throughput (time spent in the encoder only) for benchmarks.")
        @OptionGroup var options: StageOptions
        @Option(help: "tokenizer.json.")
        var tokenizer: String
        @Option(name: .customLong("text-field"), help: "JSONL field holding the text (text_field).")
        var textField: String?

        func run() throws {
            var shortcuts = Overrides()
            shortcuts.add("text_field", textField, "--text-field")
            let config = try TokenizerCommand.settings(options.config, shortcuts)
            guard let input = try options.input.single() else { throw ValidationError("--input is required") }
            let bpe = try BPETokenizer.load(path: tokenizer)
            try Runtime.work { try tokenize(bpe, input: input, textField: config.tokenizer.textField, output: options.output.output) }
        }

        func tokenize(_ bpe: BPETokenizer, input: String, textField: String, output: String?) throws {
            let encoder = TokenEncoder(bpe)
            let writer = try output.map { try FileWriter(path: $0, atomic: true) }
            // Texts are read first so the timing covers encoding only.
            var texts: [[UInt8]] = []
            try JSONLText.forEachText(path: input, field: textField, reject: { throw $0 }) { _, text in texts.append(Array(text)) }
            var ids: [UInt32] = []
            var bytes = 0, tokens = 0
            var seconds = 0.0, cpuSeconds = 0.0
            for text in texts {
                ids.removeAll(keepingCapacity: true)
                let t = monotonicSeconds(), c = threadCPUSeconds()
                text.withUnsafeBufferPointer { encoder.encode(bytes: $0, into: &ids) }
                seconds += monotonicSeconds() - t
                cpuSeconds += threadCPUSeconds() - c
                bytes += text.count
                tokens += ids.count
                try writer?.write(ids.map(String.init).joined(separator: " ") + "\n")
            }
            try writer?.commit()
            Console.out(String(format: "encoded %d texts, %.2f MB, %d tokens in %.3f s: %.2f MB/s (one thread); CPU time %.3f s: %.2f MB/s per CPU second",
                               texts.count, Double(bytes) / 1e6, tokens, seconds, Double(bytes) / 1e6 / seconds,
                               cpuSeconds, Double(bytes) / 1e6 / cpuSeconds))
        }
    }

    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decode ids (arguments) with a tokenizer, or a document of a token shard directory (--input).")
        @OptionGroup var input: InputOptions
        @Option(help: "tokenizer.json (not needed with --input).")
        var tokenizer: String?
        @Option(parsing: .unconditional, help: "Document index in the --input shard directory.")
        var document: Int?
        @Argument(help: "Token ids.")
        var ids: [UInt32] = []

        func run() throws {
            let shards = try input.single()
            if shards != nil && document == nil { throw ValidationError("--document is required with --input") }
            if shards == nil && tokenizer == nil { throw ValidationError("--tokenizer or --input is required") }
            let bytes: [UInt8] = try Runtime.work {
                if let shards, let document {
                    let reader = try TokenShardReader(directory: shards, verify: false)
                    return try reader.tokenizer().decode(try reader.document(document))
                }
                return try BPETokenizer.load(path: tokenizer!).decode(ids)
            }
            FileHandle.standardOutput.write(Data(bytes + [0x0A]))
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a token shard directory (--input) against its manifest (sizes, checksums, index, token ids).")
        @OptionGroup var input: InputOptions

        func run() throws {
            guard let directory = try input.single() else { throw ValidationError("--input (the shard directory) is required") }
            try Runtime.work {
                let reader = try TokenShardReader(directory: directory, verify: true)
                _ = try reader.tokenizer()
                Console.out("\(directory): ok: \(reader.manifest.shards.count) shards, \(reader.documentCount) documents, \(reader.tokenCount) tokens")
            }
        }
    }
}
