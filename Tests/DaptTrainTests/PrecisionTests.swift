import DaptTrain
import XCTest

final class PrecisionTests: XCTestCase {
    /// Values covering normals, fp16 subnormals, ties, overflow and specials.
    func sampleValues() -> [Float] {
        var rng = SystemRandomNumberGenerator()
        var values: [Float] = [0, -0, 1, -1, 65504, 65519, 65520, 70000, -1e9, .infinity, -.infinity, .nan,
                               Float(bitPattern: 0x3880_0000), Float(bitPattern: 0x387F_FFFF), 5.96e-8, 2.98e-8, 2.99e-8, 1e-10,
                               1.0009765625, 1.00048828125, 1.00146484375, Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000)]
        for _ in 0..<20000 { values.append(Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &rng))) }
        for _ in 0..<20000 { values.append(Float.random(in: -70000...70000, using: &rng)) }
        for _ in 0..<20000 { values.append(Float.random(in: -1e-4...1e-4, using: &rng)) }
        return values
    }

    func testFloat16MatchesSwiftFloat16() {
        let values = sampleValues()
        var bits = [UInt16](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { s in bits.withUnsafeMutableBufferPointer { convertToFloat16Bits(s, into: $0) } }
        var rounded = values
        rounded.withUnsafeMutableBufferPointer { roundInPlace($0, to: .fp16) }
        for (i, v) in values.enumerated() {
            let reference = Float16(v)
            if v.isNaN {
                XCTAssertTrue(Float16(bitPattern: bits[i]).isNaN); XCTAssertTrue(rounded[i].isNaN)
                continue
            }
            XCTAssertEqual(bits[i], reference.bitPattern, "bits of \(v) (0x\(String(v.bitPattern, radix: 16)))")
            XCTAssertEqual(rounded[i].bitPattern, Float(reference).bitPattern, "rounding of \(v)")
        }
    }

    func testBFloat16RoundsToNearestEven() {
        let values = sampleValues()
        var bits = [UInt16](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { s in bits.withUnsafeMutableBufferPointer { convertToBFloat16Bits(s, into: $0) } }
        var rounded = values
        rounded.withUnsafeMutableBufferPointer { roundInPlace($0, to: .bf16) }
        for (i, v) in values.enumerated() {
            if v.isNaN { XCTAssertTrue(rounded[i].isNaN); continue }
            // Reference: pick the nearer of the two bf16 neighbours, ties to even.
            let down = v.bitPattern & 0xFFFF_0000
            let remainder = v.bitPattern & 0xFFFF
            var expected = down
            if remainder > 0x8000 || (remainder == 0x8000 && (down >> 16) & 1 == 1) { expected = down &+ 0x1_0000 }
            XCTAssertEqual(rounded[i].bitPattern, expected, "bf16 rounding of \(v)")
            XCTAssertEqual(UInt32(bits[i]) << 16, expected)
        }
        // A tie rounds to even: 1 + 2^-8 is half-way between 1 and 1 + 2^-7.
        var tie: [Float] = [1 + 1.0 / 256]
        tie.withUnsafeMutableBufferPointer { roundInPlace($0, to: .bf16) }
        XCTAssertEqual(tie[0], 1)
    }

    func testFiniteCheck() {
        var x = [Float](repeating: 1, count: 37)
        XCTAssertTrue(x.withUnsafeBufferPointer { allFinite($0) })
        for position in [0, 8, 20, 36] {
            for bad in [Float.infinity, -.infinity, .nan] {
                x[position] = bad
                XCTAssertFalse(x.withUnsafeBufferPointer { allFinite($0) }, "\(bad) at \(position)")
                x[position] = 1
            }
        }
    }

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
}
