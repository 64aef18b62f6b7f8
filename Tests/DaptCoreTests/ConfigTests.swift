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
            XCTAssertTrue(e?.description.hasPrefix("c.yaml: dedup.treshold: unknown key") ?? false, "\(error)")
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
}
