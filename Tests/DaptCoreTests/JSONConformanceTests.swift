import DaptCore
import DaptTestSupport
import Foundation
import XCTest

/// The JSON layer against RFC 8259, in the manner of JSONTestSuite: y_ cases
/// must parse, n_ cases must fail (several at an exact offset), i_ cases
/// (implementation-defined in the RFC) follow the documented policy.
final class JSONConformanceTests: XCTestCase {
    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    func parseError(_ b: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> JSONSyntaxError? {
        do {
            let v = try JSONValue.parse(b)
            XCTFail("accepted \(b): \(v)", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    func testValidDocumentsParse() throws {
        for doc in JSONCases.valid {
            XCTAssertNoThrow(try JSONValue.parse(doc), doc)
        }
    }

    func testValuesAreDecoded() throws {
        XCTAssertEqual(try JSONValue.parse(#""\ud83d\ude00 \u00e9\n""#), .string("😀 é\n"))
        XCTAssertEqual(try JSONValue.parse(#""\uD834\uDD1E""#).string, "\u{1D11E}")
        XCTAssertEqual(try JSONValue.parse(#"{"b":1,"a":[2,"x"]}"#),
                       .object([("b", .number("1")), ("a", .array([.number("2"), .string("x")]))]))
        // Members keep their order; numbers keep their text.
        XCTAssertEqual(try JSONValue.parse(#"{"z":1.50,"a":1E2}"#).members?.map(\.0), ["z", "a"])
        XCTAssertEqual(try JSONValue.parse("1.50"), .number("1.50"))
        XCTAssertNotEqual(try JSONValue.parse("1.50"), try JSONValue.parse("1.5"))
    }

    func testNumberAccessors() throws {
        XCTAssertEqual(try JSONValue.parse("42").int, 42)
        XCTAssertEqual(try JSONValue.parse("-0").int, 0)
        XCTAssertEqual(try JSONValue.parse("-0").double?.sign, .minus)
        XCTAssertNil(try JSONValue.parse("1.0").int)
        XCTAssertNil(try JSONValue.parse("1e2").int)
        XCTAssertEqual(try JSONValue.parse("1e2").double, 100)
        // Huge numbers are accepted as text; Int gives nil, Double infinity.
        let hundredDigits = String(repeating: "9", count: 100)
        XCTAssertEqual(try JSONValue.parse(hundredDigits), .number(hundredDigits))
        XCTAssertNil(try JSONValue.parse(hundredDigits).int)
        XCTAssertEqual(try JSONValue.parse(hundredDigits).double, 1e100)
        XCTAssertEqual(try JSONValue.parse("1e999").double, .infinity)
        XCTAssertEqual(try JSONValue.parse("-1e999").double, -.infinity)
        XCTAssertNil(try JSONValue.parse("1e999").int)
        XCTAssertEqual(try JSONValue.parse("9223372036854775807").int, Int.max)
        XCTAssertNil(try JSONValue.parse("9223372036854775808").int)
        XCTAssertNil(try JSONValue.parse(#""1""#).int)
    }

    /// Invalid documents, with the exact offset (from 0) and reason.
    func testInvalidDocumentsFailAtTheirOffset() {
        let cases: [([UInt8], Int, JSONSyntaxError.Reason)] = [
            (bytes(""), 0, .empty),
            (bytes("  \n"), 3, .empty),
            (bytes("01"), 1, .leadingZero),
            (bytes("-01"), 2, .leadingZero),
            (bytes("[00]"), 2, .leadingZero),
            (bytes("1."), 2, .missingDigits),
            (bytes("[1.]"), 3, .missingDigits),
            (bytes("1e"), 2, .missingDigits),
            (bytes("1e+"), 3, .missingDigits),
            (bytes("-"), 1, .unexpectedEnd),
            (bytes("-a"), 1, .missingDigits),
            (bytes(".5"), 0, .unexpectedByte(UInt8(ascii: "."))),
            (bytes("+1"), 0, .unexpectedByte(UInt8(ascii: "+"))),
            (bytes("0x1"), 1, .trailingData),
            (bytes("[0x1]"), 2, .expectedCommaOrBracket),
            (bytes("Infinity"), 0, .unexpectedByte(UInt8(ascii: "I"))),
            (bytes("NaN"), 0, .unexpectedByte(UInt8(ascii: "N"))),
            (bytes("tru"), 0, .invalidLiteral),
            (bytes("[nul]"), 1, .invalidLiteral),
            (bytes("[1,]"), 3, .unexpectedByte(UInt8(ascii: "]"))),
            (bytes("[1 2]"), 3, .expectedCommaOrBracket),
            (bytes("[1"), 2, .unexpectedEnd),
            (bytes("{"), 1, .unexpectedEnd),
            (bytes(#"{"a" 1}"#), 5, .expectedColon),
            (bytes(#"{"a":1,}"#), 7, .expectedKey),
            (bytes(#"{a:1}"#), 1, .expectedKey),
            (bytes(#"{"a":1 "b":2}"#), 7, .expectedCommaOrBrace),
            (bytes(#"{"a":1,"a":2}"#), 7, .duplicateKey("a")),
            (bytes(#"{"x":{"a":1,"\u0061":2}}"#), 12, .duplicateKey("a")),
            (bytes("[1] x"), 4, .trailingData),
            (bytes("{} {}"), 3, .trailingData),
            (bytes(#""abc"#), 0, .unterminatedString),
            (bytes(#"["a\"]"#), 1, .unterminatedString),
            (bytes(#""\x""#), 1, .invalidEscape(UInt8(ascii: "x"))),
            (bytes(#""\'""#), 1, .invalidEscape(UInt8(ascii: "'"))),
            (bytes(#""\u12""#), 1, .invalidUnicodeEscape),
            (bytes(#""\u12G4""#), 1, .invalidUnicodeEscape),
            (bytes(#""\U0041""#), 1, .invalidEscape(UInt8(ascii: "U"))),
            // Lone surrogates: one policy, an error.
            (bytes(#""\ud800""#), 1, .loneSurrogate(0xD800)),
            (bytes(#""ab\uDBFF x""#), 3, .loneSurrogate(0xDBFF)),
            (bytes(#""\udc00""#), 1, .loneSurrogate(0xDC00)),
            (bytes(#""\ud800\ud800""#), 1, .loneSurrogate(0xD800)),
            (bytes(#""\ud800\u0041""#), 1, .loneSurrogate(0xD800)),
            (bytes(#""\ude00\ud83d""#), 1, .loneSurrogate(0xDE00)),
            // Raw control characters must be escaped.
            ([0x22, 0x61, 0x00, 0x22], 2, .controlCharacter(0x00)),
            ([0x22, 0x0A, 0x22], 1, .controlCharacter(0x0A)),
            ([0x22, 0x09, 0x22], 1, .controlCharacter(0x09)),
            ([0x22, 0x1F, 0x22], 1, .controlCharacter(0x1F)),
            // Invalid UTF-8 in strings: stray continuation, truncated, overlong, surrogate, past U+10FFFF.
            ([0x22, 0x80, 0x22], 1, .invalidUTF8),
            ([0x22, 0x61, 0xE4, 0xB8, 0x22], 2, .invalidUTF8),
            ([0x22, 0xC0, 0xAF, 0x22], 1, .invalidUTF8),
            ([0x22, 0xC1, 0xBF, 0x22], 1, .invalidUTF8),
            ([0x22, 0xE0, 0x80, 0xAF, 0x22], 1, .invalidUTF8),
            ([0x22, 0xF0, 0x80, 0x80, 0xAF, 0x22], 1, .invalidUTF8),
            ([0x22, 0xED, 0xA0, 0x80, 0x22], 1, .invalidUTF8),
            ([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], 1, .invalidUTF8),
            ([0x22, 0xF5, 0x80, 0x80, 0x80, 0x22], 1, .invalidUTF8),
            ([0x22, 0xFF, 0x22], 1, .invalidUTF8),
            // Non-ASCII outside strings, a byte-order mark after the start.
            ([0x5B, 0xC3, 0xA9, 0x5D], 1, .unexpectedByte(0xC3)),
            ([0x20, 0xEF, 0xBB, 0xBF, 0x31], 1, .unexpectedByte(0xEF)),
            ([0xEF, 0xBB, 0xBF, 0xEF, 0xBB, 0xBF, 0x31], 3, .unexpectedByte(0xEF)),
            // Whitespace is only space, tab, CR and LF.
            ([0x0C, 0x31], 0, .unexpectedByte(0x0C)),
            ([0x5B, 0xC2, 0xA0, 0x31, 0x5D], 1, .unexpectedByte(0xC2)),
            (bytes("[1]\u{0B}"), 3, .trailingData),
        ]
        for (input, offset, reason) in cases {
            let error = parseError(input)
            XCTAssertEqual(error, JSONSyntaxError(offset: offset, reason: reason), "\(String(decoding: input, as: UTF8.self).debugDescription)")
        }
    }

    /// The same strings are checked the same way when a record scan skips them.
    func testSkippedFieldsFollowTheSamePolicy() {
        var scanner = JSONRecordScanner(fields: ["text"])
        for bad in [#"{"text":"a","x":"\ud800"}"#, #"{"x":"\udc00","text":"a"}"#, #"{"text":"a","x":01}"#, #"{"text":"a","x":1.}"#,
                    #"{"text":"a","x":[1,]}"#, #"{"text":"a","x":+1}"#, #"{"text":"a","x":"\q"}"#] {
            XCTAssertThrowsError(try scanner.scan(bytes(bad)), bad)
        }
        XCTAssertThrowsError(try scanner.scan([0x7B, 0x22, 0x78, 0x22, 0x3A, 0x22, 0xC0, 0x80, 0x22, 0x7D])) {
            XCTAssertEqual(($0 as? RecordProblem)?.syntax, JSONSyntaxError(offset: 6, reason: .invalidUTF8))
        }
    }

    /// Strings are scanned eight bytes at a time: a special byte at any
    /// position of a long run must still be seen.
    func testSpecialBytesAtEveryPositionOfALongString() throws {
        for position in 0..<24 {
            var plain = Array(repeating: UInt8(ascii: "a"), count: 24)
            plain[position] = UInt8(ascii: "/")
            XCTAssertEqual(try JSONValue.parse([0x22] + plain + [0x22]).string, String(decoding: plain, as: UTF8.self))
            for (special, reason) in [(UInt8(0x01), JSONSyntaxError.Reason.controlCharacter(0x01)), (0x1F, .controlCharacter(0x1F)),
                                      (0x80, .invalidUTF8), (0xFF, .invalidUTF8)] {
                var bad = plain
                bad[position] = special
                XCTAssertEqual(parseError([0x22] + bad + [0x22]), JSONSyntaxError(offset: 1 + position, reason: reason))
            }
            var quoted = plain
            quoted[position] = 0x22
            XCTAssertEqual(parseError([0x22] + quoted + [0x22])?.offset, position + 2)
            var escaped = plain
            escaped.replaceSubrange(position..<(position + 1), with: [0x5C, UInt8(ascii: "n")])
            XCTAssertEqual(try JSONValue.parse([0x22] + escaped + [0x22]).string?.utf8.filter { $0 == 0x0A }.count, 1)
            var twoBytes = plain
            twoBytes.replaceSubrange(position..<(position + 1), with: [0xC3, 0xA9])
            XCTAssertEqual(try JSONValue.parse([0x22] + twoBytes + [0x22]).string?.count, 24)
        }
    }

    func testNestingLimit() {
        let limit = JSON.maxDepth
        let atLimit = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        XCTAssertNoThrow(try JSONValue.parse(atLimit))
        let objects = String(repeating: #"{"a":"#, count: limit) + "1" + String(repeating: "}", count: limit)
        XCTAssertNoThrow(try JSONValue.parse(objects))
        let past = String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)
        XCTAssertEqual(parseError(bytes(past)), JSONSyntaxError(offset: limit, reason: .tooDeep))
        let pastObjects = String(repeating: #"{"a":"#, count: limit + 1) + "1" + String(repeating: "}", count: limit + 1)
        XCTAssertEqual(parseError(bytes(pastObjects)), JSONSyntaxError(offset: 5 * limit, reason: .tooDeep))
        // A record is depth 1: its members may nest limit - 1 more.
        var scanner = JSONRecordScanner(fields: ["text"])
        let deepest = #"{"text":"t","x":"# + String(repeating: "[", count: limit - 1) + String(repeating: "]", count: limit - 1) + "}"
        XCTAssertNoThrow(try scanner.scan(bytes(deepest)))
        let tooDeep = #"{"text":"t","x":"# + String(repeating: "[", count: limit) + String(repeating: "]", count: limit) + "}"
        XCTAssertThrowsError(try scanner.scan(bytes(tooDeep))) {
            XCTAssertEqual(($0 as? RecordProblem)?.syntax, JSONSyntaxError(offset: 16 + limit - 1, reason: .tooDeep))
        }
    }

    /// i_ cases: a byte-order mark is skipped at the start of a document or a record.
    func testByteOrderMarkAtTheStartIsSkipped() throws {
        XCTAssertEqual(try JSONValue.parse([0xEF, 0xBB, 0xBF] + bytes(#"{"a":1}"#)), .object([("a", .number("1"))]))
        XCTAssertEqual(parseError([0xEF, 0xBB, 0xBF]), JSONSyntaxError(offset: 3, reason: .empty))
        var scanner = JSONRecordScanner(fields: ["text"])
        try scanner.scan([0xEF, 0xBB, 0xBF] + bytes(#"{"text":"a"}"#))
        XCTAssertEqual(scanner.string(0), "a")
        XCTAssertEqual(scanner.closingBrace, 14)
    }

    // MARK: records

    func testRecordScanReturnsChosenFieldsAndRanges() throws {
        var scanner = JSONRecordScanner(fields: ["id", "text", "hash", "pages"])
        let line = bytes(#" {"id": 12, "meta": {"a": [1, "x"]}, "text": "a\"b\u00e9", "pages": ["p"], "hash": null } "#)
        try scanner.scan(line)
        XCTAssertEqual(scanner.kind(0), .number)
        XCTAssertEqual(String(decoding: line[scanner.fields[0].token], as: UTF8.self), "12")
        XCTAssertEqual(scanner.string(1), "a\"bé")
        XCTAssertEqual(String(decoding: line[scanner.fields[1].token], as: UTF8.self), #""a\"b\u00e9""#)
        XCTAssertEqual(scanner.kind(2), .null)
        XCTAssertEqual(scanner.kind(3), .array)
        XCTAssertEqual(String(decoding: line[scanner.fields[3].token], as: UTF8.self), #"["p"]"#)
        XCTAssertEqual(line[scanner.closingBrace], UInt8(ascii: "}"))
        XCTAssertEqual(scanner.closingBrace, line.count - 2)
        // A second scan forgets the first.
        try scanner.scan(bytes(#"{"text":"b"}"#))
        XCTAssertEqual(scanner.kind(0), .absent)
        XCTAssertEqual(scanner.string(1), "b")
        XCTAssertNil(scanner.string(0))
        // An escaped key is the same key.
        try scanner.scan(bytes(#"{"t\u0065xt":"c"}"#))
        XCTAssertEqual(scanner.string(1), "c")
    }

    func testRecordProblems() {
        var scanner = JSONRecordScanner(fields: ["id", "text"])
        func problem(_ s: String) -> RecordProblem? {
            do { try scanner.scan(bytes(s)); return nil } catch { return error }
        }
        XCTAssertEqual(problem("")?.syntax, JSONSyntaxError(offset: 0, reason: .empty))
        XCTAssertEqual(problem("[1]")?.syntax, JSONSyntaxError(offset: 0, reason: .notAnObject))
        XCTAssertEqual(problem(#"  "text""#)?.syntax, JSONSyntaxError(offset: 2, reason: .notAnObject))
        XCTAssertEqual(problem(#"{"text":"a"} x"#)?.syntax, JSONSyntaxError(offset: 13, reason: .trailingData))
        XCTAssertEqual(problem(#"{"text":"a","text":"b"}"#), RecordProblem(JSONSyntaxError(offset: 12, reason: .duplicateKey("text")), field: "text"))
        XCTAssertEqual(problem(#"{"text":"a","text":"b"}"#)?.description, #"text: invalid JSON at byte 13: duplicate key "text""#)
        // Keys not asked for may repeat (they are not compared).
        XCTAssertNil(problem(#"{"x":1,"x":2,"text":"a"}"#))
        XCTAssertEqual(problem(#"{"text":"a\ud800"}"#)?.description, #"text: invalid JSON at byte 11: lone surrogate \ud800 (not part of a pair)"#)
        XCTAssertEqual(RecordProblem(field: "text", reason: "missing").located(file: "f.jsonl", line: 3).description, "f.jsonl:3: text: missing")
    }

    // MARK: writing

    func testWriterEscapesOnlyWhatJSONRequires() {
        XCTAssertEqual(JSONWriter.quoted("a\"b\\c/é中😀\n\r\t\u{08}\u{0C}\u{01}\u{1F}\u{7F}"),
                       #""a\"b\\c/é中😀\n\r\t\b\f\u0001\u001f"# + "\u{7F}\"")
        var out: [UInt8] = []
        JSONWriter.appendOptionalString(nil, to: &out)
        out.append(0x2C)
        JSONWriter.appendInt(-12, to: &out)
        XCTAssertEqual(String(decoding: out, as: UTF8.self), "null,-12")
        let value: JSONValue = .object([("a", .array([.integer(1), .float(0.5), .bool(true), .null])), ("b", .object([])), ("c", .array([]))])
        XCTAssertEqual(value.text(), #"{"a":[1,0.5,true,null],"b":{},"c":[]}"#)
        XCTAssertEqual(value.text(indent: 2), "{\n  \"a\": [\n    1,\n    0.5,\n    true,\n    null\n  ],\n  \"b\": {},\n  \"c\": []\n}")
        XCTAssertEqual(JSONValue.float(3).text(), "3")
        XCTAssertEqual(JSONValue.float(1e-7).text(), "1e-07")
    }

    /// parse → write → parse is the identity on the valid set, compact and
    /// indented, and Foundation's reader accepts what the writer wrote.
    func testRoundTrip() throws {
        for doc in JSONCases.valid {
            let value = try JSONValue.parse(doc)
            for indent in [nil, 2] as [Int?] {
                let text = value.text(indent: indent)
                XCTAssertEqual(try JSONValue.parse(text), value, "\(doc) → \(text)")
                // Foundation reads huge numbers its own way; the structure is what it checks here.
                if doc.contains("e999") || doc.count >= 30 && doc.allSatisfy(\.isNumber) { continue }
                XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]), text)
            }
        }
        let strings = ["", "plain", "quote \" backslash \\ slash /", "\u{0}\u{1}\u{1F} controls", "é中😀\u{10FFFF}", "\r\n\t\u{08}\u{0C}"]
        for s in strings {
            let text = JSONWriter.quoted(s)
            XCTAssertEqual(try JSONValue.parse(text).string, s)
            let foreign = try JSONSerialization.jsonObject(with: Data("[\(text)]".utf8)) as? [String]
            XCTAssertEqual(foreign, [s])
        }
    }
}
