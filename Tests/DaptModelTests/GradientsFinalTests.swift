import DaptCore
import DaptModel
import XCTest

/// The backward hook a bucketed gradient reduction starts from: whatever
/// `forwardBackward` calls final must already hold its final value.
final class GradientsFinalTests: XCTestCase {
    func testEachReportedRangeHoldsItsFinalGradients() throws {
        for tied in [false, true] {
            let model = try LlamaModel(config: ModelGradientTests.tinyConfig(nil, tied: tied))
            model.initializeRandom(seed: 3, std: 0.4)
            let batch = try ModelGradientTests.tinyBatch()
            model.gradients.zero()
            var offsets: [Int] = []
            var snapshots: [[Float]] = []
            try model.forwardBackward(batch) { offset in
                offsets.append(offset)
                snapshots.append(model.gradients.withBuffer { Array($0[offset...]) })
            }
            let layout = model.layout
            XCTAssertEqual(offsets, [layout.finalNorm!.offset] + layout.layers.reversed().map(\.range.lowerBound) + [0], "tied \(tied)")
            let final = model.gradients.withBuffer { Array($0) }
            for (offset, snapshot) in zip(offsets, snapshots) {
                XCTAssertEqual(snapshot, Array(final[offset...]), "tied \(tied): gradients from \(offset) changed after being reported final")
            }
            // The hook changes nothing: the same pass without it gives the same gradients.
            model.gradients.zero()
            try model.forwardBackward(batch)
            XCTAssertEqual(model.gradients.withBuffer { Array($0) }, final)
        }
    }
}
