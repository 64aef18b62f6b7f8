import DaptCluster
import DaptCore
import DaptModel
import Foundation

/// What every rank does after a step. Rank 0 decides and broadcasts it to
/// every rank of the world communicator, whatever the layout, so all ranks
/// take the same path through the run.
public enum StepDecision: Equatable, Sendable {
    case proceed
    /// Write a checkpoint (rank 0) of the state every rank holds.
    case checkpoint
    /// Restore the state after step `toStep`, then skip the data up to global sequence `skipUntil`.
    case rollback(toStep: Int, spikeFirstStep: Int, skipUntil: Int)
    /// Enter the curriculum stage of the next step (sequences of `sequenceLength`), then checkpoint if `checkpoint`.
    case changeSequenceLength(sequenceLength: Int, checkpoint: Bool)
    case stop(StopReason)

    public enum StopReason: Equatable, Sendable {
        /// A rank received `signal`: checkpoint and exit, resumable.
        case preempted(signal: Int32)
        /// A spike after `spikes.max_rollbacks` rollbacks.
        case tooManyRollbacks(spikeFirstStep: Int)
        /// A spike with no rollback point before it.
        case noRollbackPoint(spikeFirstStep: Int)
    }

    static let width = 4

    /// The decision as the fixed-size message that is broadcast.
    var encoded: [Int64] {
        switch self {
        case .proceed: return [0, 0, 0, 0]
        case .checkpoint: return [1, 0, 0, 0]
        case let .rollback(to, first, until): return [2, Int64(to), Int64(first), Int64(until)]
        case let .stop(.preempted(signal)): return [3, Int64(signal), 0, 0]
        case let .stop(.tooManyRollbacks(first)): return [4, Int64(first), 0, 0]
        case let .stop(.noRollbackPoint(first)): return [5, Int64(first), 0, 0]
        case let .changeSequenceLength(length, checkpoint): return [6, Int64(length), checkpoint ? 1 : 0, 0]
        }
    }

    init(encoded m: [Int64]) throws {
        switch m[0] {
        case 0: self = .proceed
        case 1: self = .checkpoint
        case 2: self = .rollback(toStep: Int(m[1]), spikeFirstStep: Int(m[2]), skipUntil: Int(m[3]))
        case 3: self = .stop(.preempted(signal: Int32(m[1])))
        case 4: self = .stop(.tooManyRollbacks(spikeFirstStep: Int(m[1])))
        case 5: self = .stop(.noRollbackPoint(spikeFirstStep: Int(m[1])))
        case 6: self = .changeSequenceLength(sequenceLength: Int(m[1]), checkpoint: m[2] != 0)
        default: throw TrainingError.invalidInput(path: "step decision", reason: "unknown decision code \(m[0])")
        }
    }
}

/// How `Trainer.run` ended.
public enum RunOutcome: Equatable, Sendable {
    case completed
    /// Stopped by `signal` after a checkpoint at `checkpoint`; `--resume` continues it.
    case preempted(signal: Int32, step: Int, checkpoint: String)
}

/// A global sequence range a rollback skipped.
public struct SkippedSequences: Codable, Equatable, Sendable {
    public var from: Int
    public var until: Int
    public init(from: Int, until: Int) { self.from = from; self.until = until }
}

/// One line of `metrics.jsonl` for a decision other than continue.
public struct RunEvent: Codable, Equatable, Sendable {
    public var event: String
    public var step: Int
    public var message: String
    public var path: String?
    public var rollbackTo: Int?
    public var skippedSequences: SkippedSequences?
    public var signal: String?
    public var sequenceLength: Int?
    public var evalLoss: Double?
    enum CodingKeys: String, CodingKey {
        case event, step, message, path, signal, rollbackTo = "rollback_to", skippedSequences = "skipped_sequences"
        case sequenceLength = "sequence_length", evalLoss = "eval_loss"
    }
}

/// One line of `rollbacks.jsonl`.
public struct RollbackRecord: Codable, Equatable, Sendable {
    public var step: Int
    public var spikeFirstStep: Int
    public var rolledBackTo: Int
    public var skippedSequences: SkippedSequences
    public var skippedSteps: Int
    public var loss: Double?
    public var median: Double?
    public var threshold: Double?
    public var reason: String
    public var lrFactor: Double
    public var lrFactorUntilStep: Int
    /// From the spike's detection to training again: restore, skip, checkpoint rewrite.
    public var seconds: Double
    enum CodingKeys: String, CodingKey {
        case step, loss, median, threshold, reason, seconds
        case spikeFirstStep = "spike_first_step", rolledBackTo = "rolled_back_to", skippedSequences = "skipped_sequences"
        case skippedSteps = "skipped_steps", lrFactor = "lr_factor", lrFactorUntilStep = "lr_factor_until_step"
    }
}

/// Everything a rank holds that decides the rest of the run, copied in
/// memory: weights, this rank's optimizer moments, and the state.
public struct TrainerSnapshot {
    public var state: TrainingState
    var master: [Float]
    var firstMoment: [Float]
    var secondMoment: [Float]
    /// Under ZeRO-1 in mixed precision: this rank's slice of the fp32 master weights.
    var masterSlice: [Float]?
    var optimizerSteps: Int
}

extension Trainer {
    public func snapshot() -> TrainerSnapshot {
        TrainerSnapshot(state: state, master: master.withBuffer { Array($0) },
                        firstMoment: Array(optimizer.firstMoment), secondMoment: Array(optimizer.secondMoment),
                        masterSlice: zero?.master.map { Array($0) }, optimizerSteps: optimizer.stepCount)
    }

    public func restore(_ s: TrainerSnapshot) {
        master.withBuffer { m in s.master.withUnsafeBufferPointer { _ = m.update(fromContentsOf: $0) } }
        if precision != .fp32 && zero == nil { model.parameters.copy(from: master) }
        if let slice = zero?.master, let saved = s.masterSlice { saved.withUnsafeBufferPointer { _ = slice.update(fromContentsOf: $0) } }
        s.firstMoment.withUnsafeBufferPointer { _ = optimizer.firstMoment.update(fromContentsOf: $0) }
        s.secondMoment.withUnsafeBufferPointer { _ = optimizer.secondMoment.update(fromContentsOf: $0) }
        optimizer.stepCount = s.optimizerSteps
        state = s.state
    }
}

/// Decides after every step (rank 0) and carries the decision out on every
/// rank: checkpoints, loss-spike rollbacks, preemption. Keeps the in-memory
/// rollback points: the states after every `rollbackEvery`-th step (the
/// checkpoint cadence), the newest two, which always include one before
/// any spike window; an older one is read from its checkpoint on disk.
public final class RunCoordinator {
    public let trainer: Trainer
    let detector: SpikeDetector?
    public let rollbackEvery: Int
    private(set) var snapshots: [TrainerSnapshot] = []
    /// The spike rank 0 acts on, for its report.
    private var lastSpike: Spike?

    public init(trainer: Trainer) {
        self.trainer = trainer
        let spikes = trainer.config.spikes
        detector = spikes.enabled ? SpikeDetector(config: spikes) : nil
        rollbackEvery = spikes.rollbackEvery(checkpointEvery: trainer.config.checkpoint.everySteps)
    }

    var config: PretrainConfig { trainer.config }
    var world: any Communicator { trainer.groups.world }

    /// Keeps the state after this step when it is a rollback point.
    func keepRollbackPoint() {
        guard detector != nil, trainer.state.step % rollbackEvery == 0 else { return }
        snapshots.removeAll { $0.state.step >= trainer.state.step }
        snapshots.append(trainer.snapshot())
        if snapshots.count > 2 { snapshots.removeFirst(snapshots.count - 2) }
    }

    /// The decision after a step with metrics `m`, the same on every rank.
    func decide(after m: StepMetrics, checkpointDue: Bool) throws -> StepDecision {
        // A signal on any rank stops every rank.
        let signal = world.size > 1 ? try world.allReduce(Int32(Preemption.pendingSignal ?? 0), op: .max) : Preemption.pendingSignal ?? 0
        var spike: Spike?
        if let detector {
            // Every rank keeps the same history (the loss is the global batch's), so every rank's state is the same.
            spike = detector.observe(step: m.step, loss: m.loss, gradientNorm: m.gradientNorm, gradientsFinite: m.skipped != true || trainer.precision == .fp16,
                                     history: &trainer.state.spikeHistory)
        }
        var decision = StepDecision.proceed
        if world.rank == 0 {
            if let spike {
                lastSpike = spike
                decision = try rollbackDecision(for: spike)
            } else if signal != 0 {
                decision = .stop(.preempted(signal: signal))
            } else if trainer.stageChangeDue, let next = config.curriculumStageIndex(at: trainer.state.step) {
                decision = .changeSequenceLength(sequenceLength: config.curriculum[next].sequenceLength, checkpoint: checkpointDue)
            } else if checkpointDue {
                decision = .checkpoint
            }
        }
        guard world.size > 1 else { return decision }
        var message = decision.encoded
        try world.broadcast(&message, root: 0)
        return try StepDecision(encoded: message)
    }

    /// Rank 0: where to roll back to for `spike`, or why the run stops.
    func rollbackDecision(for spike: Spike) throws -> StepDecision {
        guard trainer.state.rollbacks < config.spikes.maxRollbacks else { return .stop(.tooManyRollbacks(spikeFirstStep: spike.firstStep)) }
        guard let target = try rollbackTarget(before: spike.firstStep) else { return .stop(.noRollbackPoint(spikeFirstStep: spike.firstStep)) }
        let skipUntil = trainer.state.nextSequence + config.spikes.marginSteps * trainer.shape.globalBatch
        return .rollback(toStep: target, spikeFirstStep: spike.firstStep, skipUntil: skipUntil)
    }

    /// The newest rollback point whose weights no step of the spike window touched: in memory or on disk.
    func rollbackTarget(before firstStep: Int) throws -> Int? {
        let inMemory = snapshots.map(\.state.step).filter { $0 < firstStep }
        let onDisk = try CheckpointStore.list(root: config.checkpoint.directory).map(\.step)
            .filter { $0 < firstStep && $0 % rollbackEvery == 0 }
        return (inMemory + onDisk).max()
    }

    /// Carries out a rollback on this rank; returns the skipped range.
    func rollBack(toStep target: Int, skipUntil: Int) throws -> SkippedSequences {
        let carried = trainer.state, before = trainer.shape
        if let s = snapshots.last(where: { $0.state.step == target }) {
            trainer.restore(s)
            try trainer.adoptStateShape()
        } else {
            try trainer.restore(checkpoint: config.checkpoint.directory + "/" + CheckpointStore.directoryName(step: target))
        }
        snapshots.removeAll { $0.state.step > target }
        // The skip end in sequences of the restored stage's length.
        let skipUntil = convertSequenceIndex(skipUntil, from: before.train, to: trainer.shape.train)
        let skipped = SkippedSequences(from: trainer.state.nextSequence, until: skipUntil)
        // What happened since survives the restore: the count, the skipped data, the lowered rate.
        trainer.state.rollbacks = carried.rollbacks + 1
        trainer.state.skippedSequences = carried.skippedSequences + [skipped]
        trainer.state.nextSequence = skipUntil
        if config.spikes.lrSteps > 0, config.spikes.lrFactor != 1 {
            trainer.state.lrFactor = config.spikes.lrFactor
            trainer.state.lrFactorUntilStep = target + config.spikes.lrSteps
        }
        // The restored point now carries the skip, so a rollback to it again starts from here.
        snapshots.removeAll { $0.state.step >= target }
        snapshots.append(trainer.snapshot())
        return skipped
    }

    // MARK: rank 0's records

    func record(_ event: RunEvent, metrics: MetricsLog?) throws {
        try metrics?.append(event)
    }

    func appendRollback(_ record: RollbackRecord) throws {
        guard trainer.groups.writes else { return }
        let path = config.checkpoint.directory + "/" + RunDirectory.rollbacksFile
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var line = try encoder.encode(record)
        line.append(0x0A)
        if !FileSystem.exists(path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw FileError(path: path, operation: "open for appending", errno: errno) }
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(line)
    }

    /// After a rollback the checkpoints of the abandoned steps go, and the
    /// restored point is saved again with the skip in its state, so a resume
    /// from the run directory continues after the skip too.
    func rewriteCheckpoints(after target: Int) throws {
        guard config.checkpoint.everySteps > 0 else { return }
        if trainer.groups.writes {
            for old in try CheckpointStore.list(root: config.checkpoint.directory) where old.step > target {
                try CheckpointStore.retire(root: config.checkpoint.directory, old.path)
            }
        }
        try trainer.saveAndReport()
    }

    func describe(_ spike: Spike?) -> String {
        guard let spike else { return "loss spike" }
        let loss = spike.loss.map { String(format: "loss %.4f", $0) } ?? "no loss"
        return "loss spike at step \(spike.step) (\(loss); \(spike.reason))"
    }

    // MARK: The loop

    /// Trains until `stopStep`, deciding after every step.
    func run(metrics: MetricsLog?, until stopStep: Int?) throws -> RunOutcome {
        let sink = trainer.sink, stage = Trainer.stage
        let total = min(stopStep ?? config.schedule.totalSteps, config.schedule.totalSteps)
        let evalEvery = config.eval.everySteps
        if trainer.state.step == 0, let e = try trainer.evaluate() {
            sink.report(.notice(stage: stage, message: String(format: "step 0: held-out loss %.4f, perplexity %.2f (%d tokens)", e.loss, e.perplexity, e.tokens)))
            try metrics?.append(StepMetrics(step: 0, evalLoss: e.loss, evalPerplexity: e.perplexity))
        }
        // A run stopped at a stage boundary before switching: every rank switches alike.
        if trainer.stageChangeDue { try trainer.enterStage() }
        keepRollbackPoint()
        var firstStep = trainer.state.step
        var started = monotonicSeconds()
        var lastSaved = -1
        var decideSeconds = 0.0, stepSeconds = 0.0, decisions = 0
        defer {
            if decisions > 0 {
                sink.report(.notice(stage: stage, message: String(format: "coordinator: %d decisions, %.1f µs per step (decision and broadcast), %.3f%% of the step time",
                                                                  decisions, decideSeconds / Double(decisions) * 1e6, decideSeconds / max(stepSeconds, 1e-9) * 100)))
            }
        }
        while trainer.state.step < total {
            let firstSequence = trainer.state.nextSequence
            let stepping = monotonicSeconds()
            var m = try trainer.step()
            stepSeconds += monotonicSeconds() - stepping
            if let hook = trainer.lossHook, let loss = m.loss { m.loss = hook(firstSequence, loss) }
            m.sequenceLength = trainer.shape.sequenceLength
            let step = trainer.state.step
            if (evalEvery > 0 && step % evalEvery == 0) || step == config.schedule.totalSteps, let e = try trainer.evaluate() {
                m.evalLoss = e.loss
                m.evalPerplexity = e.perplexity
            }
            try metrics?.append(m)
            let checkpointDue = config.checkpoint.everySteps > 0 && step % config.checkpoint.everySteps == 0
            let deciding = monotonicSeconds()
            let decision = try decide(after: m, checkpointDue: checkpointDue)
            decideSeconds += monotonicSeconds() - deciding
            decisions += 1
            if step % config.logEverySteps == 0 || step == total || m.evalLoss != nil || decision != .proceed {
                let elapsed = monotonicSeconds() - started
                let eta = elapsed / Double(max(step - firstStep, 1)) * Double(config.schedule.totalSteps - step)
                var line = String(format: "step %d/%d  loss %.4f  lr %.3e  grad_norm %@  seq %d  tokens/s %.0f  ETA %@",
                                  step, config.schedule.totalSteps, m.loss ?? .nan, m.learningRate ?? 0,
                                  m.gradientNorm.map { String(format: "%.3f", $0) } ?? "skipped",
                                  m.sequenceLength ?? 0, m.tokensPerSecond ?? 0, formatDuration(eta))
                if let l = m.evalLoss, let p = m.evalPerplexity { line += String(format: "  held-out loss %.4f ppl %.2f", l, p) }
                if let s = m.lossScale { line += String(format: "  loss_scale %.0f", s) }
                if decision != .proceed, decision != .checkpoint { line += "  [\(Self.label(decision))]" }
                sink.report(.notice(stage: stage, message: line))
            }
            switch decision {
            case .proceed:
                break
            case let .changeSequenceLength(length, checkpoint):
                try trainer.enterStage()
                let evaluation = try trainer.evaluate()
                let c = trainer.model.config
                var message = "curriculum stage \(trainer.state.curriculumStage + 1) of \(config.curriculum.count) from step \(step + 1): sequences of \(length) tokens, \(trainer.shape.globalBatch) per step in micro-batches of \(trainer.shape.microBatch), rope_theta \(c.ropeTheta), rope_scaling "
                    + (c.ropeScaling.map { "\($0.type.rawValue) × \($0.factor)" } ?? "none")
                if let e = evaluation { message += String(format: "; held-out loss at %d: %.4f, perplexity %.2f", length, e.loss, e.perplexity) }
                sink.report(.notice(stage: stage, message: message))
                try record(RunEvent(event: "sequence_length", step: step, message: message, sequenceLength: length, evalLoss: evaluation?.loss), metrics: metrics)
                if checkpoint {
                    let path = try trainer.saveAndReport()
                    lastSaved = step
                    try record(RunEvent(event: "checkpoint", step: step, message: "saved \(path ?? "")", path: path), metrics: metrics)
                }
            case .checkpoint:
                let path = try trainer.saveAndReport()
                lastSaved = step
                try record(RunEvent(event: "checkpoint", step: step, message: "saved \(path ?? "")", path: path), metrics: metrics)
            case let .rollback(target, first, skipUntil):
                let rolledBackFrom = step, recovering = monotonicSeconds()
                let skipped = try rollBack(toStep: target, skipUntil: skipUntil)
                try rewriteCheckpoints(after: target)
                let seconds = monotonicSeconds() - recovering
                let skippedSteps = (skipped.until - skipped.from) / trainer.shape.globalBatch
                let message = "\(describe(lastSpike)): rolled back to step \(target), skipping sequences \(skipped.from)..<\(skipped.until) (\(skippedSteps) steps' data)"
                    + (trainer.state.lrFactorUntilStep > target ? String(format: ", lr × %g until step %d", trainer.state.lrFactor, trainer.state.lrFactorUntilStep) : "")
                    + " (rollback \(trainer.state.rollbacks) of at most \(config.spikes.maxRollbacks); training again after \(String(format: "%.3f", seconds)) s)"
                sink.report(.warning(stage: stage, message: message))
                try record(RunEvent(event: "rollback", step: rolledBackFrom, message: message, rollbackTo: target, skippedSequences: skipped), metrics: metrics)
                try appendRollback(RollbackRecord(step: rolledBackFrom, spikeFirstStep: first, rolledBackTo: target, skippedSequences: skipped,
                                                  skippedSteps: skippedSteps, loss: lastSpike?.loss, median: lastSpike?.statistics?.median,
                                                  threshold: lastSpike?.statistics?.threshold, reason: lastSpike?.reason ?? "loss spike",
                                                  lrFactor: trainer.state.lrFactor, lrFactorUntilStep: trainer.state.lrFactorUntilStep,
                                                  seconds: seconds))
                if config.checkpoint.everySteps > 0 { lastSaved = target }
                firstStep = trainer.state.step
                started = monotonicSeconds()
                continue
            case let .stop(.preempted(signal)):
                let path = try trainer.saveAndReport()
                let message = "stopped by \(Preemption.name(signal)) after step \(step); checkpoint written; the run is resumable with --resume \(config.checkpoint.directory)"
                try record(RunEvent(event: "stop", step: step, message: message, path: path, signal: Preemption.name(signal)), metrics: metrics)
                sink.report(.notice(stage: stage, message: message))
                return .preempted(signal: signal, step: step, checkpoint: path ?? config.checkpoint.directory)
            case let .stop(.tooManyRollbacks(first)):
                let message = "\(describe(lastSpike)) (spike from step \(first)) after \(trainer.state.rollbacks) rollbacks (spikes.max_rollbacks \(config.spikes.maxRollbacks)): stopping; lower optimizer.lr or inspect the data after sequence \(trainer.state.skippedSequences.last?.until ?? 0)"
                try record(RunEvent(event: "stop", step: step, message: message), metrics: metrics)
                throw TrainingError.unrecoverableSpike(message)
            case let .stop(.noRollbackPoint(first)):
                let message = "\(describe(lastSpike)) (spike from step \(first)) but no rollback point before step \(first) (kept in memory or on disk): stopping"
                try record(RunEvent(event: "stop", step: step, message: message), metrics: metrics)
                throw TrainingError.unrecoverableSpike(message)
            }
            keepRollbackPoint()
        }
        if lastSaved != trainer.state.step { try trainer.saveAndReport() }
        return .completed
    }

    static func label(_ decision: StepDecision) -> String {
        switch decision {
        case .proceed: return "continue"
        case .checkpoint: return "checkpoint"
        case let .rollback(to, _, _): return "rollback to step \(to)"
        case let .changeSequenceLength(length, _): return "sequence length \(length)"
        case .stop: return "stop"
        }
    }
}
