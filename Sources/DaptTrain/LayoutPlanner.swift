import DaptCluster
import DaptCore
import DaptModel
import Foundation

/// What is being trained: the model, the global batch and sequence length, and the precision.
public struct PlanWorkload: Equatable, Sendable {
    public var model: LlamaConfig
    public var globalBatch: Int
    public var sequenceLength: Int
    public var precision: Precision

    public init(model: LlamaConfig, globalBatch: Int, sequenceLength: Int, precision: Precision = .fp32) {
        self.model = model; self.globalBatch = globalBatch; self.sequenceLength = sequenceLength; self.precision = precision
    }

    public func validate() throws {
        try model.validate()
        try Check.positive(globalBatch, "global_batch")
        try Check.positive(sequenceLength, "sequence_length")
    }

    public var tokensPerStep: Int { globalBatch * sequenceLength }
}

/// How dapt holds and moves data today, which the estimates follow.
public struct PlanAssumptions: Equatable, Sendable {
    /// Bytes per element of weights, gradients, moments, activations and
    /// everything sent: dapt keeps Float buffers in every precision (bf16/fp16
    /// values are rounded in place, not stored in 2 bytes).
    public var elementBytes = 4
    /// Rollback points kept in memory (`pretrain.spikes`; 0 when disabled).
    public var rollbackSnapshots = 2
    /// Micro-batch sizes to try; empty: the powers of two up to each data rank's share.
    public var microBatchSizes: [Int] = []
    public init() {}
}

/// One way to run the workload: T, P, D, ZeRO-1, activation recomputation
/// and the micro-batch size.
public struct PlannedLayout: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var tensor: Int
    public var pipeline: Int
    public var data: Int
    public var zero1: Bool
    /// Layers recomputed in backward (`pretrain.parallel.recompute`).
    public var recompute: Bool
    /// With `recompute`, how many of each stage's first layers
    /// (`pretrain.parallel.recompute_layers`); nil: all it can.
    public var recomputeLayers: Int?
    /// What they recompute (`pretrain.parallel.recompute_granularity`).
    public var recomputeGranularity: RecomputeGranularity
    public var microBatch: Int

    /// A layer count or the `.mlp` granularity implies `recompute` (the
    /// config refuses them without it; a layout cannot be that mistaken).
    public init(tensor: Int, pipeline: Int, data: Int, zero1: Bool = false, recompute: Bool = false, recomputeLayers: Int? = nil,
                recomputeGranularity: RecomputeGranularity = .layer, microBatch: Int) {
        self.tensor = tensor; self.pipeline = pipeline; self.data = data; self.zero1 = zero1
        self.recompute = recompute || recomputeLayers != nil || recomputeGranularity != .layer
        self.recomputeLayers = recomputeLayers; self.recomputeGranularity = recomputeGranularity
        self.microBatch = microBatch
    }

    /// The settings `dapt pretrain` takes for this layout's recomputation.
    var parallelRecompute: PretrainConfig.Parallel {
        var parallel = PretrainConfig.Parallel()
        parallel.recompute = recompute
        parallel.recomputeLayers = recomputeLayers
        parallel.recomputeGranularity = recomputeGranularity
        return parallel
    }

    public var description: String {
        let what = recomputeGranularity == .mlp ? " mlp" : ""
        let rc = recompute ? " recompute" + what + (recomputeLayers.map { " \($0)" } ?? "") : ""
        return "T=\(tensor) P=\(pipeline) D=\(data)\(zero1 ? " zero1" : "")\(rc) mb=\(microBatch)"
    }
}

/// Bytes one rank holds (the largest over pipeline stages).
public struct MemoryEstimate: Equatable, Sendable {
    /// The model's working copy of this rank's parameters.
    public var parameters = 0.0
    public var gradients = 0.0
    /// AdamW moments and, in mixed precision, the fp32 master weights (÷ D under ZeRO-1).
    public var optimizer = 0.0
    /// In-memory rollback points (weights, this rank's moments and master slice).
    public var snapshots = 0.0
    /// Saved activations and scratch of the micro-batches in flight at the 1F1B peak.
    public var activations = 0.0
    public var total: Double { parameters + gradients + optimizer + snapshots + activations }
}

/// Seconds of one optimizer step, by where they go (nothing overlaps).
public struct StepTimeEstimate: Equatable, Sendable {
    /// Forward and backward of this rank's micro-batches on the slowest stage.
    public var compute = 0.0
    /// Tensor-parallel all-reduces of activations and their gradients.
    public var tensorCommunication = 0.0
    /// Pipeline sends of activations and their gradients between stages.
    public var pipelineCommunication = 0.0
    /// Pipeline fill and drain: one micro-batch of every other stage (less on an oversubscribed node).
    public var bubble = 0.0
    /// The data-parallel gradient all-reduce (or reduce-scatter + all-gather under ZeRO-1).
    public var dataCommunication = 0.0
    /// The optimizer update of the parameters this rank owns (once per step).
    public var update = 0.0
    public var total: Double { compute + tensorCommunication + pipelineCommunication + bubble + dataCommunication + update }
    /// Share of the step not spent computing.
    public var communicationShare: Double { total > 0 ? (tensorCommunication + pipelineCommunication + dataCommunication) / total : 0 }
}

/// One layout's estimate.
public struct LayoutPlan: Equatable, Sendable {
    public var layout: PlannedLayout
    public var memory: MemoryEstimate
    public var time: StepTimeEstimate
    public var tokensPerSecond: Double
    /// Whether the memory fits the rank.
    public var fits: Bool
    /// Why dapt cannot run this layout today (nil: it can).
    public var notRunnable: String?
}

/// A (T, P, D) the planner left out, and why.
public struct ExcludedLayout: Equatable, Sendable {
    public var tensor: Int, pipeline: Int, data: Int
    public var reason: String
}

/// Estimates memory per rank and step time for every way of splitting a
/// workload over a cluster (tensor, pipeline and data degrees, ZeRO-1,
/// micro-batch size). The formulas are in docs/parallel.md ("Planning").
public struct LayoutPlanner: Sendable {
    public let workload: PlanWorkload
    public let cluster: ClusterDescription
    public let assumptions: PlanAssumptions

    public init(workload: PlanWorkload, cluster: ClusterDescription, assumptions: PlanAssumptions = .init()) throws {
        try workload.validate()
        try cluster.validate()
        self.workload = workload; self.cluster = cluster; self.assumptions = assumptions
    }

    /// Every layout of the cluster's ranks: the estimates of those that are
    /// feasible (fitting or not), sorted by predicted step time, and the
    /// (T, P, D) left out with the reason.
    public func plans() -> (plans: [LayoutPlan], excluded: [ExcludedLayout]) {
        let world = cluster.world, c = workload.model, G = workload.globalBatch
        var plans: [LayoutPlan] = [], excluded: [ExcludedLayout] = []
        for T in divisors(world) {
            for P in divisors(world / T) {
                let D = world / (T * P)
                func exclude(_ reason: String) { excluded.append(ExcludedLayout(tensor: T, pipeline: P, data: D, reason: reason)) }
                if let problem = c.tensorParallelProblems(T).first { exclude(problem); continue }
                do { _ = try PipelineStage.partition(c, stages: P) } catch let error as ConfigError { exclude(error.reason); continue } catch { exclude("\(error)"); continue }
                if G % D != 0 { exclude("\(D) data ranks do not divide the global batch (\(G)): every data rank needs an equal share"); continue }
                let sizes = microBatchSizes(share: G / D)
                if sizes.isEmpty { exclude("no micro-batch size among \(assumptions.microBatchSizes) divides each data rank's share (\(G / D))"); continue }
                for zero1 in D > 1 ? [false, true] : [false] {
                    for b in sizes {
                        let plain = estimate(PlannedLayout(tensor: T, pipeline: P, data: D, zero1: zero1, microBatch: b))
                        plans.append(plain)
                        for granularity in RecomputeGranularity.allCases {
                            // With one layer per stage no layer is rerun: recomputing it would repeat the row.
                            if granularity == .layer && c.numHiddenLayers <= P { continue }
                            let all = estimate(PlannedLayout(tensor: T, pipeline: P, data: D, zero1: zero1, recompute: true,
                                                             recomputeGranularity: granularity, microBatch: b))
                            plans.append(all)
                            // Where only recomputation fits, also the fewest recomputed layers that fit.
                            if !plain.fits && all.fits, let fewest = fewestRecomputedLayersFitting(all.layout) {
                                plans.append(fewest)
                            }
                        }
                    }
                }
            }
        }
        plans.sort { ($0.time.total, $0.memory.total) < ($1.time.total, $1.memory.total) }
        return (plans, excluded)
    }

    /// The plan recomputing (as `layout` does) the fewest of each stage's
    /// first layers that fits, when fewer than all it can. Memory falls
    /// with every layer added, so a bisection finds it.
    func fewestRecomputedLayersFitting(_ layout: PlannedLayout) -> LayoutPlan? {
        var layout = layout
        let stages = (try? PipelineStage.partition(workload.model, stages: layout.pipeline, recomputedLayers: workload.model.numHiddenLayers,
                                                  granularity: layout.recomputeGranularity)) ?? []
        let allCount = layout.recomputeGranularity.recomputed(Int.max, stageLayers: stages.map(\.layers.count).max() ?? 1)
        var low = 1, high = allCount, best: LayoutPlan?
        while low < high {
            let k = (low + high) / 2
            layout.recomputeLayers = k; layout.recompute = true
            let plan = estimate(layout)
            if plan.fits { best = plan; high = k } else { low = k + 1 }
        }
        guard let best, best.layout.recomputeLayers == low, low < allCount else { return nil }
        return best
    }

    /// The fastest plan that fits and that dapt runs today, if any.
    public static func recommended(_ plans: [LayoutPlan]) -> LayoutPlan? {
        plans.first { $0.fits && $0.notRunnable == nil }
    }

    private func microBatchSizes(share: Int) -> [Int] {
        if !assumptions.microBatchSizes.isEmpty { return assumptions.microBatchSizes.filter { $0 > 0 && share % $0 == 0 } }
        return sequence(first: 1) { $0 * 2 }.prefix { $0 <= share }.filter { share % $0 == 0 }
    }

    // MARK: One layout

    /// Memory, step time and tokens/s of one layout.
    public func estimate(_ layout: PlannedLayout) -> LayoutPlan {
        let c = workload.model, T = layout.tensor, P = layout.pipeline, D = layout.data
        let b = layout.microBatch, s = workload.sequenceLength, e = Double(assumptions.elementBytes)
        let m = workload.globalBatch / D / b
        let h = c.hiddenSize, V = c.vocabSize
        let mixed = workload.precision != .fp32
        // Smaller micro-batches reach less of the sgemm rate (each carries fixed work).
        let curve = EfficiencyCurve(efficiency: cluster.computeEfficiency, overheadRows: cluster.microBatchOverheadRows)
        let rate = cluster.gflopsPerRank * 1e9 * curve.efficiency(rows: Double(b * s))
        let links = Links(cluster: cluster, tensor: T, pipeline: P, data: D)
        let rowsBytes = Double(b * s) * e, activationBytes = rowsBytes * Double(h)

        var memory = MemoryEstimate()
        var stageParameters = 0.0
        var stageMicro = [Double](repeating: 0, count: P), stageTensor = stageMicro, stageUpdate = stageMicro
        // The trainer's own split (layers balanced by cost, the head on the last stage).
        let recomputed = layout.parallelRecompute.recomputedLayers(of: c.numHiddenLayers)
        let granularity = layout.recomputeGranularity
        let stages = (try? PipelineStage.partition(c, stages: P, recomputedLayers: recomputed, granularity: granularity)) ?? []
        for stage in 0..<P {
            let L = stages[stage].layers.count
            let first = stage == 0, last = stage == P - 1
            // Parameters this rank holds: split matrices ÷ T, norm gains whole.
            var count = Double(L * c.layerMatrixWeights) / Double(T) + Double(L * 2 * h)
            if first { count += Double(V * h / T) }
            if last { count += Double(h) + (c.tieWordEmbeddings && first ? 0 : Double(V * h / T)) }
            let owned = layout.zero1 ? (count / Double(D)).rounded(.up) : count
            stageUpdate[stage] = owned * cluster.optimizerNsPerParameter * 1e-9
            var stageMemory = MemoryEstimate()
            stageMemory.parameters = count * e
            stageMemory.gradients = (count + reductionScratch(stageElements: count, layerTensor: c.intermediateSize * h / T,
                                                               endTensor: first || last ? V * h / T : 0, layout: layout)) * e
            stageMemory.optimizer = (2 * owned + (mixed ? owned : 0)) * e
            stageMemory.snapshots = Double(assumptions.rollbackSnapshots) * (count + 2 * owned + (mixed && layout.zero1 ? owned : 0)) * e
            // 1F1B: stage i holds the activations of min(P − i, m) micro-batches at its peak.
            let inFlight = Double(min(P - stage, m))
            let rerun = granularity.recomputed(recomputed, stageLayers: L)
            stageMemory.activations = (inFlight * activationElements(layers: L, rows: b * s, tensor: T, recomputed: rerun,
                                                                     granularity: granularity)
                + (last ? headElements(rows: b * s, tensor: T) : 0)) * e
            if stageMemory.total > memory.total { memory = stageMemory }
            stageParameters = max(stageParameters, count)

            // Forward + backward FLOPs of one micro-batch on this rank: 6 per
            // matrix weight per token, attention 12·q_dim per visible key per token per layer.
            let matrixWeights = Double(L * c.layerMatrixWeights + (last ? V * h : 0)) / Double(T)
            let visibleKeys = Double(b) * Double(s) * Double(s + 1) / 2
            var flops = 6 * matrixWeights * Double(b * s) + 12 * Double(c.qDimension / T) * visibleKeys * Double(L)
            // Recomputation runs each layer's forward again but for the MLP's
            // down product (2 per weight per token, attention 4·q_dim per
            // visible key), never the stage's last layer, whose forward left
            // its tensors in place; or only the [gate | up] product, 2·h·2I per token.
            switch granularity {
            case .layer:
                flops += Double(rerun) * (2 * Double(c.layerMatrixWeights - h * c.intermediateSize) / Double(T) * Double(b * s)
                                          + 4 * Double(c.qDimension / T) * visibleKeys)
            case .mlp:
                flops += Double(rerun) * 4 * Double(h * c.intermediateSize) / Double(T) * Double(b * s)
            }
            let rerunAllReduces = granularity == .layer ? rerun : 0
            stageMicro[stage] = flops / rate
            // Four all-reduces of the [b·s, hidden] activations per layer (two forward,
            // two backward; one more per recomputed layer, the attention's output
            // projection), the embedding's sum and the head's input gradient, and
            // the vocabulary-parallel cross-entropy's two row reductions.
            var comm = Double(4 * L + rerunAllReduces + (first ? 1 : 0) + (last ? 1 : 0)) * links.tensor.allReduce(bytes: activationBytes, ranks: T)
            if last { comm += links.tensor.allReduce(bytes: rowsBytes, ranks: T) + links.tensor.allReduce(bytes: 2 * rowsBytes, ranks: T) }
            stageTensor[stage] = comm
        }
        let tensorMicro = stageTensor.max() ?? 0
        var time = StepTimeEstimate()
        time.compute = Double(m) * nodeMicroSeconds(stageMicro: stageMicro, layout: layout)
        time.tensorCommunication = Double(m) * tensorMicro
        // Each stage sends one activation forward and receives one gradient back per micro-batch;
        // each tensor rank sends its 1/T share, which the receiving stage's tensor group all-gathers.
        let transfer = links.pipeline.send(bytes: activationBytes / Double(T)) + links.tensor.allGather(bytes: activationBytes, ranks: T)
        time.pipelineCommunication = P > 1 ? 2 * Double(m) * transfer : 0
        // The 1F1B critical path at full speed: the slowest stage's m micro-batches
        // plus one micro-batch of every other stage (filling the pipe before its
        // first, draining it after its last), (m + P − 1) micro-batches when the
        // stages are equal. The bubble is what it holds beyond this rank's own
        // work; ranks taking turns fill their bubbles with one another's work.
        let stageTimes = zip(stageMicro, stageTensor).map { $0 + $1 }
        let slowest = stageTimes.max() ?? 0
        let criticalPath = Double(m - 1) * slowest + stageTimes.reduce(0, +)
        time.bubble = P > 1 ? max(0, criticalPath - time.compute - time.tensorCommunication) : 0
        // Reduce-scatter + all-gather move the same bytes as one all-reduce.
        time.dataCommunication = links.data.allReduce(bytes: stageParameters * e, ranks: D)
        // Every rank updates its own parameters after the reduction; ranks sharing cores take turns.
        time.update = nodeMicroSeconds(stageMicro: stageUpdate, layout: layout)
        return LayoutPlan(layout: layout, memory: memory, time: time,
                          tokensPerSecond: Double(workload.tokensPerStep) / max(time.total, 1e-12),
                          fits: memory.total <= cluster.memoryPerRankGiB * 1073741824,
                          notRunnable: notRunnable(layout))
    }

    /// The slowest node's time for one piece of work on each of its ranks
    /// (a micro-batch, or the optimizer update), at `stageMicro[p]` seconds
    /// on a stage-p rank. With a core
    /// per rank, the slowest rank's; on an oversubscribed node (more ranks
    /// than `cores_per_node`) the ranks take turns, so the node's cores get
    /// through the sum of its ranks' work (a light stage's rank lends its
    /// core to a heavy one), and no rank runs on more than one core.
    func nodeMicroSeconds(stageMicro: [Double], layout: PlannedLayout) -> Double {
        let ranks = layout.tensor * layout.pipeline * layout.data, perNode = cluster.ranksPerNode
        let cores = Double(cluster.concurrentRanksPerNode)
        var slowest = 0.0
        for first in stride(from: 0, to: ranks, by: perNode) {
            // Ranks are ordered tensor fastest, then pipeline, then data.
            let work = (first..<min(first + perNode, ranks)).map { stageMicro[($0 / layout.tensor) % layout.pipeline] }
            slowest = max(slowest, work.max() ?? 0, Double(work.count) > cores ? work.reduce(0, +) / cores : 0)
        }
        return slowest
    }

    /// Floats one `Activations` holds for `layers` layers of `rows` tokens on
    /// one of T tensor ranks: per layer the residual input, mid, q, k, v, the
    /// attention output, its log-sum-exp, two norm scales and [gate | up]
    /// (the `recomputed` first layers keep only their input, the next sharing
    /// its slot with them; with the `.mlp` granularity they keep all but
    /// [gate | up], of which one block of rows is scratch: the layers'
    /// default block, or all rows under a tensor split); the stage
    /// output; the final norm's output and scales (allocated on every
    /// pipeline stage, used on the last); and the layers' scratch.
    func activationElements(layers L: Int, rows n: Int, tensor T: Int, recomputed: Int = 0,
                            granularity: RecomputeGranularity = .layer) -> Double {
        let c = workload.model
        let H = Double(c.hiddenSize), q = Double(c.qDimension / T), kv = Double(c.kvDimension / T)
        let I = Double(c.intermediateSize / T), heads = Double(c.numAttentionHeads / T), N = Double(n)
        let input = N * H, saved = N * (H + q + 2 * kv + q + heads + 2 + 2 * I)
        let total: Double
        var scratch = N * (4 * H + 2 * q + 2 * kv + 4 * I)
        let k = granularity.recomputed(recomputed, stageLayers: L)
        switch granularity {
        case .layer:
            total = Double(L) * (input + saved) - Double(k) * saved
        case .mlp:
            total = Double(L) * (input + saved) - Double(k) * N * 2 * I
            let blockRows = T > 1 ? n : min(n, DecoderBlock.defaultBlockRows)
            if k > 0 { scratch += Double(blockRows) * 2 * I }
        }
        return total + N * H + N * (H + 1) + scratch
    }

    /// Floats the last stage's head holds once, whatever the micro-batches
    /// in flight: one chunk of logits of its 1/T of the vocabulary and a
    /// loss per row of a micro-batch of `rows` tokens; split (T > 1), one
    /// chunk of all rows and the cross-entropy's statistics per row.
    /// The data-parallel reduction's own memory beside the gradients (none
    /// at D = 1), an upper bound: under ZeRO-1 the reduced slice (1/D of
    /// them), and the ring collectives' scratch, one block per ring in flight
    /// (`NonBlockingReductions.running`). Buckets are cut at tensor boundaries,
    /// so a bucket is `bucket_mb` (its default) or one larger tensor: at most
    /// one ring holds the embedding's or head's (`endTensor`), the others at
    /// most a layer's largest matrix ([gate] or [up], `layerTensor`). An
    /// all-reduce's block is 1/D of its bucket; a reduce-scatter's is the
    /// bucket's part in one rank's slice, up to the whole bucket (and none
    /// with two ranks, whose one step receives straight into the slice).
    func reductionScratch(stageElements count: Double, layerTensor: Int, endTensor: Int, layout: PlannedLayout) -> Double {
        guard layout.data > 1 else { return 0 }
        let D = Double(layout.data), slice = (count / D).rounded(.up)
        func block(_ bucket: Double) -> Double { layout.zero1 ? min(bucket, slice) : (bucket / D).rounded(.up) }
        let bucket = max(PretrainConfig.Parallel().bucketMB * 1_048_576 / Double(assumptions.elementBytes), Double(layerTensor))
        let rings = Double(NonBlockingReductions.running)
        let scratch = layout.zero1 && layout.data == 2 ? 0
            : endTensor > 0 ? block(max(bucket, Double(endTensor))) + (rings - 1) * block(bucket) : rings * block(bucket)
        return min(scratch, layout.zero1 ? count : slice) + (layout.zero1 ? slice : 0)
    }

    func headElements(rows n: Int, tensor T: Int) -> Double {
        let V = workload.model.vocabSize / T
        guard T == 1 else { return Double(n * V + n + VocabParallelStatistics.floats(rows: n)) }
        return Double(min(n, HeadChunking.rows(vocab: V, hidden: workload.model.hiddenSize)) * V + n)
    }

    /// Why dapt refuses the layout today, from the trainer's own checks.
    func notRunnable(_ layout: PlannedLayout) -> String? {
        var config = PretrainConfig()
        config.parallel = layout.parallelRecompute
        config.parallel.tensor = layout.tensor
        config.parallel.pipeline = layout.pipeline
        config.parallel.zero = layout.zero1 ? 1 : 0
        config.data.globalBatchSize = workload.globalBatch
        config.data.microBatchSize = layout.microBatch
        do {
            _ = try ParallelLayout(world: cluster.world, parallel: config.parallel)
            try config.validate()
        } catch let error as ConfigError {
            return error.description
        } catch {
            return "\(error)"
        }
        return nil
    }
}

/// The links each kind of group talks over, given where its ranks sit:
/// ranks fill nodes in order (rank r on node r ÷ ranks_per_node) and are
/// ordered tensor fastest, then pipeline, then data.
struct Links {
    struct Link {
        /// Bytes per second per message stream, and seconds per message.
        var bandwidth: Double, latency: Double

        /// Ring all-reduce of `bytes` over `ranks`: 2(k−1)/k of the bytes cross
        /// each link, in 2(k−1) messages.
        func allReduce(bytes: Double, ranks k: Int) -> Double {
            guard k > 1 else { return 0 }
            let hops = 2 * Double(k - 1)
            return hops / Double(k) * bytes / bandwidth + hops * latency
        }

        /// Ring all-gather of `bytes` in all over `ranks`: (k−1)/k of them cross each link, in k−1 messages.
        func allGather(bytes: Double, ranks k: Int) -> Double {
            guard k > 1 else { return 0 }
            return Double(k - 1) / Double(k) * bytes / bandwidth + Double(k - 1) * latency
        }

        func send(bytes: Double) -> Double { bytes / bandwidth + latency }
    }

    var tensor: Link, pipeline: Link, data: Link

    init(cluster: ClusterDescription, tensor T: Int, pipeline P: Int, data D: Int) {
        func rank(_ t: Int, _ p: Int, _ d: Int) -> Int { t + T * p + T * P * d }
        var tensorRings: [[Int]] = [], dataRings: [[Int]] = [], stageEdges: [(Int, Int)] = []
        for d in 0..<D { for p in 0..<P { tensorRings.append((0..<T).map { rank($0, p, d) }) } }
        for p in 0..<P { for t in 0..<T { dataRings.append((0..<D).map { rank(t, p, $0) }) } }
        for d in 0..<D { for t in 0..<T { for p in 0..<max(P - 1, 0) { stageEdges.append((rank(t, p, d), rank(t, p + 1, d))) } } }
        func ringEdges(_ rings: [[Int]]) -> [(Int, Int)] {
            rings.flatMap { ring in ring.count < 2 ? [] : ring.indices.map { (ring[$0], ring[($0 + 1) % ring.count]) } }
        }
        self.tensor = Self.link(edges: ringEdges(tensorRings), cluster: cluster)
        self.data = Self.link(edges: ringEdges(dataRings), cluster: cluster)
        self.pipeline = Self.link(edges: stageEdges, cluster: cluster)
    }

    /// The slowest link of a set of concurrent messages: within a node each
    /// rank has its own intra-node link; a node's network link is shared by
    /// all the messages leaving that node at once.
    static func link(edges: [(Int, Int)], cluster: ClusterDescription) -> Link {
        let intra = Link(bandwidth: cluster.intraNodeBandwidthGBs * 1e9, latency: cluster.intraNodeLatencyUs * 1e-6)
        var leaving: [Int: Int] = [:]
        for (from, to) in edges where from / cluster.ranksPerNode != to / cluster.ranksPerNode {
            leaving[from / cluster.ranksPerNode, default: 0] += 1
        }
        guard let shared = leaving.values.max() else { return intra }
        return Link(bandwidth: min(intra.bandwidth, cluster.interNodeBandwidthGBs * 1e9 / Double(shared)),
                    latency: max(intra.latency, cluster.interNodeLatencyUs * 1e-6))
    }
}

/// The divisors of `n`, ascending.
func divisors(_ n: Int) -> [Int] { (1...max(n, 1)).filter { n % $0 == 0 } }
