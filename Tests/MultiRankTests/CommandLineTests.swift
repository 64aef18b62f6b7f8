import Foundation
import DaptTestSupport
import XCTest

/// The `dapt` binary's own behaviour: version, config validation, errors.
final class CommandLineTests: XCTestCase {
    func testVersion() throws {
        let r = try DaptProcess.dapt(["--version"])
        XCTAssertEqual(r.status, 0, r.report)
        XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "0.1.0", r.report)
    }

    func testBundledConfigsValidate() throws {
        let configs = DaptProcess.repositoryRoot.appendingPathComponent("configs")
        let files = try FileManager.default.contentsOfDirectory(atPath: configs.path).filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertFalse(files.isEmpty)
        for file in files {
            let r = try DaptProcess.dapt(["config", "validate", "--config", configs.appendingPathComponent(file).path])
            XCTAssertEqual(r.status, 0, "\(file): \(r.report)")
        }
    }

    func testBadFieldIsNamedWithFileAndExitCode() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let cases: [(String, String)] = [
            ("cluster:\n  batch_bytes: 3\n", ":2:3: cluster.batch_bytes: must be in"),
            ("cluster:\n  transprt: tcp\n", ":2:3: cluster.transprt: unknown key"),
            ("clustr: {}\n", ":1:1: clustr: unknown key"),
            ("cluster:\n  transport: udp\n", ":2:3: cluster.transport: must be one of tcp, ipc"),
            ("cluster:\n  high_water_mark: many\n", ":2:3: cluster.high_water_mark: expected an integer, got \"many\""),
            ("pretrain:\n  precision:\n    mode: fp8\n", ":3:5: pretrain.precision.mode: must be one of fp32, fp16, bf16, got \"fp8\""),
        ]
        for (i, (yaml, expected)) in cases.enumerated() {
            let file = dir.appendingPathComponent("bad\(i).yaml").path
            try yaml.write(toFile: file, atomically: true, encoding: .utf8)
            let r = try DaptProcess.dapt(["config", "validate", "--config", file])
            XCTAssertEqual(r.status, 2, "\(yaml)\n\(r.report)")
            XCTAssertTrue(r.stderr.contains("\(file)\(expected)"), "expected '\(expected)' in: \(r.report)")
        }
        let missing = try DaptProcess.dapt(["config", "validate", "--config", dir.appendingPathComponent("none.yaml").path])
        XCTAssertEqual(missing.status, 2, missing.report)
        XCTAssertTrue(missing.stderr.contains("none.yaml"), missing.report)
    }

    func testSingleRankCheckWithoutMPI() throws {
        let r = try DaptProcess.dapt(["cluster", "check", "--exchange-mib", "1", "--gemm", "64"])
        XCTAssertEqual(r.status, 0, r.report)
        XCTAssertTrue(r.stdout.contains("rank 0/1 on "), r.report)
        XCTAssertTrue(r.stdout.contains("cluster check: all checks passed"), r.report)
    }

    // MARK: one convention for every stage

    /// The stages and which common options each takes.
    static let stages: [(command: [String], options: [String])] = [
        (["prepare"], ["--input", "--output", "--config", "--set", "--strict"]),
        (["dedup"], ["--input", "--output", "--config", "--set", "--strict"]),
        (["filter"], ["--input", "--output", "--config", "--set", "--strict"]),
        (["tokenizer", "train"], ["--input", "--output", "--config", "--set", "--strict"]),
        (["tokenizer", "encode"], ["--input", "--output", "--config", "--set", "--strict"]),
        (["tokenizer", "tokenize"], ["--input", "--output", "--config", "--set"]),
        (["tokenizer", "decode"], ["--input"]),
        (["tokenizer", "verify"], ["--input"]),
        (["pretrain"], ["--input", "--output", "--config", "--set"]),
        (["finetune", "train"], ["--input", "--output", "--config", "--set"]),
        (["finetune", "merge"], ["--output"]),
        (["eval", "ppl"], ["--input", "--output", "--config", "--set"]),
        (["eval", "mc"], ["--input", "--output", "--config", "--set", "--strict"]),
        (["eval", "json"], ["--input", "--output", "--config", "--set"]),
        (["generate"], ["--input", "--output", "--config", "--set"]),
        (["cluster", "check"], ["--config", "--set"]),
        (["config", "validate"], ["--config", "--set"]),
    ]

    func testEveryStageSpellsTheCommonOptionsAlike() throws {
        let common = ["--input", "--output", "--config", "--set", "--strict"]
        var helps: [String: String] = [:]
        for (command, options) in Self.stages {
            let r = try DaptProcess.dapt(command + ["--help"])
            XCTAssertEqual(r.status, 0, "\(command): \(r.report)")
            let listed = Set(r.stdout.split(separator: "\n").compactMap { line -> String? in
                let words = line.split(separator: " ")
                return words.first.map { String($0.split(separator: "/").first ?? $0) }.flatMap { $0.hasPrefix("--") ? $0 : nil }
            })
            for option in common {
                XCTAssertEqual(listed.contains(option), options.contains(option), "\(command.joined(separator: " ")) --help and \(option): \(r.report)")
            }
            helps[command.joined(separator: " ")] = r.stdout
        }
        // Each subcommand lists only the options it uses.
        for training in ["--vocab-size", "--min-frequency", "--pre-tokenizer"] {
            XCTAssertTrue(helps["tokenizer train"]!.contains(training))
            XCTAssertFalse(helps["tokenizer encode"]!.contains(training), "tokenizer encode --help lists \(training)")
        }
        for encoding in ["--shard-lines", "--add-bos", "--tokenizer"] {
            XCTAssertTrue(helps["tokenizer encode"]!.contains(encoding))
            XCTAssertFalse(helps["tokenizer train"]!.contains(encoding), "tokenizer train --help lists \(encoding)")
        }
    }

    /// `dapt eval mc` as a user runs it: the table, the report folder
    /// (kept by a later `eval ppl` into it), option errors.
    func testEvalMultipleChoiceWritesTableAndReport() throws {
        let fixtures = DaptProcess.repositoryRoot.appendingPathComponent("Tests/DaptTrainTests/Fixtures")
        let model = fixtures.appendingPathComponent("mc/model").path
        let dir = try temporaryDirectoryURL(self)
        let out = dir.appendingPathComponent("eval").path
        let r = try DaptProcess.dapt(["eval", "mc", "--model", model, "--input", fixtures.appendingPathComponent("mc/mmlu").path,
                                      "--shots", "2", "--output", out])
        XCTAssertEqual(r.status, 0, r.report)
        let lines = r.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        XCTAssertEqual(lines.first, ["subject", "items", "correct", "rejected", "accuracy"])
        let physics = try XCTUnwrap(lines.first { $0.first == "toy_physics" })
        XCTAssertEqual(Array(physics.prefix(2)), ["toy_physics", "6"])
        XCTAssertNotNil(lines.first { $0.first == "micro" })
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/report.json"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/mc.items.jsonl"))

        let text = dir.appendingPathComponent("text.jsonl").path
        try writeLines([#"{"text": "the device of the first claim"}"#, #"{"text": "a method comprising a layer"}"#], to: text)
        let ppl = try DaptProcess.dapt(["eval", "ppl", "--model", model, "--input", text, "--sequence-length", "8", "--output", out])
        XCTAssertEqual(ppl.status, 0, ppl.report)
        let report = try String(contentsOfFile: out + "/report.json", encoding: .utf8)
        XCTAssertTrue(report.contains("\"ppl\": {") && report.contains("\"mc\": {"), report)

        for (args, message) in [(["--format", "csv"], "--format: csv is not mmlu or ceval"), (["--shots", "-1"], "--shots: must be >= 0, got -1")] {
            let bad = try DaptProcess.dapt(["eval", "mc", "--model", model, "--input", fixtures.appendingPathComponent("mc/mmlu").path,
                                            "--output", out] + args)
            XCTAssertEqual(bad.status, 64, bad.report)
            XCTAssertTrue(bad.stderr.contains(message), bad.report)
        }
    }

    func testUsageErrorsExit64() throws {
        for args in [["dedup", "--bogus"], ["prepare", "--max-tokens"], ["pretrain", "--steps", "many"], ["tokenizer", "train", "--output", "/tmp/t.json"]] {
            let r = try DaptProcess.dapt(args)
            XCTAssertEqual(r.status, 64, "\(args): \(r.report)")
        }
    }

    func testConfigurationErrorsExit2NamingWhereTheValueCameFrom() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let corpus = dir.appendingPathComponent("c.jsonl").path
        try "{\"text\": \"a b c\"}\n".write(toFile: corpus, atomically: true, encoding: .utf8)
        let config = dir.appendingPathComponent("p.yaml").path
        try "pretrain:\n  optimizer:\n    lr: fast\n".write(toFile: config, atomically: true, encoding: .utf8)
        let syntax = dir.appendingPathComponent("s.yaml").path
        try "pretrain:\n  optimizer: [1, 2\n  data: {}\n".write(toFile: syntax, atomically: true, encoding: .utf8)
        let cases: [([String], String)] = [
            (["pretrain", "--config", config, "--input", dir.path], "\(config):3:5: pretrain.optimizer.lr: expected a number, got \"fast\""),
            (["pretrain", "--input", dir.path, "--set", "optimizer.lr=fast"], "--set optimizer.lr=fast: pretrain.optimizer.lr: expected a number, got \"fast\""),
            (["pretrain", "--input", dir.path, "--set", "optimizer.learning_rate=1"],
             "--set optimizer.learning_rate=1: pretrain.optimizer.learning_rate: unknown key (known: beta1, beta2"),
            (["dedup", "--input", corpus, "--output", dir.path + "/d", "--threshold", "-0.5"], "--threshold -0.5: dedup.threshold: must be in"),
            (["prepare", "--input", corpus, "--output", dir.path + "/p", "--max-tokens", "-5"], "--max-tokens -5: prepare.max_tokens: must be > 0, got -5"),
            (["pretrain", "--input", dir.path, "--stop-after", "-1"], "--stop-after -1: must be >= 0, got -1"),
            (["pretrain", "--input", dir.path, "--from", dir.path, "--resume", dir.path], "--from \(dir.path): cannot be used with --resume"),
            (["tokenizer", "train", "--input", dir.path + "/none.jsonl", "--output", dir.path + "/t.json"], "--input \(dir.path)/none.jsonl: no such file or directory"),
            (["tokenizer", "encode", "--input", corpus, "--output", dir.path + "/s", "--tokenizer", dir.path + "/none.json"], "\(dir.path)/none.json: open failed"),
            (["eval", "ppl", "--checkpoint", dir.path, "--input", corpus, "--sequence-length", "-1"],
             "--sequence-length -1: eval.sequence_length: must be > 0, got -1"),
            (["eval", "ppl", "--checkpoint", dir.path, "--input", corpus, "--set", "batch_size=0"], "--set batch_size=0: eval.batch_size: must be > 0, got 0"),
            (["config", "validate", "--config", syntax], "\(syntax):3:7: not valid YAML: "),
            (["generate", "--model", dir.path, "--input", corpus, "--output", dir.path + "/g.jsonl", "--top-p", "2"],
             "--top-p 2.0: generate.top_p: must be in (0, 1], got 2.0"),
            (["eval", "json", "--model", dir.path, "--input", corpus, "--set", "max_new_tokens=0"],
             "--set max_new_tokens=0: generate.max_new_tokens: must be > 0, got 0"),
        ]
        for (args, expected) in cases {
            let r = try DaptProcess.dapt(args)
            XCTAssertEqual(r.status, 2, "\(args): \(r.report)")
            XCTAssertTrue(r.stderr.contains("dapt: error: " + expected), "\(args): expected '\(expected)' in: \(r.report)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.path + "/d"), "no work starts on a bad config")
    }

    /// Under mpirun every rank finds a configuration error before work
    /// starts: the job exits 2 and the error is printed once.
    func testConfigurationErrorUnderMPIRunIsPrintedOnce() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let missing = dir.appendingPathComponent("none.jsonl").path
        let r = try DaptProcess.mpirun(np: 2, ["dedup", "--input", missing, "--output", dir.path + "/out"], timeout: 60)
        XCTAssertEqual(r.status, 2, r.report)
        XCTAssertEqual(r.stderr.components(separatedBy: "dapt: error: --input \(missing): no such file or directory").count, 2, r.report)
    }

    /// A failure once the work has started exits 1, naming the file and line.
    func testFailureMidRunExits1() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let corpus = dir.appendingPathComponent("c.jsonl").path
        try "{\"text\": \"a b c\"}\nnot json\n".write(toFile: corpus, atomically: true, encoding: .utf8)
        let r = try DaptProcess.dapt(["tokenizer", "train", "--input", corpus, "--output", dir.path + "/t.json", "--strict"])
        XCTAssertEqual(r.status, 1, r.report)
        XCTAssertTrue(r.stderr.contains("dapt: error: \(corpus):2: "), r.report)
    }

    func testTokenizerTrainSaysWhenTheCorpusCannotFillTheVocabulary() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let corpus = dir.appendingPathComponent("c.jsonl").path
        try (0..<50).map { "{\"text\": \"claim \($0) device signal layer method\"}" }.joined(separator: "\n")
            .write(toFile: corpus, atomically: true, encoding: .utf8)
        let r = try DaptProcess.dapt(["tokenizer", "train", "--input", corpus, "--output", dir.path + "/t.json", "--vocab-size", "100000"])
        XCTAssertEqual(r.status, 0, r.report)
        XCTAssertTrue(r.stdout.contains("is smaller than the 100000 asked (vocab_size)"), r.report)
        XCTAssertTrue(r.stderr.contains("[tokenizer] warning: vocabulary "), r.report)
    }
}
