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
    /// A forward + backward + AdamW step of `model` per rank (mean over ranks).
    public var stepGFLOPs = 0.0
    public var stepSeconds = 0.0
    /// Half a ping-pong round trip of one float between ranks 0 and 1.
    public var latencySeconds = 0.0
    /// All-reduce of `allReduceBytes` over every rank, and the bandwidth a ring would need for it.
    public var allReduceBytes = 0
    public var allReduceSeconds = 0.0
    public var bandwidthBytesPerSecond = 0.0
    public var memoryPerRankBytes = 0.0

    public var efficiency: Double { sgemmGFLOPs > 0 ? stepGFLOPs / sgemmGFLOPs : 0 }

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
        let data = try TokenBatch.synthetic(vocab: config.vocabSize, batchSize: batch, seqLen: sequenceLength)
        let optimizer = AdamW(count: model.layout.totalCount, segments: decaySegments(model.layout))
        var times: [Double] = []
        try comm.barrier()
        for step in 0..<4 {
            let started = monotonicSeconds()
            model.gradients.zero()
            _ = try model.forwardBackward(data)
            model.parameters.withBuffer { p in
                model.gradients.withBuffer { optimizer.step(parameters: p, gradients: UnsafeBufferPointer($0), learningRate: 1e-6) }
            }
            if step > 0 { times.append(monotonicSeconds() - started) }
        }
        let seconds = times.sorted()[times.count / 2]
        r.stepSeconds = try comm.allReduce(seconds, op: .sum) / Double(comm.size)
        r.stepGFLOPs = try comm.allReduce(config.trainingFlops(data) / seconds / 1e9, op: .sum) / Double(comm.size)

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
        c.computeEfficiency = min(1, (efficiency * 1000).rounded() / 1000)
        var measured = "sgemm \(String(format: "%.1f", sgemmGFLOPs)) GFLOP/s per rank (\(blasThreads) BLAS thread\(blasThreads == 1 ? "" : "s")), a training step \(String(format: "%.1f", stepGFLOPs)) GFLOP/s"
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
