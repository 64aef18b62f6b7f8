import DaptCore

/// Numeric precision of training: fp32, or mixed precision with fp32 master
/// weights and weights, activations and their gradients rounded to fp16 or
/// bf16 in forward and backward (values stay in Float buffers; only their
/// precision is reduced).
public enum Precision: String, Codable, Sendable, CaseIterable {
    case fp32, fp16, bf16

    /// Parses a configured mode; anything else is an error naming `field`
    /// and the value (never a silent fp32).
    public init(mode text: String, field: String = "mode") throws {
        guard let precision = Precision(rawValue: text) else {
            throw ConfigError(field: field, reason: "must be one of \(Self.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(text)\"")
        }
        self = precision
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        let path = decoder.codingPath.map(\.stringValue).joined(separator: ".")
        try self.init(mode: text, field: path.isEmpty ? "mode" : path)
    }
}

// Conversions written on SIMD8<UInt32>/SIMD8<Float> so they vectorise with
// plain SSE2/AVX (Swift's scalar Float16 conversion is a library call on
// x86 without F16C). All round to nearest, ties to even.

typealias F8 = SIMD8<Float>
typealias U8 = SIMD8<UInt32>

/// bf16 rounding of 8 floats, returned as floats (low 16 bits zero). NaN stays NaN.
@inline(__always) func roundToBFloat16(_ x: F8) -> F8 {
    let bits = unsafeBitCast(x, to: U8.self)
    let lsb = (bits &>> 16) & 1
    var rounded = (bits &+ 0x7FFF &+ lsb) & 0xFFFF_0000
    let isNaN = (bits & 0x7FFF_FFFF) .> 0x7F80_0000
    rounded.replace(with: (bits | 0x0040_0000) & 0xFFFF_0000, where: isNaN)
    return unsafeBitCast(rounded, to: F8.self)
}

/// fp16 rounding of 8 floats, returned as floats: 10 mantissa bits for
/// normals, multiples of 2^-24 below 2^-14, ±inf beyond 65504 (+half ulp).
@inline(__always) func roundToFloat16(_ x: F8) -> F8 {
    let bits = unsafeBitCast(x, to: U8.self)
    let sign = bits & 0x8000_0000
    let magnitudeBits = bits & 0x7FFF_FFFF
    let lsb = (magnitudeBits &>> 13) & 1
    var normal = (magnitudeBits &+ 0xFFF &+ lsb) & 0xFFFF_E000
    // Tiny values: adding 0.5 (whose ulp is 2^-24) rounds to the fp16 subnormal grid.
    let magnitude = unsafeBitCast(magnitudeBits, to: F8.self)
    let tiny = unsafeBitCast((magnitude + 0.5) - 0.5, to: U8.self)
    normal.replace(with: tiny, where: magnitudeBits .< 0x3880_0000)          // < 2^-14
    normal.replace(with: 0x7F80_0000, where: normal .> 0x477F_E000)           // > 65504 → inf
    normal.replace(with: magnitudeBits | 0x0040_0000, where: magnitudeBits .> 0x7F80_0000) // NaN
    return unsafeBitCast(normal | sign, to: F8.self)
}

/// fp16 bit patterns of 8 floats already on the fp16 grid (see `roundToFloat16`).
@inline(__always) func float16Bits(ofRounded x: F8) -> SIMD8<UInt16> {
    let bits = unsafeBitCast(x, to: U8.self)
    let sign = (bits &>> 16) & 0x8000
    let magnitudeBits = bits & 0x7FFF_FFFF
    var half = ((magnitudeBits &- 0x3800_0000) &>> 13)                       // rebias 127 → 15
    let isTiny = magnitudeBits .< 0x3880_0000
    // Only tiny values are converted (others would trap the float→int conversion).
    let tinyValues = F8(repeating: 0).replacing(with: unsafeBitCast(magnitudeBits, to: F8.self), where: isTiny)
    let sub = SIMD8<UInt32>(truncatingIfNeeded: SIMD8<Int32>(tinyValues * 16_777_216))
    half.replace(with: sub, where: isTiny)
    half.replace(with: 0x7C00, where: magnitudeBits .== 0x7F80_0000)
    half.replace(with: 0x7E00, where: magnitudeBits .> 0x7F80_0000)
    return SIMD8<UInt16>(truncatingIfNeeded: half | sign)
}

/// Writes `convert` of `source` to `destination`, eight lanes at a time
/// (the tail padded with zeros); `destination` may be `source`.
@inline(__always) private func mapLanes<Lane: SIMDScalar>(_ source: UnsafePointer<Float>, _ destination: UnsafeMutablePointer<Lane>,
                                                         count n: Int, _ convert: (F8) -> SIMD8<Lane>) {
    var i = 0
    while i + 8 <= n {
        let v = convert(UnsafeRawPointer(source + i).loadUnaligned(as: F8.self))
        UnsafeMutableRawPointer(destination + i).storeBytes(of: v, as: SIMD8<Lane>.self)
        i += 8
    }
    if i < n {
        var tail = F8(repeating: 0)
        for j in i..<n { tail[j - i] = source[j] }
        let v = convert(tail)
        for j in i..<n { destination[j] = v[j - i] }
    }
}

/// Rounds every element to `precision` in place (a no-op for fp32).
public func roundInPlace(_ x: UnsafeMutableBufferPointer<Float>, to precision: Precision) {
    guard precision != .fp32, let base = x.baseAddress else { return }
    if precision == .bf16 { mapLanes(base, base, count: x.count, roundToBFloat16) } else { mapLanes(base, base, count: x.count, roundToFloat16) }
}

/// Copies `source` into `destination` rounded to `precision`.
public func roundedCopy(_ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableBufferPointer<Float>, precision: Precision) {
    precondition(destination.count >= source.count)
    guard let s = source.baseAddress, let d = destination.baseAddress else { return }
    d.update(from: s, count: source.count)
    roundInPlace(UnsafeMutableBufferPointer(start: d, count: source.count), to: precision)
}

/// IEEE half bit patterns (round to nearest even) of `source`.
public func convertToFloat16Bits(_ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableBufferPointer<UInt16>) {
    precondition(destination.count >= source.count)
    guard let s = source.baseAddress, let d = destination.baseAddress else { return }
    mapLanes(s, d, count: source.count) { float16Bits(ofRounded: roundToFloat16($0)) }
}

/// bfloat16 bit patterns (round to nearest even) of `source`.
public func convertToBFloat16Bits(_ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableBufferPointer<UInt16>) {
    precondition(destination.count >= source.count)
    guard let s = source.baseAddress, let d = destination.baseAddress else { return }
    mapLanes(s, d, count: source.count) { SIMD8<UInt16>(truncatingIfNeeded: unsafeBitCast(roundToBFloat16($0), to: U8.self) &>> 16) }
}

/// Floats from half or bfloat16 bit patterns (exact).
public func convertFromFloat16Bits(_ source: UnsafeBufferPointer<UInt16>, into destination: UnsafeMutableBufferPointer<Float>) {
    precondition(destination.count >= source.count)
    for i in 0..<source.count { destination[i] = Float(Float16(bitPattern: source[i])) }
}

public func convertFromBFloat16Bits(_ source: UnsafeBufferPointer<UInt16>, into destination: UnsafeMutableBufferPointer<Float>) {
    precondition(destination.count >= source.count)
    for i in 0..<source.count { destination[i] = Float(bitPattern: UInt32(source[i]) << 16) }
}

/// True when every element is finite (the fp16 overflow check).
public func allFinite(_ x: UnsafeBufferPointer<Float>) -> Bool {
    guard let base = x.baseAddress else { return true }
    var i = 0
    var largestExponent = U8(repeating: 0)
    while i + 8 <= x.count {
        let bits = UnsafeRawPointer(base + i).loadUnaligned(as: U8.self)
        largestExponent = pointwiseMax(largestExponent, bits & 0x7F80_0000)
        i += 8
    }
    if largestExponent.max() == 0x7F80_0000 { return false }
    while i < x.count { if !base[i].isFinite { return false }; i += 1 }
    return true
}

