import DaptCore
import DaptModel
import Foundation

/// One `dapt pretrain` invocation: opens the shards, builds or loads the
/// model, restores a checkpoint when resuming, and runs the training loop
/// with its metrics log. The command line only parses and calls this.
public enum PretrainRun {
    public static let stage = "pretrain"

    /// Trains as `config` says. `resume` is a checkpoint or a run directory
    /// (its newest checkpoint); `stopAfter` ends this invocation early (with a
    /// checkpoint) while the schedule stays the full run's.
    public static func run(config: PretrainConfig, resume: String? = nil, stopAfter: Int? = nil,
                           sink: any EventSink = SilentSink()) throws {
        guard !config.data.shards.isEmpty else {
            throw ConfigError(field: "pretrain.data.shards", reason: "no token shard directory given (set it in the config or with --shards)")
        }
        let shards = try ShardDocuments(directory: config.data.shards)
        let split = splitHeldOut(documentCount: shards.documentCount, fraction: config.data.heldOutFraction, seed: config.data.seed)
        let model: LlamaModel
        if let from = config.model.from {
            model = try LlamaModel(directory: from)
            sink.report(.notice(stage: stage, message: "loaded \(from) (\(model.layout.totalCount) parameters)"))
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
        trainer.tokenizerPath = config.data.tokenizer ?? shards.tokenizerPath
        try FileSystem.makeDirectories(config.checkpoint.directory)
        if let resume {
            let started = monotonicSeconds()
            try trainer.restore(checkpoint: resume)
            sink.report(.notice(stage: stage, message: String(format: "resumed from %@ at step %d (loaded and verified in %.3f s)",
                                                              try Trainer.resolveCheckpoint(resume), trainer.state.step, monotonicSeconds() - started)))
        }
        sink.report(.notice(stage: stage, message: "\(model.layout.totalCount) parameters, \(split.train.count) training / \(split.heldOut.count) held-out documents, \(trainer.trainOrder.sequencesPerEpoch) sequences of \(config.data.sequenceLength) per epoch, \(config.precision.mode.rawValue)"))
        let metrics = try MetricsLog(path: config.checkpoint.directory + "/metrics.jsonl",
                                     truncateAfterStep: resume != nil ? trainer.state.step : nil)
        if let stopAfter {
            // The schedule stays the full run's; only the loop stops early.
            try trainer.run(metrics: metrics, until: min(config.schedule.totalSteps, trainer.state.step + stopAfter))
        } else {
            try trainer.run(metrics: metrics)
        }
    }
}
