import DaptCore
import DaptPrepare
import XCTest

final class StructureTests: XCTestCase {
    func parse(_ text: String, keepAll: Bool = false, lang: String? = nil, config: PrepareConfig = PrepareConfig()) throws -> PatentStructure {
        PatentStructure.parse(Array(text.utf8), matcher: try MarkerMatcher(config), grammar: try StepGrammar(config), lang: lang,
                              keepAll: keepAll, stripParagraphNumbers: config.stripParagraphNumbers)
    }

    func texts(_ s: PatentStructure) -> [String] { s.paragraphs.map { String(decoding: $0.text, as: UTF8.self) } }
    func keys(_ s: PatentStructure) -> [String] { s.paragraphs.map { "\($0.step).\($0.paragraph)" } }

    func testChineseStepsAndNumberedParagraphs() throws {
        let text = """
        权利要求书
        1. 一种方法，其特征在于，包括步骤S101和步骤S102。
        说明书
        [0001] 本发明涉及图像处理。
        [0002] 步骤S101：获取图像数据。
        [0003] 在一些实施例中，还包括预处理，
        预处理包括去噪。
        [0004] 步骤S102：对图像进行分割。

        分割结果用于检测。
        【0005】步骤3、输出结果。
        S104：保存结果。
        步骤（5）上报。
        """
        // S101, S102, S104 are one increasing run; 步骤3 (arabic) and 步骤（5）
        // (bracketed) are lone markers of other families, so they stay
        // inside the S-step they occur in.
        let s = try parse(text)
        XCTAssertEqual(s.stepCount, 3)
        XCTAssertEqual(keys(s), ["1.1", "1.2", "2.1", "2.2", "2.3", "3.1"])
        XCTAssertEqual(texts(s), ["步骤S101：获取图像数据。", "在一些实施例中，还包括预处理，\n预处理包括去噪。",
                                  "步骤S102：对图像进行分割。", "分割结果用于检测。", "步骤3、输出结果。", "S104：保存结果。\n步骤（5）上报。"])
    }

    func testEnglishStepsAndClaimsEndTheSection() throws {
        let text = """
        BACKGROUND

        Known methods are slow.

        DETAILED DESCRIPTION

        Step 1: receive a signal.
        The signal is sampled at 10 kHz.

        Step 2: filter the signal.

        (a) compute a value; and
        (b) store the value.

        What is claimed is:

        1. A method comprising step 1 and step 2.
        """
        // The (a)/(b) list after Step 2 is Step 2's content, not two more steps.
        let s = try parse(text)
        XCTAssertEqual(s.stepCount, 2)
        XCTAssertEqual(keys(s), ["1.1", "2.1", "2.2"])
        XCTAssertEqual(texts(s)[0], "Step 1: receive a signal.\nThe signal is sampled at 10 kHz.")
        XCTAssertFalse(texts(s).joined().contains("A method comprising"), "claims after the heading are not a step")
    }

    func testDescriptionModeKeepsTextOutsideStepsAsStepZero() throws {
        var config = PrepareConfig()
        config.keep = "description"
        let s = try parse("[0001] 背景介绍。\n[0002] 步骤S1：执行。\n[0003] 步骤S2：完成。\n权利要求书\n1. 一种方法。", keepAll: true, config: config)
        XCTAssertEqual(keys(s), ["0.1", "1.1", "2.1", "0.2"])
        XCTAssertEqual(texts(s), ["背景介绍。", "步骤S1：执行。", "步骤S2：完成。", "1. 一种方法。"])
    }

    func testParagraphNumbersCanBeKept() throws {
        var config = PrepareConfig()
        config.stripParagraphNumbers = false
        let s = try parse("[0002] 步骤S101：获取。\n[0003] 步骤S102：处理。", config: config)
        XCTAssertEqual(texts(s), ["[0002] 步骤S101：获取。", "[0003] 步骤S102：处理。"])
    }

    func testNoStepMarkersMeansNoParagraphsInStepsMode() throws {
        let s = try parse("本发明涉及一种方法。\n\n在步骤S101中获取数据。")
        XCTAssertEqual(s.stepCount, 0, "a marker inside a sentence is not a step start")
        XCTAssertTrue(s.paragraphs.isEmpty)
    }

    func testCustomMarkers() throws {
        var config = PrepareConfig()
        config.stepMarkers = ["zh": ["第{C}步"]]
        let s = try parse("第一步，取料。\n第二步，加工。\n步骤S1：不是标记。", config: config)
        XCTAssertEqual(s.stepCount, 2)
        XCTAssertEqual(texts(s), ["第一步，取料。", "第二步，加工。\n步骤S1：不是标记。"])
    }

    func testConfigRejectsBadPatterns() {
        var config = PrepareConfig()
        config.stepMarkers = ["zh": ["步骤{S}", "步骤("]]
        XCTAssertThrowsError(try config.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "step_markers.zh[1]") }
        config.stepMarkers = ["en": ["Step {S|Q}"]]
        XCTAssertThrowsError(try config.validate()) {
            XCTAssertEqual(($0 as? ConfigError)?.field, "step_markers.en[0]")
            XCTAssertTrue("\($0)".contains("\"Q\""), "\($0)")
        }
        config = PrepareConfig()
        config.sectionEndMarkers = [".*"]
        XCTAssertThrowsError(try config.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "section_end_markers[0]") }
        config = PrepareConfig()
        config.overlapTokens = 256
        XCTAssertThrowsError(try config.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "overlap_tokens") }
    }

    /// Offsets survive astral characters (two UTF-16 units), long lines are
    /// matched by their head only, and U+2028 does not start a line.
    func testLineMappingWithEmojiLongLinesAndSeparators() throws {
        let long = String(repeating: "长", count: 60)   // 180 bytes, longer than a line head
        let text = "😀😀 前言\n[0002]  步骤S1：甲😀。\n\(long)\n权利要求书\(long)\n步骤S2：乙\u{2028}步骤S3：丙\n权利要求书\n1. 一种方法。"
        let s = try parse(text)
        XCTAssertEqual(s.stepCount, 2)
        XCTAssertEqual(texts(s), ["步骤S1：甲😀。\n\(long)\n权利要求书\(long)", "步骤S2：乙\u{2028}步骤S3：丙"])
        XCTAssertEqual(MarkerMatcher.headBytes, 64)
        XCTAssertEqual(try MarkerMatcher(PrepareConfig()).marks(ofLine: "【0012】　S101、采集").paragraphNumberLength, "【0012】　".utf8.count)
    }
}
