import DaptCore
import DaptModel
@testable import DaptTrain
import Foundation
import XCTest
import DaptTestSupport

final class SpikeDetectorTests: XCTestCase {
    func detector(window: Int = 8, warmup: Int = 4, consecutive: Int = 2) -> SpikeDetector {
        var c = PretrainConfig.Spikes()
        c.window = window; c.warmup = warmup; c.k = 6; c.consecutive = consecutive; c.minDeviation = 0.01
        return SpikeDetector(config: c)
    }

    func testMedianAndDeviation() throws {
        XCTAssertEqual(Statistics.median([3, 1, 2]), 2)
        XCTAssertEqual(Statistics.median([4, 1, 2, 3]), 2.5)
        XCTAssertTrue(Statistics.median([]).isNaN)
        var h = SpikeHistory()
        h.losses = [2.0, 2.1, 1.9, 2.0, 5.0]
        let s = try XCTUnwrap(detector().statistics(h))
        XCTAssertEqual(s.median, 2.0)
        XCTAssertEqual(s.mad, 0.1, accuracy: 1e-12, "one outlier moves neither median nor MAD")
        XCTAssertEqual(s.threshold, 2.0 + 6 * 1.4826 * 0.1, accuracy: 1e-12)
        h.losses = [2, 2, 2, 2]
        XCTAssertEqual(try XCTUnwrap(detector().statistics(h)).threshold, 2 + 6 * 0.01, accuracy: 1e-12, "flat curve: the floor")
        h.losses = [2, 2, 2]
        XCTAssertNil(detector().statistics(h), "before warm-up nothing is a spike")
    }

    /// m suspicious steps in a row make a spike whose window starts at the
    /// first; a lone outlier neither triggers nor enters the window.
    func testConsecutiveSuspiciousLossesMakeASpike() {
        let d = detector()
        var h = SpikeHistory()
        var step = 0
        func feed(_ loss: Double?, finite: Bool = true) -> Spike? {
            step += 1
            return d.observe(step: step, loss: loss, gradientsFinite: finite, history: &h)
        }
        for _ in 0..<6 { XCTAssertNil(feed(3.0)) }
        XCTAssertNil(feed(9.0), "one suspicious step is not yet a spike")
        XCTAssertEqual(h.losses.count, 6, "the outlier is not learned from")
        XCTAssertNil(feed(3.0))
        XCTAssertNil(feed(9.0))
        let spike = feed(9.5)
        XCTAssertEqual(spike?.firstStep, 9)
        XCTAssertEqual(spike?.step, 10)
        XCTAssertEqual(h.suspicious, 0)
        XCTAssertEqual(feed(.nan)?.firstStep, 11, "a non-finite loss is a spike at once")
        XCTAssertEqual(feed(3.0, finite: false)?.reason, "gradients are not finite")
        for _ in 0..<10 { _ = feed(3.0) }
        XCTAssertEqual(h.losses.count, 8, "the window keeps the newest `window` losses")
    }

    /// The gradient norm's own median/MAD: with `gradient_k` set, norms far
    /// above the window's make a spike while the loss stays flat; with it 0
    /// they are only tracked. An older training state without norms still reads.
    func testGradientNormSpikesWhenEnabled() throws {
        for gradientK in [0.0, 6.0] {
            var c = detector().config
            c.gradientK = gradientK
            let d = SpikeDetector(config: c)
            var h = SpikeHistory()
            var spikes: [Spike] = []
            for step in 1...12 {
                let norm = step <= 8 ? 1.0 + 0.01 * Double(step % 3) : 40.0
                if let s = d.observe(step: step, loss: 3.0, gradientNorm: norm, gradientsFinite: true, history: &h) { spikes.append(s) }
            }
            if gradientK == 0 {
                XCTAssertTrue(spikes.isEmpty, "norms are tracked, not judged")
                XCTAssertEqual(h.gradientNorms.count, 8, "the newest `window` norms are kept")
            } else {
                XCTAssertEqual(spikes.first?.firstStep, 9)
                XCTAssertEqual(spikes.first?.step, 10)
                XCTAssertTrue(spikes.first?.reason.hasPrefix("gradient norm above median") ?? false, "\(spikes)")
                XCTAssertEqual(h.gradientNorms.count, 8, "suspicious norms are not learned from")
            }
        }
        let old = try JSONDecoder().decode(SpikeHistory.self, from: Data(#"{"losses":[1,2],"suspicious":0,"first_suspicious_step":0}"#.utf8))
        XCTAssertEqual(old.losses, [1, 2])
        XCTAssertEqual(old.gradientNorms, [])
        var bad = PretrainConfig()
        bad.spikes.gradientK = -1
        XCTAssertThrowsError(try bad.validate()) { XCTAssertTrue("\($0)".contains("spikes.gradient_k"), "\($0)") }
    }

    func testSpikesSectionFromYAMLAndValidation() throws {
        let config = try ConfigLoader.decode(PretrainConfig.self, yaml: "spikes:\n  window: 30\n  k: 4\n  lr_factor: 0.5\n  lr_steps: 5\n")
        XCTAssertEqual(config.spikes.window, 30)
        XCTAssertEqual(config.spikes.k, 4)
        XCTAssertEqual(config.spikes.lrFactor, 0.5)
        XCTAssertEqual(config.spikes.warmup, PretrainConfig.Spikes().warmup)
        XCTAssertThrowsError(try ConfigLoader.decode(PretrainConfig.self, yaml: "spikes:\n  windw: 3\n"))
        var bad = PretrainConfig()
        bad.spikes.warmup = 100
        XCTAssertThrowsError(try bad.validate()) { XCTAssertTrue("\($0)".contains("spikes.warmup"), "\($0)") }
        bad = PretrainConfig()
        bad.spikes.lrFactor = 2
        XCTAssertThrowsError(try bad.validate()) { XCTAssertTrue("\($0)".contains("spikes.lr_factor"), "\($0)") }
        // Rollback points fall on checkpoints and are at least `consecutive` apart.
        XCTAssertEqual(PretrainConfig.Spikes().rollbackEvery(checkpointEvery: 4), 4)
        XCTAssertEqual(PretrainConfig.Spikes().rollbackEvery(checkpointEvery: 1), 2)
        XCTAssertEqual(PretrainConfig.Spikes().rollbackEvery(checkpointEvery: 0), 10)
    }
}

final class CoordinatorTests: XCTestCase {
    func temporaryRoot() throws -> String { try temporaryDirectory(self, prefix: "dapt-coordinator") }

    /// 24 steps of 4 sequences, checkpoints (and rollback points) every 4,
    /// spikes judged after 4 steps of history, 2 in a row.
    static func config(run: String, steps: Int = 24) -> PretrainConfig {
        var c = TrainerTests.config(run: run, steps: steps)
        c.checkpoint.everySteps = 4
        c.checkpoint.keepLast = 3
        c.spikes.window = 8
        c.spikes.warmup = 4
        c.spikes.consecutive = 2
        c.spikes.marginSteps = 2
        return c
    }

    /// The batches of steps 11 and 12 (sequences 40..<48) report three times their loss.
    static let poisoned = 40..<48
    static func makeTrainer(_ config: PretrainConfig) throws -> Trainer {
        let trainer = try TrainerTests.makeTrainer(config)
        trainer.lossHook = { first, loss in poisoned.contains(first) ? loss * 3 : loss }
        return trainer
    }

    func bits(_ t: Trainer) -> [UInt32] { t.master.withBuffer { $0.map(\.bitPattern) } }

    /// The spike at steps 11–12 rolls back to the rollback point before it
    /// (step 8), skips the data from there to the spike plus 2 steps, records
    /// it everywhere, and the run still takes 24 optimizer steps.
    func testInjectedSpikeRollsBackToThePointBeforeItAndSkips() throws {
        let run = try temporaryRoot()
        let trainer = try Self.makeTrainer(Self.config(run: run))
        let log = try MetricsLog(path: run + "/" + RunDirectory.metricsFile)
        XCTAssertEqual(try trainer.run(metrics: log), .completed)
        XCTAssertEqual(trainer.state.step, 24)
        XCTAssertEqual(trainer.state.rollbacks, 1)
        XCTAssertEqual(trainer.state.skippedSequences, [SkippedSequences(from: 32, until: 56)], "from step 8's position to after step 12 plus 2 steps")
        XCTAssertEqual(trainer.state.nextSequence, 56 + (24 - 8) * 4)
        let records = try FileSystem.readText(run + "/" + RunDirectory.rollbacksFile).split(separator: "\n")
            .map { try JSONDecoder().decode(RollbackRecord.self, from: Data($0.utf8)) }
        XCTAssertEqual(records.count, 1)
        XCTAssertEqual(records.first?.step, 12)
        XCTAssertEqual(records.first?.spikeFirstStep, 11)
        XCTAssertEqual(records.first?.rolledBackTo, 8)
        XCTAssertEqual(records.first?.skippedSteps, 6)
        XCTAssertGreaterThan(records.first?.seconds ?? 0, 0, "the time to training again is recorded")
        let events = try MetricsLog.readEvents(path: log.path)
        XCTAssertEqual(events.filter { $0.event == "rollback" }.map(\.step), [12])
        XCTAssertEqual(events.first { $0.event == "rollback" }?.rollbackTo, 8)
        XCTAssertEqual(events.filter { $0.event == "checkpoint" }.map(\.step), [4, 8, 12, 16, 20, 24],
                       "checkpoints at 4 and 8, then on the new path from 12")
        let steps = try MetricsLog.read(path: log.path)
        XCTAssertEqual(steps.filter { $0.step > 0 }.count, 24 + 4, "steps 9–12 of the abandoned path stay in the log")
        XCTAssertTrue(steps.filter { $0.step > 0 }.allSatisfy { $0.sequenceLength == 32 })
        // The rewritten checkpoint of step 8 carries the skip; nothing of the abandoned path is left.
        XCTAssertEqual(try CheckpointStore.list(root: run).map(\.step), [16, 20, 24])
        let saved = try JSONDecoder().decode(TrainingState.self, from: Data(FileSystem.readAll(run + "/checkpoint-00000024/" + Trainer.stateFile)))
        XCTAssertEqual(saved, trainer.state)
    }

    /// Without detection the spike is trained through: the same run without
    /// the feature ends elsewhere (so the test above measured something).
    func testWithoutDetectionTheSpikeIsTrainedOn() throws {
        var config = Self.config(run: try temporaryRoot())
        config.spikes.enabled = false
        let trainer = try Self.makeTrainer(config)
        try trainer.run(metrics: nil)
        XCTAssertEqual(trainer.state.rollbacks, 0)
        XCTAssertEqual(trainer.state.nextSequence, 24 * 4)
    }

    /// Stopping inside the spike window (step 11, before the spike is
    /// confirmed) or after the rollback (step 10 on the new path), then
    /// resuming from the run directory, ends bit-identical to the
    /// uninterrupted run.
    func testResumeAroundARollbackIsBitIdentical() throws {
        let straight = try Self.makeTrainer(Self.config(run: try temporaryRoot()))
        try straight.run(metrics: nil)
        for stopAt in [11, 14] {
            let run = try temporaryRoot()
            let first = try Self.makeTrainer(Self.config(run: run))
            try first.run(metrics: nil, until: stopAt)
            var otherInit = Self.config(run: run)
            otherInit.model.initSeed = 777
            let second = try Self.makeTrainer(otherInit)
            try second.restore(checkpoint: run)
            XCTAssertEqual(second.state.step, stopAt)
            try second.run(metrics: nil)
            XCTAssertEqual(second.state, straight.state, "stopped at \(stopAt)")
            XCTAssertEqual(bits(second), bits(straight), "stopped at \(stopAt): weights")
            XCTAssertEqual(Array(second.optimizer.secondMoment).map(\.bitPattern), Array(straight.optimizer.secondMoment).map(\.bitPattern))
        }
    }

    /// With no rollback left, a spike stops the run with a message naming the setting.
    func testSpikeAfterMaxRollbacksStops() throws {
        let run = try temporaryRoot()
        var config = Self.config(run: run)
        config.spikes.maxRollbacks = 0
        let trainer = try Self.makeTrainer(config)
        let log = try MetricsLog(path: run + "/" + RunDirectory.metricsFile)
        XCTAssertThrowsError(try trainer.run(metrics: log)) { error in
            XCTAssertTrue("\(error)".contains("spikes.max_rollbacks 0"), "\(error)")
        }
        XCTAssertEqual(trainer.state.step, 12)
        XCTAssertEqual(try MetricsLog.readEvents(path: log.path).last?.event, "stop")
    }

    /// The in-memory copy restores weights, moments and state exactly.
    func testSnapshotRestoresEverything() throws {
        let trainer = try TrainerTests.makeTrainer(TrainerTests.config(run: try temporaryRoot(), precision: .bf16))
        try trainer.step()
        let saved = trainer.snapshot()
        let weights = bits(trainer), moments = Array(trainer.optimizer.firstMoment)
        try trainer.step(); try trainer.step()
        XCTAssertNotEqual(bits(trainer), weights)
        trainer.restore(saved)
        XCTAssertEqual(bits(trainer), weights)
        XCTAssertEqual(Array(trainer.optimizer.firstMoment), moments)
        XCTAssertEqual(trainer.state.step, 1)
        XCTAssertEqual(trainer.optimizer.stepCount, 1)
    }

    /// A signal between steps: the run finishes the step, writes a
    /// checkpoint, records the stop and returns resumable; resuming ends
    /// where the uninterrupted run does.
    func testPreemptionCheckpointsAtTheStepBoundaryAndResumes() throws {
        let straight = try Self.makeTrainer(Self.config(run: try temporaryRoot(), steps: 8))
        try straight.run(metrics: nil)
        let run = try temporaryRoot()
        let trainer = try Self.makeTrainer(Self.config(run: run, steps: 8))
        var steps = 0
        trainer.gradientHook = { _ in steps += 1; if steps == 3 { Preemption.request(SIGTERM) } }
        defer { Preemption.clear() }
        let log = try MetricsLog(path: run + "/" + RunDirectory.metricsFile)
        let outcome = try trainer.run(metrics: log)
        Preemption.clear()
        XCTAssertEqual(outcome, .preempted(signal: SIGTERM, step: 3, checkpoint: run + "/checkpoint-00000003"))
        XCTAssertEqual(try CheckpointStore.list(root: run).map(\.step), [3])
        let stop = try XCTUnwrap(MetricsLog.readEvents(path: log.path).last)
        XCTAssertEqual(stop.event, "stop")
        XCTAssertEqual(stop.signal, "SIGTERM")
        XCTAssertTrue(stop.message.contains("resumable"))
        let resumed = try Self.makeTrainer(Self.config(run: run, steps: 8))
        try resumed.restore(checkpoint: run)
        XCTAssertEqual(try resumed.run(metrics: nil), .completed)
        XCTAssertEqual(bits(resumed), bits(straight))
    }

    /// The installed handler turns a real SIGTERM into a request instead of
    /// ending the process; restoring puts the old handler back.
    func testSignalHandlerRecordsTheSignal() throws {
        var before = sigaction()
        XCTAssertEqual(sigaction(SIGTERM, nil, &before), 0)
        let installation = try Preemption.install()
        XCTAssertNil(Preemption.pendingSignal)
        raise(SIGTERM)
        XCTAssertEqual(Preemption.pendingSignal, SIGTERM)
        try installation.restore()
        Preemption.clear()
        var current = sigaction()
        XCTAssertEqual(sigaction(SIGTERM, nil, &current), 0)
        XCTAssertEqual(unsafeBitCast(current.__sigaction_handler.sa_handler, to: Optional<UnsafeRawPointer>.self),
                       unsafeBitCast(before.__sigaction_handler.sa_handler, to: Optional<UnsafeRawPointer>.self), "the earlier handler again")
    }
}
