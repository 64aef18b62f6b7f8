import Foundation
import XCTest

/// `dapt filter` under real mpirun: byte-identical outputs for 1, 2 and 3 ranks.
final class FilterMultiRankTests: XCTestCase {
    static var model: String {
        DaptProcess.repositoryRoot.appendingPathComponent("Tests/DaptTrainTests/Fixtures/interop/dapt").path
    }

    static let outputs = ["kept.jsonl", "removed.jsonl", "scores.jsonl", "rejects.jsonl", "report.json", "report.html"]

    func testSameOutputForOneToThreeRanks() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        // Records of every length (long ones scored in several windows), some
        // character noise, a language of their own, a bad line and a blank one.
        let words = "the of patent claim device method layer signal circuit first second wherein comprising".split(separator: " ")
        var state: UInt64 = 11
        func next() -> Int { state = state &* 6364136223846793005 &+ 1442695040888963407; return Int(state >> 33) }
        var lines: [String] = []
        for i in 0..<160 {
            let n = 2 + next() % (i % 10 == 0 ? 150 : 40)
            var text = (0..<n).map { _ in String(words[next() % words.count]) }.joined(separator: " ")
            if i % 9 == 4 { text = String((0..<(n * 3)).map { _ in Character(Unicode.Scalar(UInt8(33 + next() % 90))) }) }
            let lang = i % 5 == 0 ? "de" : "en"
            let escaped = text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            lines.append("{\"id\":\"r\(i)\",\"lang\":\"\(lang)\",\"text\":\"\(escaped)\"}")
        }
        lines.insert("{\"id\":\"broken\",\"text\":", at: 40)
        // Too short to score: rejected by the rank that tokenises it.
        lines.insert("{\"id\":\"empty\",\"text\":\"\"}", at: 20)
        lines.insert("", at: 90)
        let input = dir.appendingPathComponent("in.jsonl").path
        try (lines.joined(separator: "\n") + "\n").write(toFile: input, atomically: true, encoding: .utf8)
        let config = dir.appendingPathComponent("filter.yaml").path
        try "filter:\n  window: 48\n  overlap: 12\n  batch_size: 2\n  write_scores: true\n  high_quantile: 0.9\n  low_quantile: 0.05\n"
            .write(toFile: config, atomically: true, encoding: .utf8)

        var reference: [String: Data] = [:]
        for np in 1...3 {
            let out = dir.appendingPathComponent("out\(np)").path
            let result = try DaptProcess.mpirun(np: np, ["filter", "--input", input, "--output", out, "--model", Self.model, "--config", config], timeout: 120)
            XCTAssertEqual(result.status, 0, "np=\(np)\n\(result.report)")
            XCTAssertTrue(result.stdout.contains("scored on \(np) rank(s)"), result.report)
            XCTAssertTrue(result.stdout.contains("162 records in (1 blank line(s) skipped) = "), result.report)
            XCTAssertTrue(result.stdout.contains(" + 2 rejected"), result.report)
            // Each rank tokenises its share only: record k on rank k mod np.
            XCTAssertTrue(result.stdout.contains("rank 0 tokenised \((161 + np - 1) / np) of 161 records"), result.report)
            for name in Self.outputs {
                let data = try Data(contentsOf: URL(fileURLWithPath: "\(out)/\(name)"))
                XCTAssertFalse(data.isEmpty, "\(name) is empty for np=\(np)")
                if let ref = reference[name] {
                    XCTAssertEqual(data, ref, "\(name) differs between 1 and \(np) ranks")
                } else {
                    reference[name] = data
                }
            }
        }
        let report = try JSONSerialization.jsonObject(with: reference["report.json"]!) as! [String: Any]
        XCTAssertEqual(report["records"] as? Int, 160)
        XCTAssertGreaterThan(report["removed_high"] as! Int, 0)
        XCTAssertEqual((report["groups"] as! [[String: Any]]).map { $0["lang"] as! String }.filter { $0 == "de" }.isEmpty, false)
        let rejects = String(decoding: reference["rejects.jsonl"]!, as: UTF8.self).split(separator: "\n")
        XCTAssertEqual(rejects.count, 2)
        XCTAssertTrue(rejects[0].contains("in.jsonl:21") && rejects[0].contains("too short to score"), "\(rejects)")
        XCTAssertTrue(rejects[1].contains("in.jsonl:42"), "\(rejects)")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["filter.yaml", "in.jsonl", "out1", "out2", "out3"])

        // --strict: the first bad record in input order, though another rank found it (record 20 is rank 2's of 3).
        for np in [1, 3] {
            let out = dir.appendingPathComponent("strict\(np)").path
            let result = try DaptProcess.mpirun(np: np, ["filter", "--input", input, "--output", out, "--model", Self.model, "--config", config, "--strict"], timeout: 120)
            XCTAssertNotEqual(result.status, 0, result.report)
            XCTAssertEqual(result.stderr.components(separatedBy: "in.jsonl:21: text: 0 token(s): too short to score").count, 2, "np=\(np)\n\(result.report)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        }
    }

    /// Usage and configuration errors stop the command before any work, with status 2.
    func testBadModelOrSettingIsAConfigurationError() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let input = dir.appendingPathComponent("in.jsonl").path
        try "{\"text\":\"the claim\"}\n".write(toFile: input, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("out").path
        var result = try DaptProcess.dapt(["filter", "--input", input, "--output", out, "--model", dir.appendingPathComponent("none").path])
        XCTAssertEqual(result.status, 2, result.report)
        XCTAssertTrue(result.stderr.contains("--model"), result.report)
        result = try DaptProcess.dapt(["filter", "--input", input, "--output", out, "--model", Self.model, "--set", "high_quantile=2"])
        XCTAssertEqual(result.status, 2, result.report)
        XCTAssertTrue(result.stderr.contains("filter.high_quantile"), result.report)
        result = try DaptProcess.dapt(["filter", "--input", input, "--output", out, "--model", Self.model, "--window", "4096"])
        XCTAssertEqual(result.status, 2, result.report)
        XCTAssertTrue(result.stderr.contains("filter.window: 4096 exceeds the positions"), result.report)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}
