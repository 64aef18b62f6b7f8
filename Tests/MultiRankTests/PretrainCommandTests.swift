import Foundation
import XCTest

/// `dapt pretrain` and `dapt eval ppl` as a user runs them.
final class PretrainCommandTests: XCTestCase {
    static let tiny = [
        "--set", "model.hidden_size=32", "--set", "model.intermediate_size=64", "--set", "model.num_hidden_layers=2",
        "--set", "model.num_attention_heads=4", "--set", "data.sequence_length=32", "--set", "data.micro_batch_size=2",
        "--set", "data.global_batch_size=4", "--set", "optimizer.lr=5e-3", "--set", "eval.sequences=4",
        "--set", "eval.every_steps=2", "--set", "data.held_out_fraction=0.05",
    ]

    /// `count` documents of 20 words, each drawn uniformly from 12 by a seeded generator.
    static func documents(seed: UInt64, count: Int) -> [String] {
        let words = ["claim", "device", "signal", "layer", "method", "first", "second", "wherein", "circuit", "电路", "装置", "信号"]
        var lines: [String] = []
        var state = seed
        for _ in 0..<count {
            var text: [String] = []
            for _ in 0..<20 { state = state &* 6364136223846793005 &+ 1442695040888963407; text.append(words[Int(state >> 33) % words.count]) }
            lines.append("{\"text\": \"\(text.joined(separator: " "))\"}")
        }
        return lines
    }

    func prepare(_ dir: URL) throws -> (corpus: String, shards: String) { try Self.prepare(dir) }

    /// A JSONL corpus and its token shards.
    static func prepare(_ dir: URL) throws -> (corpus: String, shards: String) {
        let lines = Self.documents(seed: 7, count: 300)
        let corpus = dir.appendingPathComponent("corpus.jsonl").path
        try (lines.joined(separator: "\n") + "\n").write(toFile: corpus, atomically: true, encoding: .utf8)
        let tok = dir.appendingPathComponent("tokenizer.json").path
        let shards = dir.appendingPathComponent("tokens").path
        let t = try DaptProcess.dapt(["tokenizer", "train", "--input", corpus, "--vocab-size", "300", "--output", tok])
        XCTAssertEqual(t.status, 0, t.report)
        let e = try DaptProcess.dapt(["tokenizer", "encode", "--tokenizer", tok, "--input", corpus, "--output", shards])
        XCTAssertEqual(e.status, 0, e.report)
        return (corpus, shards)
    }

    struct Line: Decodable, Equatable {
        var step: Int; var loss: Double?; var lr: Double?; var grad_norm: Double?; var eval_loss: Double?; var loss_scale: Double?
    }

    func metrics(_ run: String) throws -> [Line] { try Self.metrics(run) }

    static func metrics(_ run: String) throws -> [Line] {
        try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder().decode(Line.self, from: Data($0.utf8))
        }
    }

    /// 6 steps straight vs 3 steps, stop, --resume, 3 more: the same loss
    /// curve and byte-identical weights.
    func testResumeGivesIdenticalRun() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (corpus, shards) = try prepare(dir)
        let a = dir.appendingPathComponent("a").path, b = dir.appendingPathComponent("b").path
        let straight = try DaptProcess.dapt(["pretrain", "--input", shards, "--output", a, "--steps", "6"] + Self.tiny)
        XCTAssertEqual(straight.status, 0, straight.report)
        XCTAssertTrue(straight.stderr.contains("step 6/6  loss"), straight.report)
        XCTAssertTrue(straight.stderr.contains("tokens/s") && straight.stderr.contains("ETA") && straight.stderr.contains("grad_norm"), straight.report)
        let first = try DaptProcess.dapt(["pretrain", "--input", shards, "--output", b, "--steps", "6", "--stop-after", "3"] + Self.tiny)
        XCTAssertEqual(first.status, 0, first.report)
        XCTAssertFalse(first.stderr.contains("step 4/6"), first.report)
        // No config and no settings: the checkpoint's own are used.
        let second = try DaptProcess.dapt(["pretrain", "--resume", b])
        XCTAssertEqual(second.status, 0, second.report)
        XCTAssertTrue(second.stderr.contains("resumed from \(b)/checkpoint-00000003 at step 3"), second.report)
        let ma = try metrics(a), mb = try metrics(b)
        XCTAssertEqual(ma.map(\.step), [0, 1, 2, 3, 4, 5, 6])
        XCTAssertEqual(ma, mb)
        let wa = try Data(contentsOf: URL(fileURLWithPath: a + "/checkpoint-00000006/model.safetensors"))
        let wb = try Data(contentsOf: URL(fileURLWithPath: b + "/checkpoint-00000006/model.safetensors"))
        XCTAssertEqual(wa, wb)
        XCTAssertTrue(FileManager.default.fileExists(atPath: a + "/loss_curve.svg"))

        // Perplexity of the checkpoint on the JSONL text and on the shards.
        let onText = try DaptProcess.dapt(["eval", "ppl", "--checkpoint", a, "--input", corpus, "--sequence-length", "32"])
        XCTAssertEqual(onText.status, 0, onText.report)
        let onShards = try DaptProcess.dapt(["eval", "ppl", "--checkpoint", a + "/checkpoint-00000006", "--input", shards, "--sequence-length", "32"])
        XCTAssertEqual(onShards.status, 0, onShards.report)
        // JSONL is tokenised with the checkpoint's tokenizer as the shards were: same figure.
        XCTAssertEqual(onText.stdout.split(separator: " ").prefix(2), onShards.stdout.split(separator: " ").prefix(2), "\(onText.report)\n\(onShards.report)")

        // A corrupted checkpoint is refused, naming the file.
        let weights = a + "/checkpoint-00000006/model.safetensors"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: weights))
        bytes[bytes.count - 1] ^= 1
        try bytes.write(to: URL(fileURLWithPath: weights))
        let bad = try DaptProcess.dapt(["eval", "ppl", "--checkpoint", a, "--input", corpus])
        XCTAssertNotEqual(bad.status, 0, bad.report)
        XCTAssertTrue(bad.stderr.contains("model.safetensors: checksum"), bad.report)
    }

    func perplexity(_ result: DaptProcess.Result) throws -> Double {
        XCTAssertEqual(result.status, 0, result.report)
        return try XCTUnwrap(Double(result.stdout.split(separator: " ").dropFirst().first ?? ""), result.report)
    }

    /// Perplexity on documents the model never saw, against a bound an
    /// untrained model misses. The words are i.i.d. uniform over 12, so no
    /// model gets far below 12; uniform over the 300-token vocabulary is 300.
    func testHeldOutPerplexityBeatsAnUntrainedModel() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try prepare(dir)
        let heldOut = dir.appendingPathComponent("held-out.jsonl").path
        try (Self.documents(seed: 1_234_567, count: 40).joined(separator: "\n") + "\n").write(toFile: heldOut, atomically: true, encoding: .utf8)
        let trained = dir.appendingPathComponent("trained").path, untrained = dir.appendingPathComponent("untrained").path
        let t = try DaptProcess.dapt(["pretrain", "--input", shards, "--output", trained, "--steps", "20"] + Self.tiny)
        XCTAssertEqual(t.status, 0, t.report)
        let u = try DaptProcess.dapt(["pretrain", "--input", shards, "--output", untrained, "--steps", "20", "--stop-after", "0"] + Self.tiny)
        XCTAssertEqual(u.status, 0, u.report)
        let bound = 60.0
        let pTrained = try perplexity(try DaptProcess.dapt(["eval", "ppl", "--checkpoint", trained, "--input", heldOut, "--sequence-length", "32"]))
        let pUntrained = try perplexity(try DaptProcess.dapt(["eval", "ppl", "--checkpoint", untrained + "/checkpoint-00000000", "--input", heldOut, "--sequence-length", "32"]))
        XCTAssertLessThan(pTrained, bound, "trained for 20 steps")
        XCTAssertGreaterThan(pTrained, 8, "below the words' own entropy: the evaluation sees what it predicts")
        XCTAssertGreaterThan(pUntrained, bound, "the bound tells an untrained model apart")
    }

    /// A fresh run into a directory that holds a run is refused, naming the
    /// directory and both ways out; --overwrite replaces the older, longer run whole.
    func testExistingRunIsRefusedUnlessOverwritten() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try prepare(dir)
        let run = dir.appendingPathComponent("run").path
        let first = try DaptProcess.dapt(["pretrain", "--input", shards, "--output", run, "--steps", "4", "--set", "checkpoint.every_steps=1"] + Self.tiny)
        XCTAssertEqual(first.status, 0, first.report)
        let metricsBefore = try metrics(run)
        let again = try DaptProcess.dapt(["pretrain", "--input", shards, "--output", run, "--steps", "2"] + Self.tiny)
        XCTAssertNotEqual(again.status, 0, again.report)
        XCTAssertTrue(again.stderr.contains("\(run) already holds a run") && again.stderr.contains("--resume") && again.stderr.contains("--overwrite"), again.report)
        XCTAssertEqual(try metrics(run), metricsBefore)
        let replaced = try DaptProcess.dapt(["pretrain", "--input", shards, "--output", run, "--steps", "2", "--overwrite"] + Self.tiny)
        XCTAssertEqual(replaced.status, 0, replaced.report)
        XCTAssertEqual(try metrics(run).map(\.step), [0, 1, 2])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: run).filter { $0.hasPrefix("checkpoint-") }, ["checkpoint-00000002"])
    }

    /// What eval and resume must not accept: a checkpoint without its
    /// manifest, shards of another tokenizer, a folder that is not a model.
    func testEvalRefusesWhatItCannotCheck() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (corpus, shards) = try prepare(dir)
        let run = dir.appendingPathComponent("run").path
        let r = try DaptProcess.dapt(["pretrain", "--input", shards, "--output", run, "--steps", "2"] + Self.tiny)
        XCTAssertEqual(r.status, 0, r.report)
        let checkpoint = run + "/checkpoint-00000002"

        // Another tokenizer (trained on the words reversed), the same corpus encoded with it.
        let reversed = dir.appendingPathComponent("reversed.jsonl").path
        let reversedLines = try String(contentsOfFile: corpus, encoding: .utf8).split(separator: "\n").map { line -> String in
            let text = line.dropFirst(10).dropLast(2)
            return "{\"text\": \"\(String(text.reversed()))\"}"
        }
        try (reversedLines.joined(separator: "\n") + "\n").write(toFile: reversed, atomically: true, encoding: .utf8)
        let otherTokenizer = dir.appendingPathComponent("other.json").path, otherShards = dir.appendingPathComponent("other-tokens").path
        let trained = try DaptProcess.dapt(["tokenizer", "train", "--input", reversed, "--vocab-size", "300", "--output", otherTokenizer])
        XCTAssertEqual(trained.status, 0, trained.report)
        let encoded = try DaptProcess.dapt(["tokenizer", "encode", "--tokenizer", otherTokenizer, "--input", corpus, "--output", otherShards])
        XCTAssertEqual(encoded.status, 0, encoded.report)
        let mismatch = try DaptProcess.dapt(["eval", "ppl", "--checkpoint", run, "--input", otherShards, "--sequence-length", "32"])
        XCTAssertNotEqual(mismatch.status, 0, mismatch.report)
        XCTAssertTrue(mismatch.stderr.contains("tokenizer mismatch") && mismatch.stderr.contains(otherShards) && mismatch.stderr.contains(checkpoint + "/tokenizer.json"), mismatch.report)
        XCTAssertEqual(mismatch.stdout, "", mismatch.report)
        let resumeOther = try DaptProcess.dapt(["pretrain", "--resume", run, "--input", otherShards, "--steps", "4"])
        XCTAssertNotEqual(resumeOther.status, 0, resumeOther.report)
        XCTAssertTrue(resumeOther.stderr.contains("tokenizer mismatch"), resumeOther.report)

        // A folder with a config.json that is not a Llama config.
        let foreign = dir.appendingPathComponent("foreign").path
        try FileManager.default.createDirectory(atPath: foreign, withIntermediateDirectories: true)
        try "{\"hidden_size\": \"wide\"}".write(toFile: foreign + "/config.json", atomically: true, encoding: .utf8)
        let notLlama = try DaptProcess.dapt(["eval", "ppl", "--checkpoint", foreign, "--input", shards])
        XCTAssertNotEqual(notLlama.status, 0, notLlama.report)
        XCTAssertTrue(notLlama.stderr.contains(foreign + "/config.json: hidden_size:"), notLlama.report)
        XCTAssertFalse(notLlama.stderr.contains("CodingKeys"), notLlama.report)

        // The manifest deleted: not a checkpoint any more.
        try FileManager.default.removeItem(atPath: checkpoint + "/manifest.json")
        let noManifest = try DaptProcess.dapt(["eval", "ppl", "--checkpoint", checkpoint, "--input", shards, "--sequence-length", "32"])
        XCTAssertNotEqual(noManifest.status, 0, noManifest.report)
        XCTAssertTrue(noManifest.stderr.contains(checkpoint) && noManifest.stderr.contains("manifest.json"), noManifest.report)
        XCTAssertEqual(noManifest.stdout, "", noManifest.report)
    }

    func testBadSettingsNameTheField() throws {
        let r = try DaptProcess.dapt(["pretrain", "--input", "/nonexistent", "--set", "optimizer.lr=-1"])
        XCTAssertEqual(r.status, 2, r.report)
        XCTAssertTrue(r.stderr.contains("pretrain.optimizer.lr: must be > 0"), r.report)
        let nan = try DaptProcess.dapt(["pretrain", "--input", "/nonexistent", "--set", "optimizer.lr=nan"])
        XCTAssertEqual(nan.status, 2, nan.report)
        XCTAssertTrue(nan.stderr.contains("pretrain.optimizer.lr: must be a finite number"), nan.report)
        let long = try DaptProcess.dapt(["pretrain", "--input", "/nonexistent", "--set", "data.sequence_length=4096"])
        XCTAssertEqual(long.status, 2, long.report)
        XCTAssertTrue(long.stderr.contains("pretrain.data.sequence_length: 4096 exceeds model.max_position_embeddings (2048)"), long.report)
        let typo = try DaptProcess.dapt(["pretrain", "--set", "optimizer.learning_rate=1"])
        XCTAssertEqual(typo.status, 2, typo.report)
        XCTAssertTrue(typo.stderr.contains("learning_rate"), typo.report)
    }

    /// SIGKILL while the run writes a checkpoint every step: every
    /// checkpoint left behind verifies, and the run resumes from the newest.
    func testKilledRunLeavesLoadableCheckpoints() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try prepare(dir)
        let run = dir.appendingPathComponent("run").path
        let args = ["pretrain", "--input", shards, "--output", run, "--steps", "500", "--set", "checkpoint.every_steps=1", "--set", "checkpoint.keep_last=2"] + Self.tiny
        let killed = try DaptProcess.run(DaptProcess.binary, args, timeout: 120) { process in
            let deadline = Date().addingTimeInterval(100)
            while Date() < deadline {
                if FileManager.default.fileExists(atPath: run + "/checkpoint-00000004") { break }
                Thread.sleep(forTimeInterval: 0.005)
            }
            // A random extra delay lands the kill in different phases of a save across runs.
            Thread.sleep(forTimeInterval: Double.random(in: 0...0.05))
            kill(process.processIdentifier, SIGKILL)
        }
        XCTAssertEqual(killed.status, SIGKILL, killed.report)
        let names = try FileManager.default.contentsOfDirectory(atPath: run).filter { $0.hasPrefix("checkpoint-") }.sorted()
        XCTAssertFalse(names.isEmpty)
        for name in names {
            let r = try DaptProcess.dapt(["eval", "ppl", "--checkpoint", run + "/" + name, "--input", shards, "--sequence-length", "32", "--max-sequences", "2"])
            XCTAssertEqual(r.status, 0, "\(name): \(r.report)")
        }
        // Resume to a few steps past the newest checkpoint: how far the run got before
        // the kill depends on the machine, so the target is taken from what is there.
        let newest = try XCTUnwrap(names.compactMap { Int($0.dropFirst("checkpoint-".count)) }.max())
        let target = newest + 4
        let resumed = try DaptProcess.dapt(args.map { $0 == "500" ? String(target) : $0 } + ["--resume", run])
        XCTAssertEqual(resumed.status, 0, resumed.report)
        XCTAssertTrue(resumed.stderr.contains("step \(target)/\(target)"), resumed.report)
    }
}
