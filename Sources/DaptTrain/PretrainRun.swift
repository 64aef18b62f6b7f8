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
    /// Ranks in the job (the communicator's size).
    public var ranks = 1

    public init(resume: String? = nil, stopAfter: Int? = nil, overwrite: Bool = false, ranks: Int = 1) {
        self.resume = resume; self.stopAfter = stopAfter; self.overwrite = overwrite; self.ranks = ranks
    }
}

/// One `dapt pretrain` invocation: opens the shards, builds or loads the
/// model, restores a checkpoint when resuming, and runs the training loop
/// with its metrics log. Every check (ranks, tokenizers, positions, the run
/// directory) comes before anything is written. The command line only
/// parses and calls this.
public enum PretrainRun {
    public static let stage = "pretrain"

    public static func run(config: PretrainConfig, options: PretrainOptions = .init(), sink: any EventSink = SilentSink()) throws {
        // Every rank would run the whole job into one directory.
        guard options.ranks == 1 else { throw TrainingError.multipleRanks(options.ranks) }
        if options.resume != nil && options.overwrite {
            throw TrainingError.conflictingOptions("--resume continues a run and --overwrite removes it: give only one of them")
        }
        guard !config.data.shards.isEmpty else {
            throw ConfigError(field: "pretrain.data.shards", reason: "no token shard directory given (set it in the config or with --input)")
        }
        if options.resume == nil { try RunDirectory.checkFresh(config.checkpoint.directory, overwrite: options.overwrite) }
        let resumeFrom = try options.resume.map { try ModelDirectory.resolveCheckpoint($0) }
        let shards = try ShardDocuments(directory: config.data.shards)
        // The tokenizer copied into checkpoints must be the one the ids come from.
        let tokenizerPath = config.data.tokenizer ?? shards.tokenizerPath
        try shards.requireTokenizer(tokenizerPath)
        let start: ModelDirectory? = try config.model.from.map { try ModelDirectory.resolve($0) }
        for directory in [start, resumeFrom.map { ModelDirectory.checkpoint($0) }].compactMap({ $0 }) {
            if let tokenizer = directory.tokenizerPath {
                try shards.requireTokenizer(tokenizer)
            } else {
                sink.report(.notice(stage: stage, message: "\(directory.path) has no \(Trainer.tokenizerFile): that its ids are the shards' cannot be checked"))
            }
            try config.validate(against: LlamaConfig.load(path: directory.path + "/" + Trainer.configFile), from: directory.path)
        }

        let split = splitHeldOut(documentCount: shards.documentCount, fraction: config.data.heldOutFraction, seed: config.data.seed)
        let model: LlamaModel
        if let start {
            model = try start.loadModel()
            sink.report(.notice(stage: stage, message: "loaded \(start.path) (\(model.layout.totalCount) parameters)"))
        } else {
            model = try LlamaModel(config: config.model.llamaConfig(vocabulary: shards.vocabSize))
            model.initializeRandom(seed: config.model.initSeed, std: config.model.initStd)
        }
        if model.config.vocabSize < shards.vocabSize {
            throw TrainingError.invalidInput(path: config.data.shards, reason: "vocabulary of \(shards.vocabSize) tokens exceeds the model's vocab_size \(model.config.vocabSize)")
        }
        let trainer = try Trainer(config: config, model: model,
                                  train: DocumentSubset(base: shards, indices: split.train),
                                  heldOut: DocumentSubset(base: shards, indices: split.heldOut), sink: sink)
        trainer.tokenizerPath = tokenizerPath
        if let resumeFrom {
            let started = monotonicSeconds()
            try trainer.restore(checkpoint: resumeFrom)
            sink.report(.notice(stage: stage, message: String(format: "resumed from %@ at step %d (loaded and verified in %.3f s)",
                                                              resumeFrom, trainer.state.step, monotonicSeconds() - started)))
            try FileSystem.makeDirectories(config.checkpoint.directory)
        } else {
            try RunDirectory.prepareFresh(config.checkpoint.directory, overwrite: options.overwrite)
        }
        sink.report(.notice(stage: stage, message: "\(model.layout.totalCount) parameters, \(split.train.count) training / \(split.heldOut.count) held-out documents, \(trainer.trainOrder.sequencesPerEpoch) sequences of \(config.data.sequenceLength) per epoch, \(config.precision.mode.rawValue)"))
        let metrics = try MetricsLog(path: config.checkpoint.directory + "/" + RunDirectory.metricsFile,
                                     truncateAfterStep: resumeFrom != nil ? trainer.state.step : nil)
        if let stopAfter = options.stopAfter {
            try trainer.run(metrics: metrics, until: min(config.schedule.totalSteps, trainer.state.step + stopAfter))
        } else {
            try trainer.run(metrics: metrics)
        }
    }

    /// The settings a checkpoint (or a run directory's newest) was trained
    /// with, for resuming without a config.
    public static func savedConfig(checkpoint path: String) throws -> PretrainConfig {
        let file = try ModelDirectory.resolveCheckpoint(path) + "/" + Trainer.trainConfigFile
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
