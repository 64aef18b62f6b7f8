import ArgumentParser
import DaptCore
import DaptModel
import DaptTrain
import Foundation

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Predict memory per rank and step time of every parallel layout; recommend the fastest that fits.",
        discussion: """
        For each feasible tensor (T), pipeline (P) and data (D) degree, ZeRO-1, activation recomputation (none, and of whole
        layers or of their [gate | up] rows: every layer a stage can, and where only that fits the fewest that fit) and micro-batch size on the cluster's ranks: memory per rank (parameters, gradients, optimizer state, rollback points, activations
        at the 1F1B peak) and step time (compute, tensor-parallel and pipeline communication, pipeline bubble,
        data-parallel gradient all-reduce, optimizer update). Formulas: docs/parallel.md, "Planning".
        --model is a dapt config (its pretrain: section) or a Hugging Face config.json; --cluster a cluster
        YAML (ranks_per_node, nodes, cores_per_node, memory_per_rank_gib, gflops_per_rank, compute_efficiency,
        micro_batch_overhead_rows, optimizer_ns_per_parameter, intra_node_bandwidth_gbs, intra_node_latency_us, inter_node_bandwidth_gbs, inter_node_latency_us),
        whose keys --set overrides. `dapt plan --calibrate --output cluster.yaml` (under mpirun with 2 ranks
        to measure the links) writes one for this machine.
        """)

    @Option(help: ArgumentHelp("A dapt config (pretrain: section) or a Hugging Face config.json.", valueName: "file"))
    var model: String?

    @Option(name: .customLong("global-batch"), help: "Sequences per optimizer step (default: the config's data.global_batch_size).")
    var globalBatch: Int?

    @Option(name: .customLong("seq-len"), help: "Tokens per sequence (default: the config's data.sequence_length).")
    var seqLen: Int?

    @Option(help: "fp32, fp16 or bf16 (default: the config's precision.mode, else fp32).")
    var precision: String?

    @Option(help: ArgumentHelp("Cluster description YAML (default: one small CPU node; see --calibrate).", valueName: "file"))
    var cluster: String?

    @Option(name: .customLong("set"), parsing: .unconditionalSingleValue,
            help: ArgumentHelp("Set a key of the cluster description, e.g. --set nodes=8 (repeatable).", valueName: "key=value"))
    var settings: [String] = []

    @Option(help: "Rows of the table (the fastest layouts that fit).")
    var top = 12

    @Flag(help: "One JSON line per layout (every layout, fitting or not) instead of the table.")
    var json = false

    @Flag(help: "Measure this machine (sgemm, a training step, all-reduce and latency under mpirun) and write a cluster YAML.")
    var calibrate = false

    @Option(help: ArgumentHelp("--calibrate: where to write the cluster YAML (default: print it).", valueName: "file"))
    var output: String?

    @Option(name: .customLong("micro-batch"), help: "--calibrate: sequences in the measured training step.")
    var microBatch = 4

    func run() throws {
        let overrides = try settings.map(ConfigOverride.parse)
        let base = try ConfigLoader.load(ClusterDescription.self, path: cluster, overrides: overrides) { try $0.validate() }
        if calibrate { return try runCalibration(base: base) }
        guard let model else { throw ValidationError("--model is required (a dapt config or a Hugging Face config.json)") }
        let workload = try loadWorkload(path: model)
        let planner = try LayoutPlanner(workload: workload, cluster: base)
        let (plans, excluded) = try Runtime.work { planner.plans() }
        if json {
            plans.forEach { Console.out(Self.json($0)) }
            return
        }
        PlanTable(planner: planner, plans: plans, excluded: excluded, top: top).lines.forEach(Console.out)
    }

    /// The model, batch, length and precision from `--model` and the options.
    /// `calibrating`: only the model and the length are used (the batch is --micro-batch).
    func loadWorkload(path: String, calibrating: Bool = false) throws -> PlanWorkload {
        guard FileSystem.exists(path) else { throw ConfigError(source: "--model \(path)", field: "", reason: "no such file") }
        var config: LlamaConfig
        var batch = calibrating ? microBatch : globalBatch, length = seqLen
        var mode = try precision.map { try Precision(mode: $0, field: "--precision") }
        if path.hasSuffix(".json") {
            config = try LlamaConfig.load(path: path)
        } else {
            let pretrain = try DaptConfig.load(path).pretrain
            if let from = pretrain.model.from {
                config = try LlamaConfig.load(path: from + "/config.json")
            } else {
                guard pretrain.model.vocabSize > 0 else {
                    throw ConfigError(file: path, field: "pretrain.model.vocab_size", reason: "0 (the tokenizer's) cannot be planned without a tokenizer: set the vocabulary size")
                }
                config = pretrain.model.llamaConfig(vocabulary: pretrain.model.vocabSize)
            }
            batch = batch ?? pretrain.data.globalBatchSize
            length = length ?? pretrain.data.sequenceLength
            mode = mode ?? pretrain.precision.mode
        }
        guard let batch else { throw ValidationError("--global-batch is required with a config.json") }
        guard let length else { throw ValidationError("--seq-len is required with a config.json") }
        if let b = globalBatch, b <= 0 { throw ConfigError(source: "--global-batch \(b)", field: "", reason: "must be > 0, got \(b)") }
        if let s = seqLen, s <= 0 { throw ConfigError(source: "--seq-len \(s)", field: "", reason: "must be > 0, got \(s)") }
        return PlanWorkload(model: config, globalBatch: batch, sequenceLength: length, precision: mode ?? .fp32)
    }

    func runCalibration(base: ClusterDescription) throws {
        let config: LlamaConfig, batch: Int, length: Int
        if let model {
            let w = try loadWorkload(path: model, calibrating: true)
            (config, length) = (w.model, w.sequenceLength)
            batch = microBatch
        } else {
            // The benchmarks' small model: vocab 4096, hidden 256, 4 layers, 256 tokens.
            config = LlamaConfig(vocabSize: 4096, hiddenSize: 256, intermediateSize: 688, numHiddenLayers: 4, numAttentionHeads: 4)
            (batch, length) = (microBatch, seqLen ?? 256)
        }
        let output = self.output
        try Runtime.run(cluster: .init()) { ctx in
            let measured = try PlanCalibration.measure(communicator: ctx.communicator, model: config, batch: batch, sequenceLength: length)
            guard ctx.isRoot else { return }
            Console.out(String(format: "sgemm 1024^3: %.1f GFLOP/s per rank (%d rank(s), %d BLAS thread(s) each)", measured.sgemmGFLOPs, measured.ranks, measured.blasThreads))
            Console.out(String(format: "training step (hidden %d, %d layers, %d × %d tokens, forward + backward + AdamW): %.3f s; forward + backward %.1f GFLOP/s, %.3f of sgemm",
                               config.hiddenSize, config.numHiddenLayers, batch, length, measured.stepSeconds, measured.stepGFLOPs, measured.efficiency))
            if measured.smallStepRows > 0 {
                let curve = measured.efficiencyCurve
                Console.out(String(format: "the same step at %d tokens: forward + backward %.1f GFLOP/s, %.3f of sgemm; fitted: %.3f of sgemm at large micro-batches, %.0f tokens of fixed work per micro-batch",
                                   measured.smallStepRows, measured.smallStepGFLOPs, measured.smallStepGFLOPs / measured.sgemmGFLOPs,
                                   curve.efficiency, curve.overheadRows))
            }
            Console.out(String(format: "optimizer update (finiteness check, clipped norm, AdamW): %.3f ns per parameter", measured.updateSecondsPerParameter * 1e9))
            if measured.ranks > 1 {
                Console.out(String(format: "all-reduce %d MiB over %d ranks: %.2f ms, ring bandwidth %.3f GB/s; ping-pong latency %.1f µs",
                                   measured.allReduceBytes >> 20, measured.ranks, measured.allReduceSeconds * 1e3,
                                   measured.bandwidthBytesPerSecond / 1e9, measured.latencySeconds * 1e6))
            }
            let yaml = measured.cluster(base: base).yaml
            if let output {
                let writer = try FileWriter(path: output, atomic: true)
                try writer.write(yaml)
                try writer.commit()
                Console.out("wrote \(output)")
            } else {
                Console.out(String(yaml.dropLast()))
            }
        }
    }

    static func json(_ p: LayoutPlan) -> String {
        let l = p.layout, m = p.memory, t = p.time
        func n(_ v: Double) -> String { String(format: "%.6g", v) }
        var fields = [
            "\"tensor\": \(l.tensor)", "\"pipeline\": \(l.pipeline)", "\"data\": \(l.data)", "\"zero1\": \(l.zero1)",
            "\"recompute\": \(l.recompute)", "\"recompute_layers\": \(l.recomputeLayers.map(String.init) ?? "null")", "\"recompute_granularity\": \"\(l.recomputeGranularity.rawValue)\"", "\"micro_batch\": \(l.microBatch)", "\"memory_bytes\": \(n(m.total))", "\"parameters_bytes\": \(n(m.parameters))",
            "\"gradients_bytes\": \(n(m.gradients))", "\"optimizer_bytes\": \(n(m.optimizer))", "\"snapshots_bytes\": \(n(m.snapshots))",
            "\"activations_bytes\": \(n(m.activations))", "\"step_seconds\": \(n(t.total))", "\"compute_seconds\": \(n(t.compute))",
            "\"tensor_comm_seconds\": \(n(t.tensorCommunication))", "\"pipeline_comm_seconds\": \(n(t.pipelineCommunication))",
            "\"bubble_seconds\": \(n(t.bubble))", "\"data_comm_seconds\": \(n(t.dataCommunication))", "\"update_seconds\": \(n(t.update))",
            "\"tokens_per_second\": \(n(p.tokensPerSecond))", "\"fits\": \(p.fits)",
        ]
        fields.append("\"runs_in_dapt\": \(p.notRunnable == nil)")
        return "{" + fields.joined(separator: ", ") + "}"
    }
}

/// The table `dapt plan` prints.
struct PlanTable {
    let planner: LayoutPlanner
    let plans: [LayoutPlan]
    let excluded: [ExcludedLayout]
    let top: Int

    static func gib(_ bytes: Double) -> String { String(format: "%.2f", bytes / 1073741824) }
    static func seconds(_ s: Double) -> String {
        s == 0 ? "0" : s >= 100 ? String(format: "%.0f", s) : s >= 1 ? String(format: "%.2f", s) : s >= 0.01 ? String(format: "%.3f", s) : String(format: "%.2e", s)
    }

    var lines: [String] {
        let w = planner.workload, c = planner.cluster, m = w.model
        let parameters = ParameterLayout(config: m).totalCount
        var out = [
            String(format: "model: %@ parameters (hidden %d, %d layers, %d heads / %d kv, intermediate %d, vocab %d); global batch %d × %d tokens, %@",
                   parameters >= 1_000_000_000 ? String(format: "%.3gB", Double(parameters) / 1e9) : String(format: "%.3gM", Double(parameters) / 1e6), m.hiddenSize, m.numHiddenLayers, m.numAttentionHeads, m.numKeyValueHeads,
                   m.intermediateSize, m.vocabSize, w.globalBatch, w.sequenceLength, w.precision.rawValue),
            String(format: "cluster: %d node(s) × %d ranks; per rank %.4g GiB, %.4g GFLOP/s × %.3g efficiency; intra-node %.4g GB/s %.3g µs, inter-node %.4g GB/s %.3g µs",
                   c.nodes, c.ranksPerNode, c.memoryPerRankGiB, c.gflopsPerRank, c.computeEfficiency,
                   c.intraNodeBandwidthGBs, c.intraNodeLatencyUs, c.interNodeBandwidthGBs, c.interNodeLatencyUs),
        ]
        if c.microBatchOverheadRows > 0 {
            out[1] += String(format: "; micro-batches of n tokens reach n ÷ (n + %.4g) of the efficiency", c.microBatchOverheadRows)
        }
        out[1] += String(format: "; optimizer update %.3g ns per parameter", c.optimizerNsPerParameter)
        if !c.note.isEmpty { out.append("cluster note: \(c.note)") }
        let fitting = plans.filter(\.fits)
        let shown = fitting.isEmpty ? Array(plans.sorted { $0.memory.total < $1.memory.total }.prefix(top)) : Array(fitting.prefix(top))
        if fitting.isEmpty { out.append("no layout fits in \(c.memoryPerRankGiB) GiB per rank; the smallest:") }
        out.append("")
        out.append("memory per rank in GiB; step time in seconds; z1: ZeRO-1; rc: layers recomputed in backward, rm: their [gate | up] rows (rcK, rmK: each stage's first K); dapt: runs in dapt today")
        let header = ["layout", "memory", "params", "grads", "optim", "snaps", "activ", "step", "compute", "tp comm", "pp comm", "bubble", "dp comm", "update", "tokens/s", "dapt"]
        var rows = [header]
        for p in shown {
            let l = p.layout, mem = p.memory, t = p.time
            rows.append([
                "T=\(l.tensor) P=\(l.pipeline) D=\(l.data)\(l.zero1 ? " z1" : "")\(l.recompute ? (l.recomputeGranularity == .mlp ? " rm" : " rc") + (l.recomputeLayers.map(String.init) ?? "") : "") mb=\(l.microBatch)",
                Self.gib(mem.total), Self.gib(mem.parameters), Self.gib(mem.gradients), Self.gib(mem.optimizer), Self.gib(mem.snapshots), Self.gib(mem.activations),
                Self.seconds(t.total), Self.seconds(t.compute), Self.seconds(t.tensorCommunication), Self.seconds(t.pipelineCommunication),
                Self.seconds(t.bubble), Self.seconds(t.dataCommunication), Self.seconds(t.update), String(format: "%.0f", p.tokensPerSecond),
                p.notRunnable == nil ? "yes" : "no",
            ])
        }
        let widths = header.indices.map { i in rows.map { $0[i].count }.max()! }
        for row in rows {
            out.append(row.enumerated().map { i, cell in
                i == 0 ? cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) : String(repeating: " ", count: widths[i] - cell.count) + cell
            }.joined(separator: "  "))
        }
        out.append("")
        let notFitting = plans.count - fitting.count
        out.append("\(plans.count) layouts estimated, \(fitting.count) fit in \(c.memoryPerRankGiB) GiB per rank" + (notFitting > 0 ? ", \(notFitting) do not" : ""))
        if let best = LayoutPlanner.recommended(plans) {
            out.append("recommended: \(Self.describe(best))")
        } else {
            out.append("recommended: none (no layout that fits runs in dapt today)")
        }
        if let fastest = fitting.first, fastest.notRunnable != nil {
            out.append("fastest that fits, not yet runnable in dapt: \(Self.describe(fastest)) (\(fastest.notRunnable!))")
        }
        for e in excluded {
            out.append("left out T=\(e.tensor) P=\(e.pipeline) D=\(e.data): \(e.reason)")
        }
        return out
    }

    static func describe(_ p: LayoutPlan) -> String {
        let t = p.time
        let terms = [("compute", t.compute), ("tensor-parallel communication", t.tensorCommunication), ("pipeline communication", t.pipelineCommunication),
                     ("pipeline bubble", t.bubble), ("data-parallel communication", t.dataCommunication), ("optimizer update", t.update)]
        let dominant = terms.max { $0.1 < $1.1 }!
        return "\(p.layout): \(gib(p.memory.total)) GiB per rank, \(seconds(t.total)) s per step, \(String(format: "%.0f", p.tokensPerSecond)) tokens/s; "
            + "largest term \(dominant.0) (\(String(format: "%.0f", dominant.1 / max(t.total, 1e-12) * 100))%)"
    }
}
