import Foundation
import XCTest

/// A loss spike from poisoned data at a known step, under a real mpirun:
/// data parallelism and tensor parallelism roll back to the same point and
/// skip the same sequences as one rank, every rank continues from the same
/// restored state (the losses and weights after it are the single-rank
/// run's), and a run stopped after the rollback and resumed ends byte for
/// byte where the uninterrupted run of its layout does.
final class SpikeRollbackTests: XCTestCase, PretrainRunChecks {
    /// The 12-word corpus with a burst of random-character documents after
    /// document 60: in corpus order (`data.shuffle: false`) its tokens
    /// (4037..<4638 of the stream, 128 per step) arrive in steps 32–37.
    static func prepare(_ dir: URL) throws -> String {
        var lines = PretrainCommandTests.documents(seed: 7, count: 200)
        var state: UInt64 = 99
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#%&*+=<>")
        let burst = (0..<4).map { _ in
            let text = String((0..<150).map { _ in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return alphabet[Int(state >> 33) % alphabet.count]
            })
            return "{\"text\": \"\(text)\"}"
        }
        lines.insert(contentsOf: burst, at: 60)
        let corpus = dir.appendingPathComponent("poisoned.jsonl").path
        try (lines.joined(separator: "\n") + "\n").write(toFile: corpus, atomically: true, encoding: .utf8)
        let tokenizer = dir.appendingPathComponent("tokenizer.json").path, shards = dir.appendingPathComponent("tokens").path
        let t = try DaptProcess.dapt(["tokenizer", "train", "--input", corpus, "--vocab-size", "300", "--output", tokenizer])
        XCTAssertEqual(t.status, 0, t.report)
        let e = try DaptProcess.dapt(["tokenizer", "encode", "--tokenizer", tokenizer, "--input", corpus, "--output", shards])
        XCTAssertEqual(e.status, 0, e.report)
        return shards
    }

    /// 40 steps, the data in corpus order, checkpoints and rollback points every 4 steps, a short detector history.
    static let settings = PretrainCommandTests.tiny + [
        "--steps", "40", "--set", "data.shuffle=false", "--set", "data.held_out_fraction=0", "--set", "eval.sequences=0",
        "--set", "checkpoint.every_steps=4", "--set", "checkpoint.keep_last=0",
        "--set", "spikes.window=8", "--set", "spikes.warmup=4", "--set", "spikes.margin_steps=4",
    ]

    struct Rollback: Decodable, Equatable {
        var step: Int
        var spike_first_step: Int
        var rolled_back_to: Int
        var skipped_sequences: Skipped
        var skipped_steps: Int
        struct Skipped: Decodable, Equatable { var from: Int; var until: Int }
    }

    func rollbacks(_ run: String) throws -> [Rollback] {
        try String(contentsOfFile: run + "/rollbacks.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(Rollback.self, from: Data($0.utf8)) }
    }

    func testPoisonedStepsRollBackAlikeOnEveryLayout() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let shards = try Self.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let model = "/checkpoint-00000040/model.safetensors"

        let single = try pretrain(np: 1, ["--input", shards, "--output", run("r1")] + Self.settings)
        XCTAssertEqual(single.status, 0, single.report)
        let reference = try rollbacks(run("r1"))
        XCTAssertEqual(reference.count, 1, single.report)
        let first = try XCTUnwrap(reference.first)
        // The burst starts in step 32, found after two suspicious steps; back to the rollback point
        // before it (step 28), skipping its data to 4 steps past the detection (past the burst's end).
        XCTAssertEqual(first.spike_first_step, 32, "\(first)")
        XCTAssertEqual(first.step, 33, "two suspicious steps in a row")
        XCTAssertEqual(first.rolled_back_to, 28)
        XCTAssertEqual(first.skipped_sequences, .init(from: 28 * 4, until: (33 + 4) * 4))
        XCTAssertEqual(first.skipped_steps, 9)
        let referenceLines = try PretrainCommandTests.metrics(run("r1"))
        let referenceWeights = try weights(run("r1"), step: 40)
        // Without the detector the same data is trained through.
        let off = try pretrain(np: 1, ["--input", shards, "--output", run("off"), "--set", "spikes.enabled=false"] + Self.settings)
        XCTAssertEqual(off.status, 0, off.report)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run("off") + "/rollbacks.jsonl"))

        for (name, np, layout) in [("d2", 2, [String]()), ("t2", 2, ["--set", "parallel.tensor=2"])] {
            let r = try pretrain(np: np, ["--input", shards, "--output", run(name)] + Self.settings + layout)
            XCTAssertEqual(r.status, 0, r.report)
            XCTAssertEqual(try rollbacks(run(name)), reference, "\(name): the same rollback point and skipped range")
            // Every rank restored the same state: what follows is the single-rank run.
            assertClose(try PretrainCommandTests.metrics(run(name)), referenceLines, name)
            assertClose(try weights(run(name), step: 40), referenceWeights, name)

            // Stopped after the rollback (with the rewritten checkpoints), resumed under the same layout: the same bytes.
            let stopped = try pretrain(np: np, ["--input", shards, "--output", run(name + "-resumed"), "--stop-after", String(first.step + 4)]
                                       + Self.settings + layout)
            XCTAssertEqual(stopped.status, 0, stopped.report)
            XCTAssertEqual(try rollbacks(run(name + "-resumed")), reference, "\(name): the rollback happened before the stop")
            let resumed = try pretrain(np: np, ["--resume", run(name + "-resumed")] + layout)
            XCTAssertEqual(resumed.status, 0, resumed.report)
            XCTAssertTrue(resumed.stderr.contains("at step \(first.step + 4)"), resumed.report)
            XCTAssertEqual(try rollbacks(run(name + "-resumed")), reference, "\(name): no second rollback after the resume")
            XCTAssertEqual(try PretrainCommandTests.metrics(run(name + "-resumed")), try PretrainCommandTests.metrics(run(name)), name)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run(name + "-resumed") + model)),
                           try Data(contentsOf: URL(fileURLWithPath: run(name) + model)), "\(name): resumed after the rollback, same bytes")
        }
    }

    /// One `metrics.jsonl` line: a step's learning rate, or an event.
    struct Entry: Decodable { var event: String?; var step: Int; var lr: Double? }

    func entries(_ run: String) throws -> [Entry] {
        try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map { try JSONDecoder().decode(Entry.self, from: Data($0.utf8)) }
    }

    /// `spikes.lr_factor` 0.5 for `spikes.lr_steps` 10 after the poisoned
    /// corpus's rollback (step 33 back to 28): the steps trained after the
    /// rollback, 29 to 38, run at half the rate of the same steps without the
    /// factor (read from metrics.jsonl), the steps after them at the full
    /// rate; a run stopped inside that stretch and resumed keeps the lowered
    /// rate and ends with the uninterrupted run's bytes.
    func testLearningRateLoweredAfterARollbackAndAfterAResume() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let shards = try Self.prepare(dir)
        func run(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let lowering = ["--set", "spikes.lr_factor=0.5", "--set", "spikes.lr_steps=10"]
        let plain = try pretrain(np: 1, ["--input", shards, "--output", run("plain")] + Self.settings)
        XCTAssertEqual(plain.status, 0, plain.report)
        let lowered = try pretrain(np: 1, ["--input", shards, "--output", run("lowered")] + Self.settings + lowering)
        XCTAssertEqual(lowered.status, 0, lowered.report)
        XCTAssertTrue(lowered.stderr.contains("rolled back to step 28") && lowered.stderr.contains("lr × 0.5 until step 38"), lowered.report)

        // The full rate of every step, from the run without the factor (same rollback, same schedule).
        let full = Dictionary(try entries(run("plain")).compactMap { e in e.lr.map { (e.step, $0) } }, uniquingKeysWith: { _, last in last })
        let all = try entries(run("lowered"))
        let rollback = try XCTUnwrap(all.firstIndex { $0.event == "rollback" })
        XCTAssertEqual(all[rollback].step, 33)
        for e in all[..<rollback] where e.lr != nil {
            XCTAssertEqual(e.lr, full[e.step], "step \(e.step) before the rollback: the full rate")
        }
        let after = all[(rollback + 1)...].filter { $0.lr != nil }
        XCTAssertEqual(after.map(\.step), Array(29...40))
        for e in after {
            let expected = try XCTUnwrap(full[e.step]) * (e.step <= 38 ? 0.5 : 1)
            XCTAssertEqual(try XCTUnwrap(e.lr), expected, accuracy: 1e-12 * expected, "step \(e.step) after the rollback")
        }
        XCTAssertGreaterThan(try XCTUnwrap(full[29]), 0)

        // Stopped at step 35 (after the rollback, inside the lowered stretch) and resumed.
        let stopped = try pretrain(np: 1, ["--input", shards, "--output", run("resumed"), "--stop-after", "35"] + Self.settings + lowering)
        XCTAssertEqual(stopped.status, 0, stopped.report)
        let resumed = try pretrain(np: 1, ["--resume", run("resumed")])
        XCTAssertEqual(resumed.status, 0, resumed.report)
        XCTAssertTrue(resumed.stderr.contains("at step 35"), resumed.report)
        let tail = try entries(run("resumed")).filter { $0.step > 35 && $0.lr != nil }
        XCTAssertEqual(tail.map(\.step), Array(36...40))
        for e in tail {
            XCTAssertEqual(e.lr, after.first { $0.step == e.step }?.lr, "step \(e.step) after the resume: the uninterrupted run's rate")
        }
        XCTAssertEqual(try PretrainCommandTests.metrics(run("resumed")), try PretrainCommandTests.metrics(run("lowered")))
        let model = "/checkpoint-00000040/model.safetensors"
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run("resumed") + model)), try Data(contentsOf: URL(fileURLWithPath: run("lowered") + model)))
    }
}
