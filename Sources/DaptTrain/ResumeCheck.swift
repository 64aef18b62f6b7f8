import DaptCore
import Foundation

/// The settings that decide which tokens each step trains on, compared
/// between a checkpoint and the run resuming it. A resume that changes one
/// trains the rest of the run on other data than the uninterrupted run
/// would, so it is refused, naming each setting with both values, unless
/// the change is accepted on purpose (`--allow-data-change`) and can be:
/// the data position in the checkpoint counts sequences of its length, so
/// a change of sequence length (`data.sequence_length`, the curriculum)
/// cannot be carried over.
public enum ResumeCheck {
    public static let overrideOption = "--allow-data-change"

    /// One setting that differs.
    public struct Change: Equatable, Sendable {
        /// The config key, e.g. `pretrain.data.shuffle`.
        public var field: String
        public var checkpoint: String
        public var run: String
        /// Whether `--allow-data-change` may accept it.
        public var overridable: Bool
    }

    /// The data settings of `config` (on the corpus `corpus`, see
    /// `ShardDocuments.corpusChecksum`) that differ from the checkpoint's
    /// `saved` settings and corpus (nil: not recorded, not compared).
    public static func changes(saved: PretrainConfig, savedCorpus: String?, config: PretrainConfig, corpus: String) -> [Change] {
        var changes: [Change] = []
        func compare<T: Equatable>(_ field: String, _ old: T, _ new: T, overridable: Bool = true) {
            if old != new { changes.append(Change(field: "pretrain." + field, checkpoint: "\(old)", run: "\(new)", overridable: overridable)) }
        }
        compare("data.seed", saved.data.seed, config.data.seed)
        compare("data.shuffle", saved.data.shuffle, config.data.shuffle)
        compare("data.held_out_fraction", saved.data.heldOutFraction, config.data.heldOutFraction)
        compare("data.global_batch_size", saved.data.globalBatchSize, config.data.globalBatchSize)
        compare("data.sequence_length", saved.data.sequenceLength, config.data.sequenceLength, overridable: false)
        compare("curriculum", describe(saved.curriculum), describe(config.curriculum), overridable: false)
        if let savedCorpus, savedCorpus != corpus {
            changes.append(Change(field: "pretrain.data.shards", checkpoint: "corpus xxh64 \(savedCorpus) (\(saved.data.shards))",
                                  run: "corpus xxh64 \(corpus) (\(config.data.shards))", overridable: true))
        }
        return changes
    }

    /// The curriculum's sequence-length schedule (its RoPE settings belong to the model, not the data).
    static func describe(_ curriculum: [PretrainConfig.CurriculumStage]) -> String {
        guard !curriculum.isEmpty else { return "none" }
        return "[" + curriculum.map { "\($0.sequenceLength) tokens until step \($0.untilStep)" }.joined(separator: ", ") + "]"
    }

    /// Throws a `ConfigError` naming every changed data setting unless there
    /// is none, or `allowDataChange` and every change can be accepted (then
    /// they are reported as a warning). `checkpoint` is the resolved
    /// checkpoint directory; its `pretrain_config.json` and
    /// `training_state.json` hold the settings it was trained with.
    /// Returns the checkpoint's training state, compared, for the restore
    /// (`Trainer.restore(checkpoint:checkedState:)`), so it is read once.
    @discardableResult
    public static func check(checkpoint: String, config: PretrainConfig, corpus: String, allowDataChange: Bool,
                             sink: any EventSink, stage: String = PretrainRun.stage) throws -> TrainingState {
        let saved = try PretrainRun.savedConfig(in: checkpoint)
        // The data seed is compared below with the other settings (and may be accepted), not refused by the load.
        let state = try TrainingState.load(checkpoint: checkpoint, dataSeed: nil)
        let found = changes(saved: saved, savedCorpus: state.corpusChecksum, config: config, corpus: corpus)
        guard !found.isEmpty else { return state }
        let fixed = found.filter { !$0.overridable }
        if allowDataChange && fixed.isEmpty {
            sink.report(.warning(stage: stage, message: "resuming \(checkpoint) with other data settings (\(overrideOption)): "
                + found.map { "\($0.field) \($0.checkpoint) → \($0.run)" }.joined(separator: "; ")
                + "; from here the run no longer matches an uninterrupted one"))
            return state
        }
        var reason = found.count == 1
            ? "\(found[0].checkpoint) in the checkpoint, \(found[0].run) in this run"
            : found.map { "\($0.field) \($0.checkpoint) in the checkpoint, \($0.run) in this run" }.joined(separator: "; ")
        reason += ": the steps after the resume would train on other data than the uninterrupted run. "
        if fixed.isEmpty {
            reason += "Resume with the checkpoint's settings, or give \(overrideOption) to continue with the new ones on purpose."
        } else {
            let unit = saved.curriculum.indices.contains(state.curriculumStage) ? saved.curriculum[state.curriculumStage].sequenceLength : saved.data.sequenceLength
            reason += "\(fixed.map(\.field).joined(separator: " and ")) cannot be overridden\(allowDataChange ? ", not even with \(overrideOption)" : ""): "
                + "the checkpoint's data position counts sequences of \(unit) tokens. Resume with the checkpoint's settings, "
                + "or start a new run from its weights with --from \(checkpoint)."
            if fixed.count < found.count && !allowDataChange { reason += " (The other changes could be accepted with \(overrideOption).)" }
        }
        throw ConfigError(source: "--resume \(checkpoint)", field: found.count == 1 ? found[0].field : "", reason: reason)
    }
}
