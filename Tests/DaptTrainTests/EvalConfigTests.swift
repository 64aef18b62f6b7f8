import DaptCore
import DaptTrain
import XCTest

final class EvalConfigTests: XCTestCase {
    /// The eval: section sets the request; a missing key keeps its default; a bad value names its field.
    func testSectionSetsTheRequest() throws {
        let config = try ConfigLoader.decode(EvalConfig.self, yaml: "sequence_length: 128\nadd_bos: true\n")
        let request = config.request(model: "run", input: "text.jsonl", tokenizer: nil)
        XCTAssertEqual(request.sequenceLength, 128)
        XCTAssertTrue(request.addBos)
        XCTAssertEqual(request.batchSize, PerplexityRequest(model: "", input: "").batchSize)
        XCTAssertEqual(request.addEos, true)
        XCTAssertEqual(request.model, "run")
        XCTAssertEqual(request.input, "text.jsonl")
        XCTAssertThrowsError(try ConfigLoader.decode(EvalConfig.self, yaml: "max_sequences: -1\n", validate: { try $0.validate() })) {
            XCTAssertEqual("\($0)", "max_sequences: must be >= 0, got -1")
        }
    }
}
