import DaptKernels
import DaptKernelsWide
@testable import DaptModel
import Foundation
import XCTest

/// The exponential kernels' two builds (eight and sixteen lanes).
final class ExponentialKernelTests: XCTestCase {
    /// Within 2 ulp of the correctly rounded e^x (the exact value rounded to Float).
    func testVectorExpMatchesExp() {
        var worst: Float = 0
        var x: Float = -87
        while x < 88 {
            let v = DaptKernels.vectorExp(SIMD8<Float>(repeating: x) + SIMD8<Float>(0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07))
            for lane in 0..<8 where x + Float(lane) * 0.01 < 88 {
                let xi = x + Float(lane) * 0.01
                let e = Float(Foundation.exp(Double(xi)))
                worst = max(worst, abs(v[lane] - e) / e.ulp)
            }
            x += 0.0173
        }
        XCTAssertLessThanOrEqual(worst, 2)
        let special = DaptKernels.vectorExp(SIMD8<Float>(-.infinity, -100, -87.4, 0, 1, -1, 10, -10))
        XCTAssertEqual(special[0], 0); XCTAssertEqual(special[1], 0); XCTAssertEqual(special[2], 0)
        XCTAssertEqual(special[3], 1)
        XCTAssertEqual(special[4], Foundation.exp(Float(1)), accuracy: 1e-6)
    }

    /// The process runs the wide build exactly where the CPU has AVX-512
    /// (the tests run without DAPT_KERNEL_LANES).
    func testTheWideBuildIsChosenWhereTheCPUHasIt() throws {
        try XCTSkipIf(ProcessInfo.processInfo.environment["DAPT_KERNEL_LANES"] != nil, "DAPT_KERNEL_LANES is set")
        XCTAssertEqual(DaptKernels.laneCount, 8)
        XCTAssertEqual(DaptKernelsWide.laneCount, 16)
        XCTAssertEqual(ExponentialKernels.lanes, ExponentialKernels.cpuHasAVX512() ? 16 : 8)
    }

    /// Every kernel gives the same bits in both builds, for lengths that end
    /// in the wide body, in a run of eight that takes a wide vector's low
    /// half, and in the scalar tail, over values that reach both of the
    /// exponential's clamps and −inf (masked scores).
    func testBothBuildsGiveTheSameBits() throws {
        try XCTSkipUnless(ExponentialKernels.cpuHasAVX512(), "this CPU has no AVX-512: the wide build cannot run")
        for count in [0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 33, 47, 64, 688, 4099] {
            var g = randomValues(count, seed: UInt64(count) + 1, std: 4)
            for i in stride(from: 3, to: count, by: 11) { g[i] = i % 2 == 0 ? 95 : -95 }
            let u = randomValues(count, seed: UInt64(count) + 2), d = randomValues(count, seed: UInt64(count) + 3)
            func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }
            func run(_ wide: Bool) -> [[UInt32]] {
                var y = [Float](repeating: .nan, count: count), dg = y, du = y, ry = y, rdg = y, rdu = y
                var scores = g, grads = d
                for i in stride(from: 5, to: count, by: 13) { scores[i] = -.infinity }
                var exps = scores
                let sum: Float, plainSum: Float
                if wide {
                    DaptKernelsWide.swigluForward(gate: g, up: u, count: count, out: &y)
                    DaptKernelsWide.swigluBackward(gate: g, up: u, dOut: d, count: count, dGate: &dg, dUp: &du)
                    DaptKernelsWide.swigluRecomputeBackward(gate: g, up: u, dOut: d, count: count, out: &ry, dGate: &rdg, dUp: &rdu)
                    DaptKernelsWide.softmaxBackwardRow(scores: &scores, scoreGradients: &grads, 0..<count, logSumExp: 1.5, rowDot: 0.25, scale: 0.125)
                    plainSum = DaptKernelsWide.exponentialSum(exps, count, minus: 2)
                    sum = DaptKernelsWide.exponentiate(&exps, 0..<count, minus: 2)
                } else {
                    DaptKernels.swigluForward(gate: g, up: u, count: count, out: &y)
                    DaptKernels.swigluBackward(gate: g, up: u, dOut: d, count: count, dGate: &dg, dUp: &du)
                    DaptKernels.swigluRecomputeBackward(gate: g, up: u, dOut: d, count: count, out: &ry, dGate: &rdg, dUp: &rdu)
                    DaptKernels.softmaxBackwardRow(scores: &scores, scoreGradients: &grads, 0..<count, logSumExp: 1.5, rowDot: 0.25, scale: 0.125)
                    plainSum = DaptKernels.exponentialSum(exps, count, minus: 2)
                    sum = DaptKernels.exponentiate(&exps, 0..<count, minus: 2)
                }
                return [bits(y), bits(dg), bits(du), bits(ry), bits(rdg), bits(rdu), bits(scores), bits(grads), bits(exps), [sum.bitPattern, plainSum.bitPattern]]
            }
            let narrow = run(false), wide = run(true)
            let names = ["swiglu out", "swiglu dGate", "swiglu dUp", "recompute out", "recompute dGate", "recompute dUp",
                         "softmax p", "softmax dS", "exponentiate row", "sums"]
            for (k, name) in names.enumerated() { XCTAssertEqual(wide[k], narrow[k], "\(name), count \(count)") }
            if count >= 8 { XCTAssertTrue(narrow[0].contains { Float(bitPattern: $0) != 0 }, "count \(count): all outputs zero") }
        }
    }
}
