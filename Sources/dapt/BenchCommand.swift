import ArgumentParser
import DaptBLAS
import DaptCore
import DaptModel
import DaptTrain
import Foundation

/// Benchmarks behind `scripts/bench/` (not part of a training run).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Micro-benchmarks used by scripts/bench.",
        shouldDisplay: false,
        subcommands: [TrainStep.self, Grammar.self, Generate.self]
    )

    struct TrainStep: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train-step",
            abstract: "Forward + backward of a Llama model on a synthetic batch: tokens/s, GFLOP/s, peak RSS (one JSON line).")

        @Option var vocab = 4096
        @Option var hidden = 256
        @Option var layers = 4
        @Option var heads = 4
        @Option(name: .customLong("kv-heads")) var kvHeads: Int?
        @Option var intermediate = 688
        @Option var seq = 256
        @Option var batch = 8
        @Option(name: .customLong("doc-length"), help: "Pack documents of this many tokens (document mask).")
        var documentLength: Int?
        @Option var steps = 10
        @Option var warmup = 2
        @Option var threads = 1
        @Option(name: .customLong("query-tile")) var queryTile = AttentionTiles().query
        @Option(name: .customLong("key-tile")) var keyTile = AttentionTiles().key
        @Option(name: .customLong("head-rows"), help: "Rows the output head and its loss compute at once (default: chosen from the head's size).")
        var headRows: Int?
        @Option(name: .customLong("block-rows"), help: "Rows each layer takes at a time through its norms, the q/k/v, gate/up and down products, RoPE and SwiGLU (the attention backward takes all rows; default \(DecoderBlock.defaultBlockRows); with several threads at least 64 per thread).")
        var blockRows: Int?
        @Flag(help: "Add the step's time inside sgemm and the rate of plain sgemm on the same shapes, measured in this run.")
        var breakdown = false
        @Flag(help: "Keep only each layer's input and recompute the rest in backward (pretrain.parallel.recompute).")
        var recompute = false
        @Option(name: .customLong("recompute-layers"), help: "With --recompute, only the first N layers (pretrain.parallel.recompute_layers).")
        var recomputeLayers: Int?
        @Option(name: .customLong("recompute-granularity"), help: "With --recompute, what a layer recomputes: layer or mlp, its [gate | up] rows (pretrain.parallel.recompute_granularity).")
        var recomputeGranularity = RecomputeGranularity.layer
        @Flag(help: "With --recompute, also time the same model without it, the two taking steps in turn, and add the median of their step-by-step speed ratios (a ratio this machine's drift moves far less than two runs').")
        var paired = false

        func validate() throws {
            if let blockRows, blockRows < 1 { throw ValidationError("--block-rows must be at least 1, got \(blockRows)") }
            if let recomputeLayers {
                if recomputeLayers < 1 { throw ValidationError("--recompute-layers must be at least 1, got \(recomputeLayers)") }
                if !recompute { throw ValidationError("--recompute-layers \(recomputeLayers) needs --recompute") }
            }
            if recomputeGranularity != .layer && !recompute {
                throw ValidationError("--recompute-granularity \(recomputeGranularity.rawValue) needs --recompute")
            }
            if paired && !recompute { throw ValidationError("--paired needs --recompute") }
        }

        func run() throws {
            BLAS.setThreads(threads)
            let config = LlamaConfig(vocabSize: vocab, hiddenSize: hidden, intermediateSize: intermediate,
                                     numHiddenLayers: layers, numAttentionHeads: heads, numKeyValueHeads: kvHeads,
                                     maxPositionEmbeddings: max(seq, 2048))
            var parallel = PretrainConfig.Parallel()
            (parallel.recompute, parallel.recomputeLayers) = (recompute, recomputeLayers)
            func makeModel(recomputedLayers: Int) throws -> LlamaModel {
                let model = try LlamaModel(config: config)
                model.attentionKernel = .tiled(AttentionTiles(query: queryTile, key: keyTile))
                model.threads = threads
                model.headChunkRows = headRows
                if let blockRows { model.layerBlockRows = blockRows }
                model.recomputedLayers = recomputedLayers
                model.recomputeGranularity = recomputeGranularity
                model.initializeRandom(seed: 1)
                return model
            }
            let model = try makeModel(recomputedLayers: parallel.recomputedLayers(of: layers))
            let baseline = paired ? try makeModel(recomputedLayers: 0) : nil
            let data = try TokenBatch.synthetic(vocab: vocab, batchSize: batch, seqLen: seq, documentLength: documentLength)
            var times: [Double] = [], baselineTimes: [Double] = [], ratios: [Double] = []
            var loss = 0.0
            func step(_ model: LlamaModel) throws -> Double {
                let start = monotonicSeconds()
                model.gradients.zero()
                loss = try model.forwardBackward(data).mean
                return monotonicSeconds() - start
            }
            for i in 0..<(warmup + steps) {
                // In turn, each first every other step, so neither always follows the other.
                var t = 0.0, b = 0.0
                if let baseline, i % 2 == 1 { b = try step(baseline) }
                t = try step(model)
                if let baseline, i % 2 == 0 { b = try step(baseline) }
                guard i >= warmup else { continue }
                times.append(t)
                if baseline != nil { baselineTimes.append(b); ratios.append(b / t) }
            }
            let median = Statistics.median
            let stepSeconds = median(times)
            let tokens = Double(data.tokenCount)
            let flops = config.trainingFlops(data)
            var extra = ""
            if paired {
                extra += String(format: ", \"paired\": {\"baseline_step_s\": %.4f, \"step_s\": %.4f, \"speed_ratio\": %.4f, \"speed_ratio_min\": %.4f, \"speed_ratio_max\": %.4f}",
                                median(baselineTimes), stepSeconds, median(ratios), ratios.min() ?? 0, ratios.max() ?? 0)
            }
            if breakdown {
                let b = try StepBreakdown.measure(steps: steps) {
                    model.gradients.zero()
                    try model.forwardBackward(data)
                }
                extra = String(format: ", \"breakdown\": {\"step_s\": %.4f, \"in_sgemm_s\": %.4f, \"outside_sgemm_share\": %.4f, \"sgemm_calls\": %d, \"sgemm_gflop\": %.3f, \"step_sgemm_gflops\": %.2f, \"plain_sgemm_s\": %.4f, \"plain_sgemm_gflops\": %.2f, \"step_vs_plain_sgemm\": %.3f, \"cold_sgemm_gflops\": %.2f, \"step_vs_cold_sgemm\": %.3f}",
                               b.stepSeconds, b.sgemmSeconds, b.outsideSgemmShare, b.calls, b.sgemmFlops / 1e9,
                               b.sgemmFlops / b.stepSeconds / 1e9, b.plainSgemmSeconds, b.sgemmFlops / b.plainSgemmSeconds / 1e9,
                               b.plainSgemmSeconds / b.stepSeconds, b.sgemmFlops / b.coldSgemmSeconds / 1e9, b.coldSgemmSeconds / b.stepSeconds)
                // The shapes losing most against their replay, for finding what to fix.
                let shapes = b.shapes.prefix(8).map {
                    "{\"shape\": \"\($0.label)\", " + String(format: "\"calls\": %d, \"step_s\": %.5f, \"plain_s\": %.5f, \"gflop\": %.3f}",
                                                               $0.calls, $0.stepSeconds, $0.plainSeconds, $0.flops / 1e9)
                }
                extra += ", \"slowest_shapes\": [" + shapes.joined(separator: ", ") + "]"
            }
            Console.out(String(format: "{\"impl\": \"dapt\", \"tokens_per_s\": %.1f, \"gflops\": %.2f, \"step_s\": %.4f, \"peak_rss_mb\": %.1f, \"loss\": %.9g, \"threads\": %d, \"block_rows\": %d, \"kernel_lanes\": %d",
                               tokens / stepSeconds, flops / stepSeconds / 1e9, stepSeconds, Double(peakResidentBytes()) / 1048576, loss, threads, model.layerBlockRows,
                               ExponentialKernels.lanes) + extra + "}")
        }
    }
}

extension RecomputeGranularity: ExpressibleByArgument {}
