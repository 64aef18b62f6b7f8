import DaptTokenizer
import Foundation
import XCTest

/// Ids against Hugging Face `tokenizers` on the fixtures written by
/// scripts/fixtures/tokenizer_parity.py (no Python needed here).
final class ParityTests: XCTestCase {
    func checkParity(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let tokenizer = try BPETokenizer.load(path: Fixtures.directory.appendingPathComponent("parity/\(name)/tokenizer.json").path)
        let texts = try Fixtures.texts("parity/lines.jsonl")
        let expected = try Fixtures.expectedIds("parity/\(name)/expected.txt")
        XCTAssertEqual(texts.count, expected.count, file: file, line: line)
        XCTAssertGreaterThan(texts.count, 2000, file: file, line: line)
        let encoder = TokenEncoder(tokenizer)
        var mismatches = 0
        var tokens = 0
        for (i, text) in texts.enumerated() {
            let ids = encoder.encode(text)
            tokens += ids.count
            if ids != expected[i] {
                mismatches += 1
                if mismatches <= 3 { XCTFail("\(name) line \(i + 1) \(text.debugDescription):\n dapt \(ids)\n   hf \(expected[i])", file: file, line: line) }
            }
            if !tokenizer.addPrefixSpace {
                XCTAssertEqual(try tokenizer.decode(ids), Array(text.utf8), "\(name) line \(i + 1) does not round-trip", file: file, line: line)
            }
        }
        XCTAssertEqual(mismatches, 0, "\(mismatches) of \(texts.count) lines differ from tokenizers", file: file, line: line)
        XCTAssertGreaterThan(tokens, texts.count * 5, file: file, line: line)
    }

    /// GPT-2 style `ByteLevel` pre-tokenizer with its own regex.
    func testGPT2ByteLevelFromTokenizers() throws { try checkParity("hf-gpt2") }

    /// The same with `add_prefix_space: true`.
    func testGPT2ByteLevelWithPrefixSpaceFromTokenizers() throws { try checkParity("hf-gpt2-prefix") }

    /// `Split` with dapt's pattern then `ByteLevel(use_regex: false)`, trained by tokenizers.
    func testSplitPatternFromTokenizers() throws { try checkParity("hf-split-dapt") }

    /// A tokenizer.json written by dapt, loaded and run by tokenizers: same ids.
    /// The file is dapt's own (its vocabulary is not hf-split-dapt's), so this
    /// checks what tokenizers makes of dapt's file, not hf-split-dapt again.
    func testDaptFileRunByTokenizers() throws {
        try checkParity("dapt-trained")
        let ours = try BPETokenizer.load(path: Fixtures.directory.appendingPathComponent("parity/dapt-trained/tokenizer.json").path)
        let hf = try BPETokenizer.load(path: Fixtures.directory.appendingPathComponent("parity/hf-split-dapt/tokenizer.json").path)
        XCTAssertNotEqual(ours.vocabSize, hf.vocabSize)
        XCTAssertNotEqual(try Fixtures.expectedIds("parity/dapt-trained/expected.txt"), try Fixtures.expectedIds("parity/hf-split-dapt/expected.txt"))
        // Written by dapt: dapt's file spells back the same JSON.
        let text = try String(contentsOf: Fixtures.directory.appendingPathComponent("parity/dapt-trained/tokenizer.json"), encoding: .utf8)
        XCTAssertEqual(ours.jsonText(), text)
    }

    /// Trained on the same lines with the same settings, dapt learns exactly
    /// the vocabulary and merges of `tokenizers`' BpeTrainer.
    func testTrainingMatchesTokenizersTrainer() throws {
        let hf = try BPETokenizer.load(path: Fixtures.directory.appendingPathComponent("parity/hf-train-lines/tokenizer.json").path)
        var trainer = BPETrainer(vocabSize: 800, minFrequency: 2, preTokenizer: .dapt)
        // Lines with special-token text are left out (tokenizers would learn from that text, dapt does not).
        for t in try Fixtures.texts("parity/lines.jsonl") where !t.contains("<|") { trainer.add(t) }
        let ours = try trainer.train()
        XCTAssertEqual(ours.vocabSize, hf.vocabSize)
        XCTAssertEqual(ours.merges.count, hf.merges.count)
        XCTAssertEqual(ours.merges.map { [$0.0, $0.1, $0.2] }, hf.merges.map { [$0.0, $0.1, $0.2] })
        for id in 0..<UInt32(ours.vocabSize) { XCTAssertEqual(try ours.bytes(of: id), try hf.bytes(of: id), "id \(id)") }
    }

    /// dapt's own file loads back to the same merges and spells the same JSON.
    func testDaptFileRoundTrip() throws {
        let tokenizer = try trainedOnFixtures()
        let text = tokenizer.jsonText()
        let loaded = try BPETokenizer.load(json: Array(text.utf8))
        XCTAssertEqual(loaded.jsonText(), text)
        XCTAssertEqual(loaded.merges.map { [$0.0, $0.1, $0.2] }, tokenizer.merges.map { [$0.0, $0.1, $0.2] })
        XCTAssertEqual(loaded.addedTokens, tokenizer.addedTokens)
        for t in try Fixtures.texts("parity/lines.jsonl").prefix(300) {
            XCTAssertEqual(loaded.encode(t), tokenizer.encode(t))
        }
    }

    func testUnsupportedFilesAreRefusedWithTheField() throws {
        let good = try String(contentsOf: Fixtures.directory.appendingPathComponent("parity/hf-split-dapt/tokenizer.json"), encoding: .utf8)
        let cases: [(String, String)] = [
            (good.replacingOccurrences(of: "\"normalizer\": null", with: "\"normalizer\": {\"type\": \"NFC\"}"), "normalizer"),
            (good.replacingOccurrences(of: #"\\p{Han}+|"#, with: ""), "pre_tokenizer.pretokenizers[0].pattern"),
            (good.replacingOccurrences(of: "\"type\": \"BPE\"", with: "\"type\": \"WordPiece\""), "model.type"),
            (String(good.prefix(200)), "invalid JSON"),
        ]
        for (text, field) in cases {
            XCTAssertThrowsError(try BPETokenizer.load(json: Array(text.utf8), path: "x.json")) { error in
                XCTAssertTrue("\(error)".contains(field), "\(error) should name \(field)")
                XCTAssertTrue("\(error)".hasPrefix("x.json: "), "\(error)")
            }
        }
    }
}
