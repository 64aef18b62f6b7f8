import DaptBLAS
import XCTest

final class SgemmTests: XCTestCase {
    func random(_ n: Int, seed: Int) -> [Float] {
        var state = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<n).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Float(Int(state % 2001) - 1000) / 1000
        }
    }

    func testAgainstReferenceForEveryTransposeAndOddShapes() {
        for (m, n, k) in [(1, 1, 1), (3, 5, 7), (17, 9, 33), (64, 48, 80)] {
            for ta in [BLAS.Transpose.none, .transpose] {
                for tb in [BLAS.Transpose.none, .transpose] {
                    let a = random(m * k, seed: m), b = random(k * n, seed: n + 100)
                    var c = random(m * n, seed: 7), expected = c
                    BLAS.sgemmReference(ta, tb, m: m, n: n, k: k, alpha: 0.5, a: a, b: b, beta: 2, c: &expected)
                    a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                        BLAS.sgemm(ta, tb, m: m, n: n, k: k, alpha: 0.5, a: ap, b: bp, beta: 2, c: cp)
                    } } }
                    for i in 0..<(m * n) {
                        XCTAssertEqual(c[i], expected[i], accuracy: 1e-4 * Float(k), "\(m)x\(n)x\(k) \(ta) \(tb) at \(i)")
                    }
                }
            }
        }
    }

    func testZeroInnerDimensionScalesC() {
        var c: [Float] = [1, 2, 3, 4]
        [Float]().withUnsafeBufferPointer { e in c.withUnsafeMutableBufferPointer { cp in
            BLAS.sgemm(.none, .none, m: 2, n: 2, k: 0, a: e, b: e, beta: 3, c: cp)
        } }
        XCTAssertEqual(c, [3, 6, 9, 12])
    }

    func testThreadCountIsSettable() {
        let before = BLAS.threads
        BLAS.setThreads(1)
        XCTAssertEqual(BLAS.threads, 1)
        BLAS.setThreads(before)
        XCTAssertFalse(BLAS.configuration.isEmpty)
    }
}
