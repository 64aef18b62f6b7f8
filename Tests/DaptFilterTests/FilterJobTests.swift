import DaptCluster
import DaptCore
import DaptFilter
import DaptTestSupport
import Foundation
import XCTest

final class FilterJobTests: XCTestCase {
    static let words = "the of patent claim device method layer signal circuit first second wherein comprising".split(separator: " ")

    /// Clean records of patent words, every seventh one character noise.
    func corpus(_ n: Int) -> [String] {
        var g = SeededGenerator(seed: 3)
        return (0..<n).map { i in
            let length = 5 + Int(g.next() % 60)
            let text: String
            if i % 7 == 3 {
                text = String((0..<(length * 4)).map { _ in Character(Unicode.Scalar(UInt8(33 + g.next() % 90))) })
            } else {
                text = (0..<length).map { _ in String(Self.words[Int(g.next() % UInt64(Self.words.count))]) }.joined(separator: " ")
            }
            return "{\"id\":\"r\(i)\",\"text\":\(JSONWriter.quoted(text)),\"lang\":\"en\"}"
        }
    }

    func run(_ lines: [String], config: FilterConfig = FilterConfig()) throws -> (FilterSummary, String) {
        let dir = try temporaryDirectory(self)
        try writeLines(lines, to: dir + "/in.jsonl")
        let request = FilterRequest(inputs: [dir + "/in.jsonl"], output: dir + "/out", model: referenceModel, config: config)
        let summary = try FilterJob(request: request, communicator: SingleRankCommunicator()).run()
        return (summary, dir + "/out")
    }

    func lines(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    func testKeptAndRemovedAccountForEveryRecord() throws {
        let input = corpus(120)
        var config = FilterConfig()
        config.writeScores = true
        config.cut = FilterCut(highQuantile: 0.9, lowQuantile: 0.05)
        let (summary, out) = try run(input, config: config)
        XCTAssertEqual(summary.records, 120)
        XCTAssertEqual(summary.kept + summary.removedHigh + summary.removedLow, 120)
        XCTAssertGreaterThan(summary.removedHigh, 0)
        XCTAssertGreaterThan(summary.removedLow, 0)
        XCTAssertLessThan(summary.perplexityAfter, summary.perplexityBefore)
        let kept = try lines(out + "/kept.jsonl"), removed = try lines(out + "/removed.jsonl")
        XCTAssertEqual(kept.count, summary.kept)
        XCTAssertEqual(removed.count, summary.removedHigh + summary.removedLow)
        // Kept: input lines byte for byte, in input order.
        XCTAssertEqual(kept, input.filter { kept.contains($0) })
        // Removed: the input line plus ppl, bucket and reason.
        for line in removed {
            let value = try JSONValue.parse(line)
            let id = value["id"]!.string!
            let original = input.first { $0.contains("\"id\":\"\(id)\"") }!
            XCTAssertTrue(line.hasPrefix(String(original.dropLast())), line)
            XCTAssertNotNil(value["ppl"]?.double)
            XCTAssertNotNil(value["bucket"]?.double)
            XCTAssertTrue(["high", "low"].contains(value["reason"]!.string!))
        }
        // The records cut high are nearly all the noise records (a bucket with
        // fewer noise records than its tail gives up a clean one).
        let high = removed.filter { $0.hasSuffix("\"reason\":\"high\"}") }
        let noiseIds = Set((0..<120).filter { $0 % 7 == 3 }.map { "r\($0)" })
        let noiseCut = high.filter { noiseIds.contains(try! JSONValue.parse($0)["id"]!.string!) }.count
        XCTAssertGreaterThanOrEqual(Double(noiseCut) / Double(high.count), 0.8, "\(high)")
        let scores = try lines(out + "/scores.jsonl")
        XCTAssertEqual(scores.count, 120)
        let report = try JSONValue.parse(String(contentsOfFile: out + "/report.json", encoding: .utf8))
        XCTAssertEqual(report["records"]?.double, 120)
        XCTAssertEqual(report["kept"]?.double, Double(summary.kept))
        let groups = report["groups"]!.array!
        XCTAssertEqual(groups.count, summary.buckets)
        XCTAssertEqual(groups.reduce(0) { $0 + Int($1["count"]!.double!) }, 120)
        XCTAssertEqual(groups.reduce(0) { $0 + Int($1["removed_high"]!.double!) }, summary.removedHigh)
        // Each group's log-perplexity histogram (for other pages to draw) counts its records and spans its cuts.
        for g in groups {
            let h = g["log_perplexity_histogram"]!
            XCTAssertEqual(h["counts"]!.array!.reduce(0) { $0 + $1.int! }, g["count"]!.int!)
            XCTAssertEqual(h["counts"]!.array!.count, 30)
            if let high = g["threshold_high"]?.double { XCTAssertLessThanOrEqual(log(high), h["to"]!.double! + 1e-4) }
            if let low = g["threshold_low"]?.double { XCTAssertGreaterThanOrEqual(log(low), h["from"]!.double! - 1e-4) }
        }
        // report.html: a histogram per group with its cut lines, and the records either side of each cut.
        let page = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
        XCTAssertEqual(page.components(separatedBy: "<svg").count - 1, groups.count)
        XCTAssertEqual(page.components(separatedBy: "<title>high cut: ppl").count - 1, groups.count)
        let shownRemoved = page.components(separatedBy: "<td>removed (high)</td>").count - 1
        XCTAssertEqual(shownRemoved, groups.reduce(0) { $0 + min(3, Int($1["removed_high"]!.double!)) })
        XCTAssertGreaterThanOrEqual(page.components(separatedBy: "<td>kept</td>").count - 1, 3 * groups.count)
        XCTAssertTrue(summary.text.contains("120 records in (0 blank line(s) skipped) = \(summary.kept) kept + \(summary.removedHigh + summary.removedLow) removed"))
        // The scoring time is part of the whole run's and reported on its own.
        XCTAssertGreaterThan(summary.scoringSeconds, 0)
        XCTAssertLessThan(summary.scoringSeconds, summary.seconds)
        XCTAssertTrue(summary.text.contains("scoring alone"))
    }

    func testBadRecordsGoToRejectsWithTheirPlace() throws {
        var input = corpus(20)
        input.insert("", at: 2)                                  // line 3: blank, skipped
        input.insert("{\"id\":\"a\",\"text\":", at: 5)             // line 6: not JSON
        input.insert("{\"id\":\"b\",\"text\":7}", at: 7)           // line 8: text not a string
        input.insert("{\"id\":\"c\"}", at: 9)                    // line 10: no text
        input.insert("{\"id\":\"d\",\"text\":\"the claim\",\"lang\":5}", at: 11)  // line 12: lang not a string
        input.insert("{\"id\":\"e\",\"text\":\"\"}", at: 13)       // line 14: nothing to score
        let (summary, out) = try run(input)
        XCTAssertEqual(summary.lines, 26)
        XCTAssertEqual(summary.blankLines, 1)
        XCTAssertEqual(summary.rejected, 5)
        XCTAssertEqual(summary.kept + summary.removedHigh + summary.removedLow + summary.rejected, 25)
        let rejects = try lines(out + "/rejects.jsonl").map { try JSONValue.parse($0) }
        XCTAssertEqual(rejects.map { Int($0["line"]!.double!) }, [6, 8, 10, 12, 14])
        XCTAssertEqual(rejects.map { $0["field"]?.string }, ["text", "text", "text", "lang", "text"])  // the first: a value missing after "text"
        XCTAssertEqual(rejects[1]["reason"]?.string, "expected a string, got number")
        XCTAssertEqual(rejects[2]["reason"]?.string, "missing")
        XCTAssertTrue(rejects[1]["error"]!.string!.hasSuffix("in.jsonl:8: text: expected a string, got number"))
        XCTAssertEqual(rejects[3]["reason"]?.string, "expected a string, got number")
        XCTAssertEqual(summary.firstReject.map { $0.contains("in.jsonl:6: ") }, true)

        var strict = FilterConfig()
        strict.strict = true
        let dir = try temporaryDirectory(self)
        try writeLines(input, to: dir + "/in.jsonl")
        let request = FilterRequest(inputs: [dir + "/in.jsonl"], output: dir + "/out", model: referenceModel, config: strict)
        XCTAssertThrowsError(try FilterJob(request: request, communicator: SingleRankCommunicator()).run()) { error in
            XCTAssertTrue((error as? FirstBadRecord)?.message.hasSuffix("in.jsonl:6: text: " + rejects[0]["reason"]!.string!) == true, "\(error)")
        }
        // Nothing is published and no staging folder is left behind.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["in.jsonl"])
    }

    /// A second run replaces the first run's outputs as a whole.
    func testOutputsArePublishedAsAUnit() throws {
        let dir = try temporaryDirectory(self)
        try writeLines(corpus(30), to: dir + "/in.jsonl")
        var config = FilterConfig()
        config.writeScores = true
        _ = try FilterJob(request: FilterRequest(inputs: [dir + "/in.jsonl"], output: dir + "/out", model: referenceModel, config: config),
                          communicator: SingleRankCommunicator()).run()
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/out/scores.jsonl"))
        _ = try FilterJob(request: FilterRequest(inputs: [dir + "/in.jsonl"], output: dir + "/out", model: referenceModel),
                          communicator: SingleRankCommunicator()).run()
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out/scores.jsonl"), "no file of the first run is left")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["in.jsonl", "out"])
        XCTAssertTrue(OutputPublisher.isComplete(dir + "/out"))
        // A folder of other files is not replaced, and nothing is scored into it.
        try FileManager.default.createDirectory(atPath: dir + "/mine", withIntermediateDirectories: true)
        try writeLines(["keep me"], to: dir + "/mine/notes.txt")
        XCTAssertThrowsError(try FilterJob(request: FilterRequest(inputs: [dir + "/in.jsonl"], output: dir + "/mine", model: referenceModel),
                                           communicator: SingleRankCommunicator()).run()) {
            XCTAssertEqual($0 as? PublishError, .foreignFolder(dir + "/mine"))
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/mine"), ["notes.txt"])
    }
}
