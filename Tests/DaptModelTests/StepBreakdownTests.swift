import DaptBLAS
@testable import DaptModel
import XCTest

final class StepBreakdownTests: XCTestCase {
    /// The breakdown counts exactly the step's products (their number and
    /// 2mnk each), keeps the time outside them apart, groups them by shape
    /// with each shape's replay time, and stops recording.
    func testBreakdownRecordsTheStepsProducts() throws {
        let m = 48, n = 40, k = 32
        let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: k * n)
        var c = [Float](repeating: 0, count: m * n)
        var outside = [Float](repeating: 1, count: 1 << 16)
        let breakdown = try StepBreakdown.measure(steps: 3) {
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    c.withUnsafeMutableBufferPointer { c in
                        BLAS.sgemm(.none, .none, m: m, n: n, k: k, a: a, b: b, c: c)
                        BLAS.sgemm(.none, .transpose, m: m, n: n, k: 1, a: a, b: b, c: c)
                    }
                }
            }
            // Work outside sgemm.
            for _ in 0..<20 { for i in outside.indices { outside[i] = outside[i] * 1.0001 + 0.5 } }
        }
        XCTAssertEqual(breakdown.calls, 2)
        XCTAssertEqual(breakdown.sgemmFlops, Double(2 * m * n * k + 2 * m * n * 1))
        XCTAssertGreaterThan(breakdown.sgemmSeconds, 0)
        XCTAssertLessThan(breakdown.sgemmSeconds, breakdown.stepSeconds)
        XCTAssertGreaterThan(breakdown.outsideSgemmShare, 0)
        XCTAssertGreaterThan(breakdown.plainSgemmSeconds, 0)
        XCTAssertGreaterThan(breakdown.coldSgemmSeconds, 0)
        XCTAssertEqual(Set(breakdown.shapes.map(\.label)), ["NN 48x40x32", "NT 48x40x1"])
        for shape in breakdown.shapes {
            XCTAssertEqual(shape.calls, 1, shape.label)
            XCTAssertEqual(shape.flops, 2 * Double(shape.m * shape.n * shape.k), shape.label)
            XCTAssertGreaterThan(shape.plainSeconds, 0, shape.label)
        }
        XCTAssertEqual(breakdown.shapes.reduce(0) { $0 + $1.stepSeconds }, breakdown.sgemmSeconds, accuracy: 1e-12)
        // Shapes come most time lost against their replay first (the bench prints the first five).
        let lost = breakdown.shapes.map { $0.stepSeconds - $0.plainSeconds }
        XCTAssertEqual(lost, lost.sorted(by: >))
        XCTAssertEqual(c[0], 0.125)  // the last product: 0.5 · 0.25 over k = 1
        XCTAssertNil(BLAS.recorder)
    }
}
