import DaptCore
import DaptPrepare
import Foundation
import XCTest

final class StepGrammarTests: XCTestCase {
    struct Labelled: Decodable {
        var id: String
        var lang: String
        var kind: String
        var text: String
        var starts: [Int]
    }

    static func labelled() throws -> [Labelled] {
        let url = Bundle.module.url(forResource: "Fixtures/steps/labelled", withExtension: "jsonl")!
        let data = try Data(contentsOf: url)
        return try data.split(separator: UInt8(ascii: "\n")).map { try JSONDecoder().decode(Labelled.self, from: Data($0)) }
    }

    func parse(_ text: String, lang: String? = nil, keepAll: Bool = false, config: PrepareConfig = PrepareConfig()) throws -> PatentStructure {
        PatentStructure.parse(Array(text.utf8), matcher: try MarkerMatcher(config), grammar: try StepGrammar(config), lang: lang,
                              keepAll: keepAll, stripParagraphNumbers: config.stripParagraphNumbers)
    }

    func texts(_ s: PatentStructure) -> [String] { s.paragraphs.map { String(decoding: $0.text, as: UTF8.self) } }

    /// Step-boundary precision and recall over the labelled set (CN, US, EP
    /// and JP styles; methods, devices and cross-reference-heavy texts):
    /// both at least 0.97, no text with steps left without steps, and no
    /// device text split.
    func testLabelledSetPrecisionAndRecall() throws {
        let set = try Self.labelled()
        XCTAssertGreaterThanOrEqual(set.count, 60)
        XCTAssertEqual(Set(set.map(\.lang)), ["zh", "en", "ja"])
        let config = PrepareConfig()
        let matcher = try MarkerMatcher(config), grammar = try StepGrammar(config)
        var truePositives = 0, predicted = 0, expected = 0
        var misses: [String] = []
        for item in set {
            let s = PatentStructure.parse(Array(item.text.utf8), matcher: matcher, grammar: grammar, lang: item.lang,
                                          keepAll: false, stripParagraphNumbers: true)
            let found = Set(s.stepStarts), wanted = Set(item.starts)
            truePositives += found.intersection(wanted).count
            predicted += found.count
            expected += wanted.count
            if found != wanted {
                let bytes = Array(item.text.utf8)
                func show(_ offsets: Set<Int>) -> String {
                    offsets.sorted().map { String(decoding: bytes[$0..<min(bytes.count, $0 + 12)], as: UTF8.self) }.joined(separator: " | ")
                }
                misses.append("\(item.id): missed [\(show(wanted.subtracting(found)))] extra [\(show(found.subtracting(wanted)))]")
            }
            if item.kind == "device" {
                XCTAssertEqual(s.stepCount, 0, "\(item.id): a device patent is not split into steps")
            } else {
                XCTAssertGreaterThan(s.stepCount, 0, "\(item.id): a patent with steps is not rejected")
            }
        }
        let precision = Double(truePositives) / Double(max(predicted, 1))
        let recall = Double(truePositives) / Double(max(expected, 1))
        print("step boundaries on \(set.count) labelled texts: precision \(String(format: "%.3f", precision)) (\(truePositives)/\(predicted)), recall \(String(format: "%.3f", recall)) (\(truePositives)/\(expected))")
        for miss in misses { print("  " + miss) }
        XCTAssertGreaterThanOrEqual(precision, 0.97, misses.joined(separator: "\n"))
        XCTAssertGreaterThanOrEqual(recall, 0.97, misses.joined(separator: "\n"))
    }

    /// An inline list in one paragraph: the lead-in stays outside the steps,
    /// each marker opens a step, and the last step runs to the paragraph end.
    func testInlineListSplitsOneParagraphIntoSteps() throws {
        let text = "一种方法，包括以下步骤：S1、获取图像；S2、对图像去噪；S3、将图像输出。本方法简单。"
        let s = try parse(text)
        XCTAssertEqual(s.stepCount, 3)
        XCTAssertEqual(texts(s), ["S1、获取图像；", "S2、对图像去噪；", "S3、将图像输出。本方法简单。"])
        let all = try parse(text, keepAll: true)
        XCTAssertEqual(all.paragraphs.map { "\($0.step).\($0.paragraph)" }, ["0.1", "1.1", "2.1", "3.1"])
        XCTAssertEqual(texts(all)[0], "一种方法，包括以下步骤：")
    }

    /// Sub-steps stay inside their parent; text between markers belongs to
    /// the earlier step across paragraphs; cross-references start nothing.
    func testSubStepsAndCrossReferences() throws {
        let text = """
        [0001] 步骤S301：采集信号。

        [0002] 根据步骤S301得到的信号计算频谱。
        [0003] 步骤S302：提取特征。其中，步骤S302包括：
        S3021：变换；
        S3022：求频谱。
        [0004] 步骤S303：判断故障。
        """
        let s = try parse(text)
        XCTAssertEqual(s.stepCount, 3)
        XCTAssertEqual(s.paragraphs.map { "\($0.step).\($0.paragraph)" }, ["1.1", "1.2", "2.1", "3.1"])
        XCTAssertEqual(texts(s)[1], "根据步骤S301得到的信号计算频谱。")
        XCTAssertEqual(texts(s)[2], "步骤S302：提取特征。其中，步骤S302包括：\nS3021：变换；\nS3022：求频谱。")
    }

    /// One marker alone, or markers that do not increase, are not steps.
    func testARunMustIncreaseWithinOneFamily() throws {
        XCTAssertEqual(try parse("步骤S101：获取。\n其余说明。").stepCount, 0, "a single marker is a reference, not a list of steps")
        XCTAssertEqual(try parse("S2：甲。\nS1：乙。").stepCount, 0)
        XCTAssertEqual(try parse("（2）甲；（3）乙。方法如下。").stepCount, 0, "bracketed lists count from 1")
        XCTAssertEqual(try parse("Step 1: mix.\nStep 2: heat.\nStep 1: cool.\nStep 2: dry.").stepCount, 4, "two runs, one per embodiment")
        XCTAssertEqual(try parse("(a) a housing;\n(b) a lid.", lang: "en").stepCount, 0, "parts, not steps")
        XCTAssertEqual(try parse("comprising: (a) measuring x; (b) storing x.", lang: "en").stepCount, 2)
    }

    /// Each language uses its own markers and separators; an unknown language uses all of them.
    func testMarkersArePerLanguage() throws {
        let text = "ステップS1において、取得する。\nステップS2において、出力する。"
        XCTAssertEqual(try parse(text, lang: "ja").stepCount, 2)
        XCTAssertEqual(try parse(text, lang: "zh").stepCount, 0, "ステップ is not a Chinese lead word")
        XCTAssertEqual(try parse(text, lang: "ja-JP").stepCount, 2)
        XCTAssertEqual(try parse(text, lang: nil).stepCount, 2)
        XCTAssertEqual(try parse("At block 502, a.\nAt block 504, b.", lang: "en").stepCount, 2)
    }

    func testGrammarConfigFromYAML() throws {
        let yaml = """
        keep: steps_or_description
        step_markers:
          zh: ["工序{N}"]
        step_separators:
          zh: ["："]
        """
        let config = try ConfigLoader.decode(PrepareConfig.self, yaml: yaml)
        try config.validate()
        XCTAssertEqual(config.keep, "steps_or_description")
        let s = try parse("工序1：切割。\n工序2：打磨。\n步骤S1：无效。\n步骤S2：无效。", lang: "zh", config: config)
        XCTAssertEqual(s.stepCount, 2)
        var bad = PrepareConfig()
        bad.keep = "everything"
        XCTAssertThrowsError(try bad.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "keep") }
    }

    /// The default paragraph number is read by bytes and ICU sees only the
    /// lines that can be headings; the marks equal those of the same pattern
    /// run through ICU on every line.
    func testParagraphNumbersByBytesMatchTheRegex() throws {
        let long = String(repeating: "长", count: 30)
        let text = """
          [0001] 技术领域
        【0002】　本发明涉及一种方法。
        [１２３] 全角数字。
        [123456] 六位数字不是段落号。
        [12] 两位也不是。
        [0003]权利要求书
        [0004] \(long)
        权利要求书
        \(long)权利要求书
        What is claimed is:
        [0005]
        """
        var config = PrepareConfig()
        let fast = try MarkerMatcher(config).markedLines(Array(text.utf8))
        config.paragraphNumber = "(?:" + PrepareConfig.defaultParagraphNumber + ")"
        let regex = try MarkerMatcher(config).markedLines(Array(text.utf8))
        XCTAssertEqual(fast.map(\.offset), regex.map(\.offset))
        XCTAssertEqual(fast.map(\.marks), regex.map(\.marks))
        XCTAssertEqual(fast.map(\.marks.paragraphNumberLength).filter { $0 > 0 }.count, 6)
        XCTAssertEqual(fast.filter(\.marks.endsSection).count, 3)
    }

    /// `keep: steps_or_description` keeps a device patent's whole text and
    /// counts which path each patent took.
    func testStepsOrDescriptionKeepsDevicePatents() throws {
        var config = PrepareConfig()
        config.keep = "steps_or_description"
        let splitter = try PatentSplitter(config: config, counter: EstimatedTokenCounter(config))
        let method = PatentRecord(patent: "CN1", lang: "zh", pages: [Array("背景。\n步骤S1：甲。\n步骤S2：乙。".utf8)], paged: false)
        let device = PatentRecord(patent: "CN2", lang: "zh", pages: [Array("一种支架，包括底座和立柱。\n\n立柱固定于底座上。".utf8)], paged: false)
        let m = try splitter.split(method).get(), d = try splitter.split(device).get()
        XCTAssertTrue(m.keptSteps)
        XCTAssertEqual(m.fragments.map(\.step), [1, 2], "text outside steps is dropped when steps exist")
        XCTAssertFalse(d.keptSteps)
        XCTAssertEqual(d.fragments.map(\.step), [0, 0])
        var stats = PrepareStats()
        stats.add(patent: m); stats.add(patent: d)
        XCTAssertEqual([stats.patents, stats.patentsBySteps, stats.patentsByDescription], [2, 1, 1])
        XCTAssertEqual(PrepareStats(vector: stats.vector), stats)

        config.keep = "steps"
        let strict = try PatentSplitter(config: config, counter: EstimatedTokenCounter(config))
        XCTAssertEqual(strict.split(device).failure?.reason, .noStepMarkers)
    }
}

extension Result {
    var failure: Failure? { if case .failure(let e) = self { return e } else { return nil } }
}
