import DaptCluster
import DaptCore
import DaptModel
import DaptTokenizer
import Foundation

/// How one `dapt pretrain` invocation starts and stops.
public struct PretrainOptions: Sendable {
    /// A checkpoint or a run directory (its newest checkpoint) to continue.
    public var resume: String?
    /// Ends this invocation (with a checkpoint) after this many steps; the schedule stays the full run's.
    public var stopAfter: Int?
    /// Replace a run already in the run directory (removed as a unit first).
    public var overwrite = false
    /// Resume although a setting that decides which data a step sees changed (`ResumeCheck`).
    public var allowDataChange = false

    public init(resume: String? = nil, stopAfter: Int? = nil, overwrite: Bool = false, allowDataChange: Bool = false) {
        self.resume = resume; self.stopAfter = stopAfter; self.overwrite = overwrite; self.allowDataChange = allowDataChange
    }
}

/// One `dapt pretrain` invocation: opens the shards, builds or loads the
/// model, restores a checkpoint when resuming, and runs the training loop
/// with its metrics log, on every rank of `world` (see `ParallelLayout`).
/// Every check (layout, tokenizers, positions, the run directory) comes
/// before anything is written; the file checks run on rank 0 and every rank
/// fails with their error. The command line only parses and calls this.
public enum PretrainRun {
    public static let stage = "pretrain"

    @discardableResult
    public static func run(config: PretrainConfig, options: PretrainOptions = .init(), world: any Communicator = SingleRankCommunicator(),
                           sink: any EventSink = SilentSink()) throws -> RunOutcome {
        // Every rank reaches the same verdict here from the same settings.
        let layout = try world.agreed { () throws -> ParallelLayout in
            let layout = try ParallelLayout(world: world.size, parallel: config.parallel)
            if config.data.globalBatchSize < layout.data {
                throw ConfigError(field: "pretrain.data.global_batch_size",
                                  reason: "\(config.data.globalBatchSize) sequences cannot be shared by \(layout.data) data-parallel ranks: every rank needs at least one")
            }
            for (i, stage) in config.curriculum.enumerated() where config.tokensPerStep / stage.sequenceLength < layout.data {
                throw ConfigError(field: "pretrain.curriculum[\(i)].sequence_length",
                                  reason: "\(stage.sequenceLength) leaves \(config.tokensPerStep / stage.sequenceLength) sequences per step, fewer than the \(layout.data) data-parallel ranks")
            }
            if options.resume != nil && options.overwrite {
                throw TrainingError.conflictingOptions("--resume continues a run and --overwrite removes it: give only one of them")
            }
            guard !config.data.shards.isEmpty else {
                throw ConfigError(field: "pretrain.data.shards", reason: "no token shard directory given (set it in the config or with --input)")
            }
            return layout
        }
        // Checks of the files every rank shares: rank 0 reads, every rank learns the outcome.
        var checkedState: TrainingState?
        try world.checkOnRoot { checkedState = try check(config: config, options: options, sink: sink) }
        let groups = try ParallelGroups(world: world, layout: layout)
        let resumeFrom = try options.resume.map { try resumable($0, sink: sink) }
        let shards = try ShardDocuments(directory: config.data.shards)
        let tokenizerPath = config.data.tokenizer ?? shards.tokenizerPath
        let start: ModelDirectory? = try config.model.from.map { try ModelDirectory.resolve($0) }

        let split = splitHeldOut(documentCount: shards.documentCount, fraction: config.data.heldOutFraction, seed: config.data.seed)
        // Split among the tensor group when T > 1 (sizes T does not divide: one configuration error on every rank)
        // and among the pipeline stages when P > 1 (each rank allocates only its stage's tensors).
        let (model, stages) = try world.agreed { () throws -> (LlamaModel, [PipelineStage]) in
            let architecture = try start.map { try LlamaConfig.load(path: $0.path + "/" + Trainer.configFile) }
                ?? config.model.llamaConfig(vocabulary: shards.vocabSize)
            let stages = try PipelineStage.partition(architecture, stages: layout.pipeline, stageLayers: config.parallel.stageLayers,
                                                     recomputedLayers: config.parallel.recomputedLayers(of: architecture.numHiddenLayers),
                                                     granularity: config.parallel.recomputeGranularity)
            let stage = stages[groups.coordinates.pipeline]
            if let start { return (try start.loadModel(tensorGroup: groups.tensor, stage: stage), stages) }
            return (try LlamaModel(config: architecture, tensorGroup: groups.tensor, stage: stage), stages)
        }
        // The smallest data share, cut into micro-batches (the last may be smaller).
        let share = config.data.globalBatchSize / layout.data
        let microBatches = (share + config.data.microBatchSize - 1) / config.data.microBatchSize
        if layout.pipeline > 1 && microBatches < layout.pipeline {
            sink.report(.warning(stage: stage, message: "\(microBatches) micro-batch(es) per step on each data rank for \(layout.pipeline) pipeline stages: the pipeline cannot fill (raise data.global_batch_size or lower data.micro_batch_size)"))
        }
        if let start {
            sink.report(.notice(stage: stage, message: "loaded \(start.path) (\(model.layout.totalCount) parameters)"))
        } else {
            model.initializeRandom(seed: config.model.initSeed, std: config.model.initStd)
        }
        if model.config.vocabSize < shards.vocabSize {
            throw TrainingError.invalidInput(path: config.data.shards, reason: "vocabulary of \(shards.vocabSize) tokens exceeds the model's vocab_size \(model.config.vocabSize)")
        }
        let trainer = try Trainer(config: config, model: model,
                                  train: DocumentSubset(base: shards, indices: split.train),
                                  heldOut: DocumentSubset(base: shards, indices: split.heldOut), groups: groups, sink: sink)
        trainer.tokenizerPath = tokenizerPath
        trainer.acceptsDataChange = options.allowDataChange
        trainer.state.corpusChecksum = shards.corpusChecksum
        if let resumeFrom {
            let started = monotonicSeconds()
            // Rank 0 restores the state `check` read and compared; every other rank reads training_state.json
            // itself here, once per rank (the data settings, seed included, are agreed by then, so no rank
            // compares them again).
            let state = try checkedState ?? TrainingState.load(checkpoint: resumeFrom, dataSeed: nil)
            try trainer.restore(checkpoint: resumeFrom, checkedState: state)
            sink.report(.notice(stage: stage, message: String(format: "resumed from %@ at step %d (loaded and verified in %.3f s)",
                                                              resumeFrom, trainer.state.step, monotonicSeconds() - started)))
            if groups.writes { try FileSystem.makeDirectories(config.checkpoint.directory) }
        } else if groups.writes {
            try RunDirectory.prepareFresh(config.checkpoint.directory, overwrite: options.overwrite)
        }
        sink.report(.notice(stage: stage, message: "\(model.layout.totalCount) parameters, \(split.train.count) training / \(split.heldOut.count) held-out documents, \(trainer.trainOrder.sequencesPerEpoch) sequences of \(config.data.sequenceLength) per epoch, \(config.precision.mode.rawValue), \(trainer.optimizerStateBytes) bytes of optimizer state per rank\(trainer.zero == nil ? "" : " (ZeRO-1 over \(layout.data) data ranks)")\(Self.recomputationNotice(model))"))
        if world.size > 1 {
            let grid = layout.grid(layers: model.config.numHiddenLayers, heads: model.config.numAttentionHeads, globalBatch: config.data.globalBatchSize,
                                   stages: stages)
            sink.report(.notice(stage: stage, message: "\(world.size) ranks: tensor \(layout.tensor) × pipeline \(layout.pipeline) × data \(layout.data)\n" + grid.joined(separator: "\n")))
        }
        let metrics = groups.writes ? try MetricsLog(path: config.checkpoint.directory + "/" + RunDirectory.metricsFile,
                                                     truncateAfterStep: resumeFrom != nil ? trainer.state.step : nil) : nil
        // Nothing is trained before rank 0 has made the run directory ready.
        try world.barrier()
        // From here a SIGTERM or SIGINT ends the run at a step boundary with a checkpoint.
        let signals = try Preemption.install()
        defer { try? signals.restore() }
        let stopStep = options.stopAfter.map { min(config.schedule.totalSteps, trainer.state.step + $0) }
        return try trainer.run(metrics: metrics, until: stopStep)
    }

    /// The start line's words on recomputation ("" when off).
    static func recomputationNotice(_ model: LlamaModel) -> String {
        let K = model.recomputedLayers, all = K >= model.config.numHiddenLayers
        if K == 0 { return "" }
        let layers = "the first \(K) layer\(K == 1 ? "" : "s") of each stage"
        switch model.recomputeGranularity {
        case .layer: return all ? ", layers recomputed in backward" : ", \(layers) recomputed in backward"
        case .mlp: return all ? ", every layer's [gate | up] rows recomputed in backward" : ", the [gate | up] rows of \(layers) recomputed in backward"
        }
    }

    /// The checks that read the run directory, shards, tokenizers and
    /// starting models, before anything is written. Returns the resumed
    /// checkpoint's training state, compared with this run's data settings.
    static func check(config: PretrainConfig, options: PretrainOptions, sink: any EventSink) throws -> TrainingState? {
        if options.resume == nil { try RunDirectory.checkFresh(config.checkpoint.directory, overwrite: options.overwrite) }
        let resumeFrom = try options.resume.map { try resumable($0, sink: SilentSink()) }
        let shards = try ShardDocuments(directory: config.data.shards)
        // The tokenizer copied into checkpoints must be the one the ids come from.
        try shards.requireTokenizer(config.data.tokenizer ?? shards.tokenizerPath)
        let start: ModelDirectory? = try config.model.from.map { try ModelDirectory.resolve($0) }
        for directory in [start, resumeFrom.map { ModelDirectory.checkpoint($0) }].compactMap({ $0 }) {
            if let tokenizer = directory.tokenizerPath {
                try shards.requireTokenizer(tokenizer)
            } else {
                sink.report(.notice(stage: stage, message: "\(directory.path) has no \(Trainer.tokenizerFile): that its ids are the shards' cannot be checked"))
            }
            try config.validate(against: LlamaConfig.load(path: directory.path + "/" + Trainer.configFile), from: directory.path)
        }
        guard let resumeFrom else { return nil }
        return try ResumeCheck.check(checkpoint: resumeFrom, config: config, corpus: shards.corpusChecksum, allowDataChange: options.allowDataChange, sink: sink)
    }

    /// The checkpoint `--resume path` continues: for a run directory its
    /// newest intact checkpoint, with a warning naming each damaged newer one.
    static func resumable(_ path: String, sink: any EventSink) throws -> String {
        try ModelDirectory.resolveResumable(path) { damaged, error in
            sink.report(.warning(stage: stage, message: "\(damaged) is damaged (\(error)); resuming from an earlier checkpoint"))
        }
    }

    /// The settings a checkpoint (or a run directory's newest intact one) was
    /// trained with, for resuming without a config.
    public static func savedConfig(checkpoint path: String) throws -> PretrainConfig {
        try savedConfig(in: try resumable(path, sink: SilentSink()))
    }

    /// The settings saved in the checkpoint directory `directory` (resolved).
    static func savedConfig(in directory: String) throws -> PretrainConfig {
        let file = directory + "/" + Trainer.trainConfigFile
        do {
            return try JSONDecoder().decode(PretrainConfig.self, from: Data(FileSystem.readAll(file)))
        } catch var error as ConfigError {
            error.file = file
            throw error
        } catch let error as DecodingError {
            throw ConfigLoader.describe(error, file: file)
        }
    }
}
