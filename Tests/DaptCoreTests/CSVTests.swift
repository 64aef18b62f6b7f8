import DaptCore
import XCTest

final class CSVTests: XCTestCase {
    func parse(_ text: String) throws -> [CSVRecord] { try CSV.parse(Array(text.utf8), file: "t.csv") }

    func assertError(_ text: String, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try parse(text), file: file, line: line) { error in
            XCTAssertEqual((error as? InputError)?.description, expected, file: file, line: line)
        }
    }

    func testQuotedFieldsHoldCommasQuotesAndLineBreaks() throws {
        let records = try parse("a,\"b, c\",\"say \"\"hi\"\"\"\r\n\"two\nlines\",,x\n\"\",last")
        XCTAssertEqual(records.map(\.fields), [["a", "b, c", "say \"hi\""], ["two\nlines", "", "x"], ["", "last"]])
        XCTAssertEqual(records.map(\.fieldLines), [[1, 1, 1], [2, 3, 3], [4, 4]])
        XCTAssertEqual(records.map(\.line), [1, 2, 4])
    }

    func testByteOrderMarkEmptyLinesAndLineEndings() throws {
        let records = try parse("\u{FEFF}id,q\r\n\r\n1,x\r\n\n2,\"y\r\nz\"\r\n")
        XCTAssertEqual(records.map(\.fields), [["id", "q"], ["1", "x"], ["2", "y\r\nz"]])
        XCTAssertEqual(records.map(\.line), [1, 3, 5])
        XCTAssertEqual(try parse("a,b,\n").map(\.fields), [["a", "b", ""]], "a trailing comma ends with an empty field")
        XCTAssertEqual(try parse("a,b,").map(\.fields), [["a", "b", ""]])
        XCTAssertEqual(try parse("").count, 0)
        XCTAssertEqual(try parse("只,中文\n").map(\.fields), [["只", "中文"]])
    }

    func testMalformedInputNamesFileLineAndField() {
        assertError("a,b\nc,\"open\nstill open", "t.csv:2: field 2: quoted field is not closed (the quote opened on this line is still open at the end of the file)")
        assertError("a,b\n\"x\ny\"z,w", "t.csv:3: field 1: unexpected 'z' after the closing quote (a quote inside a quoted field is written \"\")")
        assertError("a,b\nc,d\ne,f\"g", "t.csv:3: field 2: quote inside an unquoted field (quote the whole field and double the quote)")
        XCTAssertThrowsError(try CSV.parse([0x61, 0x2C, 0xFF, 0x0A], file: "t.csv")) { error in
            XCTAssertEqual((error as? InputError)?.description, "t.csv:1: field 2: not valid UTF-8")
        }
    }
}
