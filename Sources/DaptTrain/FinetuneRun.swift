import DaptCluster
import DaptCore
import DaptModel
import DaptTokenizer
import Foundation

/// How one `dapt finetune` invocation starts and stops.
public struct FinetuneOptions: Sendable {
    /// A finetune checkpoint or run directory (its newest checkpoint) to continue.
    public var resume: String?
    /// Ends this invocation (with a checkpoint) after this many steps.
    public var stopAfter: Int?
    public var overwrite = false

    public init(resume: String? = nil, stopAfter: Int? = nil, overwrite: Bool = false) {
        self.resume = resume; self.stopAfter = stopAfter; self.overwrite = overwrite
    }
}

/// `dapt finetune`: LoRA on chat JSONL over a frozen base model, and the
/// adapter operations around it (loading an adapter over its base, merging).
/// The command line only parses and calls these.
public enum FinetuneRun {
    public static let stage = "finetune"

    /// The base model and its tokenizer (tokenizer.json beside the weights).
    public static func loadBase(_ path: String) throws -> (model: LlamaModel, tokenizer: BPETokenizer, directory: ModelDirectory) {
        let directory = try ModelDirectory.resolve(path)
        guard let tokenizerPath = directory.tokenizerPath else {
            throw TrainingError.invalidInput(path: directory.path, reason: "no \(Trainer.tokenizerFile): the chat template needs the model's tokenizer")
        }
        let tokenizer = try BPETokenizer.load(path: tokenizerPath)
        let model = try directory.loadModel()
        if tokenizer.vocabSize > model.config.vocabSize {
            throw TrainingError.invalidInput(path: tokenizerPath, reason: "vocabulary of \(tokenizer.vocabSize) tokens exceeds the model's vocab_size \(model.config.vocabSize)")
        }
        return (model, tokenizer, directory)
    }

    /// The directory holding `adapter_config.json`: `path` itself, or the
    /// newest checkpoint of a finetune run directory.
    public static func adapterDirectory(_ path: String) throws -> String {
        if FileSystem.exists(path + "/" + LoraAdapters.configFile) { return path }
        if let latest = try CheckpointStore.latest(root: path), FileSystem.exists(latest + "/" + LoraAdapters.configFile) { return latest }
        throw TrainingError.notAModel(path: path, reason: "not an adapter directory (no \(LoraAdapters.configFile)) or a finetune run directory")
    }

    /// The base model with an adapter (PEFT's or dapt's) merged into its
    /// weights: the adapted model for inference.
    public static func loadAdapted(model path: String, adapter: String) throws -> LlamaModel {
        let model = try ModelDirectory.resolve(path).loadModel()
        let adapters = try LoraAdapters.load(directory: adapterDirectory(adapter), config: model.config)
        adapters.merge(into: model)
        return model
    }

    /// `dapt finetune merge`: writes the base with the adapter merged as a
    /// Hugging Face model directory (config.json, model.safetensors, the
    /// base's tokenizer.json and a tokenizer_config.json with the chat
    /// template), published as a unit.
    public static func merge(model path: String, adapter: String, output: String, sink: any EventSink = SilentSink()) throws {
        if FileSystem.exists(output) { throw TrainingError.invalidInput(path: output, reason: "already exists; choose a new output directory") }
        let base = try ModelDirectory.resolve(path)
        let model = try loadAdapted(model: path, adapter: adapter)
        let trimmed = output.hasSuffix("/") ? String(output.dropLast()) : output
        let temporary = trimmed + ".tmp-\(getpid())"
        CheckpointStore.removeTree(temporary)
        try model.save(directory: temporary)
        for name in [Trainer.tokenizerFile, ChatTemplate.configFile] where FileSystem.exists(base.path + "/" + name) {
            try Trainer.writeAtomically(temporary + "/" + name, FileSystem.readAll(base.path + "/" + name))
        }
        // The merged model speaks the chat format it was tuned on: transformers gets the template too.
        if let tokenizerPath = base.tokenizerPath, let template = try? ChatTemplate(tokenizer: BPETokenizer.load(path: tokenizerPath)) {
            try template.writeTokenizerConfig(directory: temporary)
        }
        guard rename(temporary, trimmed) == 0 else { throw FileError(path: trimmed, operation: "rename", errno: errno) }
        sink.report(.notice(stage: stage, message: "wrote \(trimmed) (\(path) with \(adapter) merged)"))
    }

    public static func run(config: FinetuneConfig, options: FinetuneOptions = .init(), world: any Communicator = SingleRankCommunicator(),
                           sink: any EventSink = SilentSink()) throws {
        let layout = try world.agreed { () throws -> ParallelLayout in
            let layout = try ParallelLayout(world: world.size, parallel: PretrainConfig.Parallel())
            if config.data.globalBatchSize < layout.data {
                throw ConfigError(field: "finetune.data.global_batch_size",
                                  reason: "\(config.data.globalBatchSize) sequences cannot be shared by \(layout.data) data-parallel ranks")
            }
            if options.resume != nil && options.overwrite {
                throw TrainingError.conflictingOptions("--resume continues a run and --overwrite removes it: give only one of them")
            }
            if config.model.isEmpty { throw ConfigError(field: "finetune.model", reason: "no base model given (--model)") }
            if config.data.train.isEmpty { throw ConfigError(field: "finetune.data.train", reason: "no training JSONL given (--input)") }
            return layout
        }
        try world.checkOnRoot {
            if options.resume == nil { try RunDirectory.checkFresh(config.checkpoint.directory, overwrite: options.overwrite) }
        }
        let groups = try ParallelGroups(world: world, layout: layout)
        let (model, tokenizer, base) = try loadBase(config.model)
        let template = try ChatTemplate(tokenizer: tokenizer)
        let documents = try ChatDocuments.load(path: config.data.train, template: template)
        let trainIndices: [Int], heldOutDocuments: (tokens: any DocumentSource, mask: any DocumentSource)?
        if let path = config.data.heldOut {
            let held = try ChatDocuments.load(path: path, template: template)
            trainIndices = Array(0..<documents.count)
            heldOutDocuments = (held.tokens, held.assistantMask)
        } else {
            let split = splitHeldOut(documentCount: documents.count, fraction: config.data.heldOutFraction, seed: config.data.seed)
            trainIndices = split.train
            heldOutDocuments = split.heldOut.isEmpty ? nil : documents.subset(split.heldOut)
        }
        let trainSet = documents.subset(trainIndices)
        let train = try ChatBatches(tokens: trainSet.tokens, mask: trainSet.mask, sequenceLength: config.data.sequenceLength, seed: config.data.seed)
        var heldOut: ChatBatches?
        if let h = heldOutDocuments {
            do {
                heldOut = try ChatBatches(tokens: h.tokens, mask: h.mask, sequenceLength: config.data.sequenceLength, seed: config.data.seed, shuffle: false)
            } catch TrainingError.notEnoughData(let tokens, let length) {
                sink.report(.notice(stage: stage, message: "held-out examples have \(tokens) tokens, fewer than one sequence of \(length): no held-out loss"))
            }
        }
        let trainer = try FinetuneTrainer(config: config, model: model, train: train, heldOut: heldOut, groups: groups, sink: sink)
        trainer.baseModelPath = base.path
        trainer.template = template
        if let resume = options.resume {
            try trainer.restore(checkpoint: resume)
            sink.report(.notice(stage: stage, message: "resumed from \(resume) at step \(trainer.state.step)"))
            if groups.writes { try FileSystem.makeDirectories(config.checkpoint.directory) }
        } else if groups.writes {
            try RunDirectory.prepareFresh(config.checkpoint.directory, overwrite: options.overwrite)
        }
        sink.report(.notice(stage: stage, message: "\(base.path): \(model.layout.totalCount) frozen parameters, \(trainer.adapters.totalCount) LoRA parameters (r \(config.lora.r), targets \(config.lora.targetModules.map(\.rawValue).joined(separator: ","))); \(trainIndices.count) training examples, \(train.sequencesPerEpoch) sequences of \(config.data.sequenceLength) per epoch"))
        let metrics = groups.writes ? try MetricsLog(path: config.checkpoint.directory + "/" + RunDirectory.metricsFile,
                                                     truncateAfterStep: options.resume != nil ? trainer.state.step : nil) : nil
        try world.barrier()
        let stop = options.stopAfter.map { min(config.schedule.totalSteps, trainer.state.step + $0) }
        try trainer.run(metrics: metrics, until: stop)
    }

    /// The settings a finetune checkpoint was trained with, for resuming without a config.
    public static func savedConfig(checkpoint path: String) throws -> FinetuneConfig {
        let file = try FinetuneTrainer.resolveCheckpoint(path) + "/" + FinetuneTrainer.trainConfigFile
        do {
            return try JSONDecoder().decode(FinetuneConfig.self, from: Data(FileSystem.readAll(file)))
        } catch var error as ConfigError {
            error.file = file
            throw error
        } catch let error as DecodingError {
            throw ConfigLoader.describe(error, file: file)
        }
    }
}
