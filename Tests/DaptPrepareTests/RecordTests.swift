import DaptCore
import DaptPrepare
import Foundation
import XCTest

final class RecordTests: XCTestCase {
    func parseLine(_ line: String) -> Result<PatentRecord, PrepareReject> {
        Array(line.utf8).withUnsafeBufferPointer { PatentReader.parseJSONLine($0, file: "in.jsonl", lineNumber: 7) }
    }

    func testJSONLineFieldsAndEscapes() throws {
        let record = try parseLine(#"{"patent":"CN1","title":"一种\"方法\"\n","lang":"zh","extra":{"a":[1,2,{"b":null}]},"pub_date":null,"text":"步骤S1：\u83b7\u53d6\ud83d\ude00。"}"#).get()
        XCTAssertEqual(record.patent, "CN1")
        XCTAssertEqual(record.title, "一种\"方法\"\n")
        XCTAssertNil(record.pubDate)
        XCTAssertNil(record.jurisdiction)
        XCTAssertEqual(String(decoding: record.pages[0], as: UTF8.self), "步骤S1：获取😀。")
        XCTAssertFalse(record.paged)
        let paged = try parseLine(#"{"patent":"US2","pages":["Step 1: a.","Step 2: b."]}"#).get()
        XCTAssertTrue(paged.paged)
        XCTAssertEqual(paged.pages.count, 2)
        XCTAssertEqual(try parseLine("\u{FEFF}" + #"{"patent":"US4","text":"x"}"#).get().patent, "US4", "a BOM is skipped")
        let formFeed = try parseLine(#"{"patent":"US3","text":"p1\fp2\fp3"}"#).get()
        XCTAssertEqual(formFeed.pages.map { String(decoding: $0, as: UTF8.self) }, ["p1", "p2", "p3"])
    }

    func testBadLinesAreRejectedWithFieldAndReason() {
        func reject(_ line: String) -> PrepareReject? {
            if case .failure(let r) = parseLine(line) { return r }
            return nil
        }
        XCTAssertEqual(reject("{\"patent\": \"CN1\", \"text\": }")?.reason.code, "malformed_json")
        XCTAssertEqual(reject("{\"patent\": \"CN1\", \"text\": \"a\"} trailing")?.reason.code, "malformed_json")
        XCTAssertEqual(reject("{\"patent\": \"CN1\", \"patent\": \"CN2\", \"text\": \"a\"}")?.reason.code, "malformed_json")
        XCTAssertEqual(reject("{\"text\": \"a\"}")?.field, "patent")
        XCTAssertEqual(reject("{\"patent\": \"CN1\"}")?.field, "text")
        XCTAssertEqual(reject("{\"patent\": 5, \"text\": \"a\"}")?.reason, .wrongType(expected: "a string", got: "number"))
        XCTAssertEqual(reject("{\"patent\": \"CN1\", \"pages\": [\"a\", 3]}")?.field, "pages[1]")
        XCTAssertEqual(reject("{\"patent\": \"CN1\", \"text\": \"a\", \"title\": [1]}")?.field, "title")
        XCTAssertEqual(reject("{\"patent\": \"CN1\", \"text\": \"\\ud800\"}")?.reason.code, "malformed_json")
        let r = reject("{\"text\": \"a\"}")!
        XCTAssertEqual(r.description, "in.jsonl:7: patent: required field is missing")
        XCTAssertEqual(r.raw, Array("{\"text\": \"a\"}".utf8))
        var bad = Array("{\"patent\":\"CN1\",\"text\":\"".utf8) + [0xE6, 0x9C] + Array("\"}".utf8)
        let invalid = bad.withUnsafeBufferPointer { PatentReader.parseJSONLine($0, file: "in.jsonl", lineNumber: 3) }
        guard case .failure(let e) = invalid else { return XCTFail("invalid UTF-8 accepted") }
        XCTAssertEqual(e.reason, .invalidUTF8(byte: 24))
        bad[24] = 0xC0
        XCTAssertEqual(TextNormalization.firstInvalidUTF8(bad), 24)
    }

    func testFrontMatterFile() throws {
        let text = "---\npatent: CN9\ntitle: \"一种\\\"装置\\\"\"  # comment\nsource: 'it''s'\nlang:\n---\n步骤S1：甲。\u{0C}步骤S2：乙。\n"
        let record = try Array(text.utf8).withUnsafeBufferPointer { PatentReader.parseTextFile($0, file: "a.txt") }.get()
        XCTAssertEqual(record.patent, "CN9")
        XCTAssertEqual(record.title, "一种\"装置\"")
        XCTAssertEqual(record.source, "it's")
        XCTAssertNil(record.lang)
        XCTAssertTrue(record.paged)
        XCTAssertEqual(record.pages.map { String(decoding: $0, as: UTF8.self) }, ["步骤S1：甲。", "步骤S2：乙。\n"])

        func reject(_ t: String) -> PrepareReject? {
            if case .failure(let r) = Array(t.utf8).withUnsafeBufferPointer({ PatentReader.parseTextFile($0, file: "b.md") }) { return r }
            return nil
        }
        XCTAssertEqual(reject("no front matter")?.reason.code, "bad_front_matter")
        XCTAssertEqual(reject("---\ntitle: x\n---\nbody")?.field, "patent")
        XCTAssertEqual(reject("---\npatent: CN1\nthis line has no colon\n---\n")?.line, 3)
        XCTAssertEqual(reject("---\npatent: CN1\n")?.reason.code, "bad_front_matter")
    }

    func testNFCAndHash() throws {
        let config = PrepareConfig()
        let splitter = try PatentSplitter(config: config, counter: EstimatedTokenCounter())
        // Decomposed é and a CJK compatibility ideograph (U+F900 → U+8C48).
        let record = PatentRecord(patent: "CN7", pages: [Array("步骤S1：cafe\u{301} \u{F900}。\n步骤S2：乙。".utf8)], paged: false)
        let split = try splitter.split(record).get()
        let text = String(decoding: split.fragments[0].text, as: UTF8.self)
        XCTAssertEqual(Array(text.unicodeScalars), Array("步骤S1：caf\u{E9} \u{8C48}。".unicodeScalars))
        XCTAssertTrue(TextNormalization.isQuickNFC(split.fragments[0].text))
    }

    func testFragmentJSONFieldOrderIdAndHash() throws {
        let record = PatentRecord(patent: "CN\"x", jurisdiction: "CN", title: "题\n目", lang: "zh", pubDate: "2023-06-21",
                                  source: "https://e/x.pdf", pages: [Array("a".utf8)], paged: false)
        let fragment = PreparedFragment(step: 2, paragraph: 3, fragment: 4, text: Array("步骤1:\t\"引号\"\\ \u{1}".utf8), page: 5, cost: 1)
        var out: [UInt8] = []
        FragmentJSON.append(fragment, of: .init(record), to: &out)
        XCTAssertEqual(out.last, 0x0A)
        let members = try JSONValue.parse(Array(out.dropLast())).members ?? []
        XCTAssertEqual(members.map(\.0), ["id", "patent", "jurisdiction", "title", "step", "paragraph", "fragment",
                                            "text", "lang", "pub_date", "source", "page", "hash"])
        let object = try JSONSerialization.jsonObject(with: Data(out)) as! [String: Any]
        XCTAssertEqual(object["id"] as? String, "CN\"x-step2-3-4")
        XCTAssertEqual(object["text"] as? String, "步骤1:\t\"引号\"\\ \u{1}")
        XCTAssertEqual(object["title"] as? String, "题\n目")
        XCTAssertEqual(object["page"] as? Int, 5)
        XCTAssertEqual(object["hash"] as? String, "sha1:" + SHA1.hex("步骤1:\t\"引号\"\\ \u{1}"))
    }
}
