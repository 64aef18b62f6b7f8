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
        """)

    @Option(help: "YAML config; its prepare: section sets inputs, output and splitting.")
    var config: String?

    @Option(name: .customLong("input"), help: "Input file or folder (repeatable); replaces prepare.inputs.")
    var inputs: [String] = []

    @Option(help: "Output directory (prepare.output).")
    var output: String?

    @Option(name: .customLong("max-tokens"), help: "Token budget per fragment (prepare.max_tokens).")
    var maxTokens: Int?

    @Option(name: .customLong("overlap-tokens"), help: "Tokens shared by neighbouring fragments (prepare.overlap_tokens).")
    var overlapTokens: Int?

    @Option(help: "steps: only step sections; description: the whole text (prepare.keep).")
    var keep: String?

    @Option(help: "A Hugging Face tokenizer.json for exact token counts instead of the estimate.")
    var tokenizer: String?

    @Flag(help: "Stop at the first bad record with a non-zero exit.")
    var strict = false

    @Flag(help: "Also write the shards as one file NAME.jsonl in input order.")
    var merge = false

    @Option(name: .customLong("merge-only"), help: "Only merge the shards of an earlier run, given its manifest.json.")
    var mergeOnly: String?

    func run() throws {
        var dapt = try loadConfig(config)
        if let mergeOnly {
            try mergeExisting(mergeOnly)
            return
        }
        var prepare = dapt.prepare
        if !inputs.isEmpty { prepare.inputs = inputs }
        if let output { prepare.output = output }
        if let maxTokens { prepare.maxTokens = maxTokens }
        if let overlapTokens { prepare.overlapTokens = overlapTokens }
        if let keep { prepare.keep = keep }
        if strict { prepare.strict = true }
        do { try prepare.validate() } catch let error as ConfigError {
            Console.error(error.under("prepare").description)
            throw ExitCode(2)
        }
        dapt.prepare = prepare
        let counter: any TokenCounter
        if let tokenizer {
            do {
                counter = TokenizerTokenCounter(tokenizer: try BPETokenizer.load(path: tokenizer), path: tokenizer)
            } catch {
                Console.error("--tokenizer: \(error)")
                throw ExitCode(2)
            }
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
        do {
            let corpus = try PreparedCorpus(manifestPath: manifestPath)
            let merged = try corpus.merge()
            var manifest = corpus.manifest
            manifest.merged = merged
            try manifest.write(to: manifestPath)
            Console.out("merged \(corpus.manifest.shards.count) shards: \(merged.fragments) fragments, \(merged.bytes) bytes → \(corpus.directory)/\(merged.file) (sha1 \(merged.sha1))")
        } catch {
            Console.error("\(error)")
            throw ExitCode(1)
        }
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
