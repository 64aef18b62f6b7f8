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

    /// A JSONL corpus and its token shards.
    func prepare(_ dir: URL) throws -> (corpus: String, shards: String) {
        let words = ["claim", "device", "signal", "layer", "method", "first", "second", "wherein", "circuit", "电路", "装置", "信号"]
        var lines: [String] = []
        var state: UInt64 = 7
        for _ in 0..<300 {
            var text: [String] = []
            for _ in 0..<20 { state = state &* 6364136223846793005 &+ 1442695040888963407; text.append(words[Int(state >> 33) % words.count]) }
            lines.append("{\"text\": \"\(text.joined(separator: " "))\"}")
        }
        let corpus = dir.appendingPathComponent("corpus.jsonl").path
        try (lines.joined(separator: "\n") + "\n").write(toFile: corpus, atomically: true, encoding: .utf8)
        let tok = dir.appendingPathComponent("tokenizer.json").path
        let shards = dir.appendingPathComponent("tokens").path
        let t = try DaptProcess.dapt(["tokenizer", "train", "--input", corpus, "--vocab-size", "300", "--output", tok])
        XCTAssertEqual(t.status, 0, t.stderr)
        let e = try DaptProcess.dapt(["tokenizer", "encode", "--tokenizer", tok, "--input", corpus, "--output", shards])
        XCTAssertEqual(e.status, 0, e.stderr)
        return (corpus, shards)
    }

    struct Line: Decodable, Equatable {
        var step: Int; var loss: Double?; var lr: Double?; var grad_norm: Double?; var eval_loss: Double?
    }

    func metrics(_ run: String) throws -> [Line] {
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
        let straight = try DaptProcess.dapt(["pretrain", "--shards", shards, "--output", a, "--steps", "6"] + Self.tiny)
        XCTAssertEqual(straight.status, 0, straight.stderr)
        XCTAssertTrue(straight.stderr.contains("step 6/6  loss"), straight.stderr)
        XCTAssertTrue(straight.stderr.contains("tokens/s") && straight.stderr.contains("ETA") && straight.stderr.contains("grad_norm"))
        let first = try DaptProcess.dapt(["pretrain", "--shards", shards, "--output", b, "--steps", "6", "--stop-after", "3"] + Self.tiny)
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertFalse(first.stderr.contains("step 4/6"))
        let second = try DaptProcess.dapt(["pretrain", "--shards", shards, "--output", b, "--steps", "6", "--resume", b] + Self.tiny)
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertTrue(second.stderr.contains("resumed from \(b)/checkpoint-00000003 at step 3"), second.stderr)
        let ma = try metrics(a), mb = try metrics(b)
        XCTAssertEqual(ma.map(\.step), [0, 1, 2, 3, 4, 5, 6])
        XCTAssertEqual(ma, mb)
        let wa = try Data(contentsOf: URL(fileURLWithPath: a + "/checkpoint-00000006/model.safetensors"))
        let wb = try Data(contentsOf: URL(fileURLWithPath: b + "/checkpoint-00000006/model.safetensors"))
        XCTAssertEqual(wa, wb)
        XCTAssertTrue(FileManager.default.fileExists(atPath: a + "/loss_curve.svg"))

        // Perplexity of the checkpoint on the JSONL text and on the shards.
        let onText = try DaptProcess.dapt(["eval", "ppl", "--checkpoint", a, "--input", corpus, "--sequence-length", "32"])
        XCTAssertEqual(onText.status, 0, onText.stderr)
        let onShards = try DaptProcess.dapt(["eval", "ppl", "--checkpoint", a + "/checkpoint-00000006", "--input", shards, "--sequence-length", "32"])
        XCTAssertEqual(onShards.status, 0, onShards.stderr)
        // JSONL is tokenised with the checkpoint's tokenizer as the shards were: same figure.
        XCTAssertEqual(onText.stdout.split(separator: " ").prefix(2), onShards.stdout.split(separator: " ").prefix(2))
        let ppl = try XCTUnwrap(Double(onText.stdout.split(separator: " ")[1]))
        XCTAssertLessThan(ppl, 300, "better than uniform over the vocabulary")

        // A corrupted checkpoint is refused, naming the file.
        let weights = a + "/checkpoint-00000006/model.safetensors"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: weights))
        bytes[bytes.count - 1] ^= 1
        try bytes.write(to: URL(fileURLWithPath: weights))
        let bad = try DaptProcess.dapt(["eval", "ppl", "--checkpoint", a, "--input", corpus])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("model.safetensors: checksum"), bad.stderr)
    }

    func testBadSettingsNameTheField() throws {
        let r = try DaptProcess.dapt(["pretrain", "--shards", "/nonexistent", "--set", "optimizer.lr=-1"])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stderr.contains("pretrain.optimizer.lr: must be > 0"), r.stderr)
        let typo = try DaptProcess.dapt(["pretrain", "--set", "optimizer.learning_rate=1"])
        XCTAssertEqual(typo.status, 2)
        XCTAssertTrue(typo.stderr.contains("learning_rate"), typo.stderr)
    }

    /// SIGKILL while the run writes a checkpoint every step: every
    /// checkpoint left behind verifies, and the run resumes from the newest.
    func testKilledRunLeavesLoadableCheckpoints() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let (_, shards) = try prepare(dir)
        let run = dir.appendingPathComponent("run").path
        let args = ["pretrain", "--shards", shards, "--output", run, "--steps", "500", "--set", "checkpoint.every_steps=1", "--set", "checkpoint.keep_last=2"] + Self.tiny
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
        XCTAssertEqual(killed.status, SIGKILL)
        let names = try FileManager.default.contentsOfDirectory(atPath: run).filter { $0.hasPrefix("checkpoint-") }.sorted()
        XCTAssertFalse(names.isEmpty)
        for name in names {
            let r = try DaptProcess.dapt(["eval", "ppl", "--checkpoint", run + "/" + name, "--input", shards, "--sequence-length", "32", "--max-sequences", "2"])
            XCTAssertEqual(r.status, 0, "\(name): \(r.stderr)")
        }
        let resumed = try DaptProcess.dapt(args.map { $0 == "500" ? "8" : $0 } + ["--resume", run])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("step 8/8"), resumed.stderr)
    }
}
