import DaptCore
import DaptModel

/// `pretrain:` section of the YAML config. Every key has a default.
public struct PretrainConfig: StageConfig, Equatable {
    public struct Model: Codable, Equatable, Sendable {
        /// A Hugging Face model directory to start from (config.json + safetensors); the architecture keys below are then ignored.
        public var from: String? = nil
        /// 0: the tokenizer's vocabulary size.
        public var vocabSize = 0
        public var hiddenSize = 256
        public var intermediateSize = 688
        public var numHiddenLayers = 4
        public var numAttentionHeads = 4
        public var numKeyValueHeads = 0           // 0: same as heads
        public var maxPositionEmbeddings = 2048
        public var rmsNormEps = 1e-6
        public var ropeTheta = 10000.0
        public var tieWordEmbeddings = false
        public var initSeed: UInt64 = 1234
        public var initStd: Float = 0.02
        enum CodingKeys: String, CodingKey, CaseIterable {
            case from, vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
            case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
            case numKeyValueHeads = "num_key_value_heads", maxPositionEmbeddings = "max_position_embeddings"
            case rmsNormEps = "rms_norm_eps", ropeTheta = "rope_theta", tieWordEmbeddings = "tie_word_embeddings"
            case initSeed = "init_seed", initStd = "init_std"
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self), d = Model()
            from = try c.decodeIfPresent(String.self, forKey: .from)
            vocabSize = try c.value(.vocabSize, default: d.vocabSize)
            hiddenSize = try c.value(.hiddenSize, default: d.hiddenSize)
            intermediateSize = try c.value(.intermediateSize, default: d.intermediateSize)
            numHiddenLayers = try c.value(.numHiddenLayers, default: d.numHiddenLayers)
            numAttentionHeads = try c.value(.numAttentionHeads, default: d.numAttentionHeads)
            numKeyValueHeads = try c.value(.numKeyValueHeads, default: d.numKeyValueHeads)
            maxPositionEmbeddings = try c.value(.maxPositionEmbeddings, default: d.maxPositionEmbeddings)
            rmsNormEps = try c.value(.rmsNormEps, default: d.rmsNormEps)
            ropeTheta = try c.value(.ropeTheta, default: d.ropeTheta)
            tieWordEmbeddings = try c.value(.tieWordEmbeddings, default: d.tieWordEmbeddings)
            initSeed = try c.value(.initSeed, default: d.initSeed)
            initStd = try c.value(.initStd, default: d.initStd)
        }

        /// The architecture for a vocabulary of `vocabulary` tokens.
        public func llamaConfig(vocabulary: Int) -> LlamaConfig {
            LlamaConfig(vocabSize: vocabSize > 0 ? vocabSize : vocabulary, hiddenSize: hiddenSize,
                        intermediateSize: intermediateSize, numHiddenLayers: numHiddenLayers,
                        numAttentionHeads: numAttentionHeads,
                        numKeyValueHeads: numKeyValueHeads > 0 ? numKeyValueHeads : numAttentionHeads,
                        maxPositionEmbeddings: maxPositionEmbeddings, rmsNormEps: rmsNormEps,
                        ropeTheta: ropeTheta, tieWordEmbeddings: tieWordEmbeddings)
        }
    }

    public struct Data: Codable, Equatable, Sendable {
        /// Token shard directory written by `dapt tokenizer encode`.
        public var shards = ""
        /// tokenizer.json copied into checkpoints; default: the shards' own (`tokenizer.json` beside the manifest).
        public var tokenizer: String? = nil
        public var sequenceLength = 256
        public var microBatchSize = 4
        /// Sequences per optimizer step (a multiple of micro_batch_size: the rest is accumulation).
        public var globalBatchSize = 8
        public var seed: UInt64 = 42
        /// Documents held out for perplexity (by a seeded hash of the document index).
        public var heldOutFraction = 0.01
        /// Block-diagonal attention per packed document, positions restarting
        /// at each; false: plain causal attention across the documents of a
        /// sequence, positions running on (held-out evaluation stays masked).
        public var documentMasks = true
        /// Documents in a new order each epoch drawn from (seed, epoch); false:
        /// the training documents in corpus order every epoch, so a stretch of
        /// the corpus arrives at a known step (e.g. to place data on purpose).
        public var shuffle = true
        enum CodingKeys: String, CodingKey, CaseIterable {
            case shards, tokenizer, sequenceLength = "sequence_length", microBatchSize = "micro_batch_size"
            case globalBatchSize = "global_batch_size", seed, heldOutFraction = "held_out_fraction"
            case documentMasks = "document_masks", shuffle
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self), d = Data()
            shards = try c.value(.shards, default: d.shards)
            tokenizer = try c.decodeIfPresent(String.self, forKey: .tokenizer)
            sequenceLength = try c.value(.sequenceLength, default: d.sequenceLength)
            microBatchSize = try c.value(.microBatchSize, default: d.microBatchSize)
            globalBatchSize = try c.value(.globalBatchSize, default: d.globalBatchSize)
            seed = try c.value(.seed, default: d.seed)
            heldOutFraction = try c.value(.heldOutFraction, default: d.heldOutFraction)
            documentMasks = try c.value(.documentMasks, default: d.documentMasks)
            shuffle = try c.value(.shuffle, default: d.shuffle)
        }
    }

    public struct Optimizer: Codable, Equatable, Sendable {
        public var lr = 1e-4
        public var beta1: Float = 0.9
        public var beta2: Float = 0.95
        public var epsilon: Float = 1e-8
        public var weightDecay: Float = 0.1
        /// 0 disables clipping.
        public var maxGradNorm: Float = 1.0
        enum CodingKeys: String, CodingKey, CaseIterable {
            case lr, beta1, beta2, epsilon, weightDecay = "weight_decay", maxGradNorm = "max_grad_norm"
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self), d = Optimizer()
            lr = try c.value(.lr, default: d.lr)
            beta1 = try c.value(.beta1, default: d.beta1)
            beta2 = try c.value(.beta2, default: d.beta2)
            epsilon = try c.value(.epsilon, default: d.epsilon)
            weightDecay = try c.value(.weightDecay, default: d.weightDecay)
            maxGradNorm = try c.value(.maxGradNorm, default: d.maxGradNorm)
        }
        public var hyper: AdamWHyperparameters { AdamWHyperparameters(beta1: beta1, beta2: beta2, epsilon: epsilon, weightDecay: weightDecay) }
    }

    public struct Schedule: Codable, Equatable, Sendable {
        public var totalSteps = 100
        public var warmupRatio = 0.01
        /// The cosine ends at lr × min_lr_ratio.
        public var minLrRatio = 0.1
        enum CodingKeys: String, CodingKey, CaseIterable {
            case totalSteps = "total_steps", warmupRatio = "warmup_ratio", minLrRatio = "min_lr_ratio"
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self), d = Schedule()
            totalSteps = try c.value(.totalSteps, default: d.totalSteps)
            warmupRatio = try c.value(.warmupRatio, default: d.warmupRatio)
            minLrRatio = try c.value(.minLrRatio, default: d.minLrRatio)
        }
    }

    public struct PrecisionSection: Codable, Equatable, Sendable {
        public var mode: Precision = .fp32
        public var initialLossScale: Float = 65536
        public var growthInterval = 2000
        enum CodingKeys: String, CodingKey, CaseIterable {
            case mode, initialLossScale = "initial_loss_scale", growthInterval = "growth_interval"
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self), d = PrecisionSection()
            mode = try c.value(.mode, default: d.mode)
            initialLossScale = try c.value(.initialLossScale, default: d.initialLossScale)
            growthInterval = try c.value(.growthInterval, default: d.growthInterval)
        }
    }

    public struct Checkpoint: Codable, Equatable, Sendable {
        /// Run directory: checkpoints, metrics.jsonl, loss_curve.svg.
        public var directory = "runs/pretrain"
        /// 0: only at the end.
        public var everySteps = 0
        public var keepLast = 3
        enum CodingKeys: String, CodingKey, CaseIterable { case directory, everySteps = "every_steps", keepLast = "keep_last" }
        public init() {}
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self), d = Checkpoint()
            directory = try c.value(.directory, default: d.directory)
            everySteps = try c.value(.everySteps, default: d.everySteps)
            keepLast = try c.value(.keepLast, default: d.keepLast)
        }
    }

    public struct Eval: Codable, Equatable, Sendable {
        /// 0: only before the first and after the last step.
        public var everySteps = 0
        /// Held-out sequences per evaluation.
        public var sequences = 16
        enum CodingKeys: String, CodingKey, CaseIterable { case everySteps = "every_steps", sequences }
        public init() {}
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self), d = Eval()
            everySteps = try c.value(.everySteps, default: d.everySteps)
            sequences = try c.value(.sequences, default: d.sequences)
        }
    }

    /// How the ranks divide the run: tensor T, pipeline P; the data-parallel degree is world ÷ (T·P).
    public struct Parallel: Codable, Equatable, Sendable {
        public var tensor = 1
        public var pipeline = 1
        /// ZeRO stage: 0 every data rank holds the whole optimizer state; 1
        /// the AdamW moments (and mixed precision's fp32 master weights) are
        /// sharded over the data group (`ZeroSharding`).
        public var zero = 0
        /// Decoder layers per pipeline stage (P entries summing to the
        /// model's layers); nil: split by `PipelineStage.costs`.
        public var stageLayers: [Int]?
        /// MiB of gradients per bucket reduced over the data group during
        /// backward (`GradientReducer`); 0: one all-reduce after backward.
        public var bucketMB = 4.0
        /// Keep only each layer's input for backward and recompute the rest
        /// of its saved tensors there (`LlamaModel.recomputedLayers`): a
        /// quarter to a third more compute for about 1/11 of the layers'
        /// activation memory; the same losses and weights, bit for bit.
        public var recompute = false
        /// With `recompute`, how many of each stage's first layers are
        /// recomputed (Megatron's block method); nil: all but each stage's
        /// last, whose tensors the forward pass leaves in place.
        public var recomputeLayers: Int?
        /// What a recomputed layer recomputes: `layer` (its forward) or
        /// `mlp` (its [gate | up] rows; `LlamaModel.recomputeGranularity`).
        public var recomputeGranularity = RecomputeGranularity.layer
        enum CodingKeys: String, CodingKey, CaseIterable {
            case tensor, pipeline, zero, stageLayers = "stage_layers", bucketMB = "bucket_mb", recompute
            case recomputeLayers = "recompute_layers", recomputeGranularity = "recompute_granularity"
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self), d = Parallel()
            tensor = try c.value(.tensor, default: d.tensor)
            pipeline = try c.value(.pipeline, default: d.pipeline)
            zero = try c.value(.zero, default: d.zero)
            stageLayers = try c.decodeIfPresent([Int].self, forKey: .stageLayers)
            bucketMB = try c.value(.bucketMB, default: d.bucketMB)
            recompute = try c.value(.recompute, default: d.recompute)
            recomputeLayers = try c.decodeIfPresent(Int.self, forKey: .recomputeLayers)
            recomputeGranularity = try c.value(.recomputeGranularity, default: d.recomputeGranularity)
        }

        /// Layers recomputed per stage for a model of `modelLayers` layers
        /// (`LlamaModel.recomputedLayers`; 0: none, `modelLayers`: all).
        public func recomputedLayers(of modelLayers: Int) -> Int {
            recompute ? min(recomputeLayers ?? modelLayers, modelLayers) : 0
        }
    }

    public var model = Model()
    public var data = Data()
    public var optimizer = Optimizer()
    public var schedule = Schedule()
    public var precision = PrecisionSection()
    public var checkpoint = Checkpoint()
    public var eval = Eval()
    public var parallel = Parallel()
    public var spikes = Spikes()
    /// Context-length stages; empty: data.sequence_length throughout.
    public var curriculum: [CurriculumStage] = []
    /// Progress line every N steps.
    public var logEverySteps = 1

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, data, optimizer, schedule, precision, checkpoint, eval, parallel, spikes, curriculum, logEverySteps = "log_every_steps"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.value(.model, default: Model())
        data = try c.value(.data, default: Data())
        optimizer = try c.value(.optimizer, default: Optimizer())
        schedule = try c.value(.schedule, default: Schedule())
        precision = try c.value(.precision, default: PrecisionSection())
        checkpoint = try c.value(.checkpoint, default: Checkpoint())
        eval = try c.value(.eval, default: Eval())
        parallel = try c.value(.parallel, default: Parallel())
        spikes = try c.value(.spikes, default: Spikes())
        curriculum = try c.value(.curriculum, default: [])
        logEverySteps = try c.value(.logEverySteps, default: 1)
    }

    public func validate() throws {
        if model.from == nil {
            try Check.positive(model.hiddenSize, "model.hidden_size")
            try Check.positive(model.intermediateSize, "model.intermediate_size")
            try Check.positive(model.numHiddenLayers, "model.num_hidden_layers")
            try Check.positive(model.numAttentionHeads, "model.num_attention_heads")
            try Check.nonNegative(model.vocabSize, "model.vocab_size")
            try Check.nonNegative(model.numKeyValueHeads, "model.num_key_value_heads")
            if model.hiddenSize % model.numAttentionHeads != 0 {
                throw ConfigError(field: "model.hidden_size", reason: "must be a multiple of num_attention_heads (\(model.numAttentionHeads)), got \(model.hiddenSize)")
            }
            if model.numKeyValueHeads > 0, model.numAttentionHeads % model.numKeyValueHeads != 0 {
                throw ConfigError(field: "model.num_key_value_heads", reason: "must divide num_attention_heads (\(model.numAttentionHeads)), got \(model.numKeyValueHeads)")
            }
            try Check.positive(model.maxPositionEmbeddings, "model.max_position_embeddings")
            try Check.positive(model.rmsNormEps, "model.rms_norm_eps")
            try Check.positive(model.ropeTheta, "model.rope_theta")
            try Check.nonNegative(model.initStd, "model.init_std")
            // A model built here has no RoPE scaling: its positions end at max_position_embeddings.
            if data.sequenceLength > model.maxPositionEmbeddings {
                throw ConfigError(field: "data.sequence_length", reason: "\(data.sequenceLength) exceeds model.max_position_embeddings (\(model.maxPositionEmbeddings))")
            }
        }
        try Check.positive(data.sequenceLength, "data.sequence_length")
        try Check.positive(data.microBatchSize, "data.micro_batch_size")
        try Check.positive(data.globalBatchSize, "data.global_batch_size")
        if data.globalBatchSize % data.microBatchSize != 0 {
            throw ConfigError(field: "data.global_batch_size", reason: "must be a multiple of micro_batch_size (\(data.microBatchSize)), got \(data.globalBatchSize)")
        }
        try Check.inRange(data.heldOutFraction, 0...0.5, "data.held_out_fraction")
        try Self.validateTraining(optimizer: optimizer, schedule: schedule, precision: precision, checkpoint: checkpoint, eval: eval)
        try Check.positive(parallel.tensor, "parallel.tensor")
        try Check.positive(parallel.pipeline, "parallel.pipeline")
        try Check.inRange(parallel.zero, 0...1, "parallel.zero")
        try Check.nonNegative(parallel.bucketMB, "parallel.bucket_mb")
        if let layers = parallel.recomputeLayers {
            try Check.positive(layers, "parallel.recompute_layers")
            if !parallel.recompute {
                throw ConfigError(field: "parallel.recompute_layers", reason: "\(layers) given without parallel.recompute: true; set both to recompute some layers")
            }
        }
        if parallel.recomputeGranularity != .layer && !parallel.recompute {
            throw ConfigError(field: "parallel.recompute_granularity",
                              reason: "\(parallel.recomputeGranularity.rawValue) given without parallel.recompute: true; set both to recompute")
        }
        if let stageLayers = parallel.stageLayers {
            // The sum is checked against the model's layers when it is built (a --from model has its own).
            try PipelineStage.validate(stageLayers: stageLayers, stages: parallel.pipeline,
                                       layers: model.from == nil ? model.numHiddenLayers : stageLayers.reduce(0, +))
        }
        try Check.positive(logEverySteps, "log_every_steps")
        try spikes.validate(checkpointEvery: checkpoint.everySteps)
        try validateCurriculum()
    }

    /// The checks of the sections pretrain and finetune share.
    static func validateTraining(optimizer: Optimizer, schedule: Schedule, precision: PrecisionSection, checkpoint: Checkpoint, eval: Eval) throws {
        try Check.positive(optimizer.lr, "optimizer.lr")
        try Check.inRange(optimizer.beta1, 0...0.99999, "optimizer.beta1")
        try Check.inRange(optimizer.beta2, 0...0.99999, "optimizer.beta2")
        try Check.positive(optimizer.epsilon, "optimizer.epsilon")
        try Check.nonNegative(optimizer.weightDecay, "optimizer.weight_decay")
        try Check.nonNegative(optimizer.maxGradNorm, "optimizer.max_grad_norm")
        try Check.positive(schedule.totalSteps, "schedule.total_steps")
        try Check.inRange(schedule.warmupRatio, 0...1, "schedule.warmup_ratio")
        try Check.inRange(schedule.minLrRatio, 0...1, "schedule.min_lr_ratio")
        try Check.positive(precision.initialLossScale, "precision.initial_loss_scale")
        try Check.positive(precision.growthInterval, "precision.growth_interval")
        if checkpoint.directory.isEmpty { throw ConfigError(field: "checkpoint.directory", reason: "must not be empty") }
        try Check.nonNegative(checkpoint.everySteps, "checkpoint.every_steps")
        try Check.nonNegative(checkpoint.keepLast, "checkpoint.keep_last")
        try Check.nonNegative(eval.everySteps, "eval.every_steps")
        try Check.nonNegative(eval.sequences, "eval.sequences")
    }

    /// Checks the settings that depend on a model loaded from disk (`--from`
    /// or a checkpoint): the sequence must fit the model's positions.
    public func validate(against model: LlamaConfig, from path: String) throws {
        if data.sequenceLength > model.positionLimit {
            let scaling = model.ropeScaling.map { "rope_scaling \($0.type.rawValue) × \($0.factor) allows \(model.positionLimit)" } ?? "no rope_scaling"
            throw ConfigError(field: "pretrain.data.sequence_length",
                              reason: "\(data.sequenceLength) exceeds the positions of \(path) (max_position_embeddings \(model.maxPositionEmbeddings), \(scaling))")
        }
    }

    public var schedulePlan: LearningRateSchedule {
        LearningRateSchedule(peak: optimizer.lr, floorRatio: schedule.minLrRatio, warmupRatio: schedule.warmupRatio, totalSteps: schedule.totalSteps)
    }
}
