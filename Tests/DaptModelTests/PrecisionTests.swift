import DaptCore
import DaptModel
import Foundation
import XCTest

final class PrecisionTests: XCTestCase {
    /// Float32 inputs and their bf16/fp16 roundings (as float32 bit
    /// patterns) computed by PyTorch (scripts/fixtures/precision_rounding.py).
    struct TorchRounding: Decodable { var inputs: [UInt32]; var bf16: [UInt32]; var fp16: [UInt32] }

    func torchRounding() throws -> TorchRounding {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "Fixtures/precision/rounding", withExtension: "json"))
        let f = try JSONDecoder().decode(TorchRounding.self, from: Data(contentsOf: url))
        XCTAssertEqual(f.inputs.count, f.bf16.count); XCTAssertEqual(f.inputs.count, f.fp16.count)
        return f
    }

    /// Rounds `values` in chunks of 1 to 13 elements, so both the 8-wide and the tail paths run.
    func roundedInChunks(_ values: [Float], _ precision: Precision) -> [UInt32] {
        var out = values
        var start = 0, size = 1
        out.withUnsafeMutableBufferPointer { all in
            while start < all.count {
                let end = min(all.count, start + size)
                roundInPlace(UnsafeMutableBufferPointer(rebasing: all[start..<end]), to: precision)
                start = end; size = size % 13 + 1
            }
        }
        return out.map(\.bitPattern)
    }

    func halfBitsInChunks(_ values: [Float], _ precision: Precision) -> [UInt16] {
        var bits = [UInt16](repeating: 0, count: values.count)
        var start = 0, size = 5
        values.withUnsafeBufferPointer { s in
            bits.withUnsafeMutableBufferPointer { d in
                while start < s.count {
                    let end = min(s.count, start + size)
                    let source = UnsafeBufferPointer(rebasing: s[start..<end])
                    let destination = UnsafeMutableBufferPointer(rebasing: d[start..<end])
                    if precision == .bf16 { convertToBFloat16Bits(source, into: destination) } else { convertToFloat16Bits(source, into: destination) }
                    start = end; size = size % 13 + 1
                }
            }
        }
        return bits
    }

    func assertMatches(_ got: [UInt32], _ expected: [UInt32], inputs: [UInt32], _ what: String) {
        var mismatches = 0
        for (i, (g, e)) in zip(got, expected).enumerated() {
            let input = Float(bitPattern: inputs[i])
            // PyTorch and dapt both give a NaN; payload and sign of a NaN are not specified.
            if input.isNaN {
                XCTAssertTrue(Float(bitPattern: g).isNaN && Float(bitPattern: e).isNaN, "\(what): NaN 0x\(String(inputs[i], radix: 16))")
                continue
            }
            if g != e, mismatches < 10 {
                XCTFail("\(what) of \(input) (0x\(String(inputs[i], radix: 16))): 0x\(String(g, radix: 16)), torch 0x\(String(e, radix: 16))")
            }
            if g != e { mismatches += 1 }
        }
        XCTAssertEqual(mismatches, 0, "\(what): \(mismatches) of \(got.count) differ from torch")
    }

    /// bf16 and fp16 rounding (and the 16-bit patterns written to safetensors)
    /// equal PyTorch's `.to(torch.bfloat16 / torch.float16)` bit for bit.
    func testRoundingMatchesTorch() throws {
        let f = try torchRounding()
        let values = f.inputs.map { Float(bitPattern: $0) }
        assertMatches(roundedInChunks(values, .bf16), f.bf16, inputs: f.inputs, "bf16 rounding")
        assertMatches(roundedInChunks(values, .fp16), f.fp16, inputs: f.inputs, "fp16 rounding")
        assertMatches(halfBitsInChunks(values, .bf16).map { UInt32($0) << 16 }, f.bf16, inputs: f.inputs, "bf16 bits")
        let fp16Bits = halfBitsInChunks(values, .fp16)
        assertMatches(fp16Bits.map { Float(Float16(bitPattern: $0)).bitPattern }, f.fp16, inputs: f.inputs, "fp16 bits")
        XCTAssertEqual(roundedInChunks(values, .fp32), f.inputs, "fp32 leaves every value as it is")
    }

    /// The fixture can tell rounding from truncation: it holds exact ties
    /// rounding down and up in both formats, 65504 → 65536 in bf16 and
    /// fp16 overflow to inf, and truncating would miss many of its values.
    func testTorchFixtureSeparatesRoundingFromTruncation() throws {
        let f = try torchRounding()
        var bf16TiesUp = 0, bf16TiesDown = 0, fp16TiesUp = 0, fp16TiesDown = 0, bf16Truncations = 0, fp16Truncations = 0
        for (i, x) in f.inputs.enumerated() where !Float(bitPattern: x).isNaN {
            let magnitude = x & 0x7FFF_FFFF
            if x & 0xFFFF == 0x8000 { if f.bf16[i] == x & 0xFFFF_0000 { bf16TiesDown += 1 } else { bf16TiesUp += 1 } }
            if magnitude >= 0x3880_0000, magnitude < 0x4780_0000, x & 0x1FFF == 0x1000 {
                if f.fp16[i] == x & 0xFFFF_E000 { fp16TiesDown += 1 } else { fp16TiesUp += 1 }
            }
            if f.bf16[i] != x & 0xFFFF_0000 { bf16Truncations += 1 }
            if magnitude >= 0x3880_0000, magnitude < 0x4780_0000, f.fp16[i] != x & 0xFFFF_E000 { fp16Truncations += 1 }
        }
        XCTAssertGreaterThan(bf16TiesUp, 10); XCTAssertGreaterThan(bf16TiesDown, 10)
        XCTAssertGreaterThan(fp16TiesUp, 10); XCTAssertGreaterThan(fp16TiesDown, 10)
        XCTAssertGreaterThan(bf16Truncations, 100); XCTAssertGreaterThan(fp16Truncations, 100)
        func torch(_ x: Float, _ table: [UInt32]) throws -> Float {
            Float(bitPattern: table[try XCTUnwrap(f.inputs.firstIndex(of: x.bitPattern), "\(x) is in the fixture")])
        }
        XCTAssertEqual(try torch(65504, f.bf16), 65536)
        XCTAssertEqual(try torch(65504, f.fp16), 65504)
        XCTAssertEqual(try torch(65519, f.fp16), 65504)
        XCTAssertEqual(try torch(65520, f.fp16), .infinity)
        XCTAssertEqual(try torch(-70000, f.fp16), -.infinity)
        XCTAssertEqual(try torch(Float.greatestFiniteMagnitude, f.bf16), .infinity)
    }

    /// Values covering normals, fp16 subnormals, ties, overflow and specials.
    func sampleValues() -> [Float] {
        var rng = SplitMix64(seed: 0x5EED)
        var values: [Float] = [0, -0, 1, -1, 65504, 65519, 65520, 70000, -1e9, .infinity, -.infinity, .nan,
                               Float(bitPattern: 0x3880_0000), Float(bitPattern: 0x387F_FFFF), 5.96e-8, 2.98e-8, 2.99e-8, 1e-10,
                               1.0009765625, 1.00048828125, 1.00146484375, Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000)]
        for _ in 0..<20000 { values.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))) }
        for _ in 0..<20000 { values.append(Float(Double(rng.next() % 140_001) - 70000 + 0.37)) }
        for _ in 0..<20000 { values.append(Float(Double(Int64(rng.next() % 2_000_001) - 1_000_000) * 1e-10)) }
        return values
    }

    /// fp16 rounding also agrees with Swift's own Float16 conversion on many random values.
    func testFloat16MatchesSwiftFloat16() {
        let values = sampleValues()
        let bits = halfBitsInChunks(values, .fp16)
        let rounded = roundedInChunks(values, .fp16)
        for (i, v) in values.enumerated() {
            let reference = Float16(v)
            if v.isNaN {
                XCTAssertTrue(Float16(bitPattern: bits[i]).isNaN); XCTAssertTrue(Float(bitPattern: rounded[i]).isNaN)
                continue
            }
            XCTAssertEqual(bits[i], reference.bitPattern, "bits of \(v) (0x\(String(v.bitPattern, radix: 16)))")
            XCTAssertEqual(rounded[i], Float(reference).bitPattern, "rounding of \(v)")
        }
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

    /// An unknown mode is an error naming the field and the value, never fp32.
    func testUnknownModeIsAConfigError() throws {
        XCTAssertEqual(try Precision(mode: "bf16"), .bf16)
        XCTAssertThrowsError(try Precision(mode: "fp8", field: "precision.mode")) { error in
            let e = error as? ConfigError
            XCTAssertEqual(e?.field, "precision.mode")
            XCTAssertTrue(e?.reason.contains("\"fp8\"") == true, "\(error)")
        }
        struct Holder: Decodable { var precision: Precision }
        XCTAssertEqual(try JSONDecoder().decode(Holder.self, from: Data(#"{"precision":"fp16"}"#.utf8)).precision, .fp16)
        XCTAssertThrowsError(try JSONDecoder().decode(Holder.self, from: Data(#"{"precision":"FP16"}"#.utf8))) { error in
            let e = error as? ConfigError
            XCTAssertEqual(e?.field, "precision", "\(error)")
            XCTAssertTrue(e?.reason.contains("FP16") == true, "\(error)")
        }
    }
}
