import DaptCore
import DaptModel

/// `finetune:` section of the YAML config: LoRA on chat data. Every key has
/// a default; optimizer, schedule, precision, checkpoint and eval are
/// pretrain's sections with the same meaning.
public struct FinetuneConfig: StageConfig, Equatable {
    public struct Data: Codable, Equatable, Sendable {
        /// JSONL with `messages` (system / user / assistant).
        public var train = ""
        /// JSONL held out for its loss; none: `held_out_fraction` of `train`, by a seeded hash.
        public var heldOut: String? = nil
        public var heldOutFraction = 0.1
        public var sequenceLength = 256
        public var microBatchSize = 4
        /// Sequences per optimizer step (a multiple of micro_batch_size).
        public var globalBatchSize = 8
        public var seed: UInt64 = 42
        enum CodingKeys: String, CodingKey, CaseIterable {
            case train, heldOut = "held_out", heldOutFraction = "held_out_fraction", sequenceLength = "sequence_length"
            case microBatchSize = "micro_batch_size", globalBatchSize = "global_batch_size", seed
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self), d = Data()
            train = try c.value(.train, default: d.train)
            heldOut = try c.decodeIfPresent(String.self, forKey: .heldOut)
            heldOutFraction = try c.value(.heldOutFraction, default: d.heldOutFraction)
            sequenceLength = try c.value(.sequenceLength, default: d.sequenceLength)
            microBatchSize = try c.value(.microBatchSize, default: d.microBatchSize)
            globalBatchSize = try c.value(.globalBatchSize, default: d.globalBatchSize)
            seed = try c.value(.seed, default: d.seed)
        }
    }

    public struct Lora: Codable, Equatable, Sendable {
        public var r = 8
        public var loraAlpha = 16.0
        public var loraDropout = 0.05
        public var targetModules: [LoraTarget] = [.qProj, .kProj, .vProj, .oProj]
        public var initSeed: UInt64 = 1234
        enum CodingKeys: String, CodingKey, CaseIterable {
            case r, loraAlpha = "lora_alpha", loraDropout = "lora_dropout", targetModules = "target_modules", initSeed = "init_seed"
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self), d = Lora()
            r = try c.value(.r, default: d.r)
            loraAlpha = try c.value(.loraAlpha, default: d.loraAlpha)
            loraDropout = try c.value(.loraDropout, default: d.loraDropout)
            targetModules = try c.value(.targetModules, default: d.targetModules)
            initSeed = try c.value(.initSeed, default: d.initSeed)
        }
        public var settings: LoraSettings { LoraSettings(rank: r, alpha: loraAlpha, dropout: loraDropout, targets: targetModules) }
    }

    /// The base model: a dapt checkpoint, a run directory or a Hugging Face
    /// Llama directory with tokenizer.json.
    public var model = ""
    public var data = Data()
    public var lora = Lora()
    public var optimizer = PretrainConfig.Optimizer()
    public var schedule = PretrainConfig.Schedule()
    public var precision = PretrainConfig.PrecisionSection()
    public var checkpoint = PretrainConfig.Checkpoint()
    public var eval = PretrainConfig.Eval()
    public var logEverySteps = 1

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, data, lora, optimizer, schedule, precision, checkpoint, eval, logEverySteps = "log_every_steps"
    }

    public init() {
        checkpoint.directory = "runs/finetune"
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self), d = FinetuneConfig()
        model = try c.value(.model, default: d.model)
        data = try c.value(.data, default: d.data)
        lora = try c.value(.lora, default: d.lora)
        optimizer = try c.value(.optimizer, default: d.optimizer)
        schedule = try c.value(.schedule, default: d.schedule)
        precision = try c.value(.precision, default: d.precision)
        checkpoint = try c.value(.checkpoint, default: d.checkpoint)
        eval = try c.value(.eval, default: d.eval)
        logEverySteps = try c.value(.logEverySteps, default: d.logEverySteps)
    }

    public func validate() throws {
        try Check.positive(lora.r, "lora.r")
        try Check.positive(lora.loraAlpha, "lora.lora_alpha")
        if !(0..<1).contains(lora.loraDropout) { throw ConfigError(field: "lora.lora_dropout", reason: "must be in 0..<1, got \(lora.loraDropout)") }
        if lora.targetModules.isEmpty { throw ConfigError(field: "lora.target_modules", reason: "must name at least one of \(LoraTarget.allCases.map(\.rawValue).joined(separator: ", "))") }
        try Check.positive(data.sequenceLength, "data.sequence_length")
        try Check.positive(data.microBatchSize, "data.micro_batch_size")
        try Check.positive(data.globalBatchSize, "data.global_batch_size")
        if data.globalBatchSize % data.microBatchSize != 0 {
            throw ConfigError(field: "data.global_batch_size", reason: "must be a multiple of micro_batch_size (\(data.microBatchSize)), got \(data.globalBatchSize)")
        }
        try Check.inRange(data.heldOutFraction, 0...0.5, "data.held_out_fraction")
        try PretrainConfig.validateTraining(optimizer: optimizer, schedule: schedule, precision: precision, checkpoint: checkpoint, eval: eval)
        try Check.positive(logEverySteps, "log_every_steps")
    }

    public var schedulePlan: LearningRateSchedule {
        LearningRateSchedule(peak: optimizer.lr, floorRatio: schedule.minLrRatio, warmupRatio: schedule.warmupRatio, totalSteps: schedule.totalSteps)
    }
}
