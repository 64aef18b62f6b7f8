import DaptCluster
import DaptCore
import DaptTokenizer
import Foundation
import XCTest
import DaptTestSupport

final class ShardTests: XCTestCase {
    func makeShards(_ texts: [String], extraLines: [String] = [], options: ShardEncoder.Options = .init(), tokenizer: BPETokenizer? = nil) throws -> (String, BPETokenizer, [String]) {
        let dir = try temporaryDirectory(self)
        let tok = try tokenizer ?? trainedOnFixtures()
        let input = dir + "/in.jsonl"
        try writeLines(jsonl(texts) + extraLines, to: input)
        let out = dir + "/shards"
        let encoder = ShardEncoder(tokenizer: tok, tokenizerJSON: Array(tok.jsonText().utf8), options: options)
        _ = try encoder.run(inputs: [input], output: out, communicator: SingleRankCommunicator(), sink: SilentSink())
        return (out, tok, [input])
    }

    /// Encoding fewer lines into the same folder leaves none of the earlier
    /// run's extra shards; a folder without the completion marker is not read.
    func testSecondRunLeavesNoShardOfTheFirst() throws {
        var options = ShardEncoder.Options()
        options.shardLines = 10
        let texts = Array(try Fixtures.texts("parity/lines.jsonl").prefix(35))
        let (out, tok, inputs) = try makeShards(texts, options: options)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/shard-00003.tokens"))
        try writeLines(jsonl(Array(texts.prefix(12))), to: inputs[0])
        let encoder = ShardEncoder(tokenizer: tok, tokenizerJSON: Array(tok.jsonText().utf8), options: options)
        _ = try encoder.run(inputs: inputs, output: out, communicator: SingleRankCommunicator(), sink: SilentSink())
        XCTAssertEqual(try FileSystem.list(out), [OutputPublisher.marker, "manifest.json", "shard-00000.index", "shard-00000.tokens",
                                                  "shard-00001.index", "shard-00001.tokens", "tokenizer.json"])
        XCTAssertEqual(try TokenShardReader(directory: out).documentCount, 12)
        FileSystem.remove(out + "/" + OutputPublisher.marker)
        XCTAssertThrowsError(try TokenShardReader(directory: out)) { XCTAssertEqual($0 as? PublishError, .incomplete(out)) }
    }

    /// Invalid UTF-8 in a text is a reject with its place, not bytes encoded as they are.
    func testInvalidUTF8IsRejectedNotEncoded() throws {
        var options = ShardEncoder.Options()
        options.strict = false
        let (out, _, inputs) = try makeShards(["a claim"], options: options)
        var bytes = Array("{\"text\": \"ok\"}\n{\"text\": \"bad ".utf8) + [0xFF, 0xFE] + Array("\"}\n".utf8)
        try Data(bytes).write(to: URL(fileURLWithPath: inputs[0]))
        let tok = try trainedOnFixtures()
        let manifest = try ShardEncoder(tokenizer: tok, tokenizerJSON: Array(tok.jsonText().utf8), options: options)
            .run(inputs: inputs, output: out, communicator: SingleRankCommunicator(), sink: SilentSink())
        XCTAssertEqual(manifest.documents, 1)
        XCTAssertEqual(manifest.rejected, 1)
        let rejects = try String(contentsOfFile: out + "/shard-00000.rejects.jsonl", encoding: .utf8)
        XCTAssertTrue(rejects.contains("\"error\":\"\(inputs[0]):2: text: invalid JSON at byte"), rejects)
        XCTAssertTrue(rejects.contains("invalid UTF-8"), rejects)
        bytes = []
    }

    func testDocumentsReadBackWithBoundaries() throws {
        let texts = Array(try Fixtures.texts("parity/lines.jsonl").prefix(250)) + ["", "<|user|>hi<|end|>"]
        var options = ShardEncoder.Options()
        options.shardLines = 40
        options.addBos = true
        let (out, tok, _) = try makeShards(texts, options: options)
        let reader = try TokenShardReader(directory: out)
        XCTAssertEqual(reader.documentCount, texts.count)
        XCTAssertEqual(reader.manifest.shards.count, (texts.count + 39) / 40)
        XCTAssertEqual(reader.manifest.tokenBytes, 2)
        var total = 0
        let bos = tok.id(of: "<|bos|>")!, eos = tok.id(of: "<|eos|>")!
        for (i, text) in texts.enumerated() {
            let doc = try reader.document(i)
            XCTAssertEqual(doc, [bos] + tok.encode(text) + [eos])
            XCTAssertEqual(try reader.documentLength(i), doc.count)
            XCTAssertEqual(try tok.decodeText(doc.dropFirst().dropLast()), text)
            total += doc.count
        }
        XCTAssertEqual(reader.tokenCount, total)
        XCTAssertEqual(reader.documentLengths(), try (0..<texts.count).map { try reader.documentLength($0) })
        var part: [UInt32] = []
        try reader.appendTokens(document: 7, range: 1..<3, to: &part)
        XCTAssertEqual(part, Array(try reader.document(7)[1..<3]))
        XCTAssertThrowsError(try reader.appendTokens(document: 7, range: 0..<10_000, to: &part))
        XCTAssertThrowsError(try reader.document(texts.count)) {
            XCTAssertEqual($0 as? TokenShardError, .documentOutOfRange(texts.count, count: texts.count))
        }
        XCTAssertEqual(try reader.tokenizer().jsonText(), tok.jsonText())
        // Language figures: the fixture lines are mostly Chinese, with English lines.
        let s = reader.manifest.languages
        XCTAssertGreaterThan(s.documents[0], 50)
        XCTAssertGreaterThan(s.documents[1], 10)
        XCTAssertEqual(s.documents.reduce(0, +), Int64(texts.count))
        XCTAssertEqual(s.tokens.reduce(0, +), Int64(total - 2 * texts.count))
    }

    func testCorruptShardsAreReportedWithTheFile() throws {
        let texts = Array(try Fixtures.texts("parity/lines.jsonl").prefix(60))
        var options = ShardEncoder.Options()
        options.shardLines = 25
        let (out, _, _) = try makeShards(texts, options: options)
        let tokensPath = out + "/shard-00001.tokens"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: tokensPath))
        bytes[10] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: tokensPath))
        XCTAssertNoThrow(try TokenShardReader(directory: out, verify: false))
        XCTAssertThrowsError(try TokenShardReader(directory: out)) { error in
            guard case .checksumMismatch(let file, _, _) = error as? TokenShardError else { return XCTFail("\(error)") }
            XCTAssertEqual(file, tokensPath)
        }
        bytes.removeLast(2)
        try bytes.write(to: URL(fileURLWithPath: tokensPath))
        XCTAssertThrowsError(try TokenShardReader(directory: out, verify: false)) { error in
            guard case .sizeMismatch(let file, let expected, let actual) = error as? TokenShardError else { return XCTFail("\(error)") }
            XCTAssertEqual(file, tokensPath)
            XCTAssertEqual(expected - actual, 2)
            XCTAssertTrue("\(error)".contains("shard-00001.tokens"))
        }
        // A manifest whose totals do not add up.
        let manifestPath = out + "/manifest.json"
        let text = try String(contentsOfFile: manifestPath, encoding: .utf8)
        try text.replacingOccurrences(of: "\"documents\": 60,", with: "\"documents\": 61,").write(toFile: manifestPath, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TokenShardReader(directory: out, verify: false)) {
            XCTAssertEqual(($0 as? TokenShardError).map { "\($0)" }, "manifest.json: documents: says 61 but the shards add up to 60")
        }
    }

    /// A bad index or an id outside the vocabulary is found even when the
    /// manifest's checksums were updated to match (a file from another run).
    func testBadIndexAndOutOfRangeTokensAreFound() throws {
        let texts = Array(try Fixtures.texts("parity/lines.jsonl").prefix(20))
        let (out, tok, _) = try makeShards(texts)
        let manifestPath = out + "/manifest.json"
        let original = try String(contentsOfFile: manifestPath, encoding: .utf8)
        func replaceFile(_ name: String, _ edit: (inout [UInt8]) -> Void) throws {
            let path = out + "/" + name
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            let before = bytes.withUnsafeBytes { StableHash.xxh64($0) }
            edit(&bytes)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let after = bytes.withUnsafeBytes { StableHash.xxh64($0) }
            func hex(_ v: UInt64) -> String { let s = String(v, radix: 16); return String(repeating: "0", count: 16 - s.count) + s }
            try original.replacingOccurrences(of: hex(before), with: hex(after)).write(toFile: manifestPath, atomically: true, encoding: .utf8)
        }
        try replaceFile("shard-00000.tokens") { $0[4] = 0xFF; $0[5] = 0xFF }   // token 2 becomes 65535
        XCTAssertThrowsError(try TokenShardReader(directory: out)) { error in
            XCTAssertEqual(error as? TokenShardError, .tokenOutOfRange(file: out + "/shard-00000.tokens", offset: 4, id: 65535, vocabSize: tok.vocabSize))
        }
        try original.write(toFile: manifestPath, atomically: true, encoding: .utf8)
        try replaceFile("shard-00000.index") { bytes in
            // Offsets of documents 3 and 4 swapped: not monotonic.
            for k in 0..<8 { bytes.swapAt(24 + k, 32 + k) }
        }
        XCTAssertThrowsError(try TokenShardReader(directory: out, verify: false)) { error in
            guard case .invalidIndex(let file, let entry, _) = error as? TokenShardError else { return XCTFail("\(error)") }
            XCTAssertEqual(file, out + "/shard-00000.index")
            XCTAssertEqual(entry, 4)
        }
    }

    func testStrictModeNamesFileAndLine() throws {
        XCTAssertThrowsError(try makeShards(["a", "b"], extraLines: [#"{"id": "x"}"#])) { error in
            guard let e = error as? FirstBadRecord else { return XCTFail("\(error)") }
            XCTAssertTrue(e.message.hasSuffix("in.jsonl:3: text: missing"), e.message)
        }
    }

    /// Not strict: bad lines go to the rejects file with their reason, and
    /// documents + rejected = lines.
    func testRejectsAreKeptAndCounted() throws {
        var options = ShardEncoder.Options()
        options.strict = false
        options.shardLines = 3
        let (out, _, _) = try makeShards(["a", "b"], extraLines: [#"{"id": "x"}"#, "not json", #"{"text": "ok"}"#], options: options)
        let reader = try TokenShardReader(directory: out)
        XCTAssertEqual(reader.manifest.lines, 5)
        XCTAssertEqual(reader.documentCount, 3)
        XCTAssertEqual(reader.manifest.rejected, 2)
        let rejects = try String(contentsOfFile: out + "/shard-00000.rejects.jsonl", encoding: .utf8)
            + String(contentsOfFile: out + "/shard-00001.rejects.jsonl", encoding: .utf8)
        XCTAssertTrue(rejects.contains(#""line":3"#) && rejects.contains(#""field":"text""#), rejects)
        XCTAssertTrue(rejects.contains(#""line":4"#) && rejects.contains("invalid JSON"), rejects)
    }

    /// Blank lines are skipped and counted, not rejected (and not fatal under
    /// strict, the default); the manifest's counts reconcile.
    func testBlankLinesAreSkippedAndCounted() throws {
        var options = ShardEncoder.Options()
        options.shardLines = 2
        let (out, tok, _) = try makeShards(["a", "b"], extraLines: ["", "  \t", #"{"text": "c"}"#], options: options)
        let reader = try TokenShardReader(directory: out)
        XCTAssertEqual(reader.manifest.lines, 5)
        XCTAssertEqual(reader.manifest.blankLines, 2)
        XCTAssertEqual(reader.manifest.rejected, 0)
        XCTAssertEqual(reader.documentCount, 3)
        XCTAssertEqual(try tok.decodeText(reader.document(2).dropLast()), "c")
        XCTAssertEqual(reader.manifest.shards.map(\.blankLines), [0, 2, 0])
    }

    func testWideVocabularyUsesUInt32() throws {
        var vocab = (0..<256).map { (bytes: [UInt8($0)], id: UInt32($0)) }
        vocab.append((Array("ab".utf8), 70_000))
        let tok = try BPETokenizer(vocab: vocab, merges: [(97, 98)], added: [AddedToken(id: 70_001, content: "<|eos|>")], preTokenizer: .dapt)
        let (out, _, _) = try makeShards(["abab", "xab"], tokenizer: tok)
        let reader = try TokenShardReader(directory: out)
        XCTAssertEqual(reader.manifest.tokenBytes, 4)
        XCTAssertEqual(try reader.document(0), [70_000, 70_000, 70_001])
        XCTAssertEqual(try reader.document(1), [120, 70_000, 70_001])
    }
}
