import DaptCore
import Foundation

/// The machines a training run is planned for (`dapt plan --cluster FILE`):
/// how many ranks, their memory and speed, and the links between them.
/// `dapt plan --calibrate` writes one measured on this machine; the defaults
/// describe one small CPU node and are placeholders until then.
public struct ClusterDescription: StageConfig, Equatable {
    /// Ranks (processes, one per accelerator or per core group) on one node.
    public var ranksPerNode = 2
    public var nodes = 1
    /// Ranks of one node that can compute at the same time (its cores, or
    /// accelerators); nil: every rank has its own. Fewer than
    /// `ranksPerNode` oversubscribes the node: its ranks take turns, each at
    /// `gflopsPerRank` while it runs.
    public var coresPerNode: Int?
    /// Memory one rank may fill, in GiB (2^30 bytes).
    public var memoryPerRankGiB = 8.0
    /// Dense fp32 (or the precision's) matrix-product rate of one rank, GFLOP/s.
    public var gflopsPerRank = 50.0
    /// Share of `gflops_per_rank` the forward + backward passes reach at large
    /// micro-batches (sgemm is the best case; element-wise kernels and
    /// attention bring it down). `--calibrate` measures it.
    public var computeEfficiency = 0.6
    /// Fixed work of each micro-batch, in rows (tokens) of compute: a
    /// micro-batch of n rows reaches compute_efficiency · n ÷ (n + this).
    /// 0: every micro-batch size equally efficient.
    public var microBatchOverheadRows = 0.0
    /// Nanoseconds one rank spends each step on every parameter it updates:
    /// the finiteness check, the gradient norm and AdamW, memory-bound passes
    /// over the rank's own slice (÷ D under ZeRO-1).
    public var optimizerNsPerParameter = 2.0
    /// One rank's link to the other ranks of its node, GB/s (10^9 bytes) each way.
    public var intraNodeBandwidthGBs = 5.0
    /// One message's latency between two ranks of one node, microseconds.
    public var intraNodeLatencyUs = 5.0
    /// One node's network link, GB/s each way, shared by the ranks of the node
    /// that send off the node at the same time (100 Gb/s = 12.5 GB/s).
    public var interNodeBandwidthGBs = 12.5
    /// One message's latency between two nodes, microseconds.
    public var interNodeLatencyUs = 10.0
    /// Where the figures come from (free text; `--calibrate` writes its measurements here).
    public var note = ""

    public init() {}

    public var world: Int { ranksPerNode * nodes }

    /// Ranks of one node that compute at once: `coresPerNode`, or every rank.
    public var concurrentRanksPerNode: Int { coresPerNode ?? ranksPerNode }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case ranksPerNode = "ranks_per_node", nodes, coresPerNode = "cores_per_node"
        case memoryPerRankGiB = "memory_per_rank_gib", gflopsPerRank = "gflops_per_rank"
        case computeEfficiency = "compute_efficiency", microBatchOverheadRows = "micro_batch_overhead_rows"
        case optimizerNsPerParameter = "optimizer_ns_per_parameter"
        case intraNodeBandwidthGBs = "intra_node_bandwidth_gbs", intraNodeLatencyUs = "intra_node_latency_us"
        case interNodeBandwidthGBs = "inter_node_bandwidth_gbs", interNodeLatencyUs = "inter_node_latency_us"
        case note
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self), d = ClusterDescription()
        ranksPerNode = try c.value(.ranksPerNode, default: d.ranksPerNode)
        nodes = try c.value(.nodes, default: d.nodes)
        coresPerNode = try c.decodeIfPresent(Int.self, forKey: .coresPerNode)
        memoryPerRankGiB = try c.value(.memoryPerRankGiB, default: d.memoryPerRankGiB)
        gflopsPerRank = try c.value(.gflopsPerRank, default: d.gflopsPerRank)
        computeEfficiency = try c.value(.computeEfficiency, default: d.computeEfficiency)
        microBatchOverheadRows = try c.value(.microBatchOverheadRows, default: d.microBatchOverheadRows)
        optimizerNsPerParameter = try c.value(.optimizerNsPerParameter, default: d.optimizerNsPerParameter)
        intraNodeBandwidthGBs = try c.value(.intraNodeBandwidthGBs, default: d.intraNodeBandwidthGBs)
        intraNodeLatencyUs = try c.value(.intraNodeLatencyUs, default: d.intraNodeLatencyUs)
        interNodeBandwidthGBs = try c.value(.interNodeBandwidthGBs, default: d.interNodeBandwidthGBs)
        interNodeLatencyUs = try c.value(.interNodeLatencyUs, default: d.interNodeLatencyUs)
        note = try c.value(.note, default: d.note)
    }

    public func validate() throws {
        try Check.positive(ranksPerNode, "ranks_per_node")
        try Check.positive(nodes, "nodes")
        if let coresPerNode { try Check.positive(coresPerNode, "cores_per_node") }
        try Check.positive(memoryPerRankGiB, "memory_per_rank_gib")
        try Check.positive(gflopsPerRank, "gflops_per_rank")
        try Check.positive(computeEfficiency, "compute_efficiency")
        if computeEfficiency > 1 {
            throw ConfigError(field: "compute_efficiency", reason: "must be <= 1 (a share of gflops_per_rank), got \(computeEfficiency)")
        }
        try Check.nonNegative(microBatchOverheadRows, "micro_batch_overhead_rows")
        try Check.nonNegative(optimizerNsPerParameter, "optimizer_ns_per_parameter")
        try Check.positive(intraNodeBandwidthGBs, "intra_node_bandwidth_gbs")
        try Check.nonNegative(intraNodeLatencyUs, "intra_node_latency_us")
        try Check.positive(interNodeBandwidthGBs, "inter_node_bandwidth_gbs")
        try Check.nonNegative(interNodeLatencyUs, "inter_node_latency_us")
    }

    /// Reads and validates a cluster YAML file; errors name the file, line and field.
    public static func load(path: String) throws -> ClusterDescription {
        try ConfigLoader.load(ClusterDescription.self, path: path) { try $0.validate() }
    }

    /// The YAML text `load` reads back (keys in a fixed order, one per line).
    public var yaml: String {
        func number(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e15 ? String(Int(v)) : String(format: "%.6g", v) }
        var lines = [
            "ranks_per_node: \(ranksPerNode)",
            "nodes: \(nodes)",
            "memory_per_rank_gib: \(number(memoryPerRankGiB))",
            "gflops_per_rank: \(number(gflopsPerRank))",
            "compute_efficiency: \(number(computeEfficiency))",
        ] + (microBatchOverheadRows > 0 ? ["micro_batch_overhead_rows: \(number(microBatchOverheadRows))"] : []) + [
            "optimizer_ns_per_parameter: \(number(optimizerNsPerParameter))",
            "intra_node_bandwidth_gbs: \(number(intraNodeBandwidthGBs))",
            "intra_node_latency_us: \(number(intraNodeLatencyUs))",
            "inter_node_bandwidth_gbs: \(number(interNodeBandwidthGBs))",
            "inter_node_latency_us: \(number(interNodeLatencyUs))",
        ]
        if let coresPerNode { lines.insert("cores_per_node: \(coresPerNode)", at: 2) }
        if !note.isEmpty { lines.append("note: \(JSONWriter.quoted(note))") }
        return lines.joined(separator: "\n") + "\n"
    }
}
