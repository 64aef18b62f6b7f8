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

    /// The `tokenizer:` section with command-line overrides applied and validated.
    struct Settings: ParsableArguments {
        @Option(help: "YAML config; its tokenizer: section sets the defaults.")
        var config: String?
        @Option(name: .customLong("vocab-size"), help: "Vocabulary size, special tokens included.")
        var vocabSize: Int?
        @Option(name: .customLong("min-frequency"), help: "Pairs seen fewer times are never merged.")
        var minFrequency: Int?
        @Option(name: .customLong("pre-tokenizer"), help: "dapt, gpt4 or gpt2.")
        var preTokenizer: String?
        @Option(name: .customLong("text-field"), help: "JSONL field holding the text.")
        var textField: String?
        @Option(name: .customLong("shard-lines"), help: "Input lines per shard.")
        var shardLines: Int?
        @Flag(name: .customLong("add-bos"), inversion: .prefixedNo, help: "Start each document with <|bos|>.")
        var addBos: Bool?
        @Flag(name: .customLong("add-eos"), inversion: .prefixedNo, help: "End each document with <|eos|>.")
        var addEos: Bool?
        @Flag(name: .customLong("strict"), inversion: .prefixedNo, help: "Stop at the first bad record (else write it to rejects).")
        var strict: Bool?

        func load() throws -> (DaptConfig, TokenizerConfig) {
            let config = try loadConfig(config)
            var t = config.tokenizer
            if let vocabSize { t.vocabSize = vocabSize }
            if let minFrequency { t.minFrequency = minFrequency }
            if let preTokenizer { t.preTokenizer = preTokenizer }
            if let textField { t.textField = textField }
            if let shardLines { t.shardLines = shardLines }
            if let addBos { t.addBos = addBos }
            if let addEos { t.addEos = addEos }
            if let strict { t.strict = strict }
            do { try t.validate() } catch let error as ConfigError {
                Console.error(error.under("tokenizer").description)
                throw ExitCode(2)
            }
            return (config, t)
        }
    }

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train a byte-level BPE on JSONL text and write tokenizer.json.",
            discussion: "Under mpirun each rank counts the pre-tokens of every size-th line; rank 0 learns the merges.")
        @OptionGroup var settings: Settings
        @Option(name: .customLong("input"), help: "JSONL input (repeatable).")
        var inputs: [String]
        @Option(help: "Where to write tokenizer.json.")
        var output: String

        func run() throws {
            let (config, t) = try settings.load()
            try Runtime.run(cluster: config.cluster) { ctx in
                let started = monotonicSeconds()
                var trainer = BPETrainer(vocabSize: t.vocabSize, minFrequency: t.minFrequency,
                                         specialTokens: t.specialTokens, preTokenizer: t.preTokenizerKind, maxWords: t.maxWords)
                var lineIndex = 0
                var rejected = 0
                var text: [UInt8] = []
                for path in inputs {
                    try LineReader(path: path).forEachLine { number, line in
                        defer { lineIndex += 1 }
                        guard lineIndex % ctx.size == ctx.rank else { return true }
                        do {
                            try JSONLText.extract(line, field: t.textField, into: &text)
                        } catch let bad as RecordProblem {
                            let problem = InputError(file: path, line: number, field: bad.field, reason: bad.reason)
                            if t.strict { throw problem }
                            rejected += 1
                            Console.note("skipped \(problem)")
                            return true
                        }
                        text.withUnsafeBufferPointer { trainer.add(text: $0) }
                        return true
                    }
                }
                rejected = Int(try ctx.communicator.allReduce(Int64(rejected), op: .sum))
                let counted = monotonicSeconds()
                let texts = try ctx.communicator.allReduce(Int64(trainer.textsSeen), op: .sum)
                let bytes = try ctx.communicator.allReduce(Int64(trainer.bytesSeen), op: .sum)
                if ctx.size > 1 {
                    let parts = try ctx.communicator.gatherV(trainer.serializedCounts(), root: 0)
                    if let parts {
                        trainer = BPETrainer(vocabSize: t.vocabSize, minFrequency: t.minFrequency,
                                             specialTokens: t.specialTokens, preTokenizer: t.preTokenizerKind, maxWords: t.maxWords)
                        for part in parts { trainer.merge(serializedCounts: part) }
                    }
                }
                if ctx.isRoot {
                    ctx.say(String(format: "counted %d texts (%.1f MB), %d distinct pre-tokens in %.2f s", texts, Double(bytes) / 1e6,
                                   trainer.distinctWords, counted - started))
                    if trainer.prunedWords > 0 {
                        ctx.say("dropped \(trainer.prunedWords) rare pre-tokens (count <= \(trainer.prunedBelowCount)) to stay within max_words \(t.maxWords)")
                    }
                    let tokenizer = try trainer.train { done in ctx.sink.report(.progress(stage: "tokenizer", done: done, total: nil, unit: "merges")) }
                    try tokenizer.save(path: output)
                    ctx.say(String(format: "trained %d merges, vocabulary %d, in %.2f s total: %@", tokenizer.merges.count,
                                   tokenizer.vocabSize, monotonicSeconds() - started, output))
                    if rejected > 0 { ctx.say("skipped \(rejected) bad records (not strict)") }
                }
                try ctx.communicator.barrier()
            }
        }
    }

    struct Encode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Encode JSONL text into token shards with a document index and a manifest.",
            discussion: "Under mpirun the shards are divided between ranks; the output is the same for any number of ranks.")
        @OptionGroup var settings: Settings
        @Option(help: "tokenizer.json (dapt's or one written by Hugging Face tokenizers).")
        var tokenizer: String
        @Option(name: .customLong("input"), help: "JSONL input (repeatable).")
        var inputs: [String]
        @Option(help: "Output directory.")
        var output: String

        func run() throws {
            let (config, t) = try settings.load()
            let json = try FileSystem.readAll(tokenizer)
            let bpe = try BPETokenizer.load(json: json, path: tokenizer)
            try Runtime.run(cluster: config.cluster) { ctx in
                let started = monotonicSeconds()
                let encoder = ShardEncoder(tokenizer: bpe, tokenizerJSON: json, options: .init(t))
                let manifest = try encoder.run(inputs: inputs, output: output, communicator: ctx.communicator, sink: ctx.sink)
                let seconds = monotonicSeconds() - started
                var inputBytes = 0
                for path in inputs { inputBytes += try FileSystem.size(path) }
                ctx.say(String(format: "encoded %d lines: %d documents, %d rejected, %d tokens in %d shards (uint%d) in %.2f s (%.1f MB/s of JSONL over %d ranks)",
                               manifest.lines, manifest.documents, manifest.rejected, manifest.tokens, manifest.shards.count,
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
        @Option(help: "tokenizer.json.")
        var tokenizer: String
        @Option(help: "JSONL input.")
        var input: String
        @Option(help: "Output text file (omit to only measure).")
        var output: String?
        @Option(name: .customLong("text-field"), help: "JSONL field holding the text.")
        var textField = "text"

        func run() throws {
            let bpe = try BPETokenizer.load(path: tokenizer)
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
            abstract: "Decode ids (arguments) with a tokenizer, or a document of a shard directory.")
        @Option(help: "tokenizer.json (not needed with --shards).")
        var tokenizer: String?
        @Option(help: "A token shard directory.")
        var shards: String?
        @Option(help: "Document index in --shards.")
        var document: Int?
        @Argument(help: "Token ids.")
        var ids: [UInt32] = []

        func run() throws {
            let bytes: [UInt8]
            if let shards {
                let reader = try TokenShardReader(directory: shards, verify: false)
                guard let document else { throw ValidationError("--document is required with --shards") }
                bytes = try reader.tokenizer().decode(try reader.document(document))
            } else {
                guard let tokenizer else { throw ValidationError("--tokenizer or --shards is required") }
                bytes = try BPETokenizer.load(path: tokenizer).decode(ids)
            }
            FileHandle.standardOutput.write(Data(bytes + [0x0A]))
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a token shard directory against its manifest (sizes, checksums, index, token ids).")
        @Argument(help: "The shard directory.")
        var directory: String

        func run() throws {
            do {
                let reader = try TokenShardReader(directory: directory, verify: true)
                _ = try reader.tokenizer()
                print("\(directory): ok: \(reader.manifest.shards.count) shards, \(reader.documentCount) documents, \(reader.tokenCount) tokens")
            } catch let error as TokenShardError {
                Console.error(error.description)
                throw ExitCode(1)
            }
        }
    }
}
