import DaptCore
import DaptModel
import Foundation

extension PretrainConfig {
    /// One stage of `pretrain.curriculum`: steps before `until_step` (0-based
    /// step index < until_step) train on sequences of `sequence_length` with
    /// these RoPE settings; the last stage also covers the steps after it.
    public struct CurriculumStage: Codable, Equatable, Sendable {
        public var untilStep: Int
        public var sequenceLength: Int
        /// nil: the starting model's own.
        public var ropeScaling: RopeScaling?
        public var ropeTheta: Double?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case untilStep = "until_step", sequenceLength = "sequence_length", ropeScaling = "rope_scaling", ropeTheta = "rope_theta"
        }
        public init(untilStep: Int, sequenceLength: Int, ropeScaling: RopeScaling? = nil, ropeTheta: Double? = nil) {
            self.untilStep = untilStep; self.sequenceLength = sequenceLength; self.ropeScaling = ropeScaling; self.ropeTheta = ropeTheta
        }
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            untilStep = try c.decode(Int.self, forKey: .untilStep)
            sequenceLength = try c.decode(Int.self, forKey: .sequenceLength)
            ropeScaling = try c.decodeIfPresent(RopeScaling.self, forKey: .ropeScaling)
            ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta)
        }
    }

    /// Tokens per optimizer step: the same in every curriculum stage.
    public var tokensPerStep: Int { data.globalBatchSize * data.sequenceLength }

    /// The index of the stage of 0-based step `step` (nil without a curriculum).
    public func curriculumStageIndex(at step: Int) -> Int? {
        guard !curriculum.isEmpty else { return nil }
        return curriculum.firstIndex { step < $0.untilStep } ?? curriculum.count - 1
    }

    func validateCurriculum() throws {
        var previous = 0
        for (i, stage) in curriculum.enumerated() {
            let field = "curriculum[\(i)]"
            if stage.untilStep <= previous {
                throw ConfigError(field: field + ".until_step", reason: "must be greater than the previous stage's (\(previous)), got \(stage.untilStep)")
            }
            previous = stage.untilStep
            try Check.positive(stage.sequenceLength, field + ".sequence_length")
            if tokensPerStep % stage.sequenceLength != 0 {
                throw ConfigError(field: field + ".sequence_length",
                                  reason: "\(stage.sequenceLength) does not divide the \(tokensPerStep) tokens of a step (data.global_batch_size × data.sequence_length), which every stage keeps")
            }
            if let theta = stage.ropeTheta { try Check.positive(theta, field + ".rope_theta") }
            if let s = stage.ropeScaling { try Check.positive(s.factor, field + ".rope_scaling.factor") }
            if model.from == nil {
                var c = model.llamaConfig(vocabulary: 1)
                c.ropeScaling = stage.ropeScaling ?? c.ropeScaling
                if stage.sequenceLength > c.positionLimit {
                    throw ConfigError(field: field + ".sequence_length",
                                      reason: "\(stage.sequenceLength) exceeds the model's positions with this stage's RoPE (\(c.positionLimit))")
                }
            }
        }
    }
}

/// The shape of a step in the current stage: sequence length, sequences per
/// step and per micro-batch (both scaled so tokens stay constant), and the
/// packed orders at this length.
public struct TrainingShape {
    public var sequenceLength: Int
    public var globalBatch: Int
    public var microBatch: Int
    public var train: PackedSequenceOrder
    public var heldOut: PackedSequenceOrder?
    /// Held-out sequences per evaluation (eval.sequences at the base length, in tokens).
    public var evalSequences: Int
}

/// Packed orders by sequence length, built once each.
final class PackedOrders {
    let train: any DocumentSource
    let heldOut: (any DocumentSource)?
    let seed: UInt64
    /// data.shuffle, for the training orders (held-out ones are never shuffled).
    let shuffle: Bool
    /// data.document_masks, for the training orders (held-out ones are always masked).
    let documentMasks: Bool
    private var cache: [Int: (PackedSequenceOrder, PackedSequenceOrder?)] = [:]
    init(train: any DocumentSource, heldOut: (any DocumentSource)?, seed: UInt64, shuffle: Bool, documentMasks: Bool) {
        self.train = train; self.heldOut = heldOut; self.seed = seed; self.shuffle = shuffle; self.documentMasks = documentMasks
    }

    func orders(length: Int) throws -> (PackedSequenceOrder, PackedSequenceOrder?) {
        if let c = cache[length] { return c }
        let t = try PackedSequenceOrder(source: train, sequenceLength: length, seed: seed, shuffle: shuffle, documentMasks: documentMasks)
        var h: PackedSequenceOrder?
        if let heldOut { h = try? PackedSequenceOrder(source: heldOut, sequenceLength: length, seed: seed, shuffle: false) }
        cache[length] = (t, h)
        return (t, h)
    }
}

/// The data position carried from sequences of `from` tokens to sequences
/// of `to`: the same epoch and token offset in it (rounded up to a whole
/// sequence), so the position is a function of (seed, epoch, token offset)
/// and a resume or another layout replays the same tokens.
public func convertSequenceIndex(_ index: Int, from old: PackedSequenceOrder, to new: PackedSequenceOrder) -> Int {
    guard old.sequenceLength != new.sequenceLength else { return index }
    let epoch = index / old.sequencesPerEpoch, local = index % old.sequencesPerEpoch
    let offset = local * old.sequenceLength
    let converted = (offset + new.sequenceLength - 1) / new.sequenceLength
    return converted >= new.sequencesPerEpoch ? (epoch + 1) * new.sequencesPerEpoch : epoch * new.sequencesPerEpoch + converted
}

extension Trainer {
    /// The shape for sequences of `length` tokens.
    func shape(length: Int) throws -> TrainingShape {
        let (train, heldOut) = try orders.orders(length: length)
        let base = config.data.sequenceLength
        return TrainingShape(sequenceLength: length, globalBatch: config.tokensPerStep / length,
                             microBatch: max(1, config.data.microBatchSize * base / length), train: train,
                             heldOut: config.eval.sequences > 0 ? heldOut : nil,
                             evalSequences: max(1, config.eval.sequences * base / length))
    }

    /// The stage that step `state.step` trains in differs from the active one.
    var stageChangeDue: Bool {
        guard let index = config.curriculumStageIndex(at: state.step) else { return false }
        return index != state.curriculumStage
    }

    /// Switches to the stage of step `state.step`: sequence length, batch
    /// shape and RoPE settings; the data position is carried over in tokens.
    func enterStage() throws {
        guard let index = config.curriculumStageIndex(at: state.step) else { return }
        let next = try shape(length: config.curriculum[index].sequenceLength)
        state.nextSequence = convertSequenceIndex(state.nextSequence, from: shape.train, to: next.train)
        state.curriculumStage = index
        shape = next
        try applyRope()
    }

    /// The shape and RoPE settings of the stage the state is in (after a restore).
    func adoptStateShape() throws {
        guard !config.curriculum.isEmpty else { return }
        guard config.curriculum.indices.contains(state.curriculumStage) else {
            throw TrainingError.checkpointIncompatible(path: Trainer.stateFile, reason: "curriculum stage \(state.curriculumStage + 1) is not in this run's pretrain.curriculum (\(config.curriculum.count) stages)")
        }
        let length = config.curriculum[state.curriculumStage].sequenceLength
        if length != shape.sequenceLength { shape = try shape(length: length) }
        try applyRope()
    }

    func applyRope() throws {
        let stage = config.curriculum[state.curriculumStage]
        try model.setRope(theta: stage.ropeTheta ?? baseRope.theta, scaling: stage.ropeScaling ?? baseRope.scaling)
    }
}
