import ArgumentParser
import DaptBLAS
import DaptCore
import DaptGrammar
import DaptModel
import DaptTokenizer
import Foundation

extension BenchCommand {
    /// Constrained decoding's cost on a fixed output: schema compile time,
    /// mask time per token (first pass: empty cache; second pass: a new
    /// sequence sharing the cache), and the tiny model's forward for one
    /// token as the yardstick for a decoding step.
    struct Grammar: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "grammar",
            abstract: "Mask time per token of constrained JSON decoding over fixed token ids (one JSON line).")

        @Option(help: "tokenizer.json (byte-level BPE).") var tokenizer: String
        @Option(name: .customLong("json-schema"), help: "JSON Schema file (default: any JSON value).") var schema: String?
        @Option(help: "The output's token ids, one JSON array (as the peer wrote them).") var ids: String
        @Option(help: "Passes over the ids (the first starts from the precomputed masks alone; with --precompute-limit 0, from empty caches).") var passes = 3
        @Option(name: .customLong("precompute-limit"), help: "Top frames whose masks are computed with the grammar (0: each when first met).")
        var precomputeLimit = GrammarMasks.defaultPrecomputeLimit
        @Option(name: .customLong("model-hidden")) var hidden = 128
        @Option(name: .customLong("model-intermediate")) var intermediate = 352
        @Option(name: .customLong("model-layers")) var layers = 4
        @Option(name: .customLong("model-heads")) var heads = 4
        @Option(name: .customLong("model-kv-heads")) var kvHeads = 2

        func run() throws {
            BLAS.setThreads(1)
            let bpe = try BPETokenizer.load(path: tokenizer)
            let vocabulary = TokenVocabulary(tokenizer: bpe)
            guard let list = try JSONValue.parse(FileSystem.readAll(ids)).array else { throw ValidationError("\(ids): expected a JSON array of token ids") }
            let tokens = list.compactMap(\.int)
            var start = monotonicSeconds()
            let grammar = try schema.map { try JSONGrammar.schema(file: $0) } ?? JSONGrammar.anyValue()
            let grammarSeconds = monotonicSeconds() - start
            start = monotonicSeconds()
            let masks = GrammarMasks(grammar: grammar, vocabulary: vocabulary, precomputeLimit: precomputeLimit)
            let compileSeconds = grammarSeconds + monotonicSeconds() - start
            var mask = TokenMask(count: vocabulary.count)
            var passMicros: [Double] = []
            for _ in 0..<passes {
                var constraint = masks.constraint()
                var total = 0.0
                for t in tokens {
                    start = monotonicSeconds()
                    constraint.fillMask(&mask)
                    total += monotonicSeconds() - start
                    guard mask[t] else { throw ValidationError("token \(t) (\(String(decoding: vocabulary.tokens[t], as: UTF8.self).debugDescription)) is refused after \(String(decoding: constraint.output, as: UTF8.self).debugDescription)") }
                    try constraint.accept(t)
                }
                constraint.fillMask(&mask)
                guard constraint.isComplete else { throw ValidationError("the ids do not make a complete value") }
                passMicros.append(total / Double(tokens.count) * 1e6)
            }
            // One token through the tiny model (no cache: a lower bound of a decoding step).
            let config = LlamaConfig(vocabSize: vocabulary.count, hiddenSize: hidden, intermediateSize: intermediate,
                                     numHiddenLayers: layers, numAttentionHeads: heads, numKeyValueHeads: kvHeads, maxPositionEmbeddings: 1024)
            let model = try LlamaModel(config: config)
            model.threads = 1
            model.initializeRandom(seed: 1)
            let batch = try TokenBatch(batchSize: 1, seqLen: 1, tokens: [1], targets: [1])
            var forward: [Double] = []
            for _ in 0..<50 {
                start = monotonicSeconds()
                _ = try model.logits(batch)
                forward.append(monotonicSeconds() - start)
            }
            forward.sort()
            let forwardMicros = forward[forward.count / 2] * 1e6
            let counts = masks.cacheCounts, topCounts = masks.topFrameCacheCounts, pre = masks.precomputation
            // compile_ms: the grammar and the masks computed before the first token;
            // first_total_ms: that plus every mask of the first sequence (what one schema used once costs).
            Console.out(String(format: "{\"impl\": \"dapt\", \"vocab\": %d, \"trie_nodes\": %d, \"tokens\": %d, \"compile_ms\": %.3f, \"precomputed_top_frames\": %d, \"precompute_complete\": \(pre.complete), \"precompute_search_ms\": %.3f, \"precompute_ms\": %.3f, \"mask_us_first\": %.2f, \"mask_us_later\": %.2f, \"first_total_ms\": %.3f, \"cache_misses\": %d, \"cache_hits\": %d, \"top_frame_misses\": %d, \"forward_us\": %.1f, \"mask_over_forward\": %.4f}",
                               vocabulary.count, vocabulary.nodeCount, tokens.count, compileSeconds * 1e3, pre.topFrames, pre.searchSeconds * 1e3, pre.seconds * 1e3,
                               passMicros[0], passMicros.count > 1 ? passMicros[1] : passMicros[0],
                               compileSeconds * 1e3 + passMicros[0] * Double(tokens.count) / 1e3,
                               counts.misses, counts.hits, topCounts.misses, forwardMicros, passMicros[0] / forwardMicros))
        }
    }
}
