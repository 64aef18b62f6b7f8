import Foundation
import XCTest

/// `dapt generate` under real mpirun: the same output file for 1, 2 and 3 ranks.
final class GenerateMultiRankTests: XCTestCase {
    static var model: String { FilterMultiRankTests.model }

    func testSameOutputForOneToThreeRanks() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let texts = ["the device comprising", "wherein the signal", "claim", "a method of forming the circuit", "the first layer"]
        var lines = (0..<6).map { "{\"id\": \"p\($0)\", \"prompt\": \"\(texts[$0 % texts.count])\"}" }
        lines.append("{\"id\": 7, \"messages\": [{\"role\": \"user\", \"content\": \"the second layer\"}]}")
        let input = dir.appendingPathComponent("prompts.jsonl").path
        try (lines.joined(separator: "\n") + "\n").write(toFile: input, atomically: true, encoding: .utf8)
        var reference: Data?
        for np in 1...3 {
            let out = dir.appendingPathComponent("out\(np).jsonl").path
            let result = try DaptProcess.mpirun(np: np, ["generate", "--model", Self.model, "--input", input, "--output", out,
                                                         "--temperature", "0.8", "--top-k", "50", "--seed", "5",
                                                         "--max-new-tokens", "6", "--batch-size", "2"], timeout: 120)
            XCTAssertEqual(result.status, 0, "np=\(np)\n\(result.report)")
            XCTAssertTrue(result.stdout.contains("generated 7 records"), result.report)
            let data = try Data(contentsOf: URL(fileURLWithPath: out))
            XCTAssertEqual(String(decoding: data, as: UTF8.self).split(separator: "\n").count, 7)
            if let reference { XCTAssertEqual(data, reference, "output differs between 1 and \(np) ranks") } else { reference = data }
        }
    }

    func testBadPromptRecordNamesFileLineAndField() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let input = dir.appendingPathComponent("prompts.jsonl").path
        try "{\"id\": \"a\", \"prompt\": \"claim\"}\n{\"id\": \"b\", \"prompt\": 4}\n".write(toFile: input, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("out.jsonl").path
        let result = try DaptProcess.dapt(["generate", "--model", Self.model, "--input", input, "--output", out])
        XCTAssertNotEqual(result.status, 0, result.report)
        XCTAssertTrue(result.stderr.contains("prompts.jsonl:2: prompt: expected a string, found number"), result.report)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}
