import DaptCore
import Foundation
import XCTest

/// `dapt dedup` under real mpirun and the ZeroMQ exchange: the same output
/// for 1 to 4 ranks, and a killed rank ends the job with an error.
final class DedupMultiRankTests: XCTestCase {
    static var fixture: String {
        DaptProcess.repositoryRoot.appendingPathComponent("Tests/DaptDedupTests/Fixtures/labelled.jsonl").path
    }

    static let outputs = ["kept.jsonl", "removed.jsonl", "clusters.jsonl", "rejects.jsonl", "pairs.jsonl"]

    /// The default (hybrid) verification.
    func testSameOutputForOneToFourRanks() throws { try sameOutputForOneToFourRanks(verify: nil) }

    /// Exact verification re-reads and ships texts: the same output too.
    func testSameOutputForOneToFourRanksExact() throws { try sameOutputForOneToFourRanks(verify: "exact") }

    func sameOutputForOneToFourRanks(verify: String?) throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        // The fixture plus a bad line and a blank one, so rejects are compared too.
        var input = try String(contentsOfFile: Self.fixture, encoding: .utf8)
        input += "{\"id\":\"broken\",\"text\":\n\n"
        let inputPath = dir.appendingPathComponent("in.jsonl").path
        try input.write(toFile: inputPath, atomically: true, encoding: .utf8)
        let config = dir.appendingPathComponent("dedup.yaml").path
        let verifyLine = verify.map { "  verify: \($0)\n" } ?? ""
        try "dedup:\n  write_pairs: true\n  sample_size: 50\n\(verifyLine)cluster:\n  batch_bytes: 4096\n".write(toFile: config, atomically: true, encoding: .utf8)

        var reference: [String: Data] = [:]
        var referenceCounts: [String]?
        for np in 1...4 {
            let out = dir.appendingPathComponent("out\(np)").path
            let args = ["dedup", "--input", inputPath, "--output", out, "--config", config]
            let result = np == 1 ? try DaptProcess.dapt(args, timeout: 120) : try DaptProcess.mpirun(np: np, args, timeout: 120)
            XCTAssertEqual(result.status, 0, "np=\(np)\n\(result.report)")
            XCTAssertTrue(result.stdout.contains("\(np) rank(s)"), result.report)
            XCTAssertTrue(result.stdout.contains(": ok"), "counts line: \(result.report)")
            let report = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(out)/report.json"))) as! [String: Any]
            XCTAssertEqual(report["ranks"] as? Int, np)
            XCTAssertEqual(report["verify"] as? String, verify ?? "hybrid")
            XCTAssertEqual(report["rejected"] as? Int, 1)
            XCTAssertEqual((report["kept"] as! Int) + (report["removed"] as! Int), report["records"] as? Int)
            XCTAssertGreaterThan(report["removed"] as! Int, 20)
            // Every count in the report is a property of the corpus, not of the ranks.
            let counts = ["lines", "records", "exact_duplicates", "candidate_pairs", "verified_pairs", "exact_comparisons", "clusters",
                          "removed", "removed_exact", "kept", "records_in_clusters"].map { "\($0)=\(report[$0]!)" }
                + ["sampled", "with_duplicate"].map { "\($0)=\((report["remaining_duplicate_rate"] as! [String: Any])[$0]!)" }
            if let first = referenceCounts { XCTAssertEqual(counts, first, "report counts differ for np=\(np)") } else { referenceCounts = counts }
            for name in Self.outputs {
                let data = try Data(contentsOf: URL(fileURLWithPath: "\(out)/\(name)"))
                XCTAssertFalse(data.isEmpty, "\(name) is empty for np=\(np)")
                if let ref = reference[name] {
                    XCTAssertEqual(data, ref, "\(name) differs between 1 and \(np) ranks")
                } else {
                    reference[name] = data
                }
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: "\(out)/kept.jsonl.partial"))
        }
    }

    /// Ranks whose byte range holds no line still take part in every round.
    func testMoreRanksThanRecords() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let text = "步骤S101：将所述原料加入反应釜中，在温度为八十摄氏度的条件下搅拌两小时，得到均匀的混合物。"
        let input = dir.appendingPathComponent("tiny.jsonl").path
        try ("{\"id\":\"x\",\"text\":\"\(text)\"}\n{\"id\":\"y\",\"text\":\"\(text)！\"}\n").write(toFile: input, atomically: true, encoding: .utf8)
        let one = try DaptProcess.dapt(["dedup", "--input", input, "--output", dir.appendingPathComponent("one").path])
        XCTAssertEqual(one.status, 0, one.report)
        let four = try DaptProcess.mpirun(np: 4, ["dedup", "--input", input, "--output", dir.appendingPathComponent("four").path], timeout: 120)
        XCTAssertEqual(four.status, 0, four.report)
        XCTAssertTrue(four.stdout.contains("4 rank(s)"), four.report)
        for name in ["kept.jsonl", "removed.jsonl", "clusters.jsonl"] {
            let a = try String(contentsOfFile: dir.appendingPathComponent("one/\(name)").path, encoding: .utf8)
            let b = try String(contentsOfFile: dir.appendingPathComponent("four/\(name)").path, encoding: .utf8)
            XCTAssertEqual(a, b, name)
        }
        let removed = try String(contentsOfFile: dir.appendingPathComponent("four/removed.jsonl").path, encoding: .utf8)
        XCTAssertTrue(removed.hasPrefix("{\"id\":\"x\"") && removed.contains("\"duplicate_of\":\"y\""),
                      "y is x plus punctuation (identical after normalisation) and longer, so y is kept: \(removed)")
    }

    /// A prepare manifest whose second shard was cut short: the job fails on
    /// every rank count, naming the shard and both record counts, and writes
    /// no kept file.
    func testTruncatedShardFailsTheJob() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let lines = try String(contentsOfFile: Self.fixture, encoding: .utf8).split(separator: "\n")
        let parts = [lines[..<71], lines[71...]]
        var shards: [CorpusManifest.Shard] = []
        for (k, part) in parts.enumerated() {
            let bytes = Array((part.joined(separator: "\n") + "\n").utf8)
            shards.append(CorpusManifest.Shard(file: "s\(k).jsonl", fragments: part.count, patents: 1, bytes: bytes.count, sha1: SHA1.hex(bytes)))
            try Data(bytes).write(to: dir.appendingPathComponent("s\(k).jsonl"))
        }
        let manifest = dir.appendingPathComponent("manifest.json").path
        try CorpusManifest(name: "s", ranks: 2, shards: shards, records: lines.count, patents: 2, rejects: 0,
                           rejectsFile: "rejects.jsonl", rejectsSHA1: SHA1.hex([]), summaryFile: "summary.json").write(to: manifest)
        FileManager.default.createFile(atPath: dir.appendingPathComponent(OutputPublisher.marker).path, contents: Data())
        let whole = try DaptProcess.mpirun(np: 2, ["dedup", "--input", manifest, "--output", dir.appendingPathComponent("ok").path], timeout: 120)
        XCTAssertEqual(whole.status, 0, whole.report)
        XCTAssertTrue(whole.stdout.contains("2 rank(s)"), whole.report)
        try ((lines[71..<152].joined(separator: "\n")) + "\n").write(to: dir.appendingPathComponent("s1.jsonl"), atomically: true, encoding: .utf8)
        for np in [1, 2] {
            let out = dir.appendingPathComponent("out\(np)").path
            let args = ["dedup", "--input", manifest, "--output", out]
            let result = np == 1 ? try DaptProcess.dapt(args, timeout: 120) : try DaptProcess.mpirun(np: np, args, timeout: 120)
            XCTAssertNotEqual(result.status, 0, "np=\(np): \(result.report)")
            // Once: the ranks of one job agree on the error and rank 0 prints it.
            XCTAssertEqual(result.stderr.components(separatedBy: "s1.jsonl: 81 records, manifest says 169").count - 1, 1, "np=\(np): \(result.report)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: "\(out)/kept.jsonl"))
        }
    }

    /// A rank killed with SIGKILL while the job runs makes mpirun exit
    /// non-zero promptly, leaving no rank behind, and the output folder as
    /// the earlier complete run left it: not one file of the killed run.
    func testKilledRankFailsTheJob() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        // A corpus big enough to keep four ranks busy for a few seconds.
        let base = try String(contentsOfFile: Self.fixture, encoding: .utf8).split(separator: "\n")
        var big = ""
        for copy in 0..<40 {
            for line in base { big += line.replacingOccurrences(of: "\"id\": \"", with: "\"id\": \"c\(copy)-") + "\n" }
        }
        let inputPath = dir.appendingPathComponent("big.jsonl").path
        try big.write(toFile: inputPath, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("out").path
        // The earlier run has a reject, so every one of its files differs from the killed run's.
        let small = dir.appendingPathComponent("small.jsonl").path
        try (base.prefix(50).joined(separator: "\n") + "\n{\"id\":\"broken\"\n").write(toFile: small, atomically: true, encoding: .utf8)
        let earlier = try DaptProcess.dapt(["dedup", "--input", small, "--output", out], timeout: 120)
        XCTAssertEqual(earlier.status, 0, earlier.report)
        func snapshot() throws -> [String: Data] {
            var files: [String: Data] = [:]
            for name in try FileManager.default.contentsOfDirectory(atPath: out) {
                files[name] = try Data(contentsOf: URL(fileURLWithPath: "\(out)/\(name)"))
            }
            return files
        }
        let before = try snapshot()
        XCTAssertNotNil(before[".dapt-complete"])
        var rankPids: [Int32] = []
        var killedAt: Date?
        let result = try DaptProcess.mpirun(np: 4, ["dedup", "--input", inputPath, "--output", out], timeout: 120) { mpirun in
            // The ranks are mpirun's children running dapt; kill rank-process #2 once all four exist.
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                rankPids = Self.children(of: mpirun.processIdentifier).filter { Self.command($0).contains("dapt") }
                if rankPids.count == 4 { break }
                Thread.sleep(forTimeInterval: 0.02)
            }
            guard rankPids.count == 4 else { return }
            // Kill once the job has written its first output (the rejects, early on),
            // wherever it writes them: a kill before any write would prove nothing.
            let oldRejects = before["rejects.jsonl"]
            let staged = dir.appendingPathComponent(".out.staging/rejects.jsonl").path
            while Date() < deadline {
                let current = try? Data(contentsOf: URL(fileURLWithPath: "\(out)/rejects.jsonl"))
                if FileManager.default.fileExists(atPath: staged) || current != oldRejects { break }
                Thread.sleep(forTimeInterval: 0.01)
            }
            kill(rankPids[1], SIGKILL)
            killedAt = Date()
        }
        XCTAssertEqual(rankPids.count, 4, "ranks never started: \(result.report)")
        XCTAssertFalse(result.timedOut, "mpirun hung after a rank was killed\n\(result.report)")
        XCTAssertNotEqual(result.status, 0, "the job must fail: \(result.report)")
        if let killedAt { XCTAssertLessThan(Date().timeIntervalSince(killedAt), 15, "job took too long to end") }
        XCTAssertEqual(try snapshot(), before, "a failed job must leave the earlier output as it was")
        Thread.sleep(forTimeInterval: 0.5)
        for pid in rankPids { XCTAssertFalse(DaptProcess.isAlive(pid), "rank process \(pid) left behind") }
    }

    static func children(of parent: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 2 && Int32(fields[1]) == parent
        }.sorted()
    }

    static func command(_ pid: Int32) -> String {
        (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8))?.replacingOccurrences(of: "\0", with: " ") ?? ""
    }
}
