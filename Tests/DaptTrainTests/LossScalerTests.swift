import DaptCore
import DaptModel
import DaptTrain
import XCTest

final class LossScalerTests: XCTestCase {
    func testLossScalerSkipsOnOverflowAndGrows() {
        var scaler = LossScaler(initialScale: 1024, growthInterval: 3)
        XCTAssertTrue(scaler.update(gradientsFinite: true))
        XCTAssertTrue(scaler.update(gradientsFinite: true))
        XCTAssertFalse(scaler.update(gradientsFinite: false))
        XCTAssertEqual(scaler.scale, 512)
        XCTAssertEqual(scaler.skippedSteps, 1)
        // The clean count restarts after an overflow.
        XCTAssertTrue(scaler.update(gradientsFinite: true))
        XCTAssertTrue(scaler.update(gradientsFinite: true))
        XCTAssertEqual(scaler.scale, 512)
        XCTAssertTrue(scaler.update(gradientsFinite: true))
        XCTAssertEqual(scaler.scale, 1024)
        var floor = LossScaler(initialScale: 1, growthInterval: 10)
        XCTAssertFalse(floor.update(gradientsFinite: false))
        XCTAssertEqual(floor.scale, 1)
    }

    /// precision.mode in YAML: a known mode is used as is; an unknown one is
    /// an error naming the whole field path and the value.
    func testPrecisionModeFromYAML() throws {
        XCTAssertEqual(try ConfigLoader.decode(PretrainConfig.self, yaml: "precision:\n  mode: bf16\n").precision.mode, .bf16)
        XCTAssertEqual(try ConfigLoader.decode(PretrainConfig.self, yaml: "precision: {}\n").precision.mode, .fp32)
        XCTAssertThrowsError(try ConfigLoader.decode(PretrainConfig.self, yaml: "precision:\n  mode: fp8\n", file: "run.yaml")) { error in
            XCTAssertEqual(error as? ConfigError,
                           ConfigError(file: "run.yaml", line: 2, column: 3, field: "precision.mode", reason: "must be one of fp32, fp16, bf16, got \"fp8\""))
        }
    }
}
