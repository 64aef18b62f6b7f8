import DaptCore
import DaptTokenizer
import Foundation
import XCTest
import DaptTestSupport

/// dapt's chat template against transformers' `apply_chat_template` on the
/// same template (Fixtures/chat, from scripts/fixtures/chat_template.py).
final class ChatTemplateTests: XCTestCase {
    func fixtureTemplate() throws -> ChatTemplate {
        try ChatTemplate(tokenizer: BPETokenizer.load(path: Fixtures.directory.appendingPathComponent("chat/tokenizer.json").path))
    }

    func testTextIdsAndAssistantMaskEqualTransformers() throws {
        let template = try fixtureTemplate()
        let lines = try String(contentsOf: Fixtures.directory.appendingPathComponent("chat/conversations.jsonl"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 7)
        var assistantTokens = 0
        for (n, line) in lines.enumerated() {
            let record = try JSONValue.parse(line)
            let messages = try ChatMessage.parse(record["messages"]!)
            let generation = record["add_generation_prompt"]!.bool!
            XCTAssertEqual(template.render(messages, addGenerationPrompt: generation), record["text"]!.string!, "line \(n + 1)")
            let encoding = template.encode(messages, addGenerationPrompt: generation)
            XCTAssertEqual(encoding.ids, record["ids"]!.array!.map { UInt32($0.int!) }, "line \(n + 1)")
            XCTAssertEqual(encoding.assistantMask, record["assistant_mask"]!.array!.map { $0.int! == 1 }, "line \(n + 1)")
            assistantTokens += encoding.assistantMask.filter { $0 }.count
        }
        XCTAssertGreaterThan(assistantTokens, 50)
    }

    /// The mask covers each reply and its `<|end|>`, nothing else.
    func testMaskedTokensDecodeToTheRepliesAndTheirEnd() throws {
        let template = try fixtureTemplate()
        let messages = [ChatMessage(role: .system, content: "s"), ChatMessage(role: .user, content: "question <|end|>"),
                        ChatMessage(role: .assistant, content: "{\"a\": 1}"), ChatMessage(role: .user, content: "again"),
                        ChatMessage(role: .assistant, content: "二")]
        let encoding = template.encode(messages)
        let masked = zip(encoding.ids, encoding.assistantMask).filter { $0.1 }.map { $0.0 }
        XCTAssertEqual(try template.tokenizer.decodeText(masked), "{\"a\": 1}<|end|>二<|end|>")
        XCTAssertEqual(encoding.ids.last, template.tokenizer.id(of: "\n"))
        XCTAssertFalse(encoding.assistantMask.last!)
    }

    func testWrittenConfigCarriesTheTemplateTransformersWasGiven() throws {
        let dir = try temporaryDirectory(self)
        try ChatTemplate(tokenizer: fixtureTemplate().tokenizer).writeTokenizerConfig(directory: dir)
        let written = try JSONValue.parse(FileSystem.readAll(dir + "/tokenizer_config.json"))
        let fixture = try JSONValue.parse(FileSystem.readAll(Fixtures.directory.appendingPathComponent("chat/tokenizer_config.json").path))
        XCTAssertEqual(written["chat_template"]?.string, ChatTemplate.source)
        XCTAssertEqual(fixture["chat_template"]?.string, ChatTemplate.source, "template changed: rerun scripts/fixtures/chat_template.py")
        XCTAssertEqual(written["bos_token"]?.string, "<|bos|>")
        XCTAssertEqual(written["eos_token"]?.string, "<|eos|>")

        // Updating keeps the keys of an existing config.
        try writeLines(["{\"model_max_length\": 2048, \"chat_template\": \"old\"}"], to: dir + "/tokenizer_config.json")
        try ChatTemplate(tokenizer: fixtureTemplate().tokenizer).writeTokenizerConfig(directory: dir)
        let updated = try JSONValue.parse(FileSystem.readAll(dir + "/tokenizer_config.json"))
        XCTAssertEqual(updated["model_max_length"]?.int, 2048)
        XCTAssertEqual(updated["chat_template"]?.string, ChatTemplate.source)
    }

    func testBadMessagesAndMissingTokensAreNamed() throws {
        XCTAssertThrowsError(try ChatMessage.parse(JSONValue.parse(#"[{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]"#))) {
            XCTAssertEqual("\($0)", "messages[1].role: \"bot\" is not one of system, user, assistant")
        }
        XCTAssertThrowsError(try ChatMessage.parse(JSONValue.parse(#"[{"role": "user"}]"#))) {
            XCTAssertEqual("\($0)", "messages[0].content: missing or not a string")
        }
        XCTAssertThrowsError(try ChatMessage.parse(JSONValue.parse("[]")))
        var trainer = BPETrainer(vocabSize: 300, minFrequency: 2, specialTokens: ["<|bos|>"])
        trainer.add("some text some text")
        XCTAssertThrowsError(try ChatTemplate(tokenizer: trainer.train())) {
            XCTAssertEqual($0 as? ChatTemplateError, .missingToken("<|system|>"))
        }
    }
}
