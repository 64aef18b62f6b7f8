import DaptCluster
import DaptCore
import DaptModel
import Foundation

/// Everything besides weights and moments that a run needs to continue
/// exactly: the step, the data cursor, the RNG, the loss scaler. Saved as
/// `training_state.json` in every checkpoint; 64-bit values as decimal
/// strings so no JSON reader rounds them.
public struct TrainingState: Codable, Equatable, Sendable {
    /// Optimizer steps taken (applied or skipped on overflow).
    public var step = 0
    /// Steps the optimizer applied (AdamW's bias-correction count).
    public var appliedSteps = 0
    /// Global index of the next training sequence (the data position).
    public var nextSequence = 0
    public var tokensSeen = 0
    /// The run's generator, advanced once per step; nothing in a step may use another source of randomness.
    public var rng = SplitMix64(seed: 0)
    public var dataSeed: UInt64 = 0
    public var lossScaler = LossScaler()
    /// The spike detector's memory (see `SpikeDetector`).
    public var spikeHistory = SpikeHistory()
    /// Rollbacks so far, and the global sequence ranges they skipped (never trained on).
    public var rollbacks = 0
    public var skippedSequences: [SkippedSequences] = []
    /// The learning rate is multiplied by `lrFactor` before step `lrFactorUntilStep` (after a rollback).
    public var lrFactor = 1.0
    public var lrFactorUntilStep = 0
    /// The `pretrain.curriculum` stage the state is in (`nextSequence` counts sequences of its length).
    public var curriculumStage = 0
    /// The token shards trained on (`ShardDocuments.corpusChecksum`), so a resume on other data is noticed; nil: not recorded.
    public var corpusChecksum: String?

    public init() {}

    /// The learning-rate multiplier for step `step` (0-based).
    public func learningRateFactor(at step: Int) -> Double { step < lrFactorUntilStep ? lrFactor : 1 }

    enum CodingKeys: String, CodingKey {
        case step, appliedSteps = "applied_steps", nextSequence = "next_sequence", tokensSeen = "tokens_seen"
        case rngState = "rng_state", dataSeed = "data_seed", lossScale = "loss_scale"
        case growthInterval = "loss_scale_growth_interval", cleanSteps = "loss_scale_clean_steps", skippedSteps = "skipped_steps"
        case spikeHistory = "spike_history", rollbacks, skippedSequences = "skipped_sequences"
        case lrFactor = "lr_factor", lrFactorUntilStep = "lr_factor_until_step", curriculumStage = "curriculum_stage"
        case corpusChecksum = "corpus_xxh64"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func u64(_ key: CodingKeys) throws -> UInt64 {
            let text = try c.decode(String.self, forKey: key)
            guard let v = UInt64(text) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "\"\(text)\" is not an unsigned 64-bit integer")
            }
            return v
        }
        step = try c.decode(Int.self, forKey: .step)
        appliedSteps = try c.decode(Int.self, forKey: .appliedSteps)
        nextSequence = try c.decode(Int.self, forKey: .nextSequence)
        tokensSeen = try c.decode(Int.self, forKey: .tokensSeen)
        rng = SplitMix64(seed: try u64(.rngState))
        dataSeed = try u64(.dataSeed)
        lossScaler = LossScaler(initialScale: try c.decode(Float.self, forKey: .lossScale),
                                growthInterval: try c.decode(Int.self, forKey: .growthInterval))
        lossScaler.cleanSteps = try c.decode(Int.self, forKey: .cleanSteps)
        lossScaler.skippedSteps = try c.decode(Int.self, forKey: .skippedSteps)
        // Absent in checkpoints written before spike detection: a run without rollbacks.
        spikeHistory = try c.decodeIfPresent(SpikeHistory.self, forKey: .spikeHistory) ?? SpikeHistory()
        rollbacks = try c.decodeIfPresent(Int.self, forKey: .rollbacks) ?? 0
        skippedSequences = try c.decodeIfPresent([SkippedSequences].self, forKey: .skippedSequences) ?? []
        lrFactor = try c.decodeIfPresent(Double.self, forKey: .lrFactor) ?? 1
        lrFactorUntilStep = try c.decodeIfPresent(Int.self, forKey: .lrFactorUntilStep) ?? 0
        curriculumStage = try c.decodeIfPresent(Int.self, forKey: .curriculumStage) ?? 0
        corpusChecksum = try c.decodeIfPresent(String.self, forKey: .corpusChecksum)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(step, forKey: .step)
        try c.encode(appliedSteps, forKey: .appliedSteps)
        try c.encode(nextSequence, forKey: .nextSequence)
        try c.encode(tokensSeen, forKey: .tokensSeen)
        try c.encode(String(rng.state), forKey: .rngState)
        try c.encode(String(dataSeed), forKey: .dataSeed)
        try c.encode(lossScaler.scale, forKey: .lossScale)
        try c.encode(lossScaler.growthInterval, forKey: .growthInterval)
        try c.encode(lossScaler.cleanSteps, forKey: .cleanSteps)
        try c.encode(lossScaler.skippedSteps, forKey: .skippedSteps)
        try c.encode(spikeHistory, forKey: .spikeHistory)
        try c.encode(rollbacks, forKey: .rollbacks)
        try c.encode(skippedSequences, forKey: .skippedSequences)
        try c.encode(lrFactor, forKey: .lrFactor)
        try c.encode(lrFactorUntilStep, forKey: .lrFactorUntilStep)
        try c.encode(curriculumStage, forKey: .curriculumStage)
        try c.encodeIfPresent(corpusChecksum, forKey: .corpusChecksum)
    }
}

extension TrainingState {
    /// The training state saved in checkpoint `dir`, refused when it was
    /// trained with another data seed (the data order would change) unless
    /// `dataSeed` is nil (a change accepted on purpose, or compared already
    /// by `ResumeCheck`). This is the one seed check of a restore that did
    /// not come through `ResumeCheck`: `Trainer.restore(checkpoint:)` called
    /// by a library caller or a rollback, and `FinetuneTrainer.restore`.
    /// `seedField` names the setting in the refusal (pretrain's or finetune's).
    static func load(checkpoint dir: String, dataSeed: UInt64?, seedField: String = "pretrain.data.seed") throws -> TrainingState {
        let path = dir + "/" + Trainer.stateFile
        let restored: TrainingState
        do {
            restored = try JSONDecoder().decode(TrainingState.self, from: Data(FileSystem.readAll(path)))
        } catch {
            throw TrainingError.checkpointBadManifest(path: path, reason: "\(error)")
        }
        if let dataSeed, restored.dataSeed != dataSeed {
            throw TrainingError.checkpointIncompatible(path: path,
                reason: "\(seedField) \(restored.dataSeed) in the checkpoint, \(dataSeed) in this run: the data order would change")
        }
        return restored
    }
}

/// Weight decay by parameter: matrices decay, norm gains do not. Adjacent
/// tensors of the same kind merge into one segment.
public func decaySegments(_ layout: ParameterLayout) -> [DecaySegment] {
    var segments: [DecaySegment] = []
    for s in layout.slices {
        let decay = !s.isNormWeight
        if let last = segments.last, last.decay == decay, last.range.upperBound == s.offset {
            segments[segments.count - 1].range = last.range.lowerBound..<s.range.upperBound
        } else {
            segments.append(DecaySegment(range: s.range, decay: decay))
        }
    }
    return segments
}

/// Held-out loss over a fixed set of sequences.
public struct Evaluation: Equatable, Sendable {
    public var loss: Double
    public var tokens: Int
    public var sequences: Int
    public var perplexity: Double { Foundation.exp(loss) }
}

/// The training loop: data order, precision, accumulation, clipping, AdamW,
/// evaluation and checkpoints. All state that decides what happens next is
/// in `state`, the weights, and the optimizer moments. Under data
/// parallelism every rank holds the whole model and trains on its share of
/// each global batch; gradients, losses and token counts are summed over
/// the data group, so every rank takes the same step. Rank 0 alone writes.
public final class Trainer {
    public let config: PretrainConfig
    public let model: LlamaModel
    /// fp32 master weights: the model's own buffer in fp32, a separate copy
    /// in mixed precision (the model then holds the rounded working copy).
    /// Under ZeRO-1 in mixed precision the master weights live in `zero`
    /// (this rank's slice) and this is the model's working copy.
    public let master: ParameterBuffer
    /// AdamW over the whole buffer, or under ZeRO-1 over `zero.owned`.
    public let optimizer: AdamW
    /// The optimizer state's sharding over the data group (`parallel.zero: 1`); nil when every rank holds all of it.
    public let zero: ZeroSharding?
    /// Sums the gradients over the data group in buckets during backward
    /// (`parallel.bucket_mb`; under ZeRO-1 reduce-scatters them); nil on one
    /// data rank or with bucket_mb 0 (one blocking all-reduce or
    /// reduce-scatter after backward).
    public let reducer: GradientReducer?
    public let schedule: LearningRateSchedule
    /// The packed orders at data.sequence_length.
    public let trainOrder: PackedSequenceOrder
    public let heldOutOrder: PackedSequenceOrder?
    /// The current curriculum stage's sequence length, batch shape and orders.
    public internal(set) var shape: TrainingShape
    let orders: PackedOrders
    /// The starting model's RoPE settings (a curriculum stage without its own keeps them).
    let baseRope: (theta: Double, scaling: RopeScaling?)
    public var state = TrainingState()
    public let sink: any EventSink
    /// This rank's communicators; the data group sums gradients and losses.
    public let groups: ParallelGroups
    /// Runs this rank's stage when the model is split among pipeline stages (nil: the whole model).
    public let pipeline: PipelineStageRunner?
    /// Copied into every checkpoint when set.
    public var tokenizerPath: String?
    /// Restores take a checkpoint trained with another data seed and record this run's
    /// (`--allow-data-change`; `ResumeCheck` has compared the settings first).
    public var acceptsDataChange = false
    /// Called after the gradients of a step are complete, before the
    /// overflow check (tests inject overflows here); under ZeRO-1 only
    /// the owned slice holds the reduced sum.
    public var gradientHook: ((UnsafeMutableBufferPointer<Float>) -> Void)?
    /// Replaces the loss the coordinator sees for the step whose batch starts
    /// at the given global sequence (tests inject loss spikes here).
    public var lossHook: ((_ firstSequence: Int, _ loss: Double) -> Double)?
    static let stage = "pretrain"

    public var precision: Precision { config.precision.mode }

    public init(config: PretrainConfig, model: LlamaModel, train: any DocumentSource, heldOut: (any DocumentSource)?,
                groups: ParallelGroups = .single(), sink: any EventSink = SilentSink()) throws {
        self.config = config
        self.groups = groups
        self.model = model
        self.sink = sink
        pipeline = model.layout.stage.isPartial ? PipelineStageRunner(model: model, group: groups.pipeline) : nil
        // Activations and their gradients are rounded inside every layer by the model.
        model.activationPrecision = config.precision.mode
        model.recomputedLayers = config.parallel.recomputedLayers(of: model.config.numHiddenLayers)
        model.recomputeGranularity = config.parallel.recomputeGranularity
        let mixed = config.precision.mode != .fp32
        zero = config.parallel.zero == 1
            ? model.parameters.withBuffer { ZeroSharding(group: groups.data, parameters: UnsafeBufferPointer($0), mixedPrecision: mixed) } : nil
        reducer = groups.data.size > 1 && config.parallel.bucketMB > 0
            ? GradientReducer(gradients: model.gradients, group: groups.data, bucketBytes: Int(config.parallel.bucketMB * 1_048_576), zero: zero) : nil
        master = !mixed || zero != nil ? model.parameters : ParameterBuffer(layout: model.layout)
        if mixed && zero == nil { master.copy(from: model.parameters) }
        // Under ZeRO-1 the working copy is rounded once here (its master slice is kept), then by every step.
        if mixed && zero != nil { model.parameters.withBuffer { roundInPlace($0, to: config.precision.mode) } }
        optimizer = AdamW(range: zero?.owned ?? 0..<model.layout.totalCount, segments: decaySegments(model.layout), hyper: config.optimizer.hyper)
        schedule = config.schedulePlan
        trainOrder = try PackedSequenceOrder(source: train, sequenceLength: config.data.sequenceLength, seed: config.data.seed,
                                             shuffle: config.data.shuffle, documentMasks: config.data.documentMasks)
        // Held-out sequences are always document-masked: a per-document
        // measure, the same whether training masked or not.
        if let heldOut, heldOut.documentCount > 0, config.eval.sequences > 0 {
            do {
                heldOutOrder = try PackedSequenceOrder(source: heldOut, sequenceLength: config.data.sequenceLength, seed: config.data.seed, shuffle: false)
            } catch let TrainingError.notEnoughData(tokens, length) {
                sink.report(.notice(stage: Self.stage, message: "held-out documents have \(tokens) tokens, fewer than one sequence of \(length): no held-out evaluation (raise data.held_out_fraction)"))
                heldOutOrder = nil
            }
        } else {
            heldOutOrder = nil
        }
        orders = PackedOrders(train: train, heldOut: heldOut, seed: config.data.seed, shuffle: config.data.shuffle, documentMasks: config.data.documentMasks)
        shape = TrainingShape(sequenceLength: config.data.sequenceLength, globalBatch: config.data.globalBatchSize,
                              microBatch: config.data.microBatchSize, train: trainOrder, heldOut: heldOutOrder, evalSequences: config.eval.sequences)
        baseRope = (model.config.ropeTheta, model.config.ropeScaling)
        state.dataSeed = config.data.seed
        state.rng = SplitMix64(seed: StableHash.mix64(config.data.seed ^ 0x7472_6169_6E))
        state.lossScaler = LossScaler(initialScale: config.precision.mode == .fp16 ? config.precision.initialLossScale : 1,
                                      growthInterval: config.precision.growthInterval)
        try adoptStateShape()
    }

    /// This rank's micro-batches of the global batch starting at
    /// `firstSequence`: its data share cut into micro_batch_size pieces (the
    /// last may be smaller), rebuilt from the data position alone.
    public func batches(startingAt firstSequence: Int) throws -> [TokenBatch] {
        try batches(startingAt: firstSequence, dataRank: groups.data.rank, of: groups.data.size)
    }

    /// Data rank `rank`'s micro-batches (of `ranks`) of the global batch starting at `firstSequence`.
    func batches(startingAt firstSequence: Int, dataRank rank: Int, of ranks: Int) throws -> [TokenBatch] {
        let share = dataShare(globalBatch: shape.globalBatch, rank: rank, of: ranks)
        return try microBatches(order: shape.train, sequences: share.lowerBound + firstSequence..<share.upperBound + firstSequence)
    }

    func microBatches(order: PackedSequenceOrder, sequences: Range<Int>) throws -> [TokenBatch] {
        let micro = shape.microBatch
        return try stride(from: sequences.lowerBound, to: sequences.upperBound, by: micro).map { first in
            let n = min(micro, sequences.upperBound - first)
            let p = try PackedBatch(order: order, firstSequence: first, count: n)
            return try TokenBatch(batchSize: n, seqLen: p.sequenceLength, tokens: p.tokens, targets: p.targets,
                                  positions: p.positions, documentIds: p.documentIds)
        }
    }

    /// `value` summed over the data group.
    func sumOverData<T: CollectiveElement & AdditiveArithmetic>(_ value: T) throws -> T {
        groups.data.size > 1 ? try groups.data.allReduce(value, op: .sum) : value
    }

    /// Mixed precision: the model's working copy is the master weights
    /// rounded. Under ZeRO-1 the step itself publishes the rounded weights.
    func refreshWorkingCopy() {
        guard precision != .fp32, zero == nil else { return }
        master.withBuffer { m in model.parameters.withBuffer { roundedCopy(UnsafeBufferPointer(m), into: $0, precision: precision) } }
    }

    /// Bytes of optimizer state on this rank: the AdamW moments and, in mixed precision, the fp32 master weights.
    public var optimizerStateBytes: Int {
        zero?.stateBytes ?? (optimizer.count * 2 + (precision == .fp32 ? 0 : master.count)) * MemoryLayout<Float>.stride
    }

    /// Skips `steps` optimizer steps' worth of data without training on it.
    public func skipData(steps: Int) {
        state.nextSequence += steps * shape.globalBatch
    }

    /// Forward and backward of one micro-batch. In mixed precision the model
    /// rounds activations and their gradients to fp16/bf16 inside each layer
    /// (q/k/v, attention, MLP, residual stream), as autocast would.
    /// `gradientsFinal`: see `LlamaModel.forwardBackward` (the reducer's hook on the last micro-batch).
    func forwardBackward(_ batch: TokenBatch, lossScale: Float, normalizer: Double,
                         gradientsFinal: ((_ offset: Int) throws -> Void)? = nil) throws -> LossResult {
        try model.forwardBackward(batch, lossScale: lossScale, normalizer: normalizer, gradientsFinal: gradientsFinal)
    }

    /// One optimizer step over `global_batch_size` sequences.
    @discardableResult
    public func step() throws -> StepMetrics {
        let started = monotonicSeconds()
        let stepIndex = state.step
        let batches = try batches(startingAt: state.nextSequence)
        // Every rank scales by the global token count, so the summed gradients are the mean over the global batch.
        let counted = Int(try sumOverData(Int64(batches.reduce(0) { $0 + $1.targets.reduce(0) { $0 + ($1 == ignoreIndex ? 0 : 1) } })))
        let normalizer = Double(max(counted, 1))
        let lossScale: Float = precision == .fp16 ? state.lossScaler.scale : 1
        refreshWorkingCopy()
        model.gradients.zero()
        var lossSum = 0.0
        if let pipeline {
            // The loss is produced on the last stage.
            lossSum = try sumOverPipeline(pipeline.forwardBackward(batches, lossScale: lossScale, normalizer: normalizer,
                                                                   gradientsFinal: pipelineReductionHook).sum)
            try sumTiedEmbeddingGradients()
        } else {
            for (i, batch) in batches.enumerated() {
                // Gradients are final only in the last micro-batch's backward: its buckets are reduced during it.
                let hook = i == batches.count - 1 ? reducer.map { r in { try r.gradientsFinal(from: $0) } } : nil
                lossSum += try forwardBackward(batch, lossScale: lossScale, normalizer: normalizer, gradientsFinal: hook).sum
            }
        }
        lossSum = try sumOverData(lossSum)
        _ = state.rng.next()
        let lr = schedule.rate(at: stepIndex) * state.learningRateFactor(at: stepIndex)
        var gradientNorm: Float = .nan
        var applied = false
        try model.gradients.withBuffer { all in
            // Under ZeRO-1 this rank reduces and updates its slice only.
            let g = zero.map { UnsafeMutableBufferPointer(rebasing: all[$0.owned]) } ?? all
            if let reducer { try reducer.finish() } else if let zero { try zero.reduceGradients(all) } else if groups.data.size > 1 { try groups.data.allReduce(all, op: .sum) }
            if precision != .fp32 { roundInPlace(g, to: precision) }
            gradientHook?(all)
            // An overflow on any rank skips the step on every rank.
            let finite = try sumOverWorld(Int32(allFinite(UnsafeBufferPointer(g)) ? 0 : 1)) == 0
            let apply = precision == .fp16 ? state.lossScaler.update(gradientsFinite: finite) : finite
            guard apply else {
                sink.report(.notice(stage: Self.stage, message: "step \(stepIndex + 1): gradients overflowed at loss scale \(lossScale); step skipped, scale now \(state.lossScaler.scale)"))
                if precision != .fp16 { state.lossScaler.skippedSteps += 1 }
                return
            }
            if lossScale != 1 { scaleInPlace(g, by: 1 / lossScale) }
            let clipping: Float
            (gradientNorm, clipping) = try globalGradientNorm(UnsafeBufferPointer(g))
            guard gradientNorm.isFinite else { throw TrainingError.invalidInput(path: "step \(stepIndex + 1)", reason: "gradient norm is not finite") }
            if let zero {
                try model.parameters.withBuffer { p in
                    optimizer.step(parameters: zero.master ?? UnsafeMutableBufferPointer(rebasing: p[zero.owned]),
                                   gradients: UnsafeBufferPointer(g), learningRate: Float(lr), gradientScale: clipping)
                    try zero.publish(into: p, precision: precision)
                }
            } else {
                master.withBuffer { m in optimizer.step(parameters: m, gradients: UnsafeBufferPointer(g), learningRate: Float(lr), gradientScale: clipping) }
            }
            applied = true
        }
        if applied { state.appliedSteps += 1 }
        state.step += 1
        state.nextSequence += shape.globalBatch
        let tokens = shape.globalBatch * shape.sequenceLength
        state.tokensSeen += tokens
        let seconds = max(monotonicSeconds() - started, 1e-9)
        return StepMetrics(step: state.step, loss: lossSum / normalizer, learningRate: lr,
                           gradientNorm: applied ? Double(gradientNorm) : nil, tokens: tokens,
                           tokensPerSecond: Double(tokens) / seconds,
                           lossScale: precision == .fp16 ? Double(lossScale) : nil, skipped: applied ? nil : true)
    }

    /// Mean loss over the first `eval.sequences` held-out sequences (in order).
    public func evaluate() throws -> Evaluation? {
        guard let order = shape.heldOut else { return nil }
        refreshWorkingCopy()
        let total = min(shape.evalSequences, order.sequencesPerEpoch)
        var sum = 0.0, count = 0
        let batches = try microBatches(order: order, sequences: dataShare(globalBatch: total, rank: groups.data.rank, of: groups.data.size))
        if let pipeline {
            let r = try pipeline.loss(batches)
            sum = try sumOverPipeline(r.sum)
            count = Int(try sumOverPipeline(Int64(r.count)))
        } else {
            for batch in batches {
                let r = try model.loss(batch)
                sum += r.sum; count += r.count
            }
        }
        sum = try sumOverData(sum)
        count = Int(try sumOverData(Int64(count)))
        return Evaluation(loss: count > 0 ? sum / Double(count) : .nan, tokens: count, sequences: total)
    }

    // MARK: Checkpoints

    public static let modelFile = "model.safetensors"
    public static let configFile = "config.json"
    public static let tokenizerFile = "tokenizer.json"
    public static let optimizerFile = "optimizer.safetensors"
    public static let stateFile = "training_state.json"
    public static let trainConfigFile = "pretrain_config.json"

    /// Writes `checkpoint-<step>` under the run directory; returns its path.
    /// When this rank does not hold every tensor (tensor parallelism, ZeRO-1
    /// on more than one data rank) every rank must take part: `saveAndReport`.
    @discardableResult
    public func saveCheckpoint() throws -> String {
        precondition(checkpointShards.tensors.allSatisfy { $0.pieces.allSatisfy { !$0.saved || $0.rank == groups.world.rank } },
                     "saveCheckpoint alone on a rank that does not hold the whole model")
        return try writeCheckpoint()
    }

    /// Rank 0's part of a save: the tensors it receives (`streamCheckpointTensors`) and the small files.
    func writeCheckpoint() throws -> String {
        try CheckpointStore.save(root: config.checkpoint.directory, step: state.step, keepLast: config.checkpoint.keepLast) { dir in
            try streamCheckpointTensors(into: dir)
            try model.config.save(path: dir + "/" + Self.configFile)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try Self.writeAtomically(dir + "/" + Self.stateFile, Array(encoder.encode(state)))
            try Self.writeAtomically(dir + "/" + Self.trainConfigFile, Array(encoder.encode(config)))
            var files = [Self.configFile, Self.modelFile, Self.optimizerFile, Self.stateFile, Self.trainConfigFile]
            if let tokenizerPath {
                try Self.writeAtomically(dir + "/" + Self.tokenizerFile, FileSystem.readAll(tokenizerPath))
                files.append(Self.tokenizerFile)
            }
            return files
        }
    }

    /// Saves a checkpoint on rank 0 and reports its size and time; the other
    /// ranks stream their slices to it, then wait for it.
    /// Returns the checkpoint's path on rank 0.
    @discardableResult
    func saveAndReport() throws -> String? {
        let started = monotonicSeconds()
        guard groups.writes else {
            try streamCheckpointTensors(into: nil)
            try groups.world.barrier()
            return nil
        }
        let path = try writeCheckpoint()
        let seconds = monotonicSeconds() - started
        let bytes = try CheckpointStore.verify(directory: path).files.reduce(0) { $0 + $1.bytes }
        sink.report(.notice(stage: Self.stage, message: String(format: "saved %@ (%.1f MB in %.3f s, %.0f MB/s)",
                                                               path, Double(bytes) / 1e6, seconds, Double(bytes) / 1e6 / max(seconds, 1e-9))))
        try groups.world.barrier()
        return path
    }

    static func writeAtomically(_ path: String, _ bytes: [UInt8]) throws {
        let w = try FileWriter(path: path, atomic: true)
        try w.write(bytes)
        try w.commit()
    }

    /// Restores weights, moments and state from a checkpoint written by
    /// `saveCheckpoint` (or a run directory: its newest) for the same
    /// architecture, after verifying checksums. `checkedState`: the
    /// checkpoint's `training_state.json` as already read and compared with
    /// this run's data settings (`ResumeCheck`, in `PretrainRun`), used as
    /// it is; nil: read here, and refused if trained with another data seed
    /// unless `acceptsDataChange`.
    public func restore(checkpoint path: String, checkedState: TrainingState? = nil) throws {
        let dir = try ModelDirectory.resolveCheckpoint(path)
        // Rank 0 verifies the checksums (reading every byte once); every rank learns the outcome.
        try groups.world.checkOnRoot { _ = try CheckpointStore.verify(directory: dir) }
        var saved = try LlamaConfig.load(path: dir + "/" + Self.configFile)
        if !config.curriculum.isEmpty {
            // The stage's RoPE settings are in config.json; the state says which stage.
            saved.ropeTheta = model.config.ropeTheta
            saved.ropeScaling = model.config.ropeScaling
        }
        let differences = saved.architectureDifferences(from: model.config)
        guard differences.isEmpty else {
            throw TrainingError.checkpointIncompatible(path: dir + "/" + Self.configFile,
                reason: "the checkpoint's architecture differs from this run's model (checkpoint vs run: \(differences.joined(separator: ", ")))")
        }
        try master.loadSafeTensors(paths: [dir + "/" + Self.modelFile])
        if let zero {
            // The checkpoint holds whole tensors, whatever wrote it: take this rank's slice.
            model.parameters.withBuffer { p in
                if let slice = zero.master { _ = slice.update(fromContentsOf: p[zero.owned]) }
                roundInPlace(p, to: precision)
            }
        } else if precision != .fp32 {
            model.parameters.copy(from: master)
        }
        // Each rank reads its own slices of the moments (its part, or under ZeRO-1 its share of it) from the mapped file.
        let moments = try SafeTensorsFile(path: dir + "/" + Self.optimizerFile)
        let map = checkpointShards
        try withCheckpointSources { _, m, v in
            for (i, piece) in map.pieces(onRank: groups.world.rank) {
                let t = map.tensors[i]
                try moments.read("exp_avg." + t.name, shape: t.shape, part: piece.part, elements: piece.elements, into: m.piece(piece))
                try moments.read("exp_avg_sq." + t.name, shape: t.shape, part: piece.part, elements: piece.elements, into: v.piece(piece))
            }
        }
        let restored = try checkedState ?? TrainingState.load(checkpoint: dir, dataSeed: acceptsDataChange ? nil : config.data.seed)
        // The corpus in use stays recorded (it was checked against the checkpoint's, or the change accepted).
        let corpus = state.corpusChecksum
        state = restored
        if let corpus { state.corpusChecksum = corpus }
        if acceptsDataChange { state.dataSeed = config.data.seed }
        optimizer.stepCount = restored.appliedSteps
        try adoptStateShape()
    }

    // MARK: The loop

    /// Trains until `schedule.total_steps` (or `stopStep`), logging,
    /// evaluating, checkpointing and rolling back as rank 0 decides after
    /// every step (see `RunCoordinator`); writes `loss_curve.svg` at the end.
    @discardableResult
    public func run(metrics: MetricsLog?, until stopStep: Int? = nil) throws -> RunOutcome {
        let outcome = try RunCoordinator(trainer: self).run(metrics: metrics, until: stopStep)
        if let metrics {
            let svgPath = config.checkpoint.directory + "/" + RunDirectory.lossCurveFile
            try Self.writeAtomically(svgPath, Array(lossCurveSVG(try MetricsLog.read(path: metrics.path)).utf8))
            sink.report(.notice(stage: Self.stage, message: "wrote \(svgPath)"))
        }
        return outcome
    }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "?" }
    let s = Int(seconds.rounded())
    if s >= 3600 { return "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" }
    if s >= 60 { return "\(s / 60)m\(String(format: "%02d", s % 60))s" }
    return "\(s)s"
}

/// Perplexity of `model` on `source` packed in document order.
public func evaluatePerplexity(model: LlamaModel, source: any DocumentSource, sequenceLength: Int, batchSize: Int,
                               maxSequences: Int = 0) throws -> (loss: Double, perplexity: Double, tokens: Int, sequences: Int, leftOutTokens: Int) {
    let order = try PackedSequenceOrder(source: source, sequenceLength: sequenceLength, seed: 0, shuffle: false)
    let total = maxSequences > 0 ? min(maxSequences, order.sequencesPerEpoch) : order.sequencesPerEpoch
    var sum = 0.0, count = 0, first = 0
    while first < total {
        let n = min(batchSize, total - first)
        let p = try PackedBatch(order: order, firstSequence: first, count: n)
        let r = try model.loss(try TokenBatch(batchSize: n, seqLen: sequenceLength, tokens: p.tokens, targets: p.targets,
                                              positions: p.positions, documentIds: p.documentIds))
        sum += r.sum; count += r.count
        first += n
    }
    let loss = count > 0 ? sum / Double(count) : .nan
    return (loss, Foundation.exp(loss), count, total, order.tokensPerEpoch - order.sequencesPerEpoch * sequenceLength)
}
