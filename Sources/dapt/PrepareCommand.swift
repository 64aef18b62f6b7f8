import ArgumentParser
import DaptCore
import DaptPrepare
import DaptTokenizer
import Foundation

struct PrepareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Split patents into step → paragraph → fragment JSONL (the training corpus).",
        discussion: """
        Reads JSONL (one patent per line) and folders of .txt/.md patents with YAML front matter.
        Under `mpirun -np N` each rank writes NAME-RRRR-of-NNNN.jsonl for its share of the input;
        rank 0 writes manifest.json (shards, counts, SHA-1s), rejects.jsonl and summary.json.
        Fragment text is Unicode NFC; `hash` is sha1: + hex SHA-1 of its UTF-8.
        --input replaces prepare.inputs, --output sets prepare.output (a directory); --set KEY=VALUE sets any key of prepare:.
        """)

    @OptionGroup var options: StageOptions

    @OptionGroup var records: RecordOptions

    @Option(name: .customLong("max-tokens"), parsing: .unconditional, help: "Token budget per fragment (max_tokens).")
    var maxTokens: Int?

    @Option(name: .customLong("overlap-tokens"), parsing: .unconditional, help: "Tokens shared by neighbouring fragments (overlap_tokens).")
    var overlapTokens: Int?

    @Option(help: "steps, description or steps_or_description (keep; see configs/prepare.yaml).")
    var keep: String?

    @Option(help: "A Hugging Face tokenizer.json for exact token counts instead of the estimate.")
    var tokenizer: String?

    @Flag(help: "Also write the shards as one file NAME.jsonl in input order.")
    var merge = false

    @Option(name: .customLong("merge-only"), help: "Only merge the shards of an earlier run, given its manifest.json.")
    var mergeOnly: String?

    func run() throws {
        if let mergeOnly {
            try Runtime.work { try mergeExisting(mergeOnly) }
            return
        }
        var shortcuts = Overrides()
        shortcuts.add("inputs", options.inputs, "--input")
        shortcuts.add("output", options.output.output, "--output")
        shortcuts.add("max_tokens", maxTokens, "--max-tokens")
        shortcuts.add("overlap_tokens", overlapTokens, "--overlap-tokens")
        shortcuts.add("keep", keep, "--keep")
        shortcuts.add("strict", records.strict, "--strict")
        let dapt = try DaptConfig.load(options.config, section: "prepare", shortcuts: shortcuts) { config in
            if config.prepare.inputs.isEmpty {
                throw ConfigError(field: "prepare.inputs", reason: "no input given (set it in the config or with --input)")
            }
            for (i, path) in config.prepare.inputs.enumerated() { try Check.exists(path, "prepare.inputs[\(i)]") }
        }
        let prepare = dapt.prepare
        let counter: any TokenCounter
        if let tokenizer {
            counter = TokenizerTokenCounter(tokenizer: try BPETokenizer.load(path: tokenizer), path: tokenizer)
        } else {
            counter = EstimatedTokenCounter(prepare)
        }
        let merge = self.merge
        try Runtime.run(cluster: dapt.cluster) { ctx in
            let started = monotonicSeconds()
            let outcome = try PrepareRun(config: prepare, counter: counter, communicator: ctx.communicator,
                                         sink: ctx.sink, merge: merge).run()
            let seconds = monotonicSeconds() - started
            guard ctx.isRoot else { return }
            outcome.summary.lines().forEach(ctx.say)
            if !outcome.firstRejects.isEmpty {
                ctx.say("  first rejects:")
                outcome.firstRejects.prefix(10).forEach { ctx.say("    " + $0) }
            }
            let mb = Double(outcome.stats.inputBytes) / 1e6
            ctx.say("  time: " + String(format: "%.2f s, %.1f MB/s", seconds, mb / max(seconds, 1e-9)) + " on \(ctx.size) rank\(ctx.size == 1 ? "" : "s")")
            ctx.say("  wrote \(outcome.manifestPath) (\(ctx.size) shard\(ctx.size == 1 ? "" : "s")), \(outcome.rejectsPath), \(outcome.summaryPath)"
                    + (outcome.mergedPath.map { ", \($0)" } ?? ""))
        }
    }

    func mergeExisting(_ manifestPath: String) throws {
        let corpus = try PreparedCorpus(manifestPath: manifestPath)
        let merged = try corpus.merge()
        var manifest = corpus.manifest
        manifest.merged = merged
        try manifest.write(to: manifestPath)
        Console.out("merged \(corpus.manifest.shards.count) shards: \(merged.fragments) fragments, \(merged.bytes) bytes → \(corpus.directory)/\(merged.file) (sha1 \(merged.sha1))")
    }
}

/// Exact token counts for the fragment budget from a trained tokenizer: one
/// piece per token, except that tokens ending inside a multi-byte character
/// (byte-level BPE can split one) ride with the next, so cuts stay between
/// characters.
struct TokenizerTokenCounter: TokenCounter {
    let tokenizer: BPETokenizer
    let path: String
    var name: String { "tokenizer:\(path)" }

    func pieces(of utf8: [UInt8]) -> [TokenPiece] {
        let ids = TokenEncoder(tokenizer, cacheEntries: 4096).encode(bytes: utf8)
        var pieces: [TokenPiece] = []
        pieces.reserveCapacity(ids.count)
        var end = 0, cost = 0
        for id in ids {
            end += (try? tokenizer.bytes(of: id).count) ?? 0
            cost += 1000
            // A UTF-8 continuation byte next means the cut would split a character.
            if end >= utf8.count || utf8[end] & 0xC0 != 0x80 {
                pieces.append(TokenPiece(end: min(end, utf8.count), cost: cost))
                cost = 0
            }
        }
        if cost > 0 || (pieces.last?.end ?? 0) < utf8.count {
            pieces.append(TokenPiece(end: utf8.count, cost: cost))
        }
        return pieces
    }
}
