import DaptCore
import DaptModel
import DaptTestSupport
@testable import DaptTrain
import XCTest

final class LayoutPlannerTests: XCTestCase {
    /// vocab 8, hidden 4, intermediate 8, 2 layers, 2 heads of 2: 160 matrix
    /// weights per layer, 404 parameters in all.
    static let tiny = LlamaConfig(vocabSize: 8, hiddenSize: 4, intermediateSize: 8, numHiddenLayers: 2, numAttentionHeads: 2)

    /// 1 GFLOP/s at full efficiency, 1 ns per updated parameter, 1 GB/s and 1 µs between the ranks of a node.
    static func cluster(ranksPerNode: Int = 2, nodes: Int = 1) -> ClusterDescription {
        var c = ClusterDescription()
        c.ranksPerNode = ranksPerNode; c.nodes = nodes
        c.gflopsPerRank = 1; c.computeEfficiency = 1; c.optimizerNsPerParameter = 1
        c.intraNodeBandwidthGBs = 1; c.intraNodeLatencyUs = 1
        c.interNodeBandwidthGBs = 0.5; c.interNodeLatencyUs = 10
        c.memoryPerRankGiB = 1
        return c
    }

    func planner(_ cluster: ClusterDescription = cluster(), model: LlamaConfig = tiny, batch: Int = 4,
                 precision: Precision = .fp32) throws -> LayoutPlanner {
        try LayoutPlanner(workload: PlanWorkload(model: model, globalBatch: batch, sequenceLength: 4, precision: precision), cluster: cluster)
    }

    func testParameterCountsMatchTheModelsLayout() {
        XCTAssertEqual(Self.tiny.layerMatrixWeights, 160)
        XCTAssertEqual(ParameterLayout(config: Self.tiny).totalCount, 404)
    }

    /// D = 2, one micro-batch of 2 sequences of 4 tokens per rank, computed by hand.
    func testDataParallelMemoryAndTimeByHand() throws {
        let plan = try planner().estimate(PlannedLayout(tensor: 1, pipeline: 1, data: 2, microBatch: 2))
        XCTAssertEqual(plan.memory.parameters, 404 * 4)
        // The gradients, and the ring all-reduce's scratch: a block of 1/D of a bucket per ring in flight,
        // at most 1/D of the gradients (the one 4 MiB bucket holds all 404).
        XCTAssertEqual(plan.memory.gradients, (404 + 202) * 4)
        XCTAssertEqual(plan.memory.optimizer, 2 * 404 * 4)
        // ZeRO-1 holds the reduced slice (202 at D = 2); its reduce-scatters need no scratch with two ranks,
        // and at D = 4 a block of the bucket's part in one rank's slice (101) per ring, eight rings' worth
        // capped at the gradients (404), beside a slice of 101. A single rank has none of it.
        let zero = try planner().estimate(PlannedLayout(tensor: 1, pipeline: 1, data: 2, zero1: true, microBatch: 2))
        XCTAssertEqual(zero.memory.gradients, (404 + 202) * 4)
        let zero4 = try planner().estimate(PlannedLayout(tensor: 1, pipeline: 1, data: 4, zero1: true, microBatch: 1))
        XCTAssertEqual(zero4.memory.gradients, (404 + 404 + 101) * 4)
        XCTAssertEqual(try planner().estimate(PlannedLayout(tensor: 1, pipeline: 1, data: 1, microBatch: 4)).memory.gradients, 404 * 4)
        // Two rollback points of weights and both moments.
        XCTAssertEqual(plan.memory.snapshots, 2 * 3 * 404 * 4)
        // 8 rows: per layer 8·44, the stage output 8·4, final norm 8·5, scratch 8·64;
        // the head's one chunk of logits (all 8 rows) 8·8 and 8 row losses.
        XCTAssertEqual(plan.memory.activations, 1360 * 4)
        // 6·(2·160 + 32)·8 matrix FLOPs + 12·4·(2·(1+2+3+4))·2 attention FLOPs at 1 GFLOP/s.
        XCTAssertEqual(plan.time.compute, 18816e-9, accuracy: 1e-15)
        XCTAssertEqual(plan.time.tensorCommunication, 0)
        XCTAssertEqual(plan.time.bubble, 0)
        // Ring all-reduce of 1616 bytes over 2 ranks: 1616 B / 1 GB/s + 2 messages of 1 µs.
        XCTAssertEqual(plan.time.dataCommunication, 1.616e-6 + 2e-6, accuracy: 1e-15)
        // Each rank updates all 404 parameters at 1 ns each.
        XCTAssertEqual(plan.time.update, 404e-9, accuracy: 1e-15)
        let step: Double = 18816e-9 + 3.616e-6 + 404e-9
        XCTAssertEqual(plan.tokensPerSecond, 16 / step, accuracy: 1e-3)
        XCTAssertTrue(plan.fits)
    }

    /// T = 2: half the matrices on each rank, ten all-reduces of the
    /// [16, 4] activations and the cross-entropy's two row reductions.
    func testTensorParallelMemoryAndTimeByHand() throws {
        let plan = try planner().estimate(PlannedLayout(tensor: 2, pipeline: 1, data: 1, microBatch: 4))
        // (2·160)/2 + 2·2·4 norm gains + 32/2 embedding + 4 final norm + 32/2 head.
        XCTAssertEqual(plan.memory.parameters, 212 * 4)
        // 16 rows: 2·16·30 per layer, 16·4 stage output, 16·5 final norm, 16·44 scratch; 16·4 logits + 16 row losses
        // + 16·3 values the cross-entropy reduces.
        XCTAssertEqual(plan.memory.activations, 1776 * 4)
        XCTAssertEqual(plan.time.compute, 18816e-9, accuracy: 1e-15)
        let allReduce256: Double = 256e-9 + 2e-6, rows: Double = 64e-9 + 2e-6, twoRows: Double = 128e-9 + 2e-6
        XCTAssertEqual(plan.time.tensorCommunication, 10 * allReduce256 + rows + twoRows, accuracy: 1e-15)
        XCTAssertEqual(plan.time.dataCommunication, 0)
        XCTAssertEqual(plan.time.update, 212e-9, accuracy: 1e-15)
    }

    /// Recomputation, by hand: the second layer's saved tensors (8 rows ×
    /// 40 floats) are gone; the first layer's forward runs again but for the
    /// down product (2·(160 − 32)·8 matrix FLOPs + 4·4·20 attention FLOPs);
    /// under T = 2 its output projection's all-reduce runs again too. A
    /// layout that does not fit without it fits with it; with room to spare
    /// the fastest plan does not recompute.
    func testRecomputationByHand() throws {
        let p = try planner()
        let saving = p.estimate(PlannedLayout(tensor: 1, pipeline: 1, data: 2, microBatch: 2))
        let recomputing = p.estimate(PlannedLayout(tensor: 1, pipeline: 1, data: 2, recompute: true, microBatch: 2))
        XCTAssertEqual(recomputing.memory.activations, (1360 - 320) * 4)
        XCTAssertEqual(recomputing.time.compute, 21184e-9, accuracy: 1e-15)
        XCTAssertEqual(recomputing.time.dataCommunication, saving.time.dataCommunication)
        let split = p.estimate(PlannedLayout(tensor: 2, pipeline: 1, data: 1, recompute: true, microBatch: 4))
        let allReduce256: Double = 256e-9 + 2e-6, rows: Double = 64e-9 + 2e-6, twoRows: Double = 128e-9 + 2e-6
        XCTAssertEqual(split.time.tensorCommunication, 11 * allReduce256 + rows + twoRows, accuracy: 1e-15)

        var tight = Self.cluster()
        tight.memoryPerRankGiB = (saving.memory.total + recomputing.memory.total) / 2 / 1073741824
        let planned = try planner(tight)
        XCTAssertFalse(planned.estimate(saving.layout).fits)
        XCTAssertTrue(planned.estimate(recomputing.layout).fits)
        XCTAssertNil(recomputing.notRunnable)
        let plans = try planner().plans().plans
        XCTAssertEqual(LayoutPlanner.recommended(plans)?.layout.recompute, false)
        // Two layers: with P = 2 each stage holds one and reruns nothing, so no such row is listed.
        XCTAssertTrue(plans.contains { $0.layout.recompute && $0.layout.pipeline == 1 })
        XCTAssertFalse(plans.contains { $0.layout.recompute && $0.layout.recomputeGranularity == .layer && $0.layout.pipeline == 2 })
    }

    /// Recomputing some layers: on four layers, each of the first K drops
    /// one layer's saved tensors (320 floats) and costs one rerun; nil means
    /// three (all but the last). Where memory allows two but not one, the
    /// plans list the layout plain, with two and with all layers, by time.
    func testRecomputingSomeLayers() throws {
        var deep = Self.tiny
        deep.numHiddenLayers = 4
        let p = try planner(model: deep)
        func layout(_ layers: Int?, recompute: Bool = true) -> PlannedLayout {
            PlannedLayout(tensor: 1, pipeline: 1, data: 2, recompute: recompute, recomputeLayers: layers, microBatch: 2)
        }
        let plain = p.estimate(layout(nil, recompute: false))
        let some = [1, 2, 3, 7].map { p.estimate(layout($0)) }, all = p.estimate(layout(nil))
        let rerun = some[0].time.compute - plain.time.compute
        XCTAssertGreaterThan(rerun, 0)
        for (plan, layers) in zip(some + [all], [1, 2, 3, 3, 3]) {
            XCTAssertEqual(plain.memory.activations - plan.memory.activations, Double(layers * 320 * 4), "\(plan.layout)")
            XCTAssertEqual(plan.time.compute - plain.time.compute, Double(layers) * rerun, accuracy: 1e-15, "\(plan.layout)")
        }
        XCTAssertEqual(some[1].layout.description, "T=1 P=1 D=2 recompute 2 mb=2")
        XCTAssertNil(some[1].notRunnable)

        var tight = Self.cluster()
        tight.memoryPerRankGiB = (some[0].memory.total + some[1].memory.total) / 2 / 1073741824
        let listed = try planner(tight, model: deep).plans().plans.filter {
            ($0.layout.tensor, $0.layout.pipeline, $0.layout.data, $0.layout.zero1, $0.layout.microBatch) == (1, 1, 2, false, 2)
        }
        XCTAssertEqual(listed.filter { $0.layout.recomputeGranularity == .layer }.map(\.layout),
                       [layout(nil, recompute: false), layout(2), layout(nil)])
        XCTAssertEqual(listed.filter { $0.layout.recomputeGranularity == .layer }.map(\.fits), [false, true, true])
    }

    /// Recomputing [gate | up] rows: each of the first K layers drops 8 rows
    /// × 16 and one micro-batch's rows come back as scratch; each reruns the
    /// [gate | up] product (2·4·16·8 FLOPs), the last layer too, with no
    /// all-reduce under T = 2.
    func testRecomputingGateUpRows() throws {
        var deep = Self.tiny
        deep.numHiddenLayers = 4
        let p = try planner(model: deep)
        func layout(_ layers: Int?, tensor: Int = 1, granularity: RecomputeGranularity = .mlp, recompute: Bool = true) -> PlannedLayout {
            PlannedLayout(tensor: tensor, pipeline: 1, data: 2 / tensor, recompute: recompute, recomputeLayers: layers,
                          recomputeGranularity: granularity, microBatch: 2)
        }
        let plain = p.estimate(layout(nil, granularity: .layer, recompute: false))
        let one = p.estimate(layout(1))
        XCTAssertEqual(one.time.compute - plain.time.compute, 1024e-9, accuracy: 1e-15)
        for (plan, layers) in [(one, 1), (p.estimate(layout(3)), 3), (p.estimate(layout(nil)), 4), (p.estimate(layout(9)), 4)] {
            XCTAssertEqual(plain.memory.activations - plan.memory.activations, Double((layers - 1) * 128 * 4), "\(plan.layout)")
            XCTAssertEqual(plan.time.compute - plain.time.compute, Double(layers) * 1024e-9, accuracy: 1e-15, "\(plan.layout)")
        }
        XCTAssertEqual(p.estimate(layout(nil, tensor: 2)).time.tensorCommunication,
                       p.estimate(layout(nil, tensor: 2, granularity: .layer, recompute: false)).time.tensorCommunication)
        XCTAssertEqual(p.estimate(layout(2)).layout.description, "T=1 P=1 D=2 recompute mlp 2 mb=2")
        XCTAssertNil(p.estimate(layout(2)).notRunnable)
        // With one layer per stage the [gate | up] rows can still be recomputed.
        let stages = try planner().plans().plans.filter { $0.layout.pipeline == 2 && $0.layout.recompute }
        XCTAssertFalse(stages.isEmpty)
        XCTAssertTrue(stages.allSatisfy { $0.layout.recomputeGranularity == .mlp })
    }

    /// Mixed precision adds the fp32 master weights; ZeRO-1 divides moments, masters and the update by D.
    func testMixedPrecisionAndZeroOneOptimizerState() throws {
        let bf16 = try planner(precision: .bf16)
        let whole = bf16.estimate(PlannedLayout(tensor: 1, pipeline: 1, data: 2, microBatch: 2))
        XCTAssertEqual(whole.memory.optimizer, 3 * 404 * 4)
        let sharded = bf16.estimate(PlannedLayout(tensor: 1, pipeline: 1, data: 2, zero1: true, microBatch: 2))
        XCTAssertEqual(sharded.memory.optimizer, 3 * 202 * 4)
        XCTAssertEqual(sharded.memory.snapshots, 2 * (404 + 3 * 202) * 4)
        XCTAssertEqual(sharded.time.dataCommunication, whole.time.dataCommunication)
        XCTAssertEqual(whole.time.update, 404e-9, accuracy: 1e-15)
        XCTAssertEqual(sharded.time.update, 202e-9, accuracy: 1e-15)
    }

    /// The activation floats the planner counts are the ones `Activations` allocates.
    func testActivationCountFollowsTheModel() throws {
        for (model, t) in [(Self.tiny, 1), (Self.tiny, 2), (LlamaConfig(vocabSize: 64, hiddenSize: 32, intermediateSize: 48, numHiddenLayers: 3,
                                                                        numAttentionHeads: 4, numKeyValueHeads: 2), 2)] {
            let p = try planner(model: model)
            for recomputed in 0...model.numHiddenLayers {
                for granularity in RecomputeGranularity.allCases {
                    let allocated = Activations(dims: LayerDimensions(config: model, tensorParallel: t), layers: model.numHiddenLayers,
                                                batchSize: 3, seqLen: 5, recomputedLayers: recomputed, granularity: granularity).allocatedFloats
                    XCTAssertEqual(p.activationElements(layers: model.numHiddenLayers, rows: 15, tensor: t, recomputed: recomputed,
                                                        granularity: granularity), Double(allocated),
                                   "LayoutPlanner.activationElements must count what Activations allocates (T=\(t), \(recomputed) recomputed, \(granularity))")
                }
                // 600 rows: one block of the default 256 holds the [gate | up] scratch, or every row under a tensor split.
                let dims = LayerDimensions(config: model, tensorParallel: t)
                let blocked = Activations(dims: dims, layers: model.numHiddenLayers, batchSize: 3, seqLen: 200, recomputedLayers: recomputed,
                                          granularity: .mlp, gateUpBlockRows: t > 1 ? 600 : DecoderBlock.defaultBlockRows)
                XCTAssertEqual(p.activationElements(layers: model.numHiddenLayers, rows: 600, tensor: t, recomputed: recomputed, granularity: .mlp),
                               Double(blocked.allocatedFloats), "600 rows, T=\(t), [gate | up] of \(recomputed)")
            }
        }
        // The head's scratch: one chunk of logits (512 rows, fewer than the batch's 600) and each row's loss.
        let wide = LlamaConfig(vocabSize: 64, hiddenSize: 8, intermediateSize: 8, numHiddenLayers: 1, numAttentionHeads: 2)
        let model = try LlamaModel(config: wide)
        model.initializeRandom(seed: 1)
        try model.forwardBackward(TokenBatch.synthetic(vocab: wide.vocabSize, batchSize: 3, seqLen: 200))
        XCTAssertEqual(model.headScratchFloats, 512 * 64 + 600)
        XCTAssertEqual(try planner(model: wide).headElements(rows: 600, tensor: 1), Double(model.headScratchFloats))
        // Split over two tensor ranks: all 600 rows of logits of half the vocabulary, a loss and three reduced values per row.
        let split = try InProcessGroup(size: 2).run { rank -> Int in
            let part = try LlamaModel(config: wide, tensorGroup: rank)
            part.initializeRandom(seed: 1)
            try part.forwardBackward(TokenBatch.synthetic(vocab: wide.vocabSize, batchSize: 3, seqLen: 200))
            return part.headScratchFloats
        }
        XCTAssertEqual(split, [600 * 32 + 600 + 3 * 600, 600 * 32 + 600 + 3 * 600])
        XCTAssertEqual(try planner(model: wide).headElements(rows: 600, tensor: 2), Double(split[0]))
    }

    /// Pipeline: the first stage holds P micro-batches at the 1F1B peak; the bubble is one micro-batch of every other stage.
    func testPipelineBubbleAndPeak() throws {
        let p = try planner(batch: 8)
        let plan = p.estimate(PlannedLayout(tensor: 1, pipeline: 2, data: 1, microBatch: 2))
        // 4 micro-batches of 8 rows; stage 0: layer 0 + embedding, stage 1: layer 1 + head.
        // Every stage's activations hold the final norm's output and scales (8·5);
        // the head's logits are the last stage's alone, once.
        XCTAssertEqual(try PipelineStage.partition(Self.tiny, stages: 2).map(\.layers), [0..<1, 1..<2])
        let firstStage: Double = 2 * 8 * (44 + 4 + 5 + 64) * 4
        XCTAssertEqual(plan.memory.activations, firstStage)
        // The last stage is the slowest (layer + LM head): per micro-batch 6·(160+32)·8 + 12·4·20.
        let micro: Double = (6 * 192 * 8 + 12 * 4 * 20) * 1e-9
        XCTAssertEqual(plan.time.compute, 4 * micro, accuracy: 1e-15)
        // The last stage's four micro-batches follow the first stage's first forward and
        // precede its last backward: one micro-batch of the lighter first stage.
        let layer: Double = (6 * 160 * 8 + 12 * 4 * 20) * 1e-9
        XCTAssertEqual(plan.time.bubble, layer, accuracy: 1e-15)
        XCTAssertLessThan(plan.time.bubble, micro, "not (P−1) micro-batches of the slowest stage")
        // One activation of 8·4 floats each way per micro-batch: 128 B / 1 GB/s + 1 µs.
        let send: Double = 128e-9 + 1e-6
        XCTAssertEqual(plan.time.pipelineCommunication, 8 * send, accuracy: 1e-15)
        // T = 2 on one node: each tensor rank sends half (64 B), and the stage's tensor pair all-gathers the 128 B (half crosses, one message).
        let split = try planner(Self.cluster(ranksPerNode: 4), batch: 8).estimate(PlannedLayout(tensor: 2, pipeline: 2, data: 1, microBatch: 2))
        XCTAssertEqual(split.time.pipelineCommunication, 8 * ((64e-9 + 1e-6) + (64e-9 + 1e-6)), accuracy: 1e-15)
    }

    /// Layouts that cannot be built are left out with the reason; those that do not fit are marked.
    func testInfeasibleLayoutsExcludedForTheRightReason() throws {
        let gqa = LlamaConfig(vocabSize: 8, hiddenSize: 4, intermediateSize: 8, numHiddenLayers: 2, numAttentionHeads: 2, numKeyValueHeads: 1)
        let (plans, excluded) = try planner(Self.cluster(ranksPerNode: 4), model: gqa, batch: 2).plans()
        func reason(_ t: Int, _ p: Int) -> String? { excluded.first { $0.tensor == t && $0.pipeline == p }?.reason }
        XCTAssertTrue(reason(2, 1)?.contains("num_key_value_heads (1)") == true, "\(excluded)")
        XCTAssertTrue(reason(4, 1)?.contains("num_attention_heads (2)") == true, "\(excluded)")
        XCTAssertTrue(reason(1, 4)?.contains("4 pipeline stages for model.num_hidden_layers = 2") == true, "\(excluded)")
        XCTAssertTrue(reason(1, 1)?.contains("4 data ranks do not divide the global batch (2)") == true, "\(excluded)")
        XCTAssertEqual(Set(plans.map { "\($0.layout.tensor)x\($0.layout.pipeline)x\($0.layout.data)" }), ["1x2x2"])
        XCTAssertTrue(plans.allSatisfy { $0.layout.tensor * $0.layout.pipeline * $0.layout.data == 4 })

        let totals = try planner().plans().plans.map(\.memory.total)
        let limit = (totals.min()! + totals.max()!) / 2
        var small = Self.cluster()
        small.memoryPerRankGiB = limit / 1073741824.0
        let tight = try planner(small).plans().plans
        for plan in tight { XCTAssertEqual(plan.fits, plan.memory.total <= limit, "\(plan.layout)") }
        XCTAssertTrue(tight.contains { !$0.fits } && tight.contains { $0.fits })
        XCTAssertTrue(LayoutPlanner.recommended(tight).map { $0.fits && $0.notRunnable == nil } ?? false)
    }

    /// Plans are sorted by predicted time; a data-parallel layout dapt runs
    /// today is runnable, and so is ZeRO-1 beside pipeline stages.
    func testPlansSortedAndRunnable() throws {
        let plans = try planner().plans().plans
        XCTAssertEqual(plans.map(\.time.total), plans.map(\.time.total).sorted())
        let dp = plans.first { $0.layout == PlannedLayout(tensor: 1, pipeline: 1, data: 2, microBatch: 2) }
        XCTAssertNotNil(dp)
        XCTAssertNil(dp?.notRunnable)
        let four = try planner(Self.cluster(ranksPerNode: 4)).plans().plans
        let zeroPipeline = four.first { $0.layout == PlannedLayout(tensor: 1, pipeline: 2, data: 2, zero1: true, microBatch: 1) }
        XCTAssertNotNil(zeroPipeline, "\(four.map(\.layout))")
        XCTAssertNil(zeroPipeline?.notRunnable)
        XCTAssertEqual(zeroPipeline?.memory.optimizer ?? 0, (four.first { $0.layout == PlannedLayout(tensor: 1, pipeline: 2, data: 2, microBatch: 1) }?.memory.optimizer ?? 0) / 2,
                       accuracy: 8, "moments halve over 2 data ranks")
    }

    /// Rings that leave a node share its network link; groups within a node use their own links.
    func testGroupsCrossingNodesShareTheNodeLink() {
        let two = Self.cluster(ranksPerNode: 2, nodes: 2)
        // T = 2 within each node; data rings {0, 2} and {1, 3}: two messages leave each node at once.
        let split = Links(cluster: two, tensor: 2, pipeline: 1, data: 2)
        XCTAssertEqual(split.tensor.bandwidth, 1e9)
        XCTAssertEqual(split.tensor.latency, 1e-6)
        XCTAssertEqual(split.data.bandwidth, 0.25e9)
        XCTAssertEqual(split.data.latency, 10e-6, accuracy: 1e-15)
        // D = 4: one ring 0→1→2→3→0, one message leaves each node.
        let ring = Links(cluster: two, tensor: 1, pipeline: 1, data: 4)
        XCTAssertEqual(ring.data.bandwidth, 0.5e9)
        // P = 2 across the nodes with T = 2: stage 0 on node 0 sends two streams to node 1.
        let pipe = Links(cluster: two, tensor: 2, pipeline: 2, data: 1)
        XCTAssertEqual(pipe.pipeline.bandwidth, 0.25e9)
        XCTAssertEqual(pipe.tensor.bandwidth, 1e9)
    }

    /// More ranks than cores: ranks take turns, so compute stretches by ranks ÷ cores, and a
    /// pipeline rank's bubble is only what the full-speed 1F1B path holds beyond that.
    /// Tensors larger than a bucket are buckets of their own: of the eight rings
    /// in flight one may hold the embedding's (one stage holds embedding and
    /// head), the others a [gate] or [up] matrix each.
    func testReductionScratchFollowsTheLargestBuckets() throws {
        let model = LlamaConfig(vocabSize: 32000, hiddenSize: 2048, intermediateSize: 5504, numHiddenLayers: 2, numAttentionHeads: 16)
        let cluster = Self.cluster(ranksPerNode: 8)
        let plain = try planner(cluster, model: model, batch: 8).estimate(PlannedLayout(tensor: 1, pipeline: 1, data: 8, microBatch: 1))
        let count = plain.memory.parameters / 4
        // All-reduce blocks are 1/8 of a bucket: 32000·2048 / 8 for the embedding, 5504·2048 / 8 for seven matrices.
        XCTAssertEqual(plain.memory.gradients / 4 - count, 8_192_000 + 7 * 1_409_024)
        // Reduce-scatter blocks: a bucket's part in one slice, so the embedding's is a whole slice.
        let zero = try planner(cluster, model: model, batch: 8).estimate(PlannedLayout(tensor: 1, pipeline: 1, data: 8, zero1: true, microBatch: 1))
        let slice = (count / 8).rounded(.up)
        XCTAssertEqual(zero.memory.gradients / 4 - count, slice + 7 * 11_272_192 + slice)
    }

    func testOversubscribedRanksTakeTurns() throws {
        var shared = Self.cluster(ranksPerNode: 4)
        shared.coresPerNode = 2
        XCTAssertEqual(shared.concurrentRanksPerNode, 2)
        XCTAssertEqual(Self.cluster(ranksPerNode: 4).concurrentRanksPerNode, 4, "unset: a core per rank")
        let alone = try planner(Self.cluster(ranksPerNode: 4), batch: 8), turns = try planner(shared, batch: 8)
        // Data parallel over 4 ranks on 2 cores: twice the compute, the same communication.
        let d4 = PlannedLayout(tensor: 1, pipeline: 1, data: 4, microBatch: 2)
        XCTAssertEqual(turns.estimate(d4).time.compute, 2 * alone.estimate(d4).time.compute, accuracy: 1e-15)
        XCTAssertEqual(turns.estimate(d4).time.dataCommunication, alone.estimate(d4).time.dataCommunication)
        XCTAssertEqual(turns.estimate(d4).time.bubble, 0)
        XCTAssertEqual(turns.estimate(d4).time.update, 2 * 404e-9, accuracy: 1e-15, "the update takes turns too")
        // P = 2 × D = 2: 2 micro-batches of 8 rows per data rank. Stage 0 holds one layer
        // (`layer` a micro-batch at full speed), stage 1 a layer and the head (`last`). Alone: 2·last
        // of compute and a bubble of one `layer`. In turns the node's two cores share all four ranks' work,
        // 2·(layer + last) per micro-batch, the light stage's ranks lending their core: 2·(layer + last)
        // of compute, longer than the full-speed path of 2·last + layer, so no bubble is left.
        let attention = 12.0 * 4 * 20, layer = (6 * 160 * 8 + attention) * 1e-9, last = (6 * 192 * 8 + attention) * 1e-9
        let pd = PlannedLayout(tensor: 1, pipeline: 2, data: 2, microBatch: 2)
        XCTAssertEqual(alone.estimate(pd).time.compute, 2 * last, accuracy: 1e-15)
        XCTAssertEqual(alone.estimate(pd).time.bubble, layer, accuracy: 1e-15)
        XCTAssertEqual(turns.estimate(pd).time.compute, 2 * (layer + last), accuracy: 1e-15)
        XCTAssertLessThan(turns.estimate(pd).time.compute, 2 * 2 * last, "not the heaviest stage's rank times the ranks per core")
        XCTAssertEqual(turns.estimate(pd).time.bubble, 0)
        // Three stages of one layer on three ranks and two cores, one micro-batch: the cores get
        // through 2·layer + last in (2·layer + last) ÷ 2, against a full-speed path of 2·layer + last.
        var three = shared
        three.ranksPerNode = 3
        let model3 = LlamaConfig(vocabSize: 8, hiddenSize: 4, intermediateSize: 8, numHiddenLayers: 3, numAttentionHeads: 2)
        let p3 = try planner(three, model: model3, batch: 2).estimate(PlannedLayout(tensor: 1, pipeline: 3, data: 1, microBatch: 2))
        XCTAssertEqual(p3.time.compute, (2 * layer + last) / 2, accuracy: 1e-15)
        XCTAssertEqual(p3.time.bubble, (2 * layer + last) / 2, accuracy: 1e-15)
        // Two ranks of a P = 2 layout on four ranks' node of two cores: a core each, the plain plan.
        let two = try planner(shared, batch: 8).estimate(PlannedLayout(tensor: 1, pipeline: 2, data: 1, microBatch: 2))
        XCTAssertEqual(two, try planner(Self.cluster(ranksPerNode: 4), batch: 8).estimate(PlannedLayout(tensor: 1, pipeline: 2, data: 1, microBatch: 2)))
        // As many cores as ranks: the plan of a rank per core.
        shared.coresPerNode = 4
        XCTAssertEqual(try planner(shared, batch: 8).estimate(pd), alone.estimate(pd))
    }

    /// Micro-batches carry fixed work: the curve fitted to two step sizes, and plans that pay for small micro-batches.
    func testSmallMicroBatchesPayTheirFixedWork() throws {
        // Two points of e(n) = 0.8 · n ÷ (n + 256): the curve comes back.
        let fitted = EfficiencyCurve.fit(rows: (1024, 256), efficiency: (0.8 * 1024 / 1280, 0.8 * 256 / 512))
        XCTAssertEqual(fitted.efficiency, 0.8, accuracy: 1e-12)
        XCTAssertEqual(fitted.overheadRows, 256, accuracy: 1e-9)
        XCTAssertEqual(fitted.efficiency(rows: 512), 0.8 * 512 / 768, accuracy: 1e-12)
        // A small step as efficient as the large one (or more: noise): no fixed work, the large step's efficiency.
        XCTAssertEqual(EfficiencyCurve.fit(rows: (1024, 256), efficiency: (0.7, 0.72)), EfficiencyCurve(efficiency: 0.7, overheadRows: 0))
        // A line whose large-batch end passes 1 is held at 1 through the large step's point.
        let held = EfficiencyCurve.fit(rows: (1024, 256), efficiency: (0.9, 0.3))
        XCTAssertEqual(held.efficiency, 1)
        XCTAssertEqual(held.efficiency(rows: 1024), 0.9, accuracy: 1e-12)
        // The planner: compute per micro-batch follows the curve; without fixed work the micro-batch size does not matter.
        var cluster = Self.cluster()
        let plain = try planner(cluster, batch: 8)
        cluster.microBatchOverheadRows = 4
        let paying = try planner(cluster, batch: 8)
        for b in [1, 2, 4] {
            let layout = PlannedLayout(tensor: 1, pipeline: 2, data: 1, microBatch: b)
            let rows = Double(b * 4)  // sequence length 4
            XCTAssertEqual(paying.estimate(layout).time.compute, plain.estimate(layout).time.compute * (rows + 4) / rows, accuracy: 1e-15)
        }
        let mb1 = PlannedLayout(tensor: 1, pipeline: 2, data: 1, microBatch: 1), mb4 = PlannedLayout(tensor: 1, pipeline: 2, data: 1, microBatch: 4)
        XCTAssertGreaterThan(plain.estimate(mb1).tokensPerSecond, plain.estimate(mb4).tokensPerSecond, "no fixed work: more micro-batches, less bubble")
        XCTAssertLessThan(paying.estimate(mb1).tokensPerSecond, paying.estimate(mb4).tokensPerSecond, "4-token micro-batches run at half the rate")
    }

    /// Cluster files: defaults, a round trip through the YAML `--calibrate` writes, errors naming field and value.
    func testClusterDescriptionYAML() throws {
        let dir = try temporaryDirectory(self)
        var c = Self.cluster(ranksPerNode: 8, nodes: 8)
        c.note = "stated: 80 GB accelerators"
        let path = dir + "/cluster.yaml"
        try c.yaml.write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertEqual(try ClusterDescription.load(path: path), c)
        XCTAssertFalse(c.yaml.contains("cores_per_node"), "unset: a core per rank")
        c.coresPerNode = 4
        c.microBatchOverheadRows = 300
        c.optimizerNsPerParameter = 2.375
        try c.yaml.write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertTrue(c.yaml.contains("compute_efficiency: 1\nmicro_batch_overhead_rows: 300\noptimizer_ns_per_parameter: 2.375\n"), c.yaml)
        XCTAssertEqual(try ClusterDescription.load(path: path), c)
        XCTAssertEqual(try ClusterDescription.load(path: path).concurrentRanksPerNode, 4)
        try "micro_batch_overhead_rows: -1\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ClusterDescription.load(path: path)) { XCTAssertTrue("\($0)".contains("micro_batch_overhead_rows"), "\($0)") }
        try "optimizer_ns_per_parameter: -0.5\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ClusterDescription.load(path: path)) { XCTAssertTrue("\($0)".contains("optimizer_ns_per_parameter: must be >= 0, got -0.5"), "\($0)") }
        try "cores_per_node: 0\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ClusterDescription.load(path: path)) { XCTAssertTrue("\($0)".contains("cores_per_node: must be > 0, got 0"), "\($0)") }
        try "nodes: 2\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertEqual(try ClusterDescription.load(path: path).ranksPerNode, ClusterDescription().ranksPerNode)
        try "nodes: 2\ncompute_efficiency: 1.5\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ClusterDescription.load(path: path)) { error in
            XCTAssertEqual("\(error)", "\(path):2:1: compute_efficiency: must be <= 1 (a share of gflops_per_rank), got 1.5")
        }
        try "nodes: 2\nlinks: 3\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ClusterDescription.load(path: path)) { XCTAssertTrue("\($0)".contains("links: unknown key"), "\($0)") }
        try "ranks_per_node: 0\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ClusterDescription.load(path: path)) { XCTAssertTrue("\($0)".contains("ranks_per_node: must be > 0, got 0"), "\($0)") }
    }
}
