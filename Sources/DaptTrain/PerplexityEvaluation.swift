import DaptCore
import DaptModel
import DaptTokenizer
import Foundation

/// What `dapt eval ppl` evaluates: a model directory (checkpoint, run
/// directory or Hugging Face model) on JSONL text or token shards.
public struct PerplexityRequest: Sendable {
    /// A checkpoint, a run directory (its newest checkpoint), or a Hugging Face model directory.
    public var model: String
    /// A JSONL file (`text` field) or a token shard directory.
    public var input: String
    /// tokenizer.json for JSONL input; default: the model directory's.
    public var tokenizer: String?
    public var sequenceLength = 256
    public var batchSize = 4
    /// 0: every sequence.
    public var maxSequences = 0
    public var addBos = false
    public var addEos = true
    /// RoPE scaling and base replacing the model's own (nil: the model's).
    public var ropeScaling: RopeScaling? = nil
    public var ropeTheta: Double? = nil
    public var maxPositionEmbeddings: Int? = nil

    public init(model: String, input: String, tokenizer: String? = nil) {
        self.model = model; self.input = input; self.tokenizer = tokenizer
    }
}

/// The figures `dapt eval ppl` prints.
public struct PerplexityReport: Equatable, Sendable {
    /// The model directory that was evaluated (a run directory resolves to its newest checkpoint).
    public var modelDirectory: String
    public var loss: Double
    public var perplexity: Double
    public var tokens: Int
    public var sequences: Int
    public var documents: Int
    /// Tokens of the tail shorter than one sequence, left out.
    public var leftOutTokens: Int
    /// JSONL input: blank lines skipped (lines = documents + blank lines).
    public var blankLines = 0
    /// The tokenizer.json the input was tokenised with, or that token shards
    /// were checked against (nil: none could be).
    public var tokenizerPath: String? = nil
}

public enum PerplexityEvaluation {
    /// Resolves and checks the model (a checkpoint against its manifest),
    /// checks that input, tokenizer and model agree, then evaluates
    /// document-masked packed sequences in document order.
    public static func run(_ request: PerplexityRequest, sink: any EventSink = SilentSink()) throws -> PerplexityReport {
        let directory = try ModelDirectory.resolve(request.model)
        var modelConfig = try LlamaConfig.load(path: directory.path + "/" + Trainer.configFile)
        if let scaling = request.ropeScaling { modelConfig.ropeScaling = scaling }
        if let theta = request.ropeTheta { modelConfig.ropeTheta = theta }
        if let positions = request.maxPositionEmbeddings { modelConfig.maxPositionEmbeddings = positions }
        do { try modelConfig.validate() } catch var error as ConfigError {
            error.field = "eval." + error.field
            throw error
        }
        if request.sequenceLength > modelConfig.positionLimit {
            throw ConfigError(field: "--sequence-length", reason: "\(request.sequenceLength) exceeds the positions of \(directory.path) (\(modelConfig.positionLimit))")
        }
        let source: any DocumentSource
        var blankLines = 0
        let usedTokenizer = request.tokenizer ?? directory.tokenizerPath
        if FileSystem.isDirectory(request.input) {
            let shards = try ShardDocuments(directory: request.input)
            if let tokenizer = directory.tokenizerPath { try shards.requireTokenizer(tokenizer) }
            if let tokenizer = request.tokenizer { try shards.requireTokenizer(tokenizer) }
            if directory.tokenizerPath == nil && request.tokenizer == nil {
                sink.report(.notice(stage: "eval", message: "\(directory.path) has no \(Trainer.tokenizerFile): that the shards' ids are the model's cannot be checked"))
            }
            if shards.vocabSize > modelConfig.vocabSize {
                throw TrainingError.invalidInput(path: request.input, reason: "vocabulary of \(shards.vocabSize) tokens exceeds the model's vocab_size \(modelConfig.vocabSize)")
            }
            source = shards
        } else {
            guard let tokenizerPath = try directory.tokenizer(requested: request.tokenizer) else {
                throw TrainingError.invalidInput(path: directory.path, reason: "no \(Trainer.tokenizerFile) beside the model to tokenise \(request.input): give one with --tokenizer")
            }
            let read = try documentsAndCountsFromJSONL(path: request.input, tokenizer: try BPETokenizer.load(path: tokenizerPath),
                                                       addBos: request.addBos, addEos: request.addEos)
            source = read.documents
            blankLines = read.counts.blank
        }
        let model = try directory.loadModel(config: modelConfig)
        let result = try evaluatePerplexity(model: model, source: source, sequenceLength: request.sequenceLength,
                                            batchSize: request.batchSize, maxSequences: request.maxSequences)
        return PerplexityReport(modelDirectory: directory.path, loss: result.loss, perplexity: result.perplexity, tokens: result.tokens,
                                sequences: result.sequences, documents: source.documentCount, leftOutTokens: result.leftOutTokens,
                                blankLines: blankLines, tokenizerPath: usedTokenizer)
    }

    /// The `ppl` section of the eval report for `report`, a run of `request`.
    public static func section(_ request: PerplexityRequest, _ report: PerplexityReport) -> EvalSection {
        let config = JSONValue.object([
            ("sequence_length", .integer(request.sequenceLength)), ("batch_size", .integer(request.batchSize)),
            ("max_sequences", .integer(request.maxSequences)), ("add_bos", .bool(request.addBos)), ("add_eos", .bool(request.addEos)),
        ] + (request.ropeScaling.map { s in [("rope_scaling", JSONValue.string("\(s.type.rawValue) × \(s.factor)"))] } ?? [])
          + (request.ropeTheta.map { [("rope_theta", JSONValue.float($0))] } ?? [])
          + (request.maxPositionEmbeddings.map { [("max_position_embeddings", JSONValue.integer($0))] } ?? []))
        let counts = [("documents", report.documents), ("blank_lines", report.blankLines), ("sequences", report.sequences),
                      ("tokens", report.tokens), ("left_out_tokens", report.leftOutTokens)]
        let results = JSONValue.object([("loss", .float(report.loss)), ("perplexity", .float(report.perplexity))])
        return EvalSection(kind: .ppl, inputs: [request.input], config: config, counts: counts, results: results)
    }

    /// Runs `request` and writes its section into the eval report in `output`.
    @discardableResult
    public static func run(_ request: PerplexityRequest, output: String, sink: any EventSink = SilentSink()) throws -> PerplexityReport {
        let report = try run(request, sink: sink)
        let model = try EvalModelInfo(modelDirectory: report.modelDirectory, tokenizer: report.tokenizerPath)
        try EvalReport.write(section(request, report), model: model, to: output)
        return report
    }
}
