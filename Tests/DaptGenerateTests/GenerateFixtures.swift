import DaptModel
import DaptTestSupport
import DaptTokenizer
import Foundation

/// The greedy-generation fixtures of scripts/fixtures/generate_parity.py.
enum GenerateFixtures {
    static var directory: String { Bundle.module.path(forResource: "Fixtures", ofType: nil)! + "/generate" }
    static let variants = ["gqa", "yarn", "dynamic"]
    /// The repository (for the bundled data/ files).
    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    struct Expected: Decodable {
        struct Prompt: Decodable {
            var text: String
            var promptIds: [Int32]
            var generatedIds: [Int32]
            enum CodingKeys: String, CodingKey { case text, promptIds = "prompt_ids", generatedIds = "generated_ids" }
        }
        var maxNewTokens: Int
        var eosTokenId: Int32
        var prompts: [Prompt]
        enum CodingKeys: String, CodingKey { case maxNewTokens = "max_new_tokens", eosTokenId = "eos_token_id", prompts }
    }

    static func model(_ variant: String) throws -> LlamaModel { try LlamaModel(directory: directory + "/" + variant) }
    static func tokenizer() throws -> BPETokenizer { try BPETokenizer.load(path: directory + "/tokenizer.json") }

    static func expected(_ variant: String) throws -> Expected {
        try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: directory + "/\(variant)/expected.json")))
    }

    static func expectedLogits(_ variant: String, prompt: Int) throws -> [Float] {
        try SafeTensorsFile(path: directory + "/\(variant)/expected.safetensors").floats("logits.\(prompt)")
    }

    static func relativeError(_ a: [Float], _ b: [Float]) -> Double { DaptTestSupport.relativeError(a, b) }
}
