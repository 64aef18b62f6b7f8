import DaptCluster
import DaptCore
import DaptPrepare
import Foundation
import XCTest
import DaptTestSupport

final class RunTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try temporaryDirectoryURL(self, prefix: "dapt-prepare")
    }

    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    func run(_ config: PrepareConfig, merge: Bool = false) throws -> PrepareOutcome {
        try PrepareRun(config: config, counter: EstimatedTokenCounter(config), communicator: SingleRankCommunicator(),
                       sink: SilentSink(), merge: merge).run()
    }

    func lines(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    /// A second run into the same folder under another name replaces the
    /// whole folder: no shard, manifest or merged file of the first remains.
    func testSecondRunLeavesNoFileOfTheFirst() throws {
        let input = dir.appendingPathComponent("in.jsonl")
        try writeLines([#"{"patent":"CN1","text":"步骤S101：获取数据。\n步骤S102：处理数据。"}"#], to: input.path)
        var config = PrepareConfig()
        config.inputs = [input.path]
        config.output = dir.appendingPathComponent("out").path
        config.name = "first"
        _ = try run(config, merge: true)
        XCTAssertTrue(FileManager.default.fileExists(atPath: config.output + "/first.jsonl"))
        config.name = "second"
        _ = try run(config)
        XCTAssertEqual(try FileSystem.list(config.output),
                       [OutputPublisher.marker, "manifest.json", "rejects.jsonl", "second-0000-of-0001.jsonl", "summary.json"])
        XCTAssertEqual(try FileSystem.list(dir.path).filter { $0.hasPrefix(".") }, [], "no staging folder left")
    }

    /// Every kind of bad record goes to rejects.jsonl with FILE:LINE, field
    /// and reason, the run goes on, and records in = patents + rejects.
    func testRejectsAreWrittenAndCounted() throws {
        let input = dir.appendingPathComponent("in.jsonl")
        var bytes = Data()
        let good = #"{"patent":"CN1","text":"步骤S101：获取数据。\n步骤S102：处理数据。"}"#
        let lines: [String] = [
            good,
            "{not json",
            #"{"text":"步骤S1：x"}"#,
            #"{"patent":"CN3"}"#,
            #"{"patent":"CN4","text":"   \n  "}"#,
            #"{"patent":"CN5","text":"没有步骤标记的说明书。"}"#,
            "",
            #"{"patent":"CN6","pages":["步骤S1：甲。","步骤S2：乙。"]}"#,
        ]
        for line in lines { bytes += Data((line + "\n").utf8) }
        let invalidLine = Data(#"{"patent":"CN7","text":""#.utf8) + Data([0xFF]) + Data("\"}".utf8)
        bytes += invalidLine + Data("\n".utf8)
        try bytes.write(to: input)
        let texts = dir.appendingPathComponent("texts")
        try FileManager.default.createDirectory(at: texts, withIntermediateDirectories: true)
        try Data("---\npatent: CN8\n---\n步骤S1：丙。\n步骤S2：丁。\n".utf8).write(to: texts.appendingPathComponent("a.txt"))
        try Data("no front matter\n".utf8).write(to: texts.appendingPathComponent("b.md"))
        try Data("ignored".utf8).write(to: texts.appendingPathComponent("c.pdf"))

        var config = PrepareConfig()
        config.inputs = [input.path, texts.path]
        config.output = dir.appendingPathComponent("out").path
        let outcome = try run(config)
        XCTAssertEqual(outcome.stats.records, 10)
        XCTAssertEqual(outcome.stats.blankLines, 1)
        XCTAssertEqual(outcome.stats.patents, 3)
        XCTAssertEqual(outcome.stats.rejects, 7)
        XCTAssertEqual(outcome.stats.records, outcome.stats.patents + outcome.stats.rejects)
        XCTAssertEqual(outcome.summary.ignoredFiles, 1)

        let rejects = try self.lines(outcome.rejectsPath).map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let summary = rejects.map { "\(($0["file"] as! String).split(separator: "/").last!):\($0["line"] as! Int):\($0["field"] as? String ?? "-"):\($0["reason"] as! String)" }
        XCTAssertEqual(summary, ["in.jsonl:2:-:malformed_json", "in.jsonl:3:patent:missing_field", "in.jsonl:4:text:missing_field",
                                 "in.jsonl:5:text:empty_text", "in.jsonl:6:text:no_step_markers", "in.jsonl:9:text:invalid_utf8",
                                 "b.md:1:patent:bad_front_matter"])
        // Nothing lost: each rejected line is kept verbatim (base64 when not UTF-8).
        XCTAssertEqual(rejects[0]["record"] as? String, "{not json")
        XCTAssertEqual(rejects[4]["record"] as? String, #"{"patent":"CN5","text":"没有步骤标记的说明书。"}"#)
        XCTAssertEqual((rejects[5]["record_base64"] as? String).flatMap { Data(base64Encoded: $0) }, invalidLine)
        XCTAssertTrue((rejects[1]["message"] as! String).hasSuffix("in.jsonl:3: patent: required field is missing"))

        let summaryJSON = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: outcome.summaryPath))) as! [String: Any]
        XCTAssertEqual(summaryJSON["records_in"] as? Int, 10)
        XCTAssertEqual((summaryJSON["rejects_by_reason"] as! [String: Int])["missing_field"], 2)
        XCTAssertEqual((summaryJSON["check"] as! [String: Any])["balanced"] as? Bool, true)

        let fragments = try self.lines(config.output + "/fragments-0000-of-0001.jsonl")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(fragments.map { $0["id"] as! String }, ["CN1-step1-1-1", "CN1-step2-1-1", "CN6-step1-1-1", "CN6-step2-1-1", "CN8-step1-1-1", "CN8-step2-1-1"])
        XCTAssertEqual(fragments.map { $0["page"] as? Int }, [nil, nil, 1, 2, nil, nil])
    }

    func testStrictStopsAtTheFirstBadRecord() throws {
        let input = dir.appendingPathComponent("in.jsonl")
        try Data("{\"patent\":\"CN1\",\"text\":\"步骤S1：甲。\\n步骤S2：乙。\"}\n{\"patent\":\"CN2\",\"text\":\"无标记\"}\n{oops\n".utf8).write(to: input)
        var config = PrepareConfig()
        config.inputs = [input.path]
        config.output = dir.appendingPathComponent("out").path
        config.strict = true
        XCTAssertThrowsError(try run(config)) { error in
            XCTAssertEqual("\(error)", "\(input.path):2: text: no steps found (keep: steps needs a numbered run such as 步骤S101, 步骤S102 or Step 1, Step 2; keep: steps_or_description keeps such a patent whole) (--strict)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: config.output + "/manifest.json"))
    }

    /// The bundled sample: every patent prepared, nothing rejected, the
    /// near-duplicate copies present, and the manifest reader gives the
    /// corpus in order and catches a corrupted shard.
    func testSampleCorpusAndManifestReader() throws {
        var config = PrepareConfig()
        let root = Self.repositoryRoot
        config.inputs = [root + "/data/sample/patents.jsonl", root + "/data/sample/texts"]
        config.output = dir.appendingPathComponent("out").path
        config.maxTokens = 96
        config.overlapTokens = 16
        let outcome = try run(config, merge: true)
        XCTAssertEqual(outcome.stats.records, 30)
        XCTAssertEqual(outcome.stats.patents, 30)
        XCTAssertEqual(outcome.stats.rejects, 0)
        XCTAssertEqual(outcome.duplicatePatentIDs, 0)
        XCTAssertGreaterThan(outcome.stats.fragments, outcome.stats.paragraphs, "long paragraphs were cut")

        let corpus = try PreparedCorpus(manifestPath: outcome.manifestPath)
        XCTAssertEqual(corpus.recordCount, outcome.stats.fragments)
        var ids: [String] = []
        var patents: [String] = []
        try corpus.forEachRecord { index, line in
            XCTAssertEqual(index, ids.count)
            let object = try JSONSerialization.jsonObject(with: Data(buffer: line)) as! [String: Any]
            ids.append(object["id"] as! String)
            let patent = object["patent"] as! String
            if patents.last != patent { patents.append(patent) }
            let text = object["text"] as! String
            XCTAssertEqual(object["hash"] as? String, "sha1:" + SHA1.hex(text))
            XCTAssertEqual(text, text.precomposedStringWithCanonicalMapping)
            return true
        }
        XCTAssertEqual(ids.count, corpus.recordCount)
        XCTAssertEqual(Set(ids).count, ids.count, "ids are unique")
        XCTAssertEqual(patents.count, 30, "each patent's fragments are contiguous")
        for copy in ["CN115000121A", "CN115000122A", "US11800221B2", "CN115000125A"] { XCTAssertTrue(patents.contains(copy)) }
        let merged = try lines(config.output + "/fragments.jsonl")
        XCTAssertEqual(merged.count, ids.count)

        // An even split by records covers the corpus once.
        var seen: [Int] = []
        for r in 0..<3 { try corpus.forEachRecord(in: corpus.recordRange(rank: r, size: 3)) { i, _ in seen.append(i); return true } }
        XCTAssertEqual(seen, Array(0..<corpus.recordCount))

        // A changed byte in a shard is caught.
        let shard = corpus.shardPaths[0]
        var data = try Data(contentsOf: URL(fileURLWithPath: shard))
        data[data.count / 2] = data[data.count / 2] == 0x41 ? 0x42 : 0x41
        try data.write(to: URL(fileURLWithPath: shard))
        XCTAssertThrowsError(try corpus.forEachRecord { _, _ in true }) { error in
            XCTAssertTrue("\(error)".contains("SHA-1"), "\(error)")
        }
    }
}
