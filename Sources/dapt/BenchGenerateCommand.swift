import ArgumentParser
import DaptCore
import DaptGenerate
import DaptModel
import Foundation

extension BenchCommand {
    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "generate",
            abstract: "KV-cache greedy decoding of synthetic prompts: prefill and decode tokens/s, one step's time (one JSON line).")

        @Option(help: "A Hugging Face Llama directory (config.json, model.safetensors).") var model: String
        @Option var batch = 1
        @Option(name: .customLong("prompt-length")) var promptLength = 64
        @Option(name: .customLong("new-tokens")) var newTokens = 64
        @Option var repeats = 3

        func run() throws {
            let llama = try LlamaModel(directory: model)
            let t = try GenerationBenchmark.measure(model: llama, batch: batch, promptLength: promptLength, newTokens: newTokens, repeats: repeats)
            Console.out(String(format: "{\"impl\": \"dapt\", \"prefill_tokens_per_s\": %.1f, \"decode_tokens_per_s\": %.1f, \"step_ms\": %.4f, \"prefill_s\": %.5f, \"decode_s\": %.5f}",
                               t.prefillTokensPerSecond, t.decodeTokensPerSecond, t.stepSeconds * 1000, t.prefillSeconds, t.decodeSeconds))
        }
    }
}
