import DaptCore
import DaptModel
@testable import DaptTrain
import Foundation
import XCTest
import DaptTestSupport

final class CurriculumTests: XCTestCase {
    func temporaryRoot() throws -> String { try temporaryDirectory(self, prefix: "dapt-curriculum") }

    /// 128 tokens per step: 8 × 16 for steps 1–3, 4 × 32 (rope_theta 20000)
    /// for 4–6, then 2 × 64 with linear RoPE scaling × 2.
    static func config(run: String, steps: Int = 8) -> PretrainConfig {
        var c = TrainerTests.config(run: run, steps: steps)
        c.checkpoint.keepLast = 0
        c.curriculum = [
            .init(untilStep: 3, sequenceLength: 16),
            .init(untilStep: 6, sequenceLength: 32, ropeTheta: 20000),
            .init(untilStep: 100, sequenceLength: 64, ropeScaling: RopeScaling(type: .linear, factor: 2)),
        ]
        return c
    }

    func bits(_ t: Trainer) -> [UInt32] { t.master.withBuffer { $0.map(\.bitPattern) } }

    func testStagesChangeLengthAndRopeAtTheirBoundariesWithConstantTokens() throws {
        let run = try temporaryRoot()
        let trainer = try TrainerTests.makeTrainer(Self.config(run: run))
        XCTAssertEqual(trainer.shape.sequenceLength, 16, "a fresh run starts in the first stage")
        XCTAssertEqual(try trainer.batches(startingAt: 0).map(\.batchSize), [4, 4], "8 sequences of 16 in micro-batches of 2 × 32 / 16")
        let log = try MetricsLog(path: run + "/" + RunDirectory.metricsFile)
        try trainer.run(metrics: log)
        let steps = try MetricsLog.read(path: log.path).filter { $0.step > 0 }
        XCTAssertEqual(steps.map(\.sequenceLength), [16, 16, 16, 32, 32, 32, 64, 64])
        XCTAssertTrue(steps.allSatisfy { $0.tokens == 128 }, "\(steps.map(\.tokens))")
        let changes = try MetricsLog.readEvents(path: log.path).filter { $0.event == "sequence_length" }
        XCTAssertEqual(changes.map(\.step), [3, 6])
        XCTAssertEqual(changes.map(\.sequenceLength), [32, 64])
        XCTAssertTrue(changes.allSatisfy { $0.evalLoss?.isFinite == true }, "held-out loss at each new length")
        XCTAssertEqual(trainer.shape.globalBatch, 2)
        XCTAssertEqual(trainer.shape.microBatch, 1)
        // The checkpoint's config.json carries the stage's RoPE: the base theta, linear × 2.
        let saved = try LlamaConfig.load(path: run + "/checkpoint-00000008/" + Trainer.configFile)
        XCTAssertEqual(saved.ropeTheta, 10000)
        XCTAssertEqual(saved.ropeScaling, RopeScaling(type: .linear, factor: 2))
        XCTAssertEqual(trainer.model.config.ropeScaling?.factor, 2)
    }

    /// The data position crosses a boundary at the same token of the same epoch.
    func testDataPositionCarriesOverInTokens() throws {
        let source = TrainerTests.corpus()
        let short = try PackedSequenceOrder(source: source, sequenceLength: 16, seed: 3)
        let long = try PackedSequenceOrder(source: source, sequenceLength: 64, seed: 3)
        XCTAssertEqual(convertSequenceIndex(8, from: short, to: long), 2)
        XCTAssertEqual(convertSequenceIndex(9, from: short, to: long), 3, "rounded up to a whole sequence")
        XCTAssertEqual(convertSequenceIndex(2, from: long, to: short), 8)
        let lastOfEpoch = short.sequencesPerEpoch - 1
        XCTAssertEqual(convertSequenceIndex(lastOfEpoch, from: short, to: long) % long.sequencesPerEpoch, 0, "past the epoch's last long sequence: the next epoch")
        XCTAssertEqual(convertSequenceIndex(short.sequencesPerEpoch + 4, from: short, to: long), long.sequencesPerEpoch + 1, "the epoch is kept")
        // The tokens themselves: the long sequence at the carried position starts with the short one's tokens.
        let a = try PackedBatch(order: short, firstSequence: 8, count: 1), b = try PackedBatch(order: long, firstSequence: 2, count: 1)
        XCTAssertEqual(Array(b.tokens.prefix(8)), Array(a.tokens.prefix(8)))
    }

    /// Stopped inside a stage (2), at a boundary (3) and inside the next (5),
    /// then resumed: the same weights as the uninterrupted run, bit for bit.
    func testResumeInsideAndAtStageBoundariesIsBitIdentical() throws {
        let straight = try TrainerTests.makeTrainer(Self.config(run: try temporaryRoot()))
        try straight.run(metrics: nil)
        for stopAt in [2, 3, 5] {
            let run = try temporaryRoot()
            let first = try TrainerTests.makeTrainer(Self.config(run: run))
            try first.run(metrics: nil, until: stopAt)
            let second = try TrainerTests.makeTrainer(Self.config(run: run))
            try second.restore(checkpoint: run)
            XCTAssertEqual(second.shape.sequenceLength, first.shape.sequenceLength, "stopped at \(stopAt)")
            XCTAssertEqual(second.model.config.ropeTheta, first.model.config.ropeTheta)
            try second.run(metrics: nil)
            XCTAssertEqual(second.state, straight.state, "stopped at \(stopAt)")
            XCTAssertEqual(bits(second), bits(straight), "stopped at \(stopAt): weights")
        }
    }

    /// In a stage, two data ranks' shares are together the one-rank batch.
    func testDataRanksShareEveryStagesBatch() throws {
        let trainer = try TrainerTests.makeTrainer(Self.config(run: try temporaryRoot()))
        trainer.state.step = 6
        try trainer.enterStage()
        let whole = try trainer.batches(startingAt: 10, dataRank: 0, of: 1).flatMap(\.tokens)
        let shared = try (0..<2).flatMap { try trainer.batches(startingAt: 10, dataRank: $0, of: 2).flatMap(\.tokens) }
        XCTAssertEqual(shared, whole)
        XCTAssertEqual(whole.count, 128)
    }

    func testCurriculumSettingsAreChecked() throws {
        let yaml = """
        curriculum:
          - {until_step: 10, sequence_length: 16}
          - {until_step: 20, sequence_length: 64, rope_scaling: {rope_type: yarn, factor: 4}}
        """
        let parsed = try ConfigLoader.decode(PretrainConfig.self, yaml: yaml)
        XCTAssertEqual(parsed.curriculum.map(\.sequenceLength), [16, 64])
        XCTAssertEqual(parsed.curriculum[1].ropeScaling?.type, .yarn)
        var c = Self.config(run: "/tmp/x")
        c.curriculum[1].untilStep = 2
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("curriculum[1].until_step"), "\($0)") }
        c = Self.config(run: "/tmp/x")
        c.curriculum[0].sequenceLength = 48
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("curriculum[0].sequence_length") && "\($0)".contains("128 tokens"), "\($0)") }
        c = Self.config(run: "/tmp/x")
        c.curriculum[2].ropeScaling = nil
        c.curriculum[2].sequenceLength = 128
        c.data.globalBatchSize = 8
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("curriculum[2].sequence_length") && "\($0)".contains("positions"), "\($0)") }
    }
}
