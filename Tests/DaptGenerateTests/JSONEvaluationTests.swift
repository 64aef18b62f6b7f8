import DaptCore
import DaptGenerate
import DaptTestSupport
import DaptTokenizer
import DaptTrain
import XCTest

/// Allows exactly the tokens that continue a fixed text, then end-of-sequence.
struct LiteralConstraint: TokenConstraint {
    let target: [UInt8]
    let tokens: [[UInt8]]
    let endTokens: Set<Int>
    var position = 0

    init(text: String, tokenizer: BPETokenizer, vocabSize: Int) {
        target = Array(text.utf8)
        tokens = (0..<vocabSize).map { Array((try? tokenizer.bytes(of: UInt32($0))) ?? []) }
        endTokens = [Int(tokenizer.id(of: SpecialTokens.eos)!)]
    }

    mutating func fillMask(_ mask: inout TokenMask) {
        mask.setAll(false)
        for (id, bytes) in tokens.enumerated() where !bytes.isEmpty && position + bytes.count <= target.count
            && target[position..<(position + bytes.count)].elementsEqual(bytes) { mask[id] = true }
        if isComplete { for t in endTokens { mask[t] = true } }
    }

    mutating func accept(_ token: Int) throws {
        var mask = TokenMask(count: tokens.count)
        fillMask(&mask)
        guard mask[token], !endTokens.contains(token) else { throw ConfigError(field: "token", reason: "\(token) not allowed") }
        position += tokens[token].count
    }

    var isComplete: Bool { position == target.count }

    func closingTokens() -> [Int]? {
        target[position...].map { byte in tokens.firstIndex { $0 == [byte] }! }
    }
}

final class JSONEvaluationTests: XCTestCase {
    func schema(_ text: String) throws -> JSONSchemaValidator { try JSONSchemaValidator(schema: try JSONValue.parse(text)) }

    func testValidatorKeywords() throws {
        let bundled = try JSONSchemaValidator(file: GenerateFixtures.repositoryRoot + "/data/eval/json/schema.json")
        let cases: [(String, Bool)] = [
            (#"{"intent": "search", "patent": null, "fields": {"query": "x"}}"#, true),
            (#"{"intent": "other", "patent": "CN115000151A", "fields": {}}"#, true),
            (#"{"intent": "weather", "patent": null, "fields": {}}"#, false),        // enum
            (#"{"intent": "other", "patent": "CN1", "fields": {}}"#, false),         // minLength in anyOf
            (#"{"intent": "other", "patent": 5, "fields": {}}"#, false),             // anyOf types
            (#"{"intent": "other", "patent": null}"#, false),                        // required
            (#"{"intent": "other", "patent": null, "fields": {}, "x": 1}"#, false),  // additionalProperties
            (#"{"intent": "other", "patent": null, "fields": []}"#, false),          // type object
            (#"[1]"#, false),
        ]
        for (text, expected) in cases { XCTAssertEqual(bundled.accepts(try JSONValue.parse(text)), expected, text) }
        let arrays = try schema(#"{"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}"#)
        XCTAssertTrue(arrays.accepts(try JSONValue.parse("[1, 2.0]")))
        XCTAssertFalse(arrays.accepts(try JSONValue.parse("[1.5]")))
        XCTAssertFalse(arrays.accepts(try JSONValue.parse("[]")))
        XCTAssertFalse(arrays.accepts(try JSONValue.parse("[1, 2, 3]")))
        let constant = try schema(#"{"const": {"a": [1, true]}, "maxLength": 1}"#)
        XCTAssertTrue(constant.accepts(try JSONValue.parse(#"{"a": [1.0, true]}"#)), "numbers compare by value")
        XCTAssertFalse(constant.accepts(try JSONValue.parse(#"{"a": [1, false]}"#)))
        XCTAssertFalse(try schema(#"{"type": "string", "maxLength": 2}"#).accepts(.string("专利号")), "length in code points")
        XCTAssertTrue(try schema(#"{"type": "string", "maxLength": 3}"#).accepts(.string("专利号")))
        XCTAssertThrowsError(try schema(#"{"properties": {"a": {"pattern": "x"}}}"#)) {
            XCTAssertEqual("\($0)", "JSON Schema $.properties.a.pattern: unsupported keyword")
        }
    }

    func testAnswerScore() throws {
        let reference = try JSONValue.parse(#"{"intent": "search", "patent": null, "fields": {"query": "x", "n": 2}}"#)
        let right = JSONAnswerScore(text: "  {\"fields\": {\"n\": 2.0, \"query\": \"x\"}, \"intent\": \"search\", \"patent\": null}\n", validator: nil, reference: reference)
        XCTAssertNotNil(right.value)
        XCTAssertEqual(right.fieldsTotal, 4)
        XCTAssertEqual(right.fieldsCorrect, 4)
        let partial = JSONAnswerScore(text: #"{"intent": "search", "patent": "CN1", "fields": {"query": "y"}}"#, validator: nil, reference: reference)
        XCTAssertEqual(partial.fieldsCorrect, 1)
        let invalid = JSONAnswerScore(text: #"{"intent": "search"} and more"#, validator: nil, reference: reference)
        XCTAssertNil(invalid.value)
        XCTAssertFalse(invalid.schemaValid)
        XCTAssertEqual(invalid.fieldsCorrect, 0)
        XCTAssertEqual(invalid.fieldsTotal, 4)
    }

    /// Unconstrained answers of a random model are not JSON; answers forced
    /// to the reference text are valid, schema-valid and fully right; a chat
    /// whose last message is the answer gives the reference; a non-JSON answer is rejected.
    func testEvaluationReportsBothModes() throws {
        let dir = try temporaryDirectory(self)
        let model = dir + "/model"
        try FileSystem.makeDirectories(model)
        for (from, name) in [("gqa/config.json", "config.json"), ("gqa/model.safetensors", "model.safetensors"), ("tokenizer.json", "tokenizer.json")] {
            try FileManager.default.copyItem(atPath: GenerateFixtures.directory + "/" + from, toPath: model + "/" + name)
        }
        let answer = #"{"intent": "other", "patent": null, "fields": {}}"#
        let input = dir + "/prompts.jsonl"
        try writeLines([
            #"{"id": 1, "prompt": "the device", "reference": {"intent": "other", "patent": null, "fields": {}}}"#,
            #"{"id": 2, "messages": [{"role": "user", "content": "claim"}, {"role": "assistant", "content": "{\"intent\": \"other\", \"patent\": null, \"fields\": {}}"}]}"#,
            #"{"id": 3, "messages": [{"role": "user", "content": "claim"}, {"role": "assistant", "content": "not json"}]}"#,
        ], to: input)
        var request = JSONEvalRequest(model: model, input: input, schema: GenerateFixtures.repositoryRoot + "/data/eval/json/schema.json")
        request.generation.maxNewTokens = 40
        let (section, info) = try JSONEvaluation.run(request) { tokenizer, vocab, _, schema in
            XCTAssertNotNil(schema)
            return LiteralConstraint(text: answer, tokenizer: tokenizer, vocabSize: vocab)
        }
        let unconstrained = section.results["unconstrained"]!, constrained = section.results["constrained"]!
        XCTAssertEqual(unconstrained["records"]?.int, 2)
        XCTAssertEqual(unconstrained["json_valid"]?.int, 0)
        XCTAssertEqual(constrained["json_valid"]?.int, 2)
        XCTAssertEqual(constrained["schema_valid"]?.int, 2)
        XCTAssertEqual(constrained["fields_total"]?.int, 6)
        XCTAssertEqual(constrained["field_accuracy"]?.double, 1)
        XCTAssertEqual(section.rejects.map(\.field), ["messages[1].content"])
        XCTAssertEqual(section.rejects.first?.line, 3)
        XCTAssertEqual(section.items.count, 4)

        try EvalReport.write(section, model: info, to: dir + "/eval")
        let report = try EvalReport.load(directory: dir + "/eval")
        XCTAssertEqual(report["sections"]?["json"]?["results"]?["constrained"]?["json_valid_rate"]?.double, 1)
        XCTAssertEqual(report["sections"]?["json"]?["counts"]?["rejected"]?.int, 1)
    }
}

/// Constrained generation with the grammar engine on a random model: every
/// output is valid JSON that the bundled schema allows (checked by the
/// independent validator), or closed validly / marked truncated when the budget runs out.
final class ConstrainedGenerationTests: XCTestCase {
    func testSampledOutputsFollowTheSchema() throws {
        let dir = try temporaryDirectory(self)
        let model = dir + "/model"
        try FileSystem.makeDirectories(model)
        for (from, name) in [("gqa/config.json", "config.json"), ("gqa/model.safetensors", "model.safetensors"), ("tokenizer.json", "tokenizer.json")] {
            try FileManager.default.copyItem(atPath: GenerateFixtures.directory + "/" + from, toPath: model + "/" + name)
        }
        let schemaFile = GenerateFixtures.repositoryRoot + "/data/eval/json/schema.json"
        let validator = try JSONSchemaValidator(file: schemaFile)
        let input = dir + "/prompts.jsonl"
        try writeLines((0..<16).map { #"{"id": \#($0), "prompt": "claim \#($0)"}"# } + [#"{"id": "chat", "messages": [{"role": "user", "content": "the device"}]}"#], to: input)
        for (json, maxNew) in [(JSONOutput.schema(schemaFile), 120), (.object, 60), (.schema(schemaFile), 12)] {
            var request = GenerateRequest(model: model, input: input, output: dir + "/out.jsonl")
            request.json = json
            request.generation.temperature = 1
            request.generation.seed = 9
            request.generation.maxNewTokens = maxNew
            let summary = try GenerateRun.run(request)
            XCTAssertEqual(summary.records, 17)
            var valid = 0
            for line in try FileSystem.readText(dir + "/out.jsonl").split(separator: "\n") {
                let record = try JSONValue.parse(String(line))
                let text = record["text"]!.string!, reason = record["finish_reason"]!.string!
                if reason == "truncated" { continue }
                XCTAssertTrue(["eos", "stop", "closed", "length"].contains(reason), reason)
                let value = try XCTUnwrap(try? JSONValue.parse(text.trimmingCharacters(in: .whitespacesAndNewlines)), "\(reason): \(text)")
                XCTAssertNotNil(value.members, text)
                if case .schema = json { XCTAssertTrue(validator.accepts(value), text) }
                valid += 1
            }
            if maxNew >= 60 { XCTAssertGreaterThan(valid, 12, "\(json) \(maxNew)") }
            if maxNew == 12 { XCTAssertGreaterThan(summary.finishReasons[.closed] ?? 0, 0, "a short budget closes outputs") }
        }
    }
}
