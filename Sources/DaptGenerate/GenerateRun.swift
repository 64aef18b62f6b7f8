import DaptCore
import DaptModel
import DaptTokenizer
import DaptTrain
import Foundation

/// Makes the constraint of one record's output (nil: unconstrained).
public typealias ConstraintFactory = (PromptRecord) throws -> (any TokenConstraint)?

/// What `dapt generate` does: continue every prompt of `input` with the
/// model and write one output record per prompt, in input order, to `output`.
public struct GenerateRequest {
    /// A checkpoint, a run directory (its newest checkpoint), or a Hugging Face model directory.
    public var model: String
    public var input: String
    public var output: String
    /// tokenizer.json; default: the model directory's.
    public var tokenizer: String?
    public var generation = GenerationConfig()
    public var constraint: ConstraintFactory?

    public init(model: String, input: String, output: String, tokenizer: String? = nil) {
        self.model = model; self.input = input; self.output = output; self.tokenizer = tokenizer
    }
}

/// Counts of one `dapt generate` run (records in = records out).
public struct GenerateSummary: Equatable, Sendable {
    public var records = 0
    public var promptTokens = 0
    public var completionTokens = 0
    public var finishReasons: [FinishReason: Int] = [:]
}

public enum GenerateRun {
    /// Reads and checks every prompt first (a bad record stops the run
    /// before any work), generates, then writes the output file atomically.
    public static func run(_ request: GenerateRequest, sink: any EventSink = SilentSink()) throws -> GenerateSummary {
        try request.generation.validate()
        let records = try PromptFile.read(path: request.input)
        let (model, tokenizer) = try loadModel(request.model, tokenizer: request.tokenizer)
        let generations = try generate(records, model: model, tokenizer: tokenizer, request: request, sink: sink)
        let writer = try FileWriter(path: request.output, atomic: true)
        var summary = GenerateSummary()
        for (record, generation) in zip(records, generations) {
            try writer.write(outputLine(record, generation) + "\n")
            summary.records += 1
            summary.promptTokens += generation.promptTokens
            summary.completionTokens += generation.tokens.count
            summary.finishReasons[generation.finishReason, default: 0] += 1
        }
        precondition(summary.records == records.count, "generate: \(records.count) records in, \(summary.records) out")
        try writer.commit()
        return summary
    }

    /// The model (a checkpoint verified against its manifest) and its
    /// tokenizer: `tokenizer`, or the one beside the weights.
    public static func loadModel(_ path: String, tokenizer: String?) throws -> (LlamaModel, BPETokenizer) {
        let directory = try ModelDirectory.resolve(path)
        guard let tokenizerPath = tokenizer ?? directory.tokenizerPath else {
            throw TrainingError.invalidInput(path: directory.path, reason: "no \(Trainer.tokenizerFile) beside the model: give one with --tokenizer")
        }
        return (try directory.loadModel(), try BPETokenizer.load(path: tokenizerPath))
    }

    /// Encodes the records' prompts and generates their continuations, in order.
    public static func generate(_ records: [PromptRecord], model: LlamaModel, tokenizer: BPETokenizer,
                                request: GenerateRequest, sink: any EventSink = SilentSink()) throws -> [Generation] {
        var generator = try Generator(model: model, tokenizer: tokenizer, config: request.generation)
        let bos = tokenizer.id(of: SpecialTokens.bos).map { Int32($0) }
        var chat: ChatTemplate?
        let prompts = try records.map { record -> GenerationPrompt in
            var tokens: [Int32]
            if let messages = record.messages {
                // The chat template starts with <|bos|> and ends with the assistant's marker;
                // the reply ends at the turn's <|end|>.
                if chat == nil {
                    do { chat = try ChatTemplate(tokenizer: tokenizer) } catch {
                        throw InputError(file: request.input, line: record.line, field: "messages", reason: "\(error)")
                    }
                    generator.stopTokens.insert(Int32(chat!.endId))
                }
                tokens = chat!.encode(messages, addGenerationPrompt: true).ids.map { Int32($0) }
            } else {
                tokens = tokenizer.encode(record.prompt ?? "").map { Int32($0) }
                if request.generation.addBos, let bos { tokens.insert(bos, at: 0) }
            }
            let constraint: (any TokenConstraint)?
            do { constraint = try request.constraint?(record) } catch let error as RecordProblem {
                throw error.located(file: request.input, line: record.line)
            }
            return GenerationPrompt(key: record.key, tokens: tokens, constraint: constraint)
        }
        return try generator.generate(prompts) { done in
            sink.report(.progress(stage: "generate", done: done, total: records.count, unit: "records"))
        }
    }

    /// One output line: the record's id, the text, token counts and why it ended.
    public static func outputLine(_ record: PromptRecord, _ generation: Generation) -> String {
        JSONValue.object([
            ("id", record.id), ("text", .string(generation.text)),
            ("prompt_tokens", .integer(generation.promptTokens)), ("completion_tokens", .integer(generation.tokens.count)),
            ("finish_reason", .string(generation.finishReason.rawValue)),
        ]).text()
    }
}
