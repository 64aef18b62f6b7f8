import Foundation
import XCTest

/// `dapt prepare` under real mpirun: 1, 2 and 4 ranks give byte-identical
/// merged output, rejects and summary, and the shards match the manifest.
final class PrepareMultiRankTests: XCTestCase {
    struct Manifest: Decodable {
        struct Shard: Decodable { var file: String; var fragments: Int; var bytes: Int; var sha1: String }
        var ranks: Int
        var records: Int
        var patents: Int
        var rejects: Int
        var shards: [Shard]
    }

    /// The sample corpus plus bad records, so rejects cross rank boundaries too.
    func makeInput(_ dir: URL) throws -> [String] {
        let root = DaptProcess.repositoryRoot.path
        let sample = try String(contentsOfFile: root + "/data/sample/patents.jsonl", encoding: .utf8)
        var lines = sample.split(separator: "\n").map(String.init)
        lines.insert("{broken", at: 5)
        lines.insert(#"{"patent":"CN0","text":"没有步骤。"}"#, at: 17)
        lines.insert("", at: 20)
        let input = dir.appendingPathComponent("patents.jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: input, atomically: true, encoding: .utf8)
        return [input.path, root + "/data/sample/texts"]
    }

    func prepare(np: Int, inputs: [String], out: URL) throws -> Manifest {
        var args = ["prepare", "--output", out.path, "--merge", "--max-tokens", "64", "--overlap-tokens", "16"]
        for input in inputs { args += ["--input", input] }
        let result = try DaptProcess.mpirun(np: np, args, timeout: 120)
        XCTAssertEqual(result.status, 0, result.report)
        XCTAssertTrue(result.stdout.contains("check: records in 32 = patents 30 + rejects 2: ok"), result.report)
        XCTAssertTrue(result.stdout.contains("on \(np) rank"), result.report)
        let manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: out.appendingPathComponent("manifest.json")))
        XCTAssertEqual(manifest.ranks, np)
        XCTAssertEqual(manifest.shards.map(\.file), (0..<np).map { String(format: "fragments-%04d-of-%04d.jsonl", $0, np) })
        for shard in manifest.shards {
            let data = try Data(contentsOf: out.appendingPathComponent(shard.file))
            XCTAssertEqual(data.count, shard.bytes)
            XCTAssertEqual(data.split(separator: 0x0A).count, shard.fragments)
            XCTAssertEqual(try sha1sum(out.appendingPathComponent(shard.file)), shard.sha1)
        }
        if np > 1 { XCTAssertGreaterThan(manifest.shards.filter { $0.fragments > 0 }.count, 1, "work is split") }
        return manifest
    }

    func sha1sum(_ file: URL) throws -> String {
        let result = try DaptProcess.run("/usr/bin/sha1sum", [file.path], timeout: 30)
        return String(result.stdout.prefix(40))
    }

    func testOneTwoAndFourRanksGiveIdenticalOutput() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let inputs = try makeInput(dir)
        var reference: [String: Data] = [:]
        for np in [1, 2, 4] {
            let out = dir.appendingPathComponent("out\(np)")
            let manifest = try prepare(np: np, inputs: inputs, out: out)
            XCTAssertEqual(manifest.records, 32, "the blank line is not a record")
            XCTAssertEqual(manifest.rejects, 2)
            for name in ["fragments.jsonl", "rejects.jsonl", "summary.json"] {
                let data = try Data(contentsOf: out.appendingPathComponent(name))
                if let ref = reference[name] {
                    XCTAssertEqual(data, ref, "\(name) differs between 1 and \(np) ranks")
                } else {
                    XCTAssertFalse(data.isEmpty, name)
                    reference[name] = data
                }
            }
            // The merged file is the shards concatenated in rank order.
            let shards = try manifest.shards.map { try Data(contentsOf: out.appendingPathComponent($0.file)) }.reduce(Data(), +)
            XCTAssertEqual(shards, reference["fragments.jsonl"])
        }
        // A 4-rank run merged afterwards with --merge-only gives the same file.
        let out = dir.appendingPathComponent("out4")
        try FileManager.default.removeItem(at: out.appendingPathComponent("fragments.jsonl"))
        let merged = try DaptProcess.dapt(["prepare", "--merge-only", out.appendingPathComponent("manifest.json").path])
        XCTAssertEqual(merged.status, 0, merged.report)
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("fragments.jsonl")), reference["fragments.jsonl"])
    }

    func testStrictFailsTheJobWithFileAndLine() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let inputs = try makeInput(dir)
        var args = ["prepare", "--output", dir.appendingPathComponent("out").path, "--strict"]
        for input in inputs { args += ["--input", input] }
        // Later ranks hold other bad records (line 18 has no steps); all ranks
        // agree that line 6 is the first in input order, printed once.
        for np in [2, 4] {
            let result = try DaptProcess.mpirun(np: np, args, timeout: 120)
            XCTAssertNotEqual(result.status, 0, result.report)
            XCTAssertEqual(result.stderr.components(separatedBy: "patents.jsonl:6: malformed JSON").count - 1, 1, result.report)
            XCTAssertFalse(result.stderr.contains("patents.jsonl:18"), result.report)
        }
    }

    func testMissingTokenizerFileFailsClearly() throws {
        let sample = DaptProcess.repositoryRoot.appendingPathComponent("data/sample/patents.jsonl").path
        let result = try DaptProcess.dapt(["prepare", "--input", sample, "--tokenizer", "no-such-tokenizer.json"])
        XCTAssertEqual(result.status, 2, result.report)
        XCTAssertTrue(result.stderr.contains("no-such-tokenizer.json"), result.report)
    }

    /// With a trained tokenizer the budget is counted exactly: every fragment,
    /// encoded on its own, stays within it (a token or two of slack for BPE
    /// seeing a cut edge differently), and the cuts differ from the estimate's.
    func testExactCountsWithATrainedTokenizer() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let sample = DaptProcess.repositoryRoot.appendingPathComponent("data/sample/patents.jsonl").path
        let first = dir.appendingPathComponent("first").path
        let prepared = try DaptProcess.dapt(["prepare", "--input", sample, "--output", first, "--merge"])
        XCTAssertEqual(prepared.status, 0, prepared.report)
        let tokenizer = dir.appendingPathComponent("tokenizer.json").path
        let trained = try DaptProcess.dapt(["tokenizer", "train", "--input", "\(first)/fragments.jsonl", "--output", tokenizer, "--vocab-size", "800"])
        XCTAssertEqual(trained.status, 0, trained.report)

        let budget = 48
        var outputs: [String: String] = [:]
        for mode in ["estimate", "exact"] {
            let out = dir.appendingPathComponent(mode).path
            var args = ["prepare", "--input", sample, "--output", out, "--merge", "--max-tokens", "\(budget)", "--overlap-tokens", "8"]
            if mode == "exact" { args += ["--tokenizer", tokenizer] }
            let result = try DaptProcess.dapt(args)
            XCTAssertEqual(result.status, 0, result.report)
            outputs[mode] = try String(contentsOfFile: "\(out)/fragments.jsonl", encoding: .utf8)
        }
        XCTAssertNotEqual(outputs["estimate"], outputs["exact"])
        let ids = dir.appendingPathComponent("ids.txt").path
        let encoded = try DaptProcess.dapt(["tokenizer", "tokenize", "--tokenizer", tokenizer,
                                            "--input", dir.appendingPathComponent("exact/fragments.jsonl").path, "--output", ids])
        XCTAssertEqual(encoded.status, 0, encoded.report)
        let counts = try String(contentsOfFile: ids, encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ").count }
        XCTAssertGreaterThan(counts.count, 100)
        XCTAssertLessThanOrEqual(counts.max() ?? 0, budget + 2, "a fragment over the budget")
        XCTAssertGreaterThan(counts.max() ?? 0, budget / 2, "fragments should fill the budget")
    }

    /// The shipped config is valid and names the bundled sample.
    func testShippedConfigValidates() throws {
        let config = DaptProcess.repositoryRoot.appendingPathComponent("configs/prepare.yaml").path
        let result = try DaptProcess.dapt(["config", "validate", "--config", config])
        XCTAssertEqual(result.status, 0, result.report)
        let text = try String(contentsOfFile: config, encoding: .utf8)
        XCTAssertTrue(text.contains("data/sample/patents.jsonl") && text.contains("out/prepare"))
        let bad = try DaptProcess.dapt(["prepare", "--config", config, "--overlap-tokens", "300"])
        XCTAssertEqual(bad.status, 2, bad.report)
        XCTAssertTrue(bad.stderr.contains("prepare.overlap_tokens"), bad.report)
    }
}
