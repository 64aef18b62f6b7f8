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
}

public enum PerplexityEvaluation {
    /// Loads the model (verifying a checkpoint's files), reads the input and
    /// evaluates document-masked packed sequences in document order.
    public static func run(_ request: PerplexityRequest) throws -> PerplexityReport {
        var directory = request.model
        if !FileSystem.exists(directory + "/" + Trainer.configFile) { directory = try Trainer.resolveCheckpoint(request.model) }
        if FileSystem.exists(directory + "/" + CheckpointStore.manifestName) {
            _ = try CheckpointStore.verify(directory: directory)
        }
        let model = try LlamaModel(directory: directory)
        let source: any DocumentSource
        if FileSystem.isDirectory(request.input) {
            source = try ShardDocuments(directory: request.input)
        } else {
            let tokenizerPath = request.tokenizer ?? directory + "/" + Trainer.tokenizerFile
            source = try documentsFromJSONL(path: request.input, tokenizer: try BPETokenizer.load(path: tokenizerPath),
                                            addBos: request.addBos, addEos: request.addEos)
        }
        let result = try evaluatePerplexity(model: model, source: source, sequenceLength: request.sequenceLength,
                                            batchSize: request.batchSize, maxSequences: request.maxSequences)
        return PerplexityReport(modelDirectory: directory, loss: result.loss, perplexity: result.perplexity, tokens: result.tokens,
                                sequences: result.sequences, documents: source.documentCount, leftOutTokens: result.leftOutTokens)
    }
}
