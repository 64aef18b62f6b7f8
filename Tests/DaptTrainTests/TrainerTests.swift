import DaptCore
import DaptModel
@testable import DaptTrain
import Foundation
import XCTest
import DaptTestSupport

final class TrainerTests: XCTestCase {
    func temporaryRoot() throws -> String { try temporaryDirectory(self, prefix: "dapt-trainer") }

    /// Learnable documents: each counts upward from a seeded start with a seeded stride.
    static func corpus(documents: Int = 120) -> InMemoryDocuments {
        var rng = SplitMix64(seed: 99)
        var docs: [[Int32]] = []
        for _ in 0..<documents {
            let length = 5 + Int(rng.next() % 40)
            let start = Int(rng.next() % 60), stride = 1 + Int(rng.next() % 3)
            docs.append((0..<length).map { Int32((start + $0 * stride) % 60 + 2) })
        }
        return InMemoryDocuments(documents: docs)
    }

    static func config(run: String, steps: Int = 8, precision: Precision = .fp32) -> PretrainConfig {
        var c = PretrainConfig()
        c.model.vocabSize = 64
        c.model.hiddenSize = 32
        c.model.intermediateSize = 64
        c.model.numHiddenLayers = 2
        c.model.numAttentionHeads = 4
        c.model.numKeyValueHeads = 2
        c.model.maxPositionEmbeddings = 64
        c.data.sequenceLength = 32
        c.data.microBatchSize = 2
        c.data.globalBatchSize = 4
        c.data.heldOutFraction = 0.1
        c.optimizer.lr = 3e-3
        c.schedule.totalSteps = steps
        c.schedule.warmupRatio = 0.25
        c.precision.mode = precision
        c.checkpoint.directory = run
        c.checkpoint.keepLast = 2
        c.eval.sequences = 4
        return c
    }

    static func makeTrainer(_ config: PretrainConfig) throws -> Trainer {
        let model = try LlamaModel(config: config.model.llamaConfig(vocabulary: 64))
        model.initializeRandom(seed: config.model.initSeed, std: config.model.initStd)
        let source = corpus()
        let split = splitHeldOut(documentCount: source.documentCount, fraction: config.data.heldOutFraction, seed: config.data.seed)
        return try Trainer(config: config, model: model, train: DocumentSubset(base: source, indices: split.train),
                           heldOut: DocumentSubset(base: source, indices: split.heldOut))
    }

    func bits(_ buffer: ParameterBuffer) -> [UInt32] { buffer.withBuffer { $0.map(\.bitPattern) } }

    func testTrainingLowersHeldOutLoss() throws {
        let trainer = try Self.makeTrainer(Self.config(run: try temporaryRoot(), steps: 30))
        let before = try XCTUnwrap(trainer.evaluate())
        var losses: [Double] = []
        for _ in 0..<30 { losses.append(try XCTUnwrap(trainer.step().loss)) }
        let after = try XCTUnwrap(trainer.evaluate())
        XCTAssertLessThan(after.loss, before.loss - 0.5, "held-out loss \(before.loss) → \(after.loss)")
        XCTAssertLessThan(losses.suffix(5).reduce(0, +) / 5, losses.prefix(5).reduce(0, +) / 5)
        XCTAssertEqual(trainer.state.step, 30)
        XCTAssertEqual(trainer.state.nextSequence, 30 * 4)
        XCTAssertEqual(trainer.state.tokensSeen, 30 * 4 * 32)
    }

    /// data.document_masks reaches the model: the same run without masks
    /// trains on the same targets but to other losses; held-out evaluation
    /// is masked either way (the same before any step).
    func testDocumentMasksSwitchChangesTrainingNotHeldOutProtocol() throws {
        var config = Self.config(run: try temporaryRoot(), steps: 4)
        XCTAssertTrue(config.data.documentMasks)
        let masked = try Self.makeTrainer(config)
        config.data.documentMasks = false
        config.checkpoint.directory = try temporaryRoot()
        let plain = try Self.makeTrainer(config)
        XCTAssertEqual(try XCTUnwrap(masked.evaluate()).loss, try XCTUnwrap(plain.evaluate()).loss)
        let a = try XCTUnwrap(masked.step().loss), b = try XCTUnwrap(plain.step().loss)
        XCTAssertNotEqual(a, b)
        XCTAssertFalse(try ConfigLoader.decode(PretrainConfig.self, yaml: "data:\n  document_masks: false\n").data.documentMasks)
    }

    /// data.document_masks: false holds in every curriculum stage, not only the first.
    func testDocumentMasksSwitchHoldsInCurriculumStages() throws {
        var config = Self.config(run: try temporaryRoot(), steps: 4)
        config.data.documentMasks = false
        config.curriculum = [PretrainConfig.CurriculumStage(untilStep: 2, sequenceLength: 16),
                             PretrainConfig.CurriculumStage(untilStep: 4, sequenceLength: 64)]
        let trainer = try Self.makeTrainer(config)
        for _ in 0..<2 { _ = try trainer.step() }
        XCTAssertTrue(trainer.stageChangeDue)
        try trainer.enterStage()
        XCTAssertEqual(trainer.shape.sequenceLength, 64)
        XCTAssertFalse(trainer.shape.train.documentMasks)
        XCTAssertEqual(Set(try trainer.batches(startingAt: trainer.state.nextSequence).flatMap { $0.documentIds ?? [] }), [0])
    }

    /// 2N steps in one go vs N, checkpoint, a fresh process-like trainer
    /// restored from it, N more: identical losses and weights, bit for bit.
    func testResumeIsBitIdentical() throws {
        for precision in [Precision.fp32, .bf16, .fp16] {
            let n = 4
            let straight = try Self.makeTrainer(Self.config(run: try temporaryRoot(), steps: 2 * n, precision: precision))
            var straightLosses: [UInt64] = []
            for _ in 0..<(2 * n) { straightLosses.append(try XCTUnwrap(straight.step().loss).bitPattern) }

            let run = try temporaryRoot()
            let first = try Self.makeTrainer(Self.config(run: run, steps: 2 * n, precision: precision))
            var resumedLosses: [UInt64] = []
            for _ in 0..<n { resumedLosses.append(try XCTUnwrap(first.step().loss).bitPattern) }
            let checkpoint = try first.saveCheckpoint()
            // A different init seed proves the weights come from the checkpoint.
            var otherInit = Self.config(run: run, steps: 2 * n, precision: precision)
            otherInit.model.initSeed = 777
            let second = try Self.makeTrainer(otherInit)
            try second.restore(checkpoint: checkpoint)
            XCTAssertEqual(second.state, first.state)
            for _ in 0..<n { resumedLosses.append(try XCTUnwrap(second.step().loss).bitPattern) }
            XCTAssertEqual(resumedLosses, straightLosses, "\(precision): loss curve")
            XCTAssertEqual(bits(second.master), bits(straight.master), "\(precision): weights")
            XCTAssertEqual(Array(second.optimizer.secondMoment).map(\.bitPattern), Array(straight.optimizer.secondMoment).map(\.bitPattern))
            XCTAssertEqual(second.state, straight.state)
        }
    }

    /// A library caller restoring without `ResumeCheck` still has the data
    /// seed guarded: another seed is refused naming both values, unless the
    /// change is accepted (then the run's seed is recorded). A state already
    /// read and compared (`checkedState`, as `PretrainRun` passes it) is
    /// taken as given, not read again.
    func testRestoreGuardsTheDataSeedAndTakesACheckedState() throws {
        let run = try temporaryRoot()
        let first = try Self.makeTrainer(Self.config(run: run, steps: 4))
        _ = try first.step()
        let checkpoint = try first.saveCheckpoint()
        var reseeded = Self.config(run: run, steps: 4)
        reseeded.data.seed = 43
        XCTAssertThrowsError(try Self.makeTrainer(reseeded).restore(checkpoint: checkpoint)) { error in
            guard case .checkpointIncompatible(let path, let reason) = error as? TrainingError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, checkpoint + "/" + Trainer.stateFile)
            XCTAssertTrue(reason.contains("pretrain.data.seed 42 in the checkpoint, 43 in this run"), reason)
        }
        let accepting = try Self.makeTrainer(reseeded)
        accepting.acceptsDataChange = true
        try accepting.restore(checkpoint: checkpoint)
        XCTAssertEqual(accepting.state.step, 1)
        XCTAssertEqual(accepting.state.dataSeed, 43)

        var checked = try TrainingState.load(checkpoint: checkpoint, dataSeed: nil)
        checked.tokensSeen += 1000
        let given = try Self.makeTrainer(Self.config(run: run, steps: 4))
        try given.restore(checkpoint: checkpoint, checkedState: checked)
        XCTAssertEqual(given.state, checked, "the state given, not the file's")
        XCTAssertEqual(given.optimizer.stepCount, checked.appliedSteps)
    }

    func testCheckpointContentsAndCorruption() throws {
        let run = try temporaryRoot()
        let trainer = try Self.makeTrainer(Self.config(run: run, steps: 3))
        trainer.tokenizerPath = nil
        try trainer.step()
        let dir = try trainer.saveCheckpoint()
        let manifest = try CheckpointStore.verify(directory: dir)
        XCTAssertEqual(manifest.files.map(\.name), ["config.json", "model.safetensors", "optimizer.safetensors", "pretrain_config.json", "training_state.json"])
        // The weights load into a fresh model by Hugging Face names.
        let loaded = try LlamaModel(directory: dir)
        XCTAssertEqual(bits(loaded.parameters), bits(trainer.master))
        // Corrupt one byte of the optimizer file: restore names it.
        let path = dir + "/optimizer.safetensors"
        var bytes = try FileSystem.readAll(path)
        bytes[bytes.count - 3] ^= 0x40
        let w = try FileWriter(path: path); try w.write(bytes); try w.commit()
        let other = try Self.makeTrainer(Self.config(run: run, steps: 3))
        XCTAssertThrowsError(try other.restore(checkpoint: dir)) { error in
            guard case .checkpointChecksumMismatch(let p, _, _) = error as? TrainingError else { return XCTFail("\(error)") }
            XCTAssertEqual(p, path)
        }
        // A different architecture is refused with the reason.
        var wider = Self.config(run: run, steps: 3)
        wider.model.hiddenSize = 48
        try trainer.saveCheckpoint()  // re-save step 1 intact
        XCTAssertThrowsError(try Self.makeTrainer(wider).restore(checkpoint: run)) { error in
            guard case .checkpointIncompatible(_, let reason) = error as? TrainingError else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("hidden_size 32 vs 48"), reason)
        }
    }

    /// fp16: an overflow in the gradients skips the step (weights and
    /// moments untouched), halves the loss scale and is reported.
    func testFloat16OverflowSkipsStep() throws {
        final class Collect: EventSink, @unchecked Sendable {
            var events: [StageEvent] = []
            func report(_ event: StageEvent) { events.append(event) }
        }
        var config = Self.config(run: try temporaryRoot(), steps: 4, precision: .fp16)
        config.precision.initialLossScale = 1024
        let model = try LlamaModel(config: config.model.llamaConfig(vocabulary: 64))
        model.initializeRandom(seed: 1)
        let sink = Collect()
        let trainer = try Trainer(config: config, model: model, train: Self.corpus(), heldOut: nil, sink: sink)
        try trainer.step()
        XCTAssertEqual(trainer.state.appliedSteps, 1)
        let weights = bits(trainer.master)
        var inject = true
        trainer.gradientHook = { g in if inject { g[17] = .infinity } }
        let skipped = try trainer.step()
        XCTAssertEqual(skipped.skipped, true)
        XCTAssertNil(skipped.gradientNorm)
        XCTAssertEqual(bits(trainer.master), weights, "a skipped step leaves the weights alone")
        XCTAssertEqual(trainer.state.lossScaler.scale, 512)
        XCTAssertEqual(trainer.state.step, 2)
        XCTAssertEqual(trainer.state.appliedSteps, 1)
        XCTAssertEqual(trainer.state.nextSequence, 8, "the skipped batch is consumed")
        XCTAssertTrue(sink.events.contains { if case .notice(_, let m) = $0 { return m.contains("overflow") && m.contains("skipped") } else { return false } })
        inject = false
        let next = try trainer.step()
        XCTAssertNil(next.skipped)
        XCTAssertEqual(trainer.state.appliedSteps, 2)
        XCTAssertNotEqual(bits(trainer.master), weights)
        // Real overflow without injection: a scale beyond fp16's range.
        var huge = config
        huge.precision.initialLossScale = 1e12
        let t2 = try Trainer(config: huge, model: try LlamaModel(config: config.model.llamaConfig(vocabulary: 64)), train: Self.corpus(), heldOut: nil)
        t2.model.initializeRandom(seed: 1)
        t2.master.copy(from: t2.model.parameters)
        XCTAssertEqual(try t2.step().skipped, true)
        XCTAssertEqual(t2.state.lossScaler.scale, 5e11)
    }

    func testRunWritesMetricsCheckpointsAndPlot() throws {
        let run = try temporaryRoot()
        var config = Self.config(run: run, steps: 6)
        config.checkpoint.everySteps = 2
        config.eval.everySteps = 3
        let trainer = try Self.makeTrainer(config)
        let log = try MetricsLog(path: run + "/metrics.jsonl")
        try trainer.run(metrics: log)
        let lines = try MetricsLog.read(path: run + "/metrics.jsonl")
        XCTAssertEqual(lines.map(\.step), [0, 1, 2, 3, 4, 5, 6])
        XCTAssertNotNil(lines[0].evalLoss)
        XCTAssertNil(lines[0].loss)
        XCTAssertEqual(lines.filter { $0.evalLoss != nil }.map(\.step), [0, 3, 6])
        XCTAssertEqual(try CheckpointStore.list(root: run).map(\.step), [4, 6])
        let svg = try FileSystem.readText(run + "/loss_curve.svg")
        XCTAssertTrue(svg.hasPrefix("<svg") && svg.contains("<polyline") && svg.contains("<circle"))
        // Resume truncates metrics after the checkpoint's step.
        let resumed = try MetricsLog(path: run + "/metrics.jsonl", truncateAfterStep: 4)
        _ = resumed
        XCTAssertEqual(try MetricsLog.read(path: run + "/metrics.jsonl").map(\.step), [0, 1, 2, 3, 4])
    }

    /// Skipping k steps of data lands on exactly the batches step k would have used.
    func testSkippingStepsOfData() throws {
        let a = try Self.makeTrainer(Self.config(run: try temporaryRoot(), steps: 10))
        let b = try Self.makeTrainer(Self.config(run: try temporaryRoot(), steps: 10))
        for _ in 0..<3 { try a.step() }
        b.skipData(steps: 3)
        XCTAssertEqual(a.state.nextSequence, b.state.nextSequence)
        XCTAssertEqual(try a.batches(startingAt: a.state.nextSequence), try b.batches(startingAt: b.state.nextSequence))
        // Rebuilding an earlier step's batch from its step number alone.
        let step1 = try a.batches(startingAt: 1 * a.config.data.globalBatchSize)
        XCTAssertNotEqual(step1, try a.batches(startingAt: 0))
        XCTAssertEqual(step1, try b.batches(startingAt: 4))
    }

    /// data.shuffle: false trains on the documents in corpus order, every
    /// epoch: the stream's token k is the training documents' token k, so a
    /// stretch of the corpus arrives at a step known beforehand; a resume
    /// replays it exactly.
    func testUnshuffledOrderPlacesDataAtAKnownStep() throws {
        XCTAssertFalse(try ConfigLoader.decode(PretrainConfig.self, yaml: "data:\n  shuffle: false\n").data.shuffle)
        XCTAssertTrue(PretrainConfig().data.shuffle)
        var config = Self.config(run: try temporaryRoot(), steps: 6)
        config.data.shuffle = false
        let trainer = try Self.makeTrainer(config)
        let source = Self.corpus()
        let split = splitHeldOut(documentCount: source.documentCount, fraction: config.data.heldOutFraction, seed: config.data.seed)
        let stream = split.train.flatMap { source.tokens[source.starts[$0]..<source.starts[$0 + 1]] }
        let perStep = config.data.globalBatchSize * config.data.sequenceLength
        let sequencesPerEpoch = trainer.trainOrder.sequencesPerEpoch
        for step in [0, 3, sequencesPerEpoch / config.data.globalBatchSize + 1] {
            let first = step * config.data.globalBatchSize
            let tokens = try trainer.batches(startingAt: first).flatMap(\.tokens)
            // Sequence g holds stream tokens from (g mod sequences per epoch) × length on.
            let expected = (first..<(first + config.data.globalBatchSize)).flatMap { g in
                let start = (g % sequencesPerEpoch) * config.data.sequenceLength
                return stream[start..<(start + config.data.sequenceLength)]
            }
            XCTAssertEqual(tokens, expected, "step \(step)")
            XCTAssertEqual(tokens.count, perStep)
        }
        // The shuffled order of the same seed differs from the corpus order.
        let shuffled = try Self.makeTrainer(Self.config(run: try temporaryRoot(), steps: 6))
        XCTAssertNotEqual(try shuffled.batches(startingAt: 0).flatMap(\.tokens), Array(stream[0..<perStep]))

        // Interrupted after 3 steps and resumed in a fresh trainer: the same steps, bit for bit.
        var straightLosses: [UInt64] = []
        for _ in 0..<6 { straightLosses.append(try XCTUnwrap(trainer.step().loss).bitPattern) }
        config.checkpoint.directory = try temporaryRoot()
        let first = try Self.makeTrainer(config)
        var resumedLosses: [UInt64] = []
        for _ in 0..<3 { resumedLosses.append(try XCTUnwrap(first.step().loss).bitPattern) }
        let checkpoint = try first.saveCheckpoint()
        let second = try Self.makeTrainer(config)
        try second.restore(checkpoint: checkpoint)
        for _ in 0..<3 { resumedLosses.append(try XCTUnwrap(second.step().loss).bitPattern) }
        XCTAssertEqual(resumedLosses, straightLosses)
        XCTAssertEqual(bits(second.master), bits(trainer.master))
    }

    func testDecaySegmentsFollowNames() throws {
        let layout = ParameterLayout(config: Self.config(run: "/tmp").model.llamaConfig(vocabulary: 64))
        let segments = decaySegments(layout)
        XCTAssertEqual(segments.first?.range.lowerBound, 0)
        XCTAssertEqual(segments.last?.range.upperBound, layout.totalCount)
        for s in layout.slices {
            let segment = try XCTUnwrap(segments.first { $0.range.contains(s.offset) })
            XCTAssertEqual(segment.decay, !s.name.contains("norm"), s.name)
        }
    }
}
