import DaptCluster
import DaptCore
import DaptTestSupport
import DaptTokenizer
import Foundation
import XCTest

/// Keeps every event a run reports.
private final class RecordingSink: EventSink, @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [StageEvent] = []
    var events: [StageEvent] { lock.withLock { recorded } }
    func report(_ event: StageEvent) { lock.withLock { recorded.append(event) } }

    var warnings: [String] { events.compactMap { if case .warning(_, let m) = $0 { return m } else { return nil } } }
    var notices: [String] { events.compactMap { if case .notice(_, let m) = $0 { return m } else { return nil } } }
}

final class TrainingTests: XCTestCase {
    private func corpus(_ dir: String, bad: Bool) throws -> String {
        let words = ["claim", "device", "signal", "layer", "电路", "装置"]
        var lines = (0..<60).map { i in "{\"text\": \"\((0..<8).map { words[($0 * 7 + i) % words.count] }.joined(separator: " "))\"}" }
        if bad { lines.insert("{\"txt\": 1}", at: 1) }
        let path = dir + "/corpus.jsonl"
        try writeLines(lines, to: path)
        return path
    }

    /// One rank gives what the trainer gives on the same texts; the tokenizer
    /// is written; a bad record is skipped and reported with file and line.
    func testOneRankTrainsSavesAndReportsRejects() throws {
        let dir = try temporaryDirectory(self)
        let input = try corpus(dir, bad: true)
        var config = TokenizerConfig()
        config.vocabSize = 300
        config.strict = false
        let sink = RecordingSink()
        let outcome = try BPETraining.run(config: config, inputs: [input], output: dir + "/tokenizer.json",
                                          communicator: SingleRankCommunicator(), sink: sink)
        XCTAssertEqual(outcome.texts, 60)
        XCTAssertEqual(outcome.rejected, 1)
        XCTAssertEqual(sink.notices.filter { $0.hasPrefix("rejected \(input):2: ") }.count, 1, "\(sink.notices)")
        let saved = try BPETokenizer.load(path: dir + "/tokenizer.json")
        XCTAssertEqual(saved.vocabSize, outcome.vocabularySize)

        var direct = BPETrainer(vocabSize: 300, minFrequency: config.minFrequency, specialTokens: config.specialTokens,
                                preTokenizer: config.preTokenizerKind, maxWords: config.maxWords)
        for text in try JSONLTextsOf(input) { direct.add(text) }
        let expected = try direct.train()
        XCTAssertEqual(saved.merges.map { [$0.0, $0.1, $0.2] }, expected.merges.map { [$0.0, $0.1, $0.2] })

        config.strict = true
        XCTAssertThrowsError(try BPETraining.run(config: config, inputs: [input], output: dir + "/strict.json",
                                                 communicator: SingleRankCommunicator(), sink: SilentSink())) { error in
            XCTAssertEqual((error as? FirstBadRecord)?.message, "\(input):2: text: missing", "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/strict.json"))
    }

    /// The bad-input policy: blank lines are skipped and counted (not fatal,
    /// not rejects); with strict off every bad record goes to the rejects
    /// file as FILE:LINE: field: reason; with strict on the first bad record
    /// in input order ends the run, a blank line before it does not.
    func testBlankLinesAreSkippedAndRejectsAreWritten() throws {
        let dir = try temporaryDirectory(self)
        let input = try corpus(dir, bad: true)
        var lines = try String(contentsOfFile: input, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        lines.insert("", at: 0)
        lines.insert("  \t", at: 5)
        lines.insert("{\"text\": \"ok\", \"text\": \"twice\"}", at: 7)
        try lines.joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        var config = TokenizerConfig()
        config.vocabSize = 300
        config.strict = false
        let outcome = try BPETraining.run(config: config, inputs: [input], output: dir + "/tokenizer.json",
                                          communicator: SingleRankCommunicator(), sink: SilentSink())
        XCTAssertEqual(outcome.texts, 60)
        XCTAssertEqual(outcome.blankLines, 2)
        XCTAssertEqual(outcome.rejected, 2)
        XCTAssertEqual(outcome.lines, outcome.texts + outcome.blankLines + outcome.rejected)
        XCTAssertTrue(outcome.summary.contains { $0.hasPrefix("lines: 64 = 60 texts + 2 rejected + 2 blank: ok") }, "\(outcome.summary)")
        XCTAssertEqual(outcome.rejectsFile, dir + "/tokenizer.rejects.jsonl")
        let rejects = try String(contentsOfFile: dir + "/tokenizer.rejects.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(rejects.count, 2)
        let first = try JSONSerialization.jsonObject(with: Data(rejects[0].utf8)) as! [String: Any]
        XCTAssertEqual(first["line"] as? Int, 3)
        XCTAssertEqual(first["error"] as? String, "\(input):3: text: missing")
        XCTAssertTrue(rejects[1].contains("\(input):8: text: "), String(rejects[1]))

        config.strict = true
        XCTAssertThrowsError(try BPETraining.run(config: config, inputs: [input], output: dir + "/strict.json",
                                                 communicator: SingleRankCommunicator(), sink: SilentSink())) { error in
            XCTAssertEqual("\(error)", "\(input):3: text: missing (--strict)")
        }
    }

    /// A corpus too small for the vocabulary asked: a smaller vocabulary,
    /// a warning event and a summary line that say so.
    func testVocabularyTheCorpusCannotFillIsAWarning() throws {
        let dir = try temporaryDirectory(self)
        let input = try corpus(dir, bad: false)
        var config = TokenizerConfig()
        config.vocabSize = 100_000
        let sink = RecordingSink()
        let outcome = try BPETraining.run(config: config, inputs: [input], output: dir + "/tokenizer.json",
                                          communicator: SingleRankCommunicator(), sink: sink)
        XCTAssertTrue(outcome.vocabularyShort)
        XCTAssertLessThan(outcome.vocabularySize, 1000)
        XCTAssertEqual(sink.warnings, [outcome.shortfall])
        XCTAssertTrue(outcome.shortfall.hasPrefix("vocabulary \(outcome.vocabularySize) is smaller than the 100000 asked"), outcome.shortfall)
        XCTAssertTrue(outcome.summary.contains("warning: " + outcome.shortfall))

        config.vocabSize = 270
        let filled = RecordingSink()
        let full = try BPETraining.run(config: config, inputs: [input], output: dir + "/small.json",
                                       communicator: SingleRankCommunicator(), sink: filled)
        XCTAssertEqual(full.vocabularySize, 270)
        XCTAssertFalse(full.vocabularyShort)
        XCTAssertTrue(filled.warnings.isEmpty)
    }
}

/// The `text` of every line of a JSONL file.
private func JSONLTextsOf(_ path: String) throws -> [String] {
    try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap { line in
        (try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["text"] as? String
    }
}
