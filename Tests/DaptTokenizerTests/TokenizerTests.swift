import DaptCore
import DaptTokenizer
import Foundation
import XCTest

final class PreTokenizerTests: XCTestCase {
    func pieces(_ text: String, _ kind: PreTokenizerKind) -> [String] {
        var pre = PreTokenizer(kind: kind)
        var out: [String] = []
        let bytes = Array(text.utf8)
        bytes.withUnsafeBufferPointer { buf in
            pre.split(buf) { s, e in out.append(String(decoding: buf[s..<e], as: UTF8.self)) }
        }
        return out
    }

    func testHanRunsAreTheirOwnPieces() {
        XCTAssertEqual(pieces("本发明涉及abc中文，的 123456 ?!!\n\n  x  ", .dapt),
                       ["本发明涉及", "abc", "中文", "，", "的", " ", "123", "456", " ?!!\n\n", " ", " x", "  "])
        // GPT-4's pattern glues Han to letters; GPT-2 puts the space in front.
        XCTAssertEqual(pieces("本发明abc中文", .gpt4), ["本发明abc中文"])
        XCTAssertEqual(pieces("Hello  world's 中文abc", .gpt2), ["Hello", " ", " world", "'s", " 中文abc"])
    }

    func testContractionsAndNumbers() {
        XCTAssertEqual(pieces("It'S we'LL 1234567", .dapt), ["It", "'S", " we", "'LL", " ", "123", "456", "7"])
        XCTAssertEqual(pieces("It'S 1234567", .gpt2), ["It", "'", "S", " 1234567"])
    }

    func testPiecesCoverTheTextExactly() {
        var rng = SplitMix64(seed: 11)
        for kind in PreTokenizerKind.allCases {
            for _ in 0..<200 {
                let text = randomText(&rng, length: Int(rng.next() % 40))
                XCTAssertEqual(pieces(text, kind).joined(), text)
                XCTAssertFalse(pieces(text, kind).contains(""), "empty piece for \(text.debugDescription)")
            }
        }
    }
}

final class TrainerTests: XCTestCase {
    /// Byte ids follow the byte-level spelling: printable "!"..."~" first, so
    /// a = 97 - 33 = 64, b = 65; the space (spelled U+0120, the 33rd of the 68
    /// non-printable bytes after the 188 printable ones) is 188 + 32 = 220.
    ///
    /// Words aaab, aab, ab, ab (no specials): pairs (a,a) 3, (a,b) 4 -> merge
    /// (a,b) = 256; then (a,256) occurs in aaab and aab -> 257 "aab"; then
    /// (a,257) once -> 258 "aaab".
    func testTinyCorpusGivesTheMergesWorkedOutByHand() throws {
        var trainer = BPETrainer(vocabSize: 300, minFrequency: 1, specialTokens: [], preTokenizer: .dapt)
        for t in ["aaab", "aab", "ab", "ab"] { trainer.add(t) }
        let tok = try trainer.train()
        XCTAssertEqual(tok.merges.map { [$0.0, $0.1, $0.2] }, [[64, 65, 256], [64, 256, 257], [64, 257, 258]])
        XCTAssertEqual(tok.vocabSize, 259)
        XCTAssertEqual(tok.encode("aaab"), [258])
        // " aab" is one piece: space, then a a b, which merges to 257; no merge joins the space.
        XCTAssertEqual(tok.encode("ab aab"), [256, 220, 257])
    }

    /// With min_frequency 2 the last merge (seen once) is not made.
    func testMinFrequencyStopsMerging() throws {
        var trainer = BPETrainer(vocabSize: 300, minFrequency: 2, specialTokens: [], preTokenizer: .dapt)
        for t in ["aaab", "aab", "ab", "ab"] { trainer.add(t) }
        XCTAssertEqual(try trainer.train().merges.map { [$0.0, $0.1] }, [[64, 65], [64, 256]])
    }

    /// "aaaa": (a,a) counts 3 (overlapping); merging gives [aa][aa], then (aa,aa).
    func testOverlappingPairs() throws {
        var trainer = BPETrainer(vocabSize: 258, minFrequency: 1, specialTokens: [], preTokenizer: .dapt)
        trainer.add("aaaa")
        let tok = try trainer.train()
        XCTAssertEqual(tok.merges.map { [$0.0, $0.1, $0.2] }, [[64, 64, 256], [256, 256, 257]])
        XCTAssertEqual(tok.encode("aaaa"), [257])
        XCTAssertEqual(tok.encode("aaa"), [256, 64])
    }

    /// Equal counts: the smaller (left, right) id pair wins, whatever the input order.
    func testTiesAreBrokenByIdsNotInputOrder() throws {
        for order in [["cd", "ab"], ["ab", "cd"]] {
            var trainer = BPETrainer(vocabSize: 258, minFrequency: 1, specialTokens: ["<|bos|>"], preTokenizer: .dapt)
            for t in order { trainer.add(t) }
            XCTAssertEqual(try trainer.train().merges.map { [$0.0, $0.1] }, [[1 + 64, 1 + 65]])
        }
    }

    /// Same corpus in another order, or counted in two halves and merged (as
    /// ranks do), gives the same tokenizer.json byte for byte.
    func testTrainingIsDeterministic() throws {
        let texts = try Fixtures.texts("parity/lines.jsonl")
        func train(_ parts: [[String]]) throws -> String {
            var trainers = parts.map { part -> BPETrainer in
                var t = BPETrainer(vocabSize: 700, minFrequency: 2)
                for s in part { t.add(s) }
                return t
            }
            var merged = BPETrainer(vocabSize: 700, minFrequency: 2)
            for t in trainers { merged.merge(serializedCounts: t.serializedCounts()) }
            trainers.removeAll()
            return try merged.train().jsonText()
        }
        let a = try train([texts])
        XCTAssertEqual(try train([Array(texts.reversed())]), a)
        XCTAssertEqual(try train([Array(texts.enumerated().filter { $0.offset % 2 == 0 }.map(\.element)),
                                  Array(texts.enumerated().filter { $0.offset % 2 == 1 }.map(\.element))]), a)
        XCTAssertEqual(try BPETokenizer.load(json: Array(a.utf8)).vocabSize, 700)
    }

    /// Past max_words the rarest words are dropped: the result is training on
    /// the frequent words alone.
    func testWordTableIsBoundedByDroppingTheRarest() throws {
        let frequent = ["alpha", "beta", "gamma", "delta"]
        var bounded = BPETrainer(vocabSize: 300, minFrequency: 1, specialTokens: [], maxWords: 16)
        var reference = BPETrainer(vocabSize: 300, minFrequency: 1, specialTokens: [])
        for round in 0..<30 {
            for w in frequent { bounded.add(w); reference.add(w) }
            // Each seen once; letters the frequent words do not use, so no shared pairs.
            let letters = Array("norsuvwxyz")
            bounded.add("zq" + String(letters[round % 10]) + String(letters[round / 10]))
        }
        XCTAssertLessThanOrEqual(bounded.distinctWords, 16)
        XCTAssertGreaterThan(bounded.prunedWords, 0)
        XCTAssertEqual(bounded.prunedBelowCount, 1)
        // Rare words left since the last pruning still count (at most 16 each pair), so compare the
        // merges of the frequent words, which come first (their pairs count 30 or more).
        let merges = try bounded.train().merges.prefix(8).map { [$0.0, $0.1] }
        XCTAssertEqual(merges, try reference.train().merges.prefix(8).map { [$0.0, $0.1] })
    }

    /// Special tokens in training text are not learned from.
    func testSpecialTokensAreLeftOutOfTraining() throws {
        var trainer = BPETrainer(vocabSize: 400, minFrequency: 1, preTokenizer: .dapt)
        for _ in 0..<5 { trainer.add("<|bos|>xy<|eos|>") }
        let tok = try trainer.train()
        XCTAssertEqual(tok.merges.count, 1)
        XCTAssertEqual(try tok.decode([tok.merges[0].2]), Array("xy".utf8))
    }
}

final class EncodeDecodeTests: XCTestCase {
    func testRandomUnicodeRoundTrips() throws {
        let tok = try trainedOnFixtures()
        let encoder = TokenEncoder(tok, cacheEntries: 64)   // small: the cache is emptied often
        var rng = SplitMix64(seed: 5)
        for _ in 0..<1500 {
            let text = randomText(&rng, length: Int(rng.next() % 60))
            let ids = encoder.encode(text)
            XCTAssertEqual(try tok.decode(ids), Array(text.utf8), text.debugDescription)
            XCTAssertEqual(ids, tok.encode(text), "cached and uncached encodings differ")
        }
    }

    /// Any bytes, valid UTF-8 or not, come back exactly.
    func testRandomBytesRoundTrip() throws {
        let tok = try trainedOnFixtures()
        let encoder = TokenEncoder(tok)
        var rng = SplitMix64(seed: 9)
        for _ in 0..<1500 {
            let bytes = (0..<Int(rng.next() % 50)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            XCTAssertEqual(try tok.decode(encoder.encode(bytes: bytes)), bytes)
        }
        let invalid: [UInt8] = [0xE4, 0xB8, 0x41, 0xFF, 0xC0, 0x80, 0xED, 0xA0, 0x80, 0xF4, 0x90, 0x80, 0x80]
        XCTAssertEqual(try tok.decode(encoder.encode(bytes: invalid)), invalid)
        XCTAssertEqual(try tok.decodeText(encoder.encode(bytes: [0x61, 0xFF])), "a\u{FFFD}")
    }

    func testSpecialTokensAreNeverSplit() throws {
        let tok = try trainedOnFixtures()
        let specials = SpecialTokens.defaults
        let ids = specials.map { tok.id(of: $0)! }
        XCTAssertEqual(ids, Array(0..<UInt32(specials.count)))
        var rng = SplitMix64(seed: 3)
        for _ in 0..<400 {
            var text = ""
            var expected: [UInt32] = []
            for _ in 0..<4 {
                text += randomText(&rng, length: Int(rng.next() % 8)).replacingOccurrences(of: "<", with: "«")
                let k = Int(rng.next() % UInt64(specials.count))
                text += specials[k]
                expected.append(ids[k])
            }
            let encoded = tok.encode(text)
            XCTAssertEqual(encoded.filter { $0 < UInt32(specials.count) }, expected, text.debugDescription)
            XCTAssertEqual(try tok.decodeText(encoded), text)
        }
        // Partial markers are plain text.
        XCTAssertFalse(tok.encode("<|bos <|eos|").contains { $0 < UInt32(specials.count) })
        XCTAssertEqual(tok.encode("<|user|>hi<|end|>").first, tok.id(of: "<|user|>"))
    }

    func testUnknownIdIsAnError() throws {
        let tok = try trainedOnFixtures()
        XCTAssertThrowsError(try tok.decode([UInt32(tok.vocabSize)])) { error in
            XCTAssertEqual(error as? TokenizerError, .unknownId(UInt32(tok.vocabSize), vocabSize: tok.vocabSize))
        }
    }
}

final class ConfigAndInputTests: XCTestCase {
    func testJSONLFieldExtraction() throws {
        func extract(_ line: String) -> Result<String, RecordProblem> {
            var out: [UInt8] = []
            let bytes = Array(line.utf8)
            do {
                try bytes.withUnsafeBufferPointer { try JSONLText.extract($0, field: "text", into: &out) }
                return .success(String(decoding: out, as: UTF8.self))
            } catch let e as RecordProblem { return .failure(e) } catch { fatalError() }
        }
        XCTAssertEqual(try extract(#"{"id": 1, "meta": {"a": [1, 2.5e3, null, true]}, "text": "a\"b\\n\u4e2d\ud83d\ude00"}"#).get(), "a\"b\\n中😀")
        guard case .failure(let missing) = extract(#"{"id": 1}"#) else { return XCTFail() }
        XCTAssertEqual(missing, RecordProblem(field: "text", reason: "missing"))
        guard case .failure(let notString) = extract(#"{"text": 5}"#) else { return XCTFail() }
        XCTAssertEqual(notString.field, "text")
        for bad in [#"{"text": "\ud800"}"#, #"{"text": "x\udc00y"}"#, #"{"text": "x", "id": 01}"#, #"{"text": "x""#, #"{"text": "x"} trailing"#, "[1]", "", #"{"text": "x",}"#, #"{"a": tru, "text": "x"}"#] {
            guard case .failure(let p) = extract(bad) else { XCTFail("accepted \(bad)"); continue }
            XCTAssertNotNil(p.syntax, bad)
            XCTAssertFalse(p.reason.isEmpty)
        }
    }

    func testConfigValidation() throws {
        let config = try ConfigLoader.decode(TokenizerConfig.self, yaml: "vocab_size: 16000\npre_tokenizer: gpt4\n")
        XCTAssertEqual(config.vocabSize, 16000)
        XCTAssertEqual(config.preTokenizerKind, .gpt4)
        XCTAssertNoThrow(try config.validate())
        var bad = config
        bad.preTokenizer = "bert"
        XCTAssertThrowsError(try bad.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "pre_tokenizer") }
        bad = config
        bad.specialTokens = ["<|bos|>", "<|eos|>"]
        XCTAssertThrowsError(try bad.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "special_tokens") }
        XCTAssertThrowsError(try ConfigLoader.decode(TokenizerConfig.self, yaml: "vocab_sise: 10\n")) {
            XCTAssertEqual(($0 as? ConfigError)?.field, "vocab_sise")
        }
    }
}
