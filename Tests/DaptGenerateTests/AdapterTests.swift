import DaptCore
import DaptGenerate
import DaptModel
import DaptTestSupport
import DaptTokenizer
import DaptTrain
import XCTest

/// `--adapter`: generation and eval json over a base with a LoRA adapter
/// merged (the committed PEFT adapter of DaptTrainTests/Fixtures/lora over
/// its small base checkpoint).
final class AdapterTests: XCTestCase {
    var fixtures: String { GenerateFixtures.repositoryRoot + "/Tests/DaptTrainTests/Fixtures" }
    var base: String { fixtures + "/interop/dapt" }
    var adapter: String { fixtures + "/lora/peft" }

    func writePrompts(_ dir: String) throws -> String {
        let input = dir + "/prompts.jsonl"
        try writeLines([
            #"{"id": 1, "prompt": "the device comprising"}"#,
            #"{"id": 2, "prompt": "wherein the signal"}"#,
            #"{"id": "c", "prompt": "a method"}"#,
        ], to: input)
        return input
    }

    func generate(model: String, adapter: String?, input: String, output: String) throws -> [String] {
        var request = GenerateRequest(model: model, input: input, output: output, adapter: adapter)
        request.generation.maxNewTokens = 12
        request.generation.temperature = 0
        _ = try GenerateRun.run(request)
        return String(decoding: try FileSystem.readAll(output), as: UTF8.self).split(separator: "\n").map(String.init)
    }

    func testGenerationWithAdapterEqualsTheMergedModel() throws {
        let dir = try temporaryDirectory(self)
        let input = try writePrompts(dir)
        try FinetuneRun.merge(model: base, adapter: adapter, output: dir + "/merged")
        let withAdapter = try generate(model: base, adapter: adapter, input: input, output: dir + "/adapter.jsonl")
        let merged = try generate(model: dir + "/merged", adapter: nil, input: input, output: dir + "/merged.jsonl")
        let plain = try generate(model: base, adapter: nil, input: input, output: dir + "/base.jsonl")
        XCTAssertEqual(withAdapter.count, 3)
        XCTAssertEqual(withAdapter, merged, "token for token (greedy) the same as the model `finetune merge` wrote")
        XCTAssertNotEqual(withAdapter, plain, "the adapter must change the output for this test to mean anything")
    }

    func testEvalJSONRecordsTheAdapter() throws {
        let dir = try temporaryDirectory(self)
        let input = dir + "/answers.jsonl"
        try writeLines([#"{"id": 1, "prompt": "the device", "reference": {"intent": "other"}}"#], to: input)
        var request = JSONEvalRequest(model: base, input: input, adapter: adapter)
        request.generation.maxNewTokens = 6
        let (section, info) = try JSONEvaluation.run(request, constraint: nil)
        XCTAssertEqual(info.adapterPath, adapter)
        XCTAssertEqual(info.adapterChecksum, try fileChecksum(adapter + "/adapter_model.safetensors"))
        try EvalReport.write(section, model: info, to: dir + "/eval")
        let report = try EvalReport.load(directory: dir + "/eval")
        XCTAssertEqual(report["model"]?["adapter"]?["path"]?.string, adapter)
        XCTAssertEqual(report["model"]?["adapter"]?["adapter_model_xxh64"]?.string, info.adapterChecksum)
        // The base alone is another model: its section does not join this report.
        let (baseSection, baseInfo) = try JSONEvaluation.run(JSONEvalRequest(model: base, input: input), constraint: nil)
        XCTAssertNil(baseInfo.adapterPath)
        XCTAssertThrowsError(try EvalReport.write(baseSection, model: baseInfo, to: dir + "/eval")) { error in
            XCTAssertTrue("\(error)".contains("adapter"), "\(error)")
        }
        try EvalReport.write(baseSection, model: baseInfo, to: dir + "/eval-base")
        XCTAssertEqual(try EvalReport.load(directory: dir + "/eval-base")["model"]?["adapter"]?.isNull, true)
    }

    func testMissingAdapterFileIsNamed() throws {
        let dir = try temporaryDirectory(self)
        let input = try writePrompts(dir)
        let broken = dir + "/adapter"
        try FileSystem.makeDirectories(broken)
        try FileManager.default.copyItem(atPath: adapter + "/adapter_config.json", toPath: broken + "/adapter_config.json")
        XCTAssertThrowsError(try generate(model: base, adapter: broken, input: input, output: dir + "/out.jsonl")) { error in
            XCTAssertTrue("\(error)".contains(broken + "/adapter_model.safetensors"), "\(error)")
        }
        XCTAssertFalse(FileSystem.exists(dir + "/out.jsonl"))
        try FileManager.default.removeItem(atPath: broken + "/adapter_config.json")
        try FileManager.default.copyItem(atPath: adapter + "/adapter_model.safetensors", toPath: broken + "/adapter_model.safetensors")
        XCTAssertThrowsError(try JSONEvaluation.run(JSONEvalRequest(model: base, input: input, adapter: broken), constraint: nil)) { error in
            XCTAssertTrue("\(error)".contains(broken) && "\(error)".contains("adapter_config.json"), "\(error)")
        }
        // A bad field is named with its file.
        try writeLines([#"{"peft_type": "LORA", "r": 0, "lora_alpha": 8, "target_modules": ["q_proj"]}"#], to: broken + "/adapter_config.json")
        XCTAssertThrowsError(try generate(model: base, adapter: broken, input: input, output: dir + "/out.jsonl")) { error in
            XCTAssertTrue("\(error)".contains(broken + "/adapter_config.json: r:"), "\(error)")
        }
    }
}
