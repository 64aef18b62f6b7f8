import DaptCore
import DaptModel
import DaptTokenizer
import DaptTrain
import Foundation

/// What `dapt eval json` evaluates: a model's answers to the prompts of
/// `input`, generated unconstrained and constrained.
public struct JSONEvalRequest {
    public var model: String
    /// Prompts (`prompt` or `messages`) with a `reference` answer, or chats
    /// whose last message is the assistant's answer (it becomes the reference).
    public var input: String
    public var tokenizer: String?
    /// A LoRA adapter merged into the model (recorded in the report's model section).
    public var adapter: String?
    /// JSON Schema file: answers are checked against it, and constrained
    /// generation follows it (else any JSON object).
    public var schema: String?
    /// Greedy by default; max_new_tokens bounds each answer.
    public var generation = GenerationConfig()

    public init(model: String, input: String, tokenizer: String? = nil, schema: String? = nil, adapter: String? = nil) {
        self.model = model; self.input = input; self.tokenizer = tokenizer; self.schema = schema; self.adapter = adapter
    }
}

/// Makes the constraint of constrained answers for a tokenizer, a model
/// vocabulary size and its end tokens, given the schema (nil: any JSON object).
public typealias JSONConstraintMaker = (_ tokenizer: BPETokenizer, _ vocabSize: Int, _ endTokens: Set<Int32>, _ schema: JSONValue?) throws -> (any TokenConstraint)

/// The figures of one way of generating the answers.
public struct JSONAnswerFigures: Equatable, Sendable {
    public var records = 0
    public var jsonValid = 0
    public var schemaValid = 0
    /// Records with a reference, and the reference fields the answers got right.
    public var withReference = 0
    public var fieldsCorrect = 0
    public var fieldsTotal = 0
    public var finishReasons: [FinishReason: Int] = [:]

    public var jsonValidRate: Double { records == 0 ? 0 : Double(jsonValid) / Double(records) }
    public var schemaValidRate: Double { records == 0 ? 0 : Double(schemaValid) / Double(records) }
    public var fieldAccuracy: Double { fieldsTotal == 0 ? 0 : Double(fieldsCorrect) / Double(fieldsTotal) }

    func json(schema: Bool) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("records", .integer(records)), ("json_valid", .integer(jsonValid)), ("json_valid_rate", .float(jsonValidRate)),
        ]
        if schema { members += [("schema_valid", .integer(schemaValid)), ("schema_valid_rate", .float(schemaValidRate))] }
        members += [("with_reference", .integer(withReference)), ("fields_correct", .integer(fieldsCorrect)),
                    ("fields_total", .integer(fieldsTotal)), ("field_accuracy", .float(fieldAccuracy)),
                    ("finish_reasons", .object(FinishReason.allCases.compactMap { r in finishReasons[r].map { (r.rawValue, .integer($0)) } }))]
        return .object(members)
    }
}

/// One answer judged: is it JSON, does it fit the schema, how many reference fields it matches.
public struct JSONAnswerScore: Equatable, Sendable {
    public var value: JSONValue?
    public var schemaValid: Bool
    public var fieldsCorrect: Int
    public var fieldsTotal: Int

    /// The answer is the whole text (surrounding whitespace aside) parsed as
    /// one JSON value. Reference fields are its leaves (nested objects are
    /// descended into; arrays and scalars compared whole, numbers by value);
    /// each counts as right when the answer has an equal value at the same path.
    public init(text: String, validator: JSONSchemaValidator?, reference: JSONValue?) {
        value = try? JSONValue.parse(text.trimmingCharacters(in: .whitespacesAndNewlines))
        schemaValid = value.map { validator?.accepts($0) ?? true } ?? false
        let leaves = reference.map { Self.leaves($0, path: []) } ?? []
        fieldsTotal = leaves.count
        fieldsCorrect = value.map { answer in
            leaves.filter { path, expected in Self.lookup(answer, path).map { JSONSchemaValidator.same($0, expected) } ?? false }.count
        } ?? 0
    }

    static func leaves(_ value: JSONValue, path: [String]) -> [([String], JSONValue)] {
        guard case .object(let members) = value, !members.isEmpty else { return [(path, value)] }
        return members.flatMap { leaves($0.1, path: path + [$0.0]) }
    }

    static func lookup(_ value: JSONValue, _ path: [String]) -> JSONValue? {
        var current = value
        for key in path {
            guard let next = current[key] else { return nil }
            current = next
        }
        return current
    }
}

public enum JSONEvaluation {
    /// Generates every answer unconstrained, then (with `constraint`)
    /// constrained, and scores both. The section's items hold every answer.
    public static func run(_ request: JSONEvalRequest, constraint: JSONConstraintMaker? = JSONOutput.evaluationConstraint,
                           sink: any EventSink = SilentSink()) throws -> (section: EvalSection, model: EvalModelInfo) {
        try request.generation.validate()
        let validator = try request.schema.map { try JSONSchemaValidator(file: $0) }
        var records: [PromptRecord] = []
        var rejects: [InputError] = []
        for var record in try PromptFile.read(path: request.input) {
            if record.reference == nil, let messages = record.messages, messages.count > 1, messages.last?.role == .assistant {
                guard let answer = try? JSONValue.parse(messages.last!.content) else {
                    rejects.append(InputError(file: request.input, line: record.line, field: "messages[\(messages.count - 1)].content",
                                              reason: "the assistant's answer (the reference) is not JSON"))
                    continue
                }
                record.reference = answer
                record.messages = Array(messages.dropLast())
            }
            records.append(record)
        }
        let directory = try ModelDirectory.resolve(request.model)
        let adapterDirectory = try request.adapter.map(FinetuneRun.adapterDirectory)
        let (model, tokenizer) = try GenerateRun.loadModel(request.model, tokenizer: request.tokenizer, adapter: adapterDirectory)
        let tokenizerPath = try directory.tokenizer(requested: request.tokenizer)
        var generate = GenerateRequest(model: request.model, input: request.input, output: "")
        generate.generation = request.generation

        var modes: [(String, ConstraintFactory?)] = [("unconstrained", nil)]
        if let constraint {
            let (generator, _) = try GenerateRun.prepare(records, model: model, tokenizer: tokenizer, request: generate)
            let ends = generator.endTokens.union(generator.stopTokens)
            let made = try constraint(tokenizer, model.config.vocabSize, ends, validator?.schema)
            modes.append(("constrained", { _ in made }))
        }
        var items: [JSONValue] = []
        var results: [(String, JSONValue)] = []
        for (mode, factory) in modes {
            generate.constraint = factory
            let (generator, prompts) = try GenerateRun.prepare(records, model: model, tokenizer: tokenizer, request: generate)
            let generations = try generator.generate(prompts) { done in
                sink.report(.progress(stage: "eval json \(mode)", done: done, total: records.count, unit: "answers"))
            }
            var figures = JSONAnswerFigures()
            for (record, generation) in zip(records, generations) {
                let score = JSONAnswerScore(text: generation.text, validator: validator, reference: record.reference)
                figures.records += 1
                if score.value != nil { figures.jsonValid += 1 }
                if score.schemaValid { figures.schemaValid += 1 }
                if record.reference != nil { figures.withReference += 1 }
                figures.fieldsCorrect += score.fieldsCorrect
                figures.fieldsTotal += score.fieldsTotal
                figures.finishReasons[generation.finishReason, default: 0] += 1
                items.append(.object([
                    ("id", record.id), ("mode", .string(mode)), ("text", .string(generation.text)),
                    ("finish_reason", .string(generation.finishReason.rawValue)), ("json_valid", .bool(score.value != nil)),
                    ("schema_valid", validator == nil ? .null : .bool(score.schemaValid)),
                    ("fields_correct", .integer(score.fieldsCorrect)), ("fields_total", .integer(score.fieldsTotal)),
                ]))
            }
            results.append((mode, figures.json(schema: validator != nil)))
        }
        let g = request.generation
        let config = JSONValue.object([
            ("schema", request.schema.map { .string($0) } ?? .null), ("temperature", .float(g.temperature)),
            ("top_k", .integer(g.topK)), ("top_p", .float(g.topP)), ("seed", .integer(g.seed)),
            ("max_new_tokens", .integer(g.maxNewTokens)), ("constrained", .bool(constraint != nil)),
        ])
        let section = EvalSection(kind: .json, inputs: [request.input], config: config,
                                  counts: [("records", records.count + rejects.count), ("evaluated", records.count)],
                                  results: .object(results), items: items, rejects: rejects)
        return (section, try EvalModelInfo(modelDirectory: directory.path, tokenizer: tokenizerPath, adapter: adapterDirectory))
    }
}
