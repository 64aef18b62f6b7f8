import DaptCluster
import DaptCore
import DaptModel
import DaptTokenizer
import Foundation

/// The LoRA training loop: the base model frozen (no weight gradients, no
/// optimizer state), only the adapters' flat buffer trained with AdamW.
/// Data parallel as pretrain's `Trainer`: each rank takes its share of every
/// global batch, gradients and token counts are summed over the data group,
/// rank 0 writes. Checkpoints are PEFT adapter directories plus the
/// optimizer moments and `training_state.json`, so a run resumes exactly.
public final class FinetuneTrainer {
    public let config: FinetuneConfig
    public let model: LlamaModel
    public let adapters: LoraAdapters
    public let optimizer: AdamW
    public let schedule: LearningRateSchedule
    public let train: ChatBatches
    public let heldOut: ChatBatches?
    public var state = TrainingState()
    public let groups: ParallelGroups
    public let sink: any EventSink
    /// Named in `adapter_config.json` as the base model.
    public var baseModelPath = ""
    /// Copied into every checkpoint when set (with the chat template's tokenizer_config.json).
    public var template: ChatTemplate?
    static let stage = "finetune"

    public var precision: Precision { config.precision.mode }

    public init(config: FinetuneConfig, model: LlamaModel, train: ChatBatches, heldOut: ChatBatches?,
                groups: ParallelGroups = .single(), sink: any EventSink = SilentSink()) throws {
        self.config = config
        self.model = model
        self.train = train
        self.heldOut = heldOut
        self.groups = groups
        self.sink = sink
        adapters = try LoraAdapters(config: model.config, settings: config.lora.settings)
        adapters.initialize(seed: config.lora.initSeed)
        adapters.attach(to: model)
        let precision = config.precision.mode
        model.activationPrecision = precision
        // The frozen base is held rounded to the run's precision once, as it would be stored.
        if precision != .fp32 { model.parameters.withBuffer { roundInPlace($0, to: precision) } }
        // Only matrices: A and B both decay when weight_decay > 0, as PEFT's trainer does.
        optimizer = AdamW(count: adapters.totalCount, segments: [DecaySegment(range: 0..<adapters.totalCount, decay: true)],
                          hyper: config.optimizer.hyper)
        schedule = config.schedulePlan
        state.dataSeed = config.data.seed
        state.rng = SplitMix64(seed: StableHash.mix64(config.data.seed ^ 0x6C6F_7261))
        state.lossScaler = LossScaler(initialScale: precision == .fp16 ? config.precision.initialLossScale : 1,
                                      growthInterval: config.precision.growthInterval)
    }

    func sumOverData<T: CollectiveElement & AdditiveArithmetic>(_ value: T) throws -> T {
        groups.data.size > 1 ? try groups.data.allReduce(value, op: .sum) : value
    }

    /// This rank's micro-batches of the global batch at `first`, with the
    /// global index of each one's first sequence (the dropout seed).
    func batches(startingAt first: Int) throws -> [(first: Int, batch: TokenBatch)] {
        let share = dataShare(globalBatch: config.data.globalBatchSize, rank: groups.data.rank, of: groups.data.size)
        let micro = config.data.microBatchSize
        return try stride(from: first + share.lowerBound, to: first + share.upperBound, by: micro).map { start in
            (start, try train.batch(firstSequence: start, count: min(micro, first + share.upperBound - start)))
        }
    }

    /// One optimizer step over `global_batch_size` sequences.
    @discardableResult
    public func step() throws -> StepMetrics {
        let started = monotonicSeconds()
        let stepIndex = state.step
        let batches = try batches(startingAt: state.nextSequence)
        let counted = Int(try sumOverData(Int64(batches.reduce(0) { $0 + $1.batch.targets.reduce(0) { $0 + ($1 == ignoreIndex ? 0 : 1) } })))
        let normalizer = Double(max(counted, 1))
        let lossScale: Float = precision == .fp16 ? state.lossScaler.scale : 1
        let stepSeed = state.rng.next()
        adapters.zeroGradients()
        adapters.training = true
        defer { adapters.training = false }
        var lossSum = 0.0
        for (first, batch) in batches {
            // Dropout masks follow the data, not the rank that trains it.
            adapters.dropoutSeed = StableHash.mix64(stepSeed ^ UInt64(first))
            lossSum += try model.forwardBackward(batch, lossScale: lossScale, normalizer: normalizer).sum
        }
        lossSum = try sumOverData(lossSum)
        let lr = schedule.rate(at: stepIndex)
        let g = adapters.gradients
        if groups.data.size > 1 { try groups.data.allReduce(g, op: .sum) }
        let finite = try sumOverData(Int32(allFinite(UnsafeBufferPointer(g)) ? 0 : 1)) == 0
        let apply = precision == .fp16 ? state.lossScaler.update(gradientsFinite: finite) : finite
        var gradientNorm: Float = .nan
        if apply {
            if lossScale != 1 { scaleInPlace(g, by: 1 / lossScale) }
            // As the pretrain trainer: the clipping coefficient is applied as AdamW reads the gradients.
            gradientNorm = Float(sumOfSquares(UnsafeBufferPointer(g)).squareRoot())
            optimizer.step(parameters: adapters.parameters, gradients: UnsafeBufferPointer(g), learningRate: Float(lr),
                           gradientScale: clippingCoefficient(norm: gradientNorm, maxNorm: config.optimizer.maxGradNorm))
            state.appliedSteps += 1
        } else {
            sink.report(.notice(stage: Self.stage, message: "step \(stepIndex + 1): gradients overflowed at loss scale \(lossScale); step skipped"))
            if precision != .fp16 { state.lossScaler.skippedSteps += 1 }
        }
        state.step += 1
        state.nextSequence += config.data.globalBatchSize
        state.tokensSeen += counted
        let seconds = max(monotonicSeconds() - started, 1e-9)
        let tokens = config.data.globalBatchSize * config.data.sequenceLength
        return StepMetrics(step: state.step, loss: lossSum / normalizer, learningRate: lr,
                           gradientNorm: apply ? Double(gradientNorm) : nil, tokens: tokens,
                           tokensPerSecond: Double(tokens) / seconds,
                           lossScale: precision == .fp16 ? Double(lossScale) : nil, skipped: apply ? nil : true)
    }

    /// Mean loss on the assistant tokens of the first `eval.sequences` held-out sequences.
    public func evaluate() throws -> Evaluation? {
        guard let heldOut, config.eval.sequences > 0 else { return nil }
        let total = min(config.eval.sequences, heldOut.sequencesPerEpoch)
        let share = dataShare(globalBatch: total, rank: groups.data.rank, of: groups.data.size)
        var sum = 0.0, count = 0
        for first in stride(from: share.lowerBound, to: share.upperBound, by: config.data.microBatchSize) {
            let r = try model.loss(heldOut.batch(firstSequence: first, count: min(config.data.microBatchSize, share.upperBound - first)))
            sum += r.sum; count += r.count
        }
        sum = try sumOverData(sum)
        count = Int(try sumOverData(Int64(count)))
        return Evaluation(loss: count > 0 ? sum / Double(count) : .nan, tokens: count, sequences: total)
    }

    // MARK: Checkpoints

    public static let trainConfigFile = "finetune_config.json"

    /// Writes `checkpoint-<step>`: a PEFT adapter directory (adapter_config.json,
    /// adapter_model.safetensors, tokenizer files) with the optimizer moments
    /// and the training state beside it.
    @discardableResult
    public func saveCheckpoint() throws -> String {
        try CheckpointStore.save(root: config.checkpoint.directory, step: state.step, keepLast: config.checkpoint.keepLast) { dir in
            try adapters.save(directory: dir, baseModel: baseModelPath)
            try optimizer.saveMoments(path: dir + "/" + Trainer.optimizerFile, slices: adapters.slices)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try Trainer.writeAtomically(dir + "/" + Trainer.stateFile, Array(encoder.encode(state)))
            try Trainer.writeAtomically(dir + "/" + Self.trainConfigFile, Array(encoder.encode(config)))
            var files = [LoraAdapters.configFile, LoraAdapters.weightsFile, Trainer.optimizerFile, Trainer.stateFile, Self.trainConfigFile]
            if let template {
                try template.tokenizer.save(path: dir + "/" + Trainer.tokenizerFile)
                try template.writeTokenizerConfig(directory: dir)
                files += [Trainer.tokenizerFile, ChatTemplate.configFile]
            }
            return files
        }
    }

    func saveAndReport() throws {
        guard groups.writes else { return try groups.world.barrier() }
        let path = try saveCheckpoint()
        sink.report(.notice(stage: Self.stage, message: "saved \(path)"))
        try groups.world.barrier()
    }

    /// Restores adapters, moments and state from a checkpoint of this run
    /// (or a run directory's newest), after verifying its checksums.
    public func restore(checkpoint path: String) throws {
        let dir = try Self.resolveCheckpoint(path)
        _ = try CheckpointStore.verify(directory: dir)
        let saved = try LoraAdapters.load(directory: dir, config: model.config)
        guard saved.settings == adapters.settings else {
            throw TrainingError.checkpointIncompatible(path: dir + "/" + LoraAdapters.configFile,
                                                       reason: "its LoRA settings (r \(saved.settings.rank), alpha \(saved.settings.alpha), targets \(saved.settings.targets.map(\.rawValue))) differ from this run's")
        }
        adapters.parameters.update(fromContentsOf: saved.parameters)
        try optimizer.loadMoments(path: dir + "/" + Trainer.optimizerFile, slices: adapters.slices)
        let restored = try TrainingState.load(checkpoint: dir, dataSeed: config.data.seed, seedField: "finetune.data.seed")
        state = restored
        optimizer.stepCount = restored.appliedSteps
    }

    /// A finetune checkpoint, or a run directory's newest.
    public static func resolveCheckpoint(_ path: String) throws -> String {
        if FileSystem.exists(path + "/" + CheckpointStore.manifestName) { return path }
        if let latest = try CheckpointStore.latest(root: path) { return latest }
        throw TrainingError.notAModel(path: path, reason: "not a finetune checkpoint (no \(CheckpointStore.manifestName)) or run directory (no \(CheckpointStore.prefix)*)")
    }

    // MARK: The loop

    public func run(metrics: MetricsLog?, until stopStep: Int? = nil) throws {
        let total = min(stopStep ?? config.schedule.totalSteps, config.schedule.totalSteps)
        let evalEvery = config.eval.everySteps
        if state.step == 0, let e = try evaluate() {
            sink.report(.notice(stage: Self.stage, message: String(format: "step 0: held-out loss %.4f (%d assistant tokens)", e.loss, e.tokens)))
            try metrics?.append(StepMetrics(step: 0, evalLoss: e.loss, evalPerplexity: e.perplexity))
        }
        var lastSaved = -1
        while state.step < total {
            var m = try step()
            if (evalEvery > 0 && state.step % evalEvery == 0) || state.step == config.schedule.totalSteps, let e = try evaluate() {
                m.evalLoss = e.loss
                m.evalPerplexity = e.perplexity
            }
            try metrics?.append(m)
            if state.step % config.logEverySteps == 0 || state.step == total || m.evalLoss != nil {
                var line = String(format: "step %d/%d  loss %.4f  lr %.3e  grad_norm %@  tokens/s %.0f",
                                  state.step, config.schedule.totalSteps, m.loss ?? .nan, m.learningRate ?? 0,
                                  m.gradientNorm.map { String(format: "%.3f", $0) } ?? "skipped", m.tokensPerSecond ?? 0)
                if let l = m.evalLoss { line += String(format: "  held-out loss %.4f", l) }
                sink.report(.notice(stage: Self.stage, message: line))
            }
            if config.checkpoint.everySteps > 0, state.step % config.checkpoint.everySteps == 0 {
                try saveAndReport()
                lastSaved = state.step
            }
        }
        if lastSaved != state.step { try saveAndReport() }
        if let metrics {
            let svgPath = config.checkpoint.directory + "/" + RunDirectory.lossCurveFile
            try Trainer.writeAtomically(svgPath, Array(lossCurveSVG(try MetricsLog.read(path: metrics.path)).utf8))
        }
    }
}
