import Foundation
import XCTest

/// `dapt tokenizer train` and `encode` under real mpirun give the same bytes
/// as one rank.
final class TokenizerMultiRankTests: XCTestCase {
    /// A small mixed Chinese/English JSONL corpus (deterministic).
    func writeCorpus(_ path: String, records: Int) throws {
        let zh = ["本发明", "涉及", "一种", "电池", "装置", "所述", "外壳", "连接", "其特征在于", "包括", "控制", "模块", "信号"]
        let en = ["the", "battery", "device", "comprises", "a", "housing", "connected", "to", "control", "module", "signal", "it's"]
        var state: UInt64 = 42
        func next() -> Int { state = state &* 6364136223846793005 &+ 1442695040888963407; return Int(state >> 33) }
        var lines: [String] = []
        for i in 0..<records {
            var text = ""
            let chinese = next() % 3 != 0
            for _ in 0..<(5 + next() % 40) {
                if chinese { text += zh[next() % zh.count] + (next() % 7 == 0 ? "，" : "") }
                else { text += en[next() % en.count] + " " }
                if next() % 11 == 0 { text += String(next() % 5000) }
            }
            let data = try JSONSerialization.data(withJSONObject: ["id": "r\(i)", "text": text + "。"], options: [.sortedKeys])
            lines.append(String(decoding: data, as: UTF8.self))
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    func files(_ dir: String) throws -> [String: Data] {
        var out: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) {
            out[name] = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))
        }
        return out
    }

    func testTrainAndEncodeAreTheSameOnOneTwoAndThreeRanks() throws {
        let dir = try DaptProcess.temporaryDirectory(self).path
        let a = dir + "/a.jsonl", b = dir + "/b.jsonl"
        try writeCorpus(a, records: 300)
        try writeCorpus(b, records: 157)

        var tokenizers: [Data] = []
        for np in [1, 2, 3] {
            let out = dir + "/tok\(np).json"
            let r = try DaptProcess.mpirun(np: np, ["tokenizer", "train", "--input", a, "--input", b, "--output", out, "--vocab-size", "600"], timeout: 120)
            XCTAssertEqual(r.status, 0, r.report)
            XCTAssertTrue(r.stdout.contains("counted 457 texts"), r.report)
            // The ranks formed one job of np (not np separate one-rank runs).
            XCTAssertTrue(r.stdout.contains(" on \(np) rank(s)"), r.report)
            tokenizers.append(try Data(contentsOf: URL(fileURLWithPath: out)))
        }
        for k in 1..<tokenizers.count { XCTAssertEqual(tokenizers[k], tokenizers[0], "tokenizer.json differs between 1 and \(k + 1) ranks") }

        var outputs: [[String: Data]] = []
        for np in [1, 2, 3] {
            let out = dir + "/shards\(np)"
            let r = try DaptProcess.mpirun(np: np, ["tokenizer", "encode", "--tokenizer", dir + "/tok1.json", "--input", a, "--input", b,
                                                    "--output", out, "--shard-lines", "50"], timeout: 120)
            XCTAssertEqual(r.status, 0, r.report)
            XCTAssertTrue(r.stdout.contains("encoded 457 lines: 457 documents, 0 rejected"), r.report)
            XCTAssertTrue(r.stdout.contains("over \(np) ranks)"), r.report)
            XCTAssertTrue(r.stdout.contains("tokens/Han character"), r.report)
            outputs.append(try files(out))
        }
        XCTAssertEqual(outputs[0].keys.filter { $0.hasSuffix(".tokens") }.count, 10)
        for k in 1..<outputs.count {
            XCTAssertEqual(outputs[k].keys.sorted(), outputs[0].keys.sorted())
            for (name, data) in outputs[0] { XCTAssertEqual(outputs[k][name], data, "\(name) differs with \(k + 1) ranks") }
        }
        let verify = try DaptProcess.dapt(["tokenizer", "verify", "--input", dir + "/shards2"])
        XCTAssertEqual(verify.status, 0, verify.report)
        XCTAssertTrue(verify.stdout.contains("ok: 10 shards, 457 documents"), verify.report)

        // A document decodes back to its text (plus the end-of-document marker).
        let decoded = try DaptProcess.dapt(["tokenizer", "decode", "--input", dir + "/shards3", "--document", "300"])
        XCTAssertEqual(decoded.status, 0, decoded.report)
        let firstOfB = try String(contentsOfFile: b, encoding: .utf8).split(separator: "\n")[0]
        let text = (try JSONSerialization.jsonObject(with: Data(firstOfB.utf8)) as! [String: Any])["text"] as! String
        XCTAssertEqual(decoded.stdout, text + "<|eos|>\n", decoded.report)
    }

    /// --strict under mpirun stops train and encode at the first bad record in
    /// input order, whichever rank reads it (lines go to ranks 2, 1 and 0 here).
    func testStrictStopsAtTheFirstBadRecordInInputOrder() throws {
        let dir = try DaptProcess.temporaryDirectory(self).path
        let a = dir + "/a.jsonl"
        try writeCorpus(a, records: 60)
        var lines = try String(contentsOfFile: a, encoding: .utf8).split(separator: "\n").map(String.init)
        for k in [5, 7, 9] { lines[k] = "{\"id\": \"broken\(k)\", \"text\": \(k)}" }
        try (lines.joined(separator: "\n") + "\n").write(toFile: a, atomically: true, encoding: .utf8)
        let train = try DaptProcess.mpirun(np: 3, ["tokenizer", "train", "--input", a, "--output", dir + "/t.json", "--vocab-size", "400", "--strict"], timeout: 120)
        XCTAssertNotEqual(train.status, 0, train.report)
        // Once: one job of three ranks agreeing on the error, printed by rank 0.
        XCTAssertEqual(train.stderr.components(separatedBy: "a.jsonl:6: text: must be a string, not number (--strict)").count - 1, 1, train.report)
        XCTAssertFalse(train.stderr.contains("a.jsonl:8:") || train.stderr.contains("a.jsonl:10:"), train.report)
        let ok = try DaptProcess.dapt(["tokenizer", "train", "--input", a, "--output", dir + "/t.json", "--vocab-size", "400", "--no-strict"])
        XCTAssertEqual(ok.status, 0, ok.report)
        XCTAssertTrue(ok.stdout.contains("lines: 60 = 57 texts + 3 rejected + 0 blank: ok"), ok.report)
        // Encode: one line per shard, so shards 5, 7 and 9 go to ranks 2, 1 and 0.
        let encode = try DaptProcess.mpirun(np: 3, ["tokenizer", "encode", "--tokenizer", dir + "/t.json", "--input", a, "--output", dir + "/s",
                                                    "--shard-lines", "1", "--strict"], timeout: 120)
        XCTAssertNotEqual(encode.status, 0, encode.report)
        XCTAssertEqual(encode.stderr.components(separatedBy: "a.jsonl:6: text: must be a string, not number (--strict)").count - 1, 1, encode.report)
        XCTAssertFalse(encode.stderr.contains("a.jsonl:8:") || encode.stderr.contains("a.jsonl:10:"), encode.report)
    }

    /// A bad record under mpirun stops the job with its file and line.
    func testBadRecordStopsTheJobWithFileAndLine() throws {
        let dir = try DaptProcess.temporaryDirectory(self).path
        let a = dir + "/a.jsonl"
        try writeCorpus(a, records: 120)
        var lines = try String(contentsOfFile: a, encoding: .utf8).split(separator: "\n").map(String.init)
        lines[100] = #"{"id": "broken", "text": 7}"#
        try (lines.joined(separator: "\n") + "\n").write(toFile: a, atomically: true, encoding: .utf8)
        let train = try DaptProcess.dapt(["tokenizer", "train", "--input", a, "--output", dir + "/t.json", "--vocab-size", "400", "--no-strict"])
        XCTAssertEqual(train.status, 0, train.report)
        let r = try DaptProcess.mpirun(np: 2, ["tokenizer", "encode", "--tokenizer", dir + "/t.json", "--input", a, "--output", dir + "/s", "--shard-lines", "30"], timeout: 120)
        XCTAssertNotEqual(r.status, 0, r.report)
        XCTAssertEqual(r.stderr.components(separatedBy: "a.jsonl:101: text: must be a string").count - 1, 1, r.report)
    }
}
