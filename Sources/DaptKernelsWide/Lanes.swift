// This build of ExponentialKernels.swift: sixteen lanes (AVX-512 on x86-64).

typealias Lanes = SIMD16<Float>
typealias LaneBits = SIMD16<Int32>

/// Eight lanes in the low half, zeros above.
@inline(__always) func widen(_ v: SIMD8<Float>) -> Lanes { Lanes(lowHalf: v, highHalf: SIMD8()) }
@inline(__always) func low8(_ v: Lanes) -> SIMD8<Float> { v.lowHalf }
/// Adds the low eight lanes, then the high eight: the order an eight-lane
/// loop adds the same elements in, so sums match the eight-lane build.
@inline(__always) func addLanes(_ v: Lanes, to acc: inout SIMD8<Float>) { acc += v.lowHalf; acc += v.highHalf }
