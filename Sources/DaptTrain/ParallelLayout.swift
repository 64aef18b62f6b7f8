import DaptCluster
import DaptCore
import DaptModel

/// How the ranks of a job divide one training run: tensor degree T,
/// pipeline degree P and data degree D = world ÷ (T·P). Ranks are ordered
/// as in Megatron-LM: tensor fastest, then pipeline, then data, so the T
/// ranks of one tensor group are neighbours (on one host when possible).
public struct ParallelLayout: Equatable, Sendable {
    public let world: Int
    public let tensor: Int
    public let pipeline: Int
    public var data: Int { world / (tensor * pipeline) }

    /// The layout of `world` ranks for `parallel`. Throws a configuration
    /// error naming the numbers when T·P does not divide the world.
    public init(world: Int, parallel: PretrainConfig.Parallel) throws {
        self.world = world
        tensor = parallel.tensor
        pipeline = parallel.pipeline
        guard tensor > 0, pipeline > 0, world % (tensor * pipeline) == 0 else {
            throw ConfigError(field: "pretrain.parallel",
                              reason: "world size \(world) is not divisible by parallel.tensor (\(tensor)) × parallel.pipeline (\(pipeline)); the data-parallel degree would not be whole")
        }
    }

    /// A rank's place in the grid.
    public struct Coordinates: Equatable, Sendable {
        public var tensor: Int
        public var pipeline: Int
        public var data: Int
    }

    public func coordinates(rank: Int) -> Coordinates {
        Coordinates(tensor: rank % tensor, pipeline: rank / tensor % pipeline, data: rank / (tensor * pipeline))
    }

    /// One line per rank: which layers (of `stages`, nil: all on one stage), heads and data share it holds.
    public func grid(layers: Int, heads: Int, globalBatch: Int, stages: [PipelineStage]? = nil) -> [String] {
        let stages = stages ?? [.whole(layers: layers)]
        precondition(stages.count == pipeline, "\(stages.count) stages for a pipeline of \(pipeline)")
        return (0..<world).map { rank in
            let c = coordinates(rank: rank)
            let share = dataShare(globalBatch: globalBatch, rank: c.data, of: data)
            let shareText = share.isEmpty ? "none" : "\(share.lowerBound)–\(share.upperBound - 1)"
            let part = tensor == 1 ? "heads 0–\(heads - 1) (all: replicated)"
                : "heads \(c.tensor * heads / tensor)–\((c.tensor + 1) * heads / tensor - 1) of \(heads), 1/\(tensor) of the MLP and vocabulary"
            let stage = stages[c.pipeline]
            let ends = (stage.isFirst && pipeline > 1 ? " + embedding" : "") + (stage.isLast && pipeline > 1 ? " + norm and head" : "")
            return "rank \(rank): tensor \(c.tensor)/\(tensor) pipeline \(c.pipeline)/\(pipeline) data \(c.data)/\(data)"
                + "  layers \(stage.layers.lowerBound)–\(stage.layers.upperBound - 1)\(ends), \(part)"
                + "  sequences \(shareText) of every global batch of \(globalBatch)"
        }
    }
}

/// The sequences of a global batch of `globalBatch` that data rank `rank`
/// of `ranks` trains on: contiguous, disjoint, together the whole batch in
/// order, sizes differing by at most one. The batch itself does not depend
/// on the number of ranks.
public func dataShare(globalBatch: Int, rank: Int, of ranks: Int) -> Range<Int> {
    precondition(ranks > 0 && (0..<ranks).contains(rank))
    return (rank * globalBatch / ranks)..<((rank + 1) * globalBatch / ranks)
}

/// The communicators of one rank: the whole job and its tensor, pipeline
/// and data groups (from `Communicator.split`). Passed explicitly to the
/// trainer; there is no global parallel state.
public struct ParallelGroups {
    public let layout: ParallelLayout
    public let coordinates: ParallelLayout.Coordinates
    public let world: any Communicator
    public let tensor: any Communicator
    public let pipeline: any Communicator
    public let data: any Communicator

    /// Splits `world` by `layout` (a collective: every rank calls it).
    public init(world: any Communicator, layout: ParallelLayout) throws {
        precondition(world.size == layout.world)
        let c = layout.coordinates(rank: world.rank)
        let (T, P) = (layout.tensor, layout.pipeline)
        self.layout = layout
        coordinates = c
        self.world = world
        // Same color, same group; the key orders ranks within it.
        tensor = try world.split(color: c.pipeline + P * c.data, key: c.tensor)
        pipeline = try world.split(color: c.tensor + T * c.data, key: c.pipeline)
        data = try world.split(color: c.tensor + T * c.pipeline, key: c.data)
    }

    /// One process alone.
    public static func single() -> ParallelGroups {
        // A layout of one rank is always valid.
        try! ParallelGroups(world: SingleRankCommunicator(), layout: ParallelLayout(world: 1, parallel: .init()))
    }

    /// True on the one rank that writes checkpoints, metrics and the loss curve.
    public var writes: Bool { world.rank == 0 }
}

/// An error found by rank 0 alone and shared with every rank, so that all
/// fail together and the message is printed once.
public struct SharedFailure: CollectiveError, Equatable {
    public let message: String
    public let exitCode: Int32
    public var description: String { message }
}

extension SharedFailure {
    /// The same failure on every rank: exit 2 for a configuration error, 1 otherwise.
    init(_ error: any Error) {
        if let config = error as? ConfigError { self.init(message: config.description, exitCode: 2) } else {
            self.init(message: "\(error)", exitCode: 1)
        }
    }
}

extension Communicator {
    /// Runs `body`, whose outcome is the same on every rank (it depends on
    /// settings alone): alone, its error as thrown; in a job, as a
    /// `SharedFailure`, printed once.
    public func agreed<T>(_ body: () throws -> T) throws -> T {
        guard size > 1 else { return try body() }
        do { return try body() } catch { throw SharedFailure(error) }
    }

    /// Runs `check` on rank 0 only (reading checks of files every rank
    /// shares) and gives its outcome to every rank: alone, the error as
    /// thrown; in a job, a `SharedFailure` on every rank (exit 2 for a
    /// configuration error, 1 otherwise).
    public func checkOnRoot(_ check: () throws -> Void) throws {
        guard size > 1 else { return try check() }
        var code: [Int32] = [0]
        var message = ""
        if isRoot {
            do { try check() } catch {
                let failure = SharedFailure(error)
                (code[0], message) = (failure.exitCode, failure.message)
            }
        }
        try broadcast(&code, root: 0)
        guard code[0] == 0 else { throw SharedFailure(message: try broadcast(message, root: 0), exitCode: code[0]) }
    }
}
