import DaptCore
import DaptGenerate
import DaptModel
import DaptTestSupport
import DaptTokenizer
import XCTest

/// Digits only: complete from `minDigits`, at most `maxDigits`; closes
/// with zeros (or cannot close when `closable` is false).
struct DigitsConstraint: TokenConstraint {
    let digitTokens: Set<Int>, endTokens: Set<Int>
    var minDigits: Int, maxDigits: Int, closable = true
    var digits = 0
    let zero: Int

    init(tokenizer: BPETokenizer, vocab: Int, endTokens: Set<Int32>, minDigits: Int, maxDigits: Int) throws {
        var found = Set<Int>()
        for id in 0..<min(vocab, tokenizer.vocabSize) {
            if let bytes = try? tokenizer.bytes(of: UInt32(id)), !bytes.isEmpty, bytes.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) { found.insert(id) }
        }
        digitTokens = found
        self.endTokens = Set(endTokens.map { Int($0) })
        self.minDigits = minDigits; self.maxDigits = maxDigits
        zero = Int(tokenizer.id(of: "0")!)
    }

    func length(_ token: Int) -> Int { digitTokens.contains(token) ? 1 : 0 }

    mutating func fillMask(_ mask: inout TokenMask) {
        mask.setAll(false)
        if digits < maxDigits { for t in digitTokens where digits + 1 <= maxDigits { mask[t] = true } }
        if isComplete { for t in endTokens { mask[t] = true } }
    }

    mutating func accept(_ token: Int) throws {
        guard digitTokens.contains(token), digits < maxDigits else { throw ConfigError(field: "token", reason: "\(token) not allowed") }
        digits += 1
    }

    var isComplete: Bool { digits >= minDigits }

    func closingTokens() -> [Int]? { closable ? [Int](repeating: zero, count: max(minDigits - digits, 0)) : nil }
}

final class GenerateRunTests: XCTestCase {
    var directory = ""
    var modelDirectory: String { directory + "/model" }

    override func setUpWithError() throws {
        directory = try temporaryDirectory(self)
        try FileSystem.makeDirectories(modelDirectory)
        for (from, name) in [("gqa/config.json", "config.json"), ("gqa/model.safetensors", "model.safetensors"), ("tokenizer.json", "tokenizer.json")] {
            try FileManager.default.copyItem(atPath: GenerateFixtures.directory + "/" + from, toPath: modelDirectory + "/" + name)
        }
    }

    func prompts(_ count: Int) -> [String] {
        let texts = ["the device comprising", "wherein the signal of the first layer", "claim", "a method", "the circuit wherein"]
        return (0..<count).map { i in
            let id = i % 2 == 0 ? "\"r\(i)\"" : "\(i)"
            return "{\"id\": \(id), \"prompt\": \(JSONWriter.quoted(texts[i % texts.count]))}"
        }
    }

    func run(_ lines: [String], _ configure: (inout GenerationConfig) -> Void = { _ in }) throws -> [JSONValue] {
        let input = directory + "/prompts.jsonl", output = directory + "/out.jsonl"
        try writeLines(lines, to: input)
        var request = GenerateRequest(model: modelDirectory, input: input, output: output)
        request.generation.maxNewTokens = 10
        configure(&request.generation)
        let summary = try GenerateRun.run(request)
        let out = try FileSystem.readText(output).split(separator: "\n").map { try JSONValue.parse(String($0)) }
        XCTAssertEqual(summary.records, lines.count)
        XCTAssertEqual(out.count, lines.count, "one output record per prompt")
        return out
    }

    func testOutputRecordsFollowTheInput() throws {
        let out = try run(prompts(5))
        XCTAssertEqual(out.map { $0["id"]! }, [.string("r0"), .integer(1), .string("r2"), .integer(3), .string("r4")])
        for record in out {
            XCTAssertEqual(record["finish_reason"]?.string, "length")
            XCTAssertEqual(record["completion_tokens"]?.int, 10)
            XCTAssertGreaterThan(record["prompt_tokens"]?.int ?? 0, 0)
            XCTAssertFalse(record["text"]?.string?.isEmpty ?? true)
        }
    }

    /// Seeded per record: the same output whatever the batch size; another seed differs.
    func testSampledOutputDoesNotDependOnBatching() throws {
        func sampled(batch: Int, seed: UInt64) throws -> [JSONValue] {
            try run(prompts(5)) { $0.temperature = 0.9; $0.topK = 40; $0.topP = 0.95; $0.seed = seed; $0.batchSize = batch }
        }
        let one = try sampled(batch: 1, seed: 3)
        XCTAssertEqual(try sampled(batch: 3, seed: 3), one)
        XCTAssertEqual(try sampled(batch: 5, seed: 3), one)
        XCTAssertNotEqual(try sampled(batch: 3, seed: 4).map { $0["text"]! }, one.map { $0["text"]! })
        XCTAssertNotEqual(one.map { $0["text"]! }, try run(prompts(5)).map { $0["text"]! }, "sampling differs from greedy")
    }

    func testStopStringCutsTheText() throws {
        let full = try run(prompts(1))[0]["text"]!.string!
        // The first two ASCII characters in a row (a random model writes invalid UTF-8 too).
        let chars = Array(full)
        let at = try XCTUnwrap((0..<(chars.count - 1)).first { chars[$0].isASCII && chars[$0 + 1].isASCII && $0 > 0 }, full)
        let stop = String(chars[at..<(at + 2)])
        let expected = String(full[..<full.range(of: stop)!.lowerBound])
        let cut = try run(prompts(1)) { $0.stop = ["zzzz", stop] }[0]
        XCTAssertEqual(cut["text"]?.string, expected)
        XCTAssertEqual(cut["finish_reason"]?.string, "stop")
        XCTAssertLessThan(cut["completion_tokens"]!.int!, 10)
    }

    func testBadRecordsNameFileLineAndField() throws {
        let input = directory + "/prompts.jsonl"
        let cases: [(String, String)] = [
            ("{\"prompt\": \"x\"}", "prompts.jsonl:2: id: missing"),
            ("{\"id\": 1.5, \"prompt\": \"x\"}", "prompts.jsonl:2: id: expected a string or an integer"),
            ("{\"id\": \"b\", \"prompt\": 3}", "prompts.jsonl:2: prompt: expected a string, found number"),
            ("{\"id\": \"b\", \"prompt\": \"\"}", "prompts.jsonl:2: prompt: empty"),
            ("{\"id\": \"b\"}", "prompts.jsonl:2: prompt: missing"),
            ("{\"id\": \"a\", \"prompt\": \"y\"}", "prompts.jsonl:2: id: \"a\" repeats the id of line 1"),
            ("{\"id\": \"b\", \"messages\": [{\"role\": \"user\"}]}", "prompts.jsonl:2: messages[0].content: missing or not a string"),
            ("{\"id\": \"b\", \"prompt\": \"x\", \"messages\": []}", "prompts.jsonl:2: messages: give either"),
            ("[1, 2]", "prompts.jsonl:2: expected a JSON object, found array"),
            ("{\"id\": \"b\", \"prompt\": ", "prompts.jsonl:2:"),
        ]
        for (line, message) in cases {
            try writeLines(["{\"id\": \"a\", \"prompt\": \"fine\"}", line], to: input)
            let request = GenerateRequest(model: modelDirectory, input: input, output: directory + "/out.jsonl")
            XCTAssertThrowsError(try GenerateRun.run(request), line) { XCTAssertTrue("\($0)".contains(message), "\($0) should contain \(message)") }
            XCTAssertFalse(FileSystem.exists(directory + "/out.jsonl"), "no output after a bad record")
        }
    }

    /// A chat prompt is rendered with the chat template and generation
    /// prompt, and the reply stops at the turn's end marker.
    func testChatPromptsUseTheChatTemplate() throws {
        let tokenizer = try BPETokenizer.load(path: modelDirectory + "/tokenizer.json")
        let template = try ChatTemplate(tokenizer: tokenizer)
        let messages = [ChatMessage(role: .system, content: "patents"), ChatMessage(role: .user, content: "the device comprising")]
        let rendered = template.encode(messages, addGenerationPrompt: true).ids.count
        let chatLine = "{\"id\": \"chat\", \"messages\": " + ChatMessage.json(messages).text() + "}"
        let out = try run([chatLine, prompts(1)[0]])
        XCTAssertEqual(out[0]["prompt_tokens"]?.int, rendered)
        XCTAssertEqual(out[1]["prompt_tokens"]?.int, tokenizer.encode("the device comprising").count)
        XCTAssertFalse(out[0]["text"]!.string!.contains(ChatTemplate.endToken))
    }

    func constrainedGeneration(maxNewTokens: Int, minDigits: Int, maxDigits: Int, closable: Bool = true) throws -> Generation {
        let model = try LlamaModel(directory: modelDirectory), tokenizer = try BPETokenizer.load(path: modelDirectory + "/tokenizer.json")
        var config = GenerationConfig()
        config.maxNewTokens = maxNewTokens
        config.temperature = 1
        let generator = try Generator(model: model, tokenizer: tokenizer, config: config)
        var constraint = try DigitsConstraint(tokenizer: tokenizer, vocab: model.config.vocabSize, endTokens: generator.endTokens,
                                              minDigits: minDigits, maxDigits: maxDigits)
        constraint.closable = closable
        let prompt = tokenizer.encode("claim").map { Int32($0) }
        return try generator.generate([GenerationPrompt(key: "c", tokens: prompt, constraint: constraint)])[0]
    }

    func testConstraintMasksEveryStepAndEndsValidly() throws {
        let complete = try constrainedGeneration(maxNewTokens: 50, minDigits: 3, maxDigits: 5)
        XCTAssertTrue(complete.text.allSatisfy(\.isNumber), complete.text)
        XCTAssertTrue((3...5).contains(complete.text.count), complete.text)
        XCTAssertEqual(complete.finishReason, .eos, "only end-of-sequence is left once 5 digits are out, or chosen earlier")

        let closed = try constrainedGeneration(maxNewTokens: 2, minDigits: 4, maxDigits: 6)
        XCTAssertEqual(closed.finishReason, .closed)
        XCTAssertEqual(closed.text.count, 4)
        XCTAssertTrue(closed.text.hasSuffix("00"), closed.text)
        XCTAssertEqual(closed.tokens.count, 4, "the closing tokens are part of the output")

        let truncated = try constrainedGeneration(maxNewTokens: 2, minDigits: 4, maxDigits: 6, closable: false)
        XCTAssertEqual(truncated.finishReason, .truncated)
        XCTAssertEqual(truncated.text.count, 2)
    }
}
