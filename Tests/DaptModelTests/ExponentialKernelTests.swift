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
        XCTAssertEqual(ExponentialKernels.lanes, ExponentialKernels.cpuHasAVX512() ? 16 : 8)
    }

    /// The CPU check reads the first `flags` line and needs all five subsets.
    func testAVX512NeedsEverySubsetOnTheFlagsLine() {
        let all = "fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16"
        let cpuinfo = { (flags: String) in "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: \(flags)\nbugs\t\t: sysret_ss_attrs\n" }
        XCTAssertTrue(ExponentialKernels.hasAVX512(cpuinfo: cpuinfo(all)))
        XCTAssertFalse(ExponentialKernels.hasAVX512(cpuinfo: cpuinfo(all.replacingOccurrences(of: " avx512vl", with: ""))))
        XCTAssertFalse(ExponentialKernels.hasAVX512(cpuinfo: cpuinfo("fpu sse2 avx avx2 fma")))
        // A `vmx flags` line (virtualisation features) is not the CPU's flags.
        XCTAssertFalse(ExponentialKernels.hasAVX512(cpuinfo: "vmx flags\t: avx512f avx512dq avx512cd avx512bw avx512vl\nflags\t\t: fpu avx2\n"))
        XCTAssertFalse(ExponentialKernels.hasAVX512(cpuinfo: ""))
    }

    /// Every kernel gives the same bits in both builds, for lengths that end
    /// in the wide body, in a run of eight that takes a wide vector's low
    /// half, and in the scalar tail, for ranges from 0 and from inside the
    /// row (as attention's tiles call them), in place (dGate, dUp over gate,
    /// up) and not, over values that reach both of the exponential's clamps
    /// and −inf (masked scores).
    /// The sums' documented order written out plainly: sixteen running sums
    /// over each run of sixteen, a last run of eight added into the first
    /// eight, the two halves added lane by lane and summed, then the tail in
    /// order. The eight-lane build (run on any CPU) gives its bits, for rows
    /// that start inside the buffer too.
    func testSumsFollowTheirDocumentedOrder() {
        for (count, start) in [(0, 0), (7, 0), (8, 0), (16, 0), (24, 0), (31, 3), (40, 5), (4099, 1)] {
            // e^18s then 1.5s, as in the row below that catches a sum added
            // into the wrong half (each lane off by 4, the total by 32).
            var row = (0..<(start + count)).map { $0 - start < 8 ? Float(20) : 2 + Float(Foundation.log(1.5)) }
            func exps(_ i: Int) -> SIMD8<Float> { DaptKernels.vectorExp(SIMD8<Float>(row[i..<(i + 8)]) - 2) }
            var low = SIMD8<Float>(), high = SIMD8<Float>()
            var i = start
            while i + 16 <= start + count { low += exps(i); high += exps(i + 8); i += 16 }
            if i + 8 <= start + count { low += exps(i); i += 8 }
            var expected = (low + high).sum()
            while i < start + count { expected += DaptKernels.scalarExp(row[i] - 2); i += 1 }
            let plain = row.withUnsafeBufferPointer { DaptKernels.exponentialSum($0.baseAddress! + start, count, minus: 2) }
            let written = DaptKernels.exponentiate(&row, start..<(start + count), minus: 2)
            XCTAssertEqual(plain.bitPattern, expected.bitPattern, "count \(count) from \(start)")
            XCTAssertEqual(written.bitPattern, expected.bitPattern, "count \(count) from \(start)")
        }
    }

    func testBothBuildsGiveTheSameBits() throws {
        try XCTSkipUnless(ExponentialKernels.cpuHasAVX512(), "this CPU has no AVX-512: the wide build cannot run")
        func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }
        for count in [0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 33, 47, 64, 688, 4099] {
            var g = randomValues(count, seed: UInt64(count) + 1, std: 4)
            for i in stride(from: 3, to: count, by: 11) { g[i] = i % 2 == 0 ? 95 : -95 }
            let u = randomValues(count, seed: UInt64(count) + 2), d = randomValues(count, seed: UInt64(count) + 3)
            var scores = g
            for i in stride(from: 5, to: count, by: 13) { scores[i] = -.infinity }
            let ranges = [0..<count] + (count > 8 ? [3..<count, 5..<(count - 2)] : [])
            func run(_ k: KernelBuild) -> [String: [UInt32]] {
                var out: [String: [UInt32]] = [:]
                var y = [Float](repeating: .nan, count: count), dg = y, du = y, ry = y, rdg = y, rdu = y
                var ig = g, iu = u  // in place: the gradients written over gate and up
                k.swigluForward(g, u, count, &y)
                k.swigluBackward(g, u, d, count, &dg, &du)
                k.swigluRecomputeBackward(g, u, d, count, &ry, &rdg, &rdu)
                ig.withUnsafeMutableBufferPointer { gp in iu.withUnsafeMutableBufferPointer { up in
                    k.swigluBackward(gp.baseAddress!, up.baseAddress!, d, count, gp.baseAddress!, up.baseAddress!)
                } }
                out["swiglu out"] = bits(y); out["swiglu dGate"] = bits(dg); out["swiglu dUp"] = bits(du)
                out["recompute out"] = bits(ry); out["recompute dGate"] = bits(rdg); out["recompute dUp"] = bits(rdu)
                out["in-place dGate"] = bits(ig); out["in-place dUp"] = bits(iu)
                for range in ranges {
                    // The sums' row without the +95s: one e^88 would swamp every rounding.
                    var p = scores, dp = d, e = scores.map { min($0, 10) }
                    k.softmaxBackwardRow(&p, &dp, range, 1.5, 0.25, 0.125)
                    let plainSum = e.withUnsafeBufferPointer { k.exponentialSum($0.baseAddress! + range.lowerBound, range.count, 2) }
                    let sum = k.exponentiate(&e, range, 2)
                    out["softmax p \(range)"] = bits(p); out["softmax dS \(range)"] = bits(dp)
                    out["exponentiate row \(range)"] = bits(e); out["sums \(range)"] = [sum.bitPattern, plainSum.bitPattern]
                }
                // A row whose sum depends on the order of its additions: eight
                // lanes of e^18 (ulp 4), then 1.5s, each of which alone rounds
                // away against e^18 while two together do not. A last run of
                // eight added into the other half of the sixteen lanes changes it.
                var ordered = (0..<count).map { $0 < 8 ? Float(20) : 2 + Float(Foundation.log(1.5)) }
                let orderedSum = ordered.withUnsafeBufferPointer { k.exponentialSum($0.baseAddress!, count, 2) }
                out["ordered sums"] = [k.exponentiate(&ordered, 0..<count, 2).bitPattern, orderedSum.bitPattern]
                return out
            }
            let narrow = run(.narrow), wide = run(.wide)
            XCTAssertEqual(Set(wide.keys), Set(narrow.keys))
            for (name, value) in narrow.sorted(by: { $0.key < $1.key }) { XCTAssertEqual(wide[name], value, "\(name), count \(count)") }
            // Every output element was written (none left at the NaN it started as).
            for name in ["swiglu out", "swiglu dGate", "swiglu dUp", "recompute out", "recompute dGate", "recompute dUp"] {
                XCTAssertFalse(narrow[name]!.contains { Float(bitPattern: $0).isNaN }, "\(name), count \(count): an element not written")
            }
            if count >= 8 { XCTAssertTrue(narrow["swiglu out"]!.contains { Float(bitPattern: $0) != 0 }, "count \(count): all outputs zero") }
        }
    }
}

/// One build's kernels, to run the same calls on either.
private struct KernelBuild {
    typealias In = UnsafePointer<Float>
    typealias Out = UnsafeMutablePointer<Float>
    let swigluForward: (In, In, Int, Out) -> Void, swigluBackward: (In, In, In, Int, Out, Out) -> Void
    let swigluRecomputeBackward: (In, In, In, Int, Out, Out, Out) -> Void
    let softmaxBackwardRow: (Out, Out, Range<Int>, Float, Float, Float) -> Void
    let exponentialSum: (In, Int, Float) -> Float, exponentiate: (Out, Range<Int>, Float) -> Float

    static var narrow: KernelBuild {
        KernelBuild(swigluForward: DaptKernels.swigluForward, swigluBackward: DaptKernels.swigluBackward,
                    swigluRecomputeBackward: DaptKernels.swigluRecomputeBackward, softmaxBackwardRow: DaptKernels.softmaxBackwardRow,
                    exponentialSum: DaptKernels.exponentialSum, exponentiate: DaptKernels.exponentiate)
    }
    static var wide: KernelBuild {
        KernelBuild(swigluForward: DaptKernelsWide.swigluForward, swigluBackward: DaptKernelsWide.swigluBackward,
                    swigluRecomputeBackward: DaptKernelsWide.swigluRecomputeBackward, softmaxBackwardRow: DaptKernelsWide.softmaxBackwardRow,
                    exponentialSum: DaptKernelsWide.exponentialSum, exponentiate: DaptKernelsWide.exponentiate)
    }
}
