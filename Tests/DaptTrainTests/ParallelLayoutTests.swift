import DaptCluster
import DaptCore
import DaptModel
@testable import DaptTrain
import XCTest

final class ParallelLayoutTests: XCTestCase {
    /// Every global batch size and degree: shares are contiguous, disjoint,
    /// in rank order cover the whole batch, and differ in size by at most one.
    func testDataSharesCoverTheBatchDisjointly() {
        for batch in 1...13 {
            for ranks in 1...batch {
                let shares = (0..<ranks).map { dataShare(globalBatch: batch, rank: $0, of: ranks) }
                XCTAssertEqual(shares.flatMap { Array($0) }, Array(0..<batch), "batch \(batch), \(ranks) ranks")
                let sizes = shares.map(\.count)
                XCTAssertLessThanOrEqual(sizes.max()! - sizes.min()!, 1, "batch \(batch), \(ranks) ranks: \(sizes)")
                XCTAssertGreaterThan(sizes.min()!, 0)
            }
        }
    }

    /// The trainer's micro-batches on each data rank, put together in rank
    /// order, are the single-rank global batch token for token, for any D.
    func testEveryDegreeTrainsOnTheSameGlobalBatch() throws {
        var config = TrainerTests.config(run: "/nonexistent", steps: 4)
        config.data.globalBatchSize = 6
        config.data.microBatchSize = 2
        let trainer = try TrainerTests.makeTrainer(config)
        XCTAssertEqual(trainer.groups.data.size, 1)
        for first in [0, 6, 30] {
            let single = try trainer.batches(startingAt: first)
            XCTAssertEqual(single.map(\.batchSize), [2, 2, 2])
            for ranks in 1...6 {
                let parts = try (0..<ranks).flatMap { try trainer.batches(startingAt: first, dataRank: $0, of: ranks) }
                XCTAssertEqual(parts.reduce(0) { $0 + $1.batchSize }, 6, "\(ranks) ranks")
                XCTAssertLessThanOrEqual(parts.map(\.batchSize).max()!, config.data.microBatchSize)
                XCTAssertEqual(parts.flatMap(\.tokens), single.flatMap(\.tokens), "\(ranks) ranks from sequence \(first)")
                XCTAssertEqual(parts.flatMap(\.targets), single.flatMap(\.targets), "\(ranks) ranks from sequence \(first)")
            }
        }
    }

    /// Megatron-LM order: tensor fastest, then pipeline, then data.
    func testRankOrderIsTensorThenPipelineThenData() throws {
        var parallel = PretrainConfig.Parallel()
        parallel.tensor = 2
        parallel.pipeline = 2
        let layout = try ParallelLayout(world: 8, parallel: parallel)
        XCTAssertEqual(layout.data, 2)
        let c = (0..<8).map { layout.coordinates(rank: $0) }
        XCTAssertEqual(c.map(\.tensor), [0, 1, 0, 1, 0, 1, 0, 1])
        XCTAssertEqual(c.map(\.pipeline), [0, 0, 1, 1, 0, 0, 1, 1])
        XCTAssertEqual(c.map(\.data), [0, 0, 0, 0, 1, 1, 1, 1])
        let stages = [PipelineStage(index: 0, count: 2, layers: 0..<3), PipelineStage(index: 1, count: 2, layers: 3..<4)]
        let grid = layout.grid(layers: 4, heads: 4, globalBatch: 4, stages: stages)
        XCTAssertEqual(grid[1], "rank 1: tensor 1/2 pipeline 0/2 data 0/2  layers 0–2 + embedding, heads 2–3 of 4, 1/2 of the MLP and vocabulary  sequences 0–1 of every global batch of 4")
        XCTAssertEqual(grid[6], "rank 6: tensor 0/2 pipeline 1/2 data 1/2  layers 3–3 + norm and head, heads 0–1 of 4, 1/2 of the MLP and vocabulary  sequences 2–3 of every global batch of 4")
        parallel.pipeline = 1
        let tensorAndData = try ParallelLayout(world: 4, parallel: parallel)
        XCTAssertEqual(tensorAndData.grid(layers: 2, heads: 4, globalBatch: 4)[3],
                       "rank 3: tensor 1/2 pipeline 0/1 data 1/2  layers 0–1, heads 2–3 of 4, 1/2 of the MLP and vocabulary  sequences 2–3 of every global batch of 4")
        let dataOnly = try ParallelLayout(world: 3, parallel: .init())
        XCTAssertEqual(dataOnly.data, 3)
        XCTAssertEqual(dataOnly.grid(layers: 2, heads: 4, globalBatch: 4)[2],
                       "rank 2: tensor 0/1 pipeline 0/1 data 2/3  layers 0–1, heads 0–3 (all: replicated)  sequences 2–3 of every global batch of 4")
    }

    func testWorldNotDivisibleByTensorTimesPipelineNamesTheNumbers() {
        var parallel = PretrainConfig.Parallel()
        parallel.tensor = 2
        XCTAssertThrowsError(try ParallelLayout(world: 3, parallel: parallel)) {
            XCTAssertTrue("\($0)".contains("world size 3 is not divisible by parallel.tensor (2) × parallel.pipeline (1)"), "\($0)")
        }
    }

    /// One process: the groups are single ranks and the layout is 1×1×1.
    func testSingleProcessGroups() throws {
        let groups = try ParallelGroups(world: SingleRankCommunicator(), layout: ParallelLayout(world: 1, parallel: .init()))
        XCTAssertEqual([groups.tensor.size, groups.pipeline.size, groups.data.size], [1, 1, 1])
        XCTAssertTrue(groups.writes)
        XCTAssertEqual(groups.coordinates, .init(tensor: 0, pipeline: 0, data: 0))
    }

    /// A check on rank 0 alone: with one rank, the error is the original one.
    func testCheckOnRootKeepsTheErrorOnOneRank() {
        XCTAssertThrowsError(try SingleRankCommunicator().checkOnRoot { throw ConfigError(field: "x", reason: "y") }) {
            XCTAssertEqual($0 as? ConfigError, ConfigError(field: "x", reason: "y"))
        }
        XCTAssertEqual(SharedFailure(ConfigError(field: "x", reason: "y")), SharedFailure(message: "x: y", exitCode: 2))
        XCTAssertEqual(SharedFailure(TrainingError.conflictingOptions("z")).exitCode, 1)
    }
}

/// Rank 0 of a two-rank data group whose peer sends the same gradients,
/// losses and counts as this rank, and reports an overflow when told to.
/// Stands in for the second process in one-process tests of the reductions.
final class MirroredPeerCommunicator: Communicator {
    var peerOverflows = false
    var rank: Int { 0 }
    var size: Int { 2 }
    var hostName: String { "localhost" }
    func barrier() throws {}
    func broadcast<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {}
    func allReduce<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {
        precondition(op == .sum)
        let raw = UnsafeMutableRawBufferPointer(buffer)
        switch T.kind {
        case .float: for i in raw.bindMemory(to: Float.self).indices { raw.bindMemory(to: Float.self)[i] *= 2 }
        case .double: for i in raw.bindMemory(to: Double.self).indices { raw.bindMemory(to: Double.self)[i] *= 2 }
        case .int64: for i in raw.bindMemory(to: Int64.self).indices { raw.bindMemory(to: Int64.self)[i] *= 2 }
        case .int32: for i in raw.bindMemory(to: Int32.self).indices { raw.bindMemory(to: Int32.self)[i] += peerOverflows ? 1 : 0 }
        default: fatalError("not used by the trainer")
        }
    }
    func allGatherV<T: CollectiveElement>(_ values: [T]) throws -> [[T]] { [values, values] }
    func gatherV<T: CollectiveElement>(_ values: [T], root: Int) throws -> [[T]]? { [values, values] }
    func send<T: CollectiveElement>(_ values: [T], to peer: Int, tag: Int) throws {}
    func receive<T: CollectiveElement>(_ type: T.Type, from peer: Int, tag: Int) throws -> [T] { [] }
    func split(color: Int, key: Int) throws -> any Communicator { self }
}

final class DataParallelStepTests: XCTestCase {
    /// fp16 with a peer whose gradients overflow: this rank's are finite,
    /// yet the step is skipped and the scale halved here too; with the peer
    /// clean, the step is applied.
    func testAnOverflowOnAnyRankSkipsTheStepOnEveryRank() throws {
        var config = TrainerTests.config(run: "/nonexistent", steps: 4, precision: .fp16)
        config.precision.initialLossScale = 1024
        let model = try LlamaModel(config: config.model.llamaConfig(vocabulary: 64))
        model.initializeRandom(seed: 1)
        let peer = MirroredPeerCommunicator()
        let groups = try ParallelGroups(world: peer, layout: ParallelLayout(world: 2, parallel: .init()))
        XCTAssertEqual(groups.data.size, 2)
        let trainer = try Trainer(config: config, model: model, train: TrainerTests.corpus(), heldOut: nil, groups: groups)
        XCTAssertEqual(try trainer.batches(startingAt: 0).map(\.batchSize), [2], "rank 0 of 2 takes half of the global batch of 4")
        XCTAssertNil(try trainer.step().skipped)
        let weights = trainer.master.withBuffer { $0.map(\.bitPattern) }
        var finiteHere = false
        trainer.gradientHook = { finiteHere = allFinite(UnsafeBufferPointer($0)) }
        peer.peerOverflows = true
        let skipped = try trainer.step()
        XCTAssertTrue(finiteHere, "this rank's gradients are finite")
        XCTAssertEqual(skipped.skipped, true)
        XCTAssertEqual(trainer.state.lossScaler.scale, 512)
        XCTAssertTrue(trainer.master.withBuffer { $0.map(\.bitPattern) } == weights, "the step is skipped here too")
        peer.peerOverflows = false
        XCTAssertNil(try trainer.step().skipped)
        XCTAssertEqual(trainer.state.appliedSteps, 2)
    }
}
