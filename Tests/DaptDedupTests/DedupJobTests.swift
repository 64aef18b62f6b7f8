import DaptCluster
import DaptCore
@testable import DaptDedup
import Foundation
import XCTest
import DaptTestSupport

/// Whole dedup runs on one rank (the multi-rank runs are in MultiRankTests).
final class DedupJobTests: XCTestCase {
    struct Outputs {
        var report: DedupReport
        var kept: [String]
        var removed: [[String: Any]]
        var clusters: [[String: Any]]
        var rejects: [[String: Any]]
        var pairs: [[String: Any]]
    }

    func temporaryDirectory() throws -> String { try DaptTestSupport.temporaryDirectory(self, prefix: "dedup") }

    func run(_ inputs: [String], _ config: DedupConfig, out: String) throws -> Outputs {
        let comm = SingleRankCommunicator()
        let exchange = RecordExchange(transport: SelfOnlyTransport(), communicator: comm)
        let job = DedupJob(config: config, inputs: inputs, outputDirectory: out, communicator: comm, exchange: exchange)
        let report = try job.run()
        func lines(_ name: String) -> [String] {
            ((try? String(contentsOfFile: "\(out)/\(name)", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
        func objects(_ name: String) -> [[String: Any]] {
            lines(name).map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        }
        return Outputs(report: report, kept: lines("kept.jsonl"), removed: objects("removed.jsonl"),
                       clusters: objects("clusters.jsonl"), rejects: objects("rejects.jsonl"), pairs: objects("pairs.jsonl"))
    }

    static func record(_ id: String, _ text: String, hash: String? = nil) -> String {
        var digest = SHA1()
        digest.update(text.precomposedStringWithCanonicalMapping)
        let h = hash ?? "sha1:" + Hex.encode(digest.finalize())
        return "{\"id\":\(JSONWriter.quoted(id)),\"patent\":\"P\",\"text\":\(JSONWriter.quoted(text)),\"hash\":\"\(h)\"}"
    }

    static let base = "步骤S101：将所述原料加入反应釜中，在温度为八十摄氏度的条件下搅拌两小时，得到均匀的混合物，随后冷却至室温并过滤。"
    static let other = "Step 2: the filtered solid is washed three times with deionised water and dried under vacuum at sixty degrees for twelve hours."

    /// The notice about rejects names the first one exactly as the rejects
    /// file does (it was read back from the JSON text, which lost escapes).
    func testRejectNoticeKeepsTheExactError() throws {
        final class Notices: EventSink, @unchecked Sendable {
            var messages: [String] = []
            func report(_ event: StageEvent) { if case .notice(_, let m) = event { messages.append(m) } }
        }
        let dir = try temporaryDirectory()
        let input = "\(dir)/tab\there \"quoted\".jsonl"
        try ([Self.record("a", Self.base), #"{"id":"b","text":"x\ud800"}"#].joined(separator: "\n") + "\n")
            .write(toFile: input, atomically: true, encoding: .utf8)
        let comm = SingleRankCommunicator()
        let notices = Notices()
        let job = DedupJob(config: DedupConfig(), inputs: [input], outputDirectory: "\(dir)/out", communicator: comm,
                           exchange: RecordExchange(transport: SelfOnlyTransport(), communicator: comm), sink: notices)
        _ = try job.run()
        let expected = "\(input):2: text: invalid JSON at byte 20: lone surrogate \\ud800 (not part of a pair)"
        XCTAssertEqual(notices.messages.filter { $0.contains("rejected") }, ["1 rejected line(s), first: \(expected)"])
        let rejects = try String(contentsOfFile: "\(dir)/out/rejects.jsonl", encoding: .utf8)
        let object = try JSONSerialization.jsonObject(with: Data(rejects.utf8)) as! [String: Any]
        XCTAssertEqual(object["error"] as? String, expected)
        XCTAssertEqual(object["field"] as? String, "text")
    }

    /// A record whose text is empty (or only white space) is a reject, as in
    /// prepare, not a record to keep; counts still reconcile.
    func testEmptyTextIsRejected() throws {
        let dir = try temporaryDirectory()
        let input = "\(dir)/in.jsonl"
        try writeLines([Self.record("a", Self.base), "{\"id\":\"e\",\"text\":\"\"}", "{\"id\":\"w\",\"text\":\" \\n \"}", "",
                        Self.record("b", Self.other)], to: input)
        let o = try run([input], DedupConfig(), out: "\(dir)/out")
        XCTAssertEqual(o.report.records, 2)
        XCTAssertEqual(o.report.rejected, 2)
        XCTAssertEqual(o.report.blankLines, 1)
        XCTAssertEqual(o.report.lines, o.report.records + o.report.rejected + o.report.blankLines)
        XCTAssertEqual(o.rejects.map { $0["error"] as! String }, ["\(input):2: text: empty", "\(input):3: text: empty"])
        XCTAssertEqual(o.kept.count, 2)
    }

    func testCountsRejectsHashesAndOrder() throws {
        let dir = try temporaryDirectory()
        let lines = [
            Self.record("a", Self.base),
            Self.record("b", Self.other),
            Self.record("c", Self.base),                                   // identical to a
            "{broken",
            "",
            Self.record("d", Self.base.replacingOccurrences(of: "过滤。", with: "过滤即可。")),  // near a (J = 0.964), and longer
            Self.record("e", "完全不同的一段文字，讲述另一种装置的结构与连接方式。", hash: "sha1:0000"),
            Self.record("f", "Cafe\u{301} " + Self.other),                  // not NFC: converted before hashing
        ]
        let input = "\(dir)/in.jsonl"
        try (lines.joined(separator: "\n") + "\n").write(toFile: input, atomically: true, encoding: .utf8)
        let o = try run([input], DedupConfig(), out: "\(dir)/out")
        let r = o.report
        XCTAssertEqual(r.lines, 8)
        XCTAssertEqual(r.blankLines, 1)
        XCTAssertEqual(r.rejected, 1)
        XCTAssertEqual(r.records, 6)
        XCTAssertEqual(r.hashMismatches, 1, "only e's stored hash is wrong; f's is of its NFC text")
        XCTAssertEqual(r.exactDuplicates, 1)
        XCTAssertEqual(r.kept + r.removed, r.records)
        XCTAssertEqual(o.kept.count, r.kept)
        XCTAssertEqual(o.removed.count, r.removed)
        // d is the longest of {a, c, d}: it is kept and a, c point to it;
        // f (b with a word added, the NFC é) is longer than b: b points to f.
        let removedIds = o.removed.map { $0["id"] as! String }
        XCTAssertEqual(removedIds, ["a", "b", "c"])
        XCTAssertEqual(o.removed.map { $0["duplicate_of"] as! String }, ["d", "f", "d"])
        XCTAssertEqual(o.removed.map { $0["reason"] as! String }, ["near", "near", "near"])
        XCTAssertEqual(o.removed[0]["similarity"] as! Double, o.removed[2]["similarity"] as! Double, "a and c are identical")
        XCTAssertGreaterThanOrEqual(o.removed[1]["similarity"] as! Double, 0.85)
        // Kept lines are the input lines, byte for byte, in input order.
        XCTAssertEqual(o.kept, [lines[5], lines[6], lines[7]])
        XCTAssertEqual(o.rejects.count, 1)
        XCTAssertEqual(o.rejects[0]["line"] as? Int, 4)
        XCTAssertTrue((o.rejects[0]["error"] as! String).hasPrefix("\(input):4: invalid JSON"))
        XCTAssertEqual(o.clusters.count, 2)
        XCTAssertEqual(o.clusters.map { $0["representative"] as! String }, ["d", "f"], "ordered by the representative's position")
        XCTAssertEqual(o.clusters.map { $0["size"] as! Int }, [3, 2])
        XCTAssertTrue(r.firstHashMismatches.first?.hasPrefix("\(input):7: hash: stored sha1:0000") ?? false, "\(r.firstHashMismatches)")

        var strict = DedupConfig()
        strict.strict = true
        XCTAssertThrowsError(try run([input], strict, out: "\(dir)/strict")) { error in
            XCTAssertTrue("\(error)".contains("\(input):4: invalid JSON"), "\(error)")
        }
        // The first problem in input order is the one reported, whatever its kind.
        let mismatchFirst = "\(dir)/mismatch-first.jsonl"
        try ([lines[6], lines[3], lines[0]].joined(separator: "\n") + "\n").write(toFile: mismatchFirst, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try run([mismatchFirst], strict, out: "\(dir)/strict2")) { error in
            XCTAssertTrue("\(error)".contains("\(mismatchFirst):1: hash: stored sha1:0000"), "\(error)")
        }
    }

    func testInputSplitAcrossFilesGivesTheSameOutput() throws {
        let dir = try temporaryDirectory()
        let fixture = try XCTUnwrap(Bundle.module.path(forResource: "labelled", ofType: "jsonl", inDirectory: "Fixtures"))
        let all = try String(contentsOfFile: fixture, encoding: .utf8).split(separator: "\n")
        try (all[..<100].joined(separator: "\n") + "\n").write(toFile: "\(dir)/a.jsonl", atomically: true, encoding: .utf8)
        try (all[100...].joined(separator: "\n") + "\n").write(toFile: "\(dir)/b.jsonl", atomically: true, encoding: .utf8)
        let one = try run([fixture], DedupConfig(), out: "\(dir)/one")
        let two = try run(["\(dir)/a.jsonl", "\(dir)/b.jsonl"], DedupConfig(), out: "\(dir)/two")
        XCTAssertGreaterThan(one.report.removed, 20)
        XCTAssertEqual(one.kept, two.kept)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/one/removed.jsonl")),
                       try Data(contentsOf: URL(fileURLWithPath: "\(dir)/two/removed.jsonl")))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/one/clusters.jsonl")),
                       try Data(contentsOf: URL(fileURLWithPath: "\(dir)/two/clusters.jsonl")))
        // The same two files named by a prepare manifest.
        try Self.writeManifest(shards: ["a.jsonl", "b.jsonl"], in: dir)
        let inputs = try DedupInputs.resolve(["\(dir)/manifest.json"])
        XCTAssertEqual(inputs.files, ["\(dir)/a.jsonl", "\(dir)/b.jsonl"])
        XCTAssertEqual(inputs.shards.map(\.expected.fragments), [100, all.count - 100])
        XCTAssertEqual(try run(inputs.files, DedupConfig(), out: "\(dir)/manifest").kept, one.kept)
        try "{\"format\": \"other/1\"}".write(toFile: "\(dir)/bad.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try DedupInputs.expand(["\(dir)/bad.json"])) { XCTAssertTrue("\($0)".contains("format")) }
        XCTAssertEqual(try DedupInputs.expand(["x.jsonl"]), ["x.jsonl"])
    }

    /// A second run into the same folder replaces the first run's outputs as
    /// a whole: without write_pairs, no pairs.jsonl of the first run remains.
    func testSecondRunLeavesNoFileOfTheFirst() throws {
        let dir = try temporaryDirectory()
        let fixture = try XCTUnwrap(Bundle.module.path(forResource: "labelled", ofType: "jsonl", inDirectory: "Fixtures"))
        var config = DedupConfig()
        config.writePairs = true
        let first = try run([fixture], config, out: "\(dir)/out")
        XCTAssertFalse(first.pairs.isEmpty)
        config.writePairs = false
        config.threshold = 0.95
        let second = try run([fixture], config, out: "\(dir)/out")
        XCTAssertNotEqual(second.kept, first.kept)
        XCTAssertEqual(try FileSystem.list("\(dir)/out"), [OutputPublisher.marker, "clusters.jsonl", "kept.jsonl", "rejects.jsonl",
                                                           "removed.jsonl", "report.json"])
        XCTAssertEqual(try FileSystem.list(dir), ["out"], "no staging folder left")
    }

    /// A prepare manifest for JSONL files in `directory`, with their true counts and checksums.
    static func writeManifest(shards: [String], in directory: String) throws {
        let entries = try shards.map { file -> CorpusManifest.Shard in
            let bytes = try FileSystem.readAll("\(directory)/\(file)")
            return CorpusManifest.Shard(file: file, fragments: bytes.filter { $0 == 0x0A }.count, patents: 1, bytes: bytes.count, sha1: SHA1.hex(bytes))
        }
        let records = entries.reduce(0) { $0 + $1.fragments }
        try CorpusManifest(name: "x", ranks: shards.count, shards: entries, records: records, patents: shards.count, rejects: 0,
                           rejectsFile: "rejects.jsonl", rejectsSHA1: SHA1.hex([]), summaryFile: "summary.json")
            .write(to: "\(directory)/manifest.json")
        FileManager.default.createFile(atPath: "\(directory)/\(OutputPublisher.marker)", contents: Data())
    }

    /// A shard cut short after prepare wrote its manifest fails the run,
    /// naming the shard and both counts, whichever rank checks it.
    func testTruncatedShardOfAManifestFailsTheRun() throws {
        let dir = try temporaryDirectory()
        let fixture = try XCTUnwrap(Bundle.module.path(forResource: "labelled", ofType: "jsonl", inDirectory: "Fixtures"))
        let all = try String(contentsOfFile: fixture, encoding: .utf8).split(separator: "\n")
        try (all[..<71].joined(separator: "\n") + "\n").write(toFile: "\(dir)/a.jsonl", atomically: true, encoding: .utf8)
        try (all[71...].joined(separator: "\n") + "\n").write(toFile: "\(dir)/b.jsonl", atomically: true, encoding: .utf8)
        try Self.writeManifest(shards: ["a.jsonl", "b.jsonl"], in: dir)
        XCTAssertEqual(all.count - 71, 169)
        try (all[71..<152].joined(separator: "\n") + "\n").write(toFile: "\(dir)/b.jsonl", atomically: true, encoding: .utf8)
        let inputs = try DedupInputs.resolve(["\(dir)/manifest.json"])
        let comm = SingleRankCommunicator()
        let job = DedupJob(config: DedupConfig(), inputs: inputs.files, shards: inputs.shards, outputDirectory: "\(dir)/out",
                           communicator: comm, exchange: RecordExchange(transport: SelfOnlyTransport(), communicator: comm))
        XCTAssertThrowsError(try job.run()) { error in
            XCTAssertEqual("\(error)", "dedup: \(dir)/b.jsonl: 81 records, manifest says 169")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/out/kept.jsonl"))
        // A changed byte with the same line count is caught by the checksum.
        var bytes = try FileSystem.readAll("\(dir)/a.jsonl")
        try Self.writeManifest(shards: ["a.jsonl", "b.jsonl"], in: dir)
        bytes[10] = bytes[10] == 0x41 ? 0x42 : 0x41
        try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/a.jsonl"))
        let changed = try DedupInputs.resolve(["\(dir)/manifest.json"])
        XCTAssertThrowsError(try changed.shards[0].verify()) { XCTAssertTrue("\($0)".contains("SHA-1"), "\($0)") }
        XCTAssertNoThrow(try changed.shards[1].verify())
    }

    struct Accuracy { var precision: Double; var recall: Double; var predicted: Int; var truePairs: Int }

    /// Precision and recall at the threshold on the labelled fixture (a corpus
    /// made from real text by controlled edits, every family pair labelled
    /// with its exact Jaccard by scripts/bench/dedup_text.py).
    func accuracy(verify: String) throws -> Accuracy {
        let dir = try temporaryDirectory()
        let fixture = try XCTUnwrap(Bundle.module.path(forResource: "labelled", ofType: "jsonl", inDirectory: "Fixtures"))
        let labelsPath = try XCTUnwrap(Bundle.module.path(forResource: "labelled-pairs", ofType: "jsonl", inDirectory: "Fixtures"))
        var config = DedupConfig()
        config.verify = verify
        let o = try run([fixture], config, out: dir)
        let t = config.effectiveThreshold

        var texts: [String: String] = [:]
        for line in try String(contentsOfFile: fixture, encoding: .utf8).split(separator: "\n") {
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            texts[obj["id"] as! String] = obj["text"] as? String
        }
        func exactJaccard(_ a: String, _ b: String) -> Double {
            func set(_ s: String) -> [UInt64] {
                var scalars: [UInt32] = [], h: [UInt64] = []
                TextNormalizer.normalize(TextNormalizer.nfc(s), into: &scalars)
                Shingler.hashes(scalars, size: 5, seed: 1, into: &h)
                return Shingler.set(h)
            }
            return Shingler.jaccard(set(texts[a]!), set(texts[b]!))
        }
        var clusterOf: [String: Int] = [:]
        for (k, c) in o.clusters.enumerated() {
            clusterOf[c["representative"] as! String] = k
            for m in c["members"] as! [[String: Any]] { clusterOf[m["id"] as! String] = k }
        }
        var truePairs = 0, found = 0
        for line in try String(contentsOfFile: labelsPath, encoding: .utf8).split(separator: "\n") {
            let l = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let a = l["a"] as! String, b = l["b"] as! String, j = l["jaccard"] as! Double
            // Swift's shingling agrees with the Python reference.
            XCTAssertEqual(exactJaccard(a, b), j, accuracy: 2e-6, "\(a) \(b)")
            if j >= t {
                truePairs += 1
                if let ca = clusterOf[a], clusterOf[b] == ca { found += 1 }
            }
        }
        // Precision of what was removed: a record removed as a near duplicate
        // is right when some other record of its cluster is at or above the
        // threshold by exact Jaccard (clusters join verified pairs, so its
        // representative itself may be further away).
        var membersOf: [Int: [String]] = [:]
        for (id, k) in clusterOf { membersOf[k, default: []].append(id) }
        let predicted = o.removed.filter { $0["reason"] as? String == "near" }.map { $0["id"] as! String }
        let correct = predicted.filter { id in membersOf[clusterOf[id]!]!.contains { $0 != id && exactJaccard($0, id) >= t } }.count
        XCTAssertEqual(o.removed.count, o.report.removed)
        XCTAssertGreaterThan(predicted.count, 20, "too few near-duplicate removals to measure precision on")
        return Accuracy(precision: Double(correct) / Double(max(predicted.count, 1)),
                        recall: Double(found) / Double(max(truePairs, 1)), predicted: predicted.count, truePairs: truePairs)
    }

    func testPrecisionAndRecallOnLabelledPairs() throws {
        let estimated = try accuracy(verify: "estimated")
        print("labelled fixture, estimated verification: \(estimated)")
        XCTAssertGreaterThan(estimated.truePairs, 50)
        XCTAssertGreaterThanOrEqual(estimated.recall, 0.93, "\(estimated)")
        XCTAssertGreaterThanOrEqual(estimated.precision, 0.93, "\(estimated)")
        let exact = try accuracy(verify: "exact")
        print("labelled fixture, exact verification: \(exact)")
        XCTAssertEqual(exact.precision, 1, "exact verification keeps only pairs at or above the threshold: \(exact)")
        XCTAssertGreaterThanOrEqual(exact.recall, 0.95, "\(exact)")
        // Hybrid (the default): the estimate decides only far from the
        // threshold, so precision and recall match exact verification here.
        let hybrid = try accuracy(verify: "hybrid")
        print("labelled fixture, hybrid verification: \(hybrid)")
        XCTAssertGreaterThanOrEqual(hybrid.precision, 0.99, "\(hybrid)")
        XCTAssertGreaterThanOrEqual(hybrid.recall, 0.95, "\(hybrid)")
    }

    /// With one band of all 128 rows LSH finds (almost) nothing, so near
    /// duplicates stay in the kept set and the sampled estimate must see them.
    func testRemainingEstimateSeesMissedDuplicates() throws {
        let dir = try temporaryDirectory()
        let fixture = try XCTUnwrap(Bundle.module.path(forResource: "labelled", ofType: "jsonl", inDirectory: "Fixtures"))
        var blind = DedupConfig()
        blind.bands = 1; blind.rows = 128
        let missed = try run([fixture], blind, out: "\(dir)/blind").report
        let normal = try run([fixture], DedupConfig(), out: "\(dir)/normal").report
        XCTAssertLessThan(missed.removed, normal.removed)
        XCTAssertEqual(missed.remaining.sampled, missed.kept, "sample_size exceeds the kept set: all are checked")
        XCTAssertGreaterThan(missed.remaining.withDuplicate, 10)
        XCTAssertLessThan(normal.remaining.withDuplicate, missed.remaining.withDuplicate)
        XCTAssertLessThanOrEqual(missed.remaining.lower, missed.remaining.rate)
        XCTAssertGreaterThanOrEqual(missed.remaining.upper, missed.remaining.rate)
    }
}
