import DaptBLAS
import DaptCluster
import DaptCore
import DaptModel
import Foundation

/// This machine measured for `dapt plan --calibrate`: sgemm rate, the share
/// of it a training step reaches, all-reduce bandwidth and message latency
/// between the ranks of the job. Every rank takes part (the collectives are
/// the job's own); the result is the same on every rank.
public struct PlanCalibration: Equatable, Sendable {
    public var ranks = 1
    public var hosts = 1
    public var blasThreads = 1
    /// Square sgemm rate per rank (mean over ranks, all measuring at once).
    public var sgemmGFLOPs = 0.0
    /// A forward + backward + AdamW step of `model` per rank (mean over ranks),
    /// and the rate of its forward + backward (the optimizer's work is per
    /// step, not per micro-batch, and the plan's compute term counts the passes).
    public var stepSeconds = 0.0
    public var stepGFLOPs = 0.0
    /// The step's optimizer update (finiteness check, clipped norm, AdamW) per parameter (mean over ranks).
    public var updateSecondsPerParameter = 0.0
    /// Tokens per step: `batch` sequences, and the smaller step's quarter of them (0: not measured);
    /// the smaller step's forward + backward rate.
    public var stepRows = 0
    public var smallStepRows = 0
    public var smallStepGFLOPs = 0.0
    /// Half a ping-pong round trip of one float between ranks 0 and 1.
    public var latencySeconds = 0.0
    /// All-reduce of `allReduceBytes` over every rank, and the bandwidth a ring would need for it.
    public var allReduceBytes = 0
    public var allReduceSeconds = 0.0
    public var bandwidthBytesPerSecond = 0.0
    public var memoryPerRankBytes = 0.0

    /// The forward + backward passes' share of the sgemm rate at `batch` sequences.
    public var efficiency: Double { sgemmGFLOPs > 0 ? stepGFLOPs / sgemmGFLOPs : 0 }

    /// The step's efficiency at large micro-batches and its fixed work per
    /// micro-batch in rows, fitted to the two step sizes (`EfficiencyCurve`).
    public var efficiencyCurve: EfficiencyCurve {
        guard smallStepRows > 0, sgemmGFLOPs > 0 else { return EfficiencyCurve(efficiency: efficiency, overheadRows: 0) }
        return EfficiencyCurve.fit(rows: (Double(stepRows), Double(smallStepRows)),
                                   efficiency: (efficiency, smallStepGFLOPs / sgemmGFLOPs))
    }

    /// Measures on every rank of `communicator`; the step runs `model` on
    /// `batch` sequences of `sequenceLength` synthetic tokens.
    public static func measure(communicator comm: any Communicator, model config: LlamaConfig, batch: Int, sequenceLength: Int,
                               gemm: Int = 1024, allReduceMiB: Double = 16) throws -> PlanCalibration {
        var r = PlanCalibration()
        r.ranks = comm.size
        r.blasThreads = BLAS.threads
        r.hosts = Set(try comm.allGather(comm.hostName)).count
        r.memoryPerRankBytes = Double(ProcessInfo.processInfo.physicalMemory) / Double(max(1, comm.size / r.hosts))
        try comm.barrier()
        r.sgemmGFLOPs = try comm.allReduce(DaptTrain.sgemmGFLOPs(size: gemm), op: .sum) / Double(comm.size)

        let model = try LlamaModel(config: config)
        model.threads = BLAS.threads
        model.initializeRandom(seed: 1)
        // The step at `batch` sequences and at a quarter of them, in alternating
        // blocks (a warm-up step, then two timed: a new shape reallocates the
        // activations), so a drift in the machine's speed falls on both.
        let small = max(1, batch / 4)
        let sizes = small < batch ? [batch, small] : [batch]
        let data = try sizes.map { try TokenBatch.synthetic(vocab: config.vocabSize, batchSize: $0, seqLen: sequenceLength) }
        let optimizer = AdamW(count: model.layout.totalCount, segments: decaySegments(model.layout))
        var times = [[Double]](repeating: [], count: sizes.count), passes = times, updates: [Double] = []
        try comm.barrier()
        for _ in 0..<2 {
            for (i, batch) in data.enumerated() {
                for step in 0..<3 {
                    let started = monotonicSeconds()
                    model.gradients.zero()
                    _ = try model.forwardBackward(batch)
                    let passed = monotonicSeconds()
                    if step > 0 { passes[i].append(passed - started) }
                    // The trainer's update of its own parameters: finiteness, the clipped norm, AdamW.
                    model.parameters.withBuffer { p in
                        model.gradients.withBuffer { g in
                            guard allFinite(UnsafeBufferPointer(g)) else { return }
                            let norm = Float(sumOfSquares(UnsafeBufferPointer(g)).squareRoot())
                            optimizer.step(parameters: p, gradients: UnsafeBufferPointer(g), learningRate: 1e-6,
                                           gradientScale: clippingCoefficient(norm: norm, maxNorm: 1))
                        }
                    }
                    if step > 0 {
                        times[i].append(monotonicSeconds() - started)
                        updates.append(monotonicSeconds() - passed)
                    }
                }
            }
        }
        let median = Statistics.median
        r.stepRows = batch * sequenceLength
        r.stepSeconds = try comm.allReduce(median(times[0]), op: .sum) / Double(comm.size)
        r.stepGFLOPs = try comm.allReduce(config.trainingFlops(data[0]) / median(passes[0]) / 1e9, op: .sum) / Double(comm.size)
        r.updateSecondsPerParameter = try comm.allReduce(median(updates) / Double(model.layout.totalCount), op: .sum) / Double(comm.size)
        if sizes.count > 1 {
            r.smallStepRows = small * sequenceLength
            r.smallStepGFLOPs = try comm.allReduce(config.trainingFlops(data[1]) / median(passes[1]) / 1e9, op: .sum) / Double(comm.size)
        }

        guard comm.size > 1 else { return r }
        // Latency: ping-pong of one float between ranks 0 and 1.
        let rounds = 200
        try comm.barrier()
        if comm.rank < 2 {
            let started = monotonicSeconds()
            for i in 0..<rounds {
                if comm.rank == 0 {
                    try comm.send([Float(i)], to: 1, tag: 71)
                    _ = try comm.receive(Float.self, from: 1, tag: 72)
                } else {
                    _ = try comm.receive(Float.self, from: 0, tag: 71)
                    try comm.send([Float(i)], to: 0, tag: 72)
                }
            }
            r.latencySeconds = (monotonicSeconds() - started) / Double(rounds) / 2
        }
        r.latencySeconds = try comm.allReduce(r.latencySeconds, op: .max)
        // Bandwidth: a large all-reduce, less the ring's message latencies.
        let elements = max(1, Int(allReduceMiB * 1048576) / 4)
        r.allReduceBytes = elements * 4
        r.allReduceSeconds = try ClusterDiagnostics.allReduceSeconds(comm, elements: elements, iterations: 5)
        let k = Double(comm.size)
        let transfer = max(r.allReduceSeconds - 2 * (k - 1) * r.latencySeconds, r.allReduceSeconds / 2)
        r.bandwidthBytesPerSecond = 2 * (k - 1) / k * Double(r.allReduceBytes) / transfer
        return r
    }

    /// The cluster description these measurements give: this machine's ranks
    /// as one node (or as many nodes as hosts), the measured figures for the
    /// link the ranks used, the other link left at `base`'s value.
    public func cluster(base: ClusterDescription = ClusterDescription()) -> ClusterDescription {
        var c = base
        c.nodes = hosts
        c.ranksPerNode = max(1, ranks / hosts)
        c.memoryPerRankGiB = (memoryPerRankBytes / 1073741824 * 10).rounded(.down) / 10
        c.gflopsPerRank = (sgemmGFLOPs * 10).rounded() / 10
        let curve = efficiencyCurve
        c.computeEfficiency = max(0.001, min(1, (curve.efficiency * 1000).rounded() / 1000))
        c.microBatchOverheadRows = curve.overheadRows.rounded()
        c.optimizerNsPerParameter = (updateSecondsPerParameter * 1e9 * 1000).rounded() / 1000
        var measured = "sgemm \(String(format: "%.1f", sgemmGFLOPs)) GFLOP/s per rank (\(blasThreads) BLAS thread\(blasThreads == 1 ? "" : "s")), a training step's forward + backward \(String(format: "%.1f", stepGFLOPs)) GFLOP/s"
        if smallStepRows > 0 {
            measured += " at \(stepRows) tokens, \(String(format: "%.1f", smallStepGFLOPs)) at \(smallStepRows)"
        }
        measured += ", its update \(String(format: "%.3f", updateSecondsPerParameter * 1e9)) ns per parameter"
        if ranks > 1 {
            let bandwidth = (bandwidthBytesPerSecond / 1e9 * 1000).rounded() / 1000, latency = (latencySeconds * 1e6 * 10).rounded() / 10
            if hosts == 1 {
                c.intraNodeBandwidthGBs = bandwidth; c.intraNodeLatencyUs = latency
            } else {
                c.interNodeBandwidthGBs = bandwidth; c.interNodeLatencyUs = latency
            }
            measured += ", \(ranks) ranks on \(hosts) host\(hosts == 1 ? "" : "s"): all-reduce of \(allReduceBytes >> 20) MiB in \(String(format: "%.2f", allReduceSeconds * 1e3)) ms, latency \(String(format: "%.1f", latencySeconds * 1e6)) µs (\(hosts == 1 ? "inter" : "intra")-node link not measured)"
        } else {
            measured += ", one rank (links not measured: run under mpirun with 2 ranks)"
        }
        c.note = "measured by dapt plan --calibrate: " + measured
        return c
    }
}

/// Best of three square sgemm products of `size` after a warm-up, in GFLOP/s
/// (with the BLAS threads this process uses).
public func sgemmGFLOPs(size n: Int) -> Double {
    let a = (0..<(n * n)).map { Float(($0 % 17) - 8) / 8 }
    let b = (0..<(n * n)).map { Float(($0 % 13) - 6) / 6 }
    var c = [Float](repeating: 0, count: n * n)
    var best = Double.infinity
    for trial in 0..<4 {
        let t = monotonicSeconds()
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
            BLAS.sgemm(.none, .none, m: n, n: n, k: n, a: ap, b: bp, c: cp)
        } } }
        if trial > 0 { best = min(best, monotonicSeconds() - t) }
    }
    return 2 * Double(n) * Double(n) * Double(n) / best / 1e9
}

/// How a training step's share of the sgemm rate depends on the rows (tokens)
/// of its micro-batches: each micro-batch carries fixed work (packing the
/// weights for every product, per-layer set-up) worth `overheadRows` rows, so
/// n rows run at `efficiency` · n ÷ (n + overheadRows).
public struct EfficiencyCurve: Equatable, Sendable {
    /// The share of the sgemm rate at large micro-batches.
    public var efficiency: Double
    public var overheadRows: Double

    public init(efficiency: Double, overheadRows: Double) {
        self.efficiency = efficiency; self.overheadRows = overheadRows
    }

    public func efficiency(rows: Double) -> Double { efficiency * rows / (rows + overheadRows) }

    /// The curve through two measured points: 1/e is linear in 1/n. A small
    /// step no less efficient than the large one gives no overhead (the
    /// large one's efficiency); the large-batch efficiency is held to ≤ 1.
    public static func fit(rows: (Double, Double), efficiency e: (Double, Double)) -> EfficiencyCurve {
        let slope = (1 / e.1 - 1 / e.0) / (1 / rows.1 - 1 / rows.0)
        guard slope > 0, slope.isFinite else { return EfficiencyCurve(efficiency: e.0, overheadRows: 0) }
        let large = 1 / (1 / e.0 - slope / rows.0)
        if large > 0 && large <= 1 { return EfficiencyCurve(efficiency: large, overheadRows: slope * large) }
        // Beyond 1 (or unbounded): hold it at 1 and keep the large step's point.
        return EfficiencyCurve(efficiency: 1, overheadRows: max(0, rows.0 * (1 / e.0 - 1)))
    }
}
