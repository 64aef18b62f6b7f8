import DaptCore
import DaptPrepare
import XCTest

final class FragmenterTests: XCTestCase {
    let counter = EstimatedTokenCounter()

    func testEstimateCosts() {
        let cjk = counter.pieces(of: Array("本发明，".utf8))
        XCTAssertEqual(cjk.map(\.cost), [1600, 1600, 1600, 1600])
        XCTAssertEqual(cjk.map(\.end), [3, 6, 9, 12])
        let latin = counter.pieces(of: Array("The method, wherein 42 x".utf8))
        // words: The, method, wherein, 42, x (1.3 each) and ',' (1.0); spaces ride along.
        XCTAssertEqual(latin.map(\.cost), [1300, 1300, 1000, 1300, 1300, 1300])
        XCTAssertEqual(latin.map(\.end), [4, 10, 12, 20, 23, 24])
        XCTAssertEqual(counter.tokens(in: Array("步骤S101：获取".utf8)), 9)   // 5 CJK × 1.6 + 1 word × 1.3 = 9.3
    }

    /// Random text mixing CJK, Latin words, punctuation, spaces, combining marks and emoji.
    func randomText(_ rng: inout SplitMix64, length: Int) -> String {
        let cjk = Array("本发明涉及一种图像处理方法所述数据获取步骤模型训练输出结果")
        let words = ["signal", "the", "method", "comprising", "S101", "42", "über", "naïve", "x"]
        let punct = ["。", "，", "；", "！", "？", ".", ",", ";", " ", " ", "\n", "e\u{301}", "👍🏽", "(", ")"]
        var s = ""
        while s.unicodeScalars.count < length {
            switch rng.next() % 4 {
            case 0, 1: s.append(cjk[Int(rng.next() % UInt64(cjk.count))])
            case 2: s += (s.last == " " || s.isEmpty ? "" : " ") + words[Int(rng.next() % UInt64(words.count))] + " "
            default: s += punct[Int(rng.next() % UInt64(punct.count))]
            }
        }
        return s.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Every fragment is within budget, neighbours overlap by exactly the
    /// longest suffix costing at most `overlap`, and together they cover the text.
    func checkInvariants(_ text: [UInt8], budget: Int, overlap: Int, file: StaticString = #filePath, line: UInt = #line) {
        let pieces = counter.pieces(of: text)
        let spans = Fragmenter(budgetTokens: budget, overlapTokens: overlap).spans(text: text, pieces: pieces)
        guard !spans.isEmpty else { return XCTAssertTrue(text.isEmpty, file: file, line: line) }
        var prefix = [0]
        for p in pieces { prefix.append(prefix.last! + p.cost) }
        XCTAssertEqual(spans.first!.firstPiece, 0, file: file, line: line)
        XCTAssertEqual(spans.last!.endPiece, pieces.count, "fragments reach the end", file: file, line: line)
        XCTAssertEqual(spans.last!.end, text.count, "the last fragment ends at the text's end", file: file, line: line)
        for (k, span) in spans.enumerated() {
            XCTAssertLessThanOrEqual(span.cost, budget * 1000, "fragment \(k) over budget", file: file, line: line)
            XCTAssertEqual(span.cost, prefix[span.endPiece] - prefix[span.firstPiece], file: file, line: line)
            // Never inside a character: both ends decode as UTF-8.
            XCTAssertNotNil(String(validating: text[span.start..<span.end], as: UTF8.self), file: file, line: line)
            guard k > 0 else { continue }
            let prev = spans[k - 1]
            XCTAssertGreaterThan(span.firstPiece, prev.firstPiece, "progress", file: file, line: line)
            XCTAssertLessThanOrEqual(span.firstPiece, prev.endPiece, "no gap between fragments", file: file, line: line)
            let shared = prefix[prev.endPiece] - prefix[span.firstPiece]
            XCTAssertLessThanOrEqual(shared, overlap * 1000, "overlap within limit", file: file, line: line)
            if span.firstPiece - 1 > prev.firstPiece {
                XCTAssertGreaterThan(prefix[prev.endPiece] - prefix[span.firstPiece - 1], overlap * 1000,
                                     "overlap is the longest suffix within the limit", file: file, line: line)
            }
            // Shared tokens mean shared text: the next fragment starts inside this one.
            if shared > 0 { XCTAssertLessThan(span.start, prev.end, file: file, line: line) }
        }
        // Coverage: stitching fragments at their start offsets gives the text back (modulo trimmed whitespace).
        var rebuilt: [UInt8] = []
        for span in spans {
            if rebuilt.count > span.start { rebuilt.removeLast(rebuilt.count - span.start) }
            while rebuilt.count < span.start { rebuilt.append(text[rebuilt.count]) }  // trimmed whitespace
            rebuilt += text[span.start..<span.end]
        }
        XCTAssertEqual(rebuilt, text, file: file, line: line)
    }

    func testBudgetOverlapAndCoverageOnChinese() {
        let sentence = "步骤S101：采集待检测焊缝的X射线图像，并对所述X射线图像进行灰度归一化处理，得到归一化图像。"
        let text = Array(String(repeating: sentence, count: 30).utf8)
        checkInvariants(text, budget: 512, overlap: 64)
        checkInvariants(text, budget: 64, overlap: 16)
        checkInvariants(text, budget: 100, overlap: 0)
        // One sentence is about 84 tokens, so a 128-token window always holds a sentence end past its middle.
        let spans = Fragmenter(budgetTokens: 128, overlapTokens: 16).spans(text: text, pieces: counter.pieces(of: text))
        XCTAssertGreaterThan(spans.count, 10)
        // Cut at sentence ends where one lies in the second half of the budget.
        for span in spans.dropLast() {
            XCTAssertTrue(String(decoding: text[span.start..<span.end], as: UTF8.self).hasSuffix("。"))
        }
    }

    func testOverlapIsExactForCJK() {
        let text = Array(String(repeating: "本发明涉及一种图像处理方法", count: 40).utf8)   // no sentence ends
        let spans = Fragmenter(budgetTokens: 64, overlapTokens: 16).spans(text: text, pieces: counter.pieces(of: text))
        // 64 tokens = 40 characters at 1.6; 16 tokens = 10 characters.
        XCTAssertEqual(spans[0].cost, 64_000)
        XCTAssertEqual(spans[0].end - spans[0].start, 40 * 3)
        XCTAssertEqual(spans[0].end - spans[1].start, 10 * 3, "10 characters (16 tokens) repeated")
    }

    func testBudgetOverlapAndCoverageOnEnglishAndRandomText() {
        let english = Array(String(repeating: "The method comprises receiving a signal, filtering it; and storing the result. ", count: 40).utf8)
        checkInvariants(Array(english.dropLast()), budget: 48, overlap: 8)
        var rng = SplitMix64(seed: 20240601)
        for trial in 0..<200 {
            let text = Array(randomText(&rng, length: 20 + trial * 7).utf8)
            checkInvariants(text, budget: 16 + trial % 40, overlap: (trial % 7))
        }
    }

    func testShortTextIsOneFragment() {
        let text = Array("步骤S1：短文本。".utf8)
        let spans = Fragmenter(budgetTokens: 512, overlapTokens: 64).spans(text: text, pieces: counter.pieces(of: text))
        XCTAssertEqual(spans.count, 1)
        XCTAssertEqual(spans[0].start, 0)
        XCTAssertEqual(spans[0].end, text.count)
    }
}
