import DaptCore
import XCTest

private struct SampleConfig: StageConfig, Equatable {
    var threshold = 0.85
    var numPerm = 128
    var kind = "patent"

    init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case threshold, kind
        case numPerm = "num_perm"
    }

    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        threshold = try c.value(.threshold, default: 0.85)
        numPerm = try c.value(.numPerm, default: 128)
        kind = try c.value(.kind, default: "patent")
    }

    func validate() throws {
        try Check.inRange(threshold, 0.0...1.0, "threshold")
        try Check.positive(numPerm, "num_perm")
        try Check.oneOf(kind, ["web", "book", "code", "patent"], "kind")
    }
}

private struct FileWithSection: Decodable {
    var dedup: SampleConfig
}

final class ConfigTests: XCTestCase {
    func testDefaultsFillMissingKeys() throws {
        let c = try ConfigLoader.decode(SampleConfig.self, yaml: "num_perm: 256\n")
        XCTAssertEqual(c.numPerm, 256)
        XCTAssertEqual(c.threshold, 0.85)
        XCTAssertEqual(try ConfigLoader.decode(SampleConfig.self, yaml: "# nothing\n"), SampleConfig())
    }

    func testUnknownKeyIsNamed() {
        XCTAssertThrowsError(try ConfigLoader.decode(FileWithSection.self, yaml: "dedup:\n  treshold: 0.9\n", file: "c.yaml")) { error in
            let e = error as? ConfigError
            XCTAssertEqual(e?.field, "dedup.treshold")
            XCTAssertEqual(e?.file, "c.yaml")
            XCTAssertTrue(e?.description.hasPrefix("c.yaml:2:3: dedup.treshold: unknown key") ?? false, "\(error)")
        }
    }

    func testWrongTypeIsNamed() {
        XCTAssertThrowsError(try ConfigLoader.decode(FileWithSection.self, yaml: "dedup:\n  num_perm: lots\n")) { error in
            XCTAssertEqual((error as? ConfigError)?.field, "dedup.num_perm", "\(error)")
        }
    }

    func testValidateNamesTheBadField() {
        var c = SampleConfig()
        c.threshold = 1.5
        XCTAssertThrowsError(try c.validate()) { error in
            XCTAssertEqual((error as? ConfigError)?.field, "threshold")
            XCTAssertEqual((error as? ConfigError)?.under("dedup").field, "dedup.threshold")
        }
        c = SampleConfig(); c.kind = "poetry"
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("web, book, code, patent")) }
    }

    func testInputErrorFormat() {
        XCTAssertEqual(InputError(file: "a.jsonl", line: 3, field: "text", reason: "missing").description, "a.jsonl:3: text: missing")
        XCTAssertEqual(InputError(file: "a.jsonl", line: 4, reason: "not JSON").description, "a.jsonl:4: not JSON")
    }

    /// NaN compares false with everything: without an explicit check it passes `<= 0` and `< 0`.
    func testNonFiniteFloatsAreRejected() {
        for value in [Double.nan, .infinity, -.infinity] {
            XCTAssertThrowsError(try Check.positive(value, "x")) { XCTAssertEqual(($0 as? ConfigError)?.reason, "must be a finite number, got \(value)") }
            XCTAssertThrowsError(try Check.nonNegative(value, "x"))
            XCTAssertThrowsError(try Check.inRange(value, 0...1, "x"))
            XCTAssertThrowsError(try Check.finite(value, "x"))
        }
        XCTAssertThrowsError(try Check.positive(Float.nan, "x"))
        XCTAssertNoThrow(try Check.positive(1e-300, "x"))
        XCTAssertNoThrow(try Check.nonNegative(0.0, "x"))
        XCTAssertNoThrow(try Check.positive(3, "x"), "integers keep the generic check")
    }

    // MARK: overrides (--set) and where an error's value came from

    private func load(_ yaml: String, _ sets: [String], file: String? = "c.yaml") throws -> FileWithSection {
        try ConfigLoader.decode(FileWithSection.self, yaml: yaml, file: file, overrides: sets.map(ConfigOverride.parse),
                                section: "dedup", sections: ["dedup"]) { config in
            do { try config.dedup.validate() } catch let error as ConfigError { throw error.under("dedup") }
        }
    }

    private func error(_ body: @autoclosure () throws -> Any) -> ConfigError? {
        do { _ = try body(); XCTFail("no error"); return nil } catch { return error as? ConfigError }
    }

    func testSetAppliesUnderTheSectionAsYAMLScalars() throws {
        let c = try load("dedup:\n  num_perm: 64\n", ["threshold=0.9", "kind=code"])
        XCTAssertEqual(c.dedup.threshold, 0.9)
        XCTAssertEqual(c.dedup.kind, "code")
        XCTAssertEqual(c.dedup.numPerm, 64, "keys not overridden keep the file's value")
        // The section is created when the file lacks it; a key may name its section.
        XCTAssertEqual(try load("", ["dedup.num_perm=32", "num_perm=16"], file: nil).dedup.numPerm, 16, "the last override wins")
        XCTAssertEqual(try load("dedup:\n  num_perm: 64\n", []).dedup.numPerm, 64)
    }

    func testSetUnknownKeyNamesTheKeyTheOptionAndTheKnownKeys() {
        let e = error(try load("dedup:\n  num_perm: 64\n", ["treshold=0.9"]))
        XCTAssertEqual(e?.description, "--set treshold=0.9: dedup.treshold: unknown key (known: kind, num_perm, threshold)")
    }

    func testSetBadValueNamesTheOptionAndTheValueFound() {
        XCTAssertEqual(error(try load("", ["num_perm=lots"]))?.description,
                       "--set num_perm=lots: dedup.num_perm: expected an integer, got \"lots\"")
        XCTAssertEqual(error(try load("dedup:\n  threshold: 0.5\n", ["threshold=fast"]))?.description,
                       "--set threshold=fast: dedup.threshold: expected a number, got \"fast\"")
        XCTAssertEqual(error(try load("", ["threshold=1.5"]))?.description,
                       "--set threshold=1.5: dedup.threshold: must be in 0.0...1.0, got 1.5")
        let shortcut = ConfigOverride(key: "threshold", value: -5, option: "--threshold")
        XCTAssertEqual(error(try ConfigLoader.decode(FileWithSection.self, yaml: "", overrides: [shortcut], section: "dedup") {
            do { try $0.dedup.validate() } catch let error as ConfigError { throw error.under("dedup") }
        })?.description, "--threshold -5: dedup.threshold: must be in 0.0...1.0, got -5.0")
        XCTAssertEqual(error(try load("dedup:\n  threshold: 0.5\n", ["threshold.low=1"]))?.description,
                       "--set threshold.low=1: dedup.threshold: holds a value, not keys, so it has no low")
        XCTAssertEqual(error(try load("", ["threshold.low=1"]))?.description,
                       "--set threshold.low=1: dedup.threshold: expected a single value, got a mapping")
        XCTAssertEqual(error(try ConfigOverride.parse("threshold"))?.source, "--set threshold")
        XCTAssertNotNil(error(try ConfigOverride.parse("dedup..threshold=1")))
    }

    func testFileErrorsGiveLineAndColumn() {
        XCTAssertEqual(error(try load("# comment\ndedup:\n  threshold: 1.5\n", []))?.description,
                       "c.yaml:3:3: dedup.threshold: must be in 0.0...1.0, got 1.5")
        XCTAssertEqual(error(try load("dedup:\n  num_perm: 64\n  threshold: fast\n", []))?.description,
                       "c.yaml:3:3: dedup.threshold: expected a number, got \"fast\"")
        XCTAssertEqual(error(try load("dedup:\n  kind: [a, b]\n", []))?.description,
                       "c.yaml:2:3: dedup.kind: expected a single value, got a list")
        // A value left at its default has no position in the file.
        XCTAssertEqual(error(try load("dedup:\n  kind: poetry\n", []))?.line, 2)
        let syntax = error(try load("dedup:\n  threshold: [0.9\n  kind: web\n", []))
        XCTAssertEqual(syntax?.file, "c.yaml")
        XCTAssertNotNil(syntax?.line)
        XCTAssertNotNil(syntax?.column)
        XCTAssertTrue(syntax?.description.hasPrefix("c.yaml:\(syntax?.line ?? 0):\(syntax?.column ?? 0): not valid YAML: ") ?? false, "\(String(describing: syntax))")
        XCTAssertEqual(error(try load("- dedup\n", []))?.description, "c.yaml:1:1: expected a mapping of keys at the top level, got a list")
    }

    func testMissingConfigFileIsAConfigError() {
        let e = error(try ConfigLoader.load(FileWithSection.self, path: "/nonexistent/c.yaml"))
        XCTAssertEqual(e?.file, "/nonexistent/c.yaml")
        XCTAssertTrue(e?.reason.contains("No such file") ?? false, "\(String(describing: e))")
    }
}
