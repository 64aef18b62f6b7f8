// This build of ExponentialKernels.swift: eight lanes (AVX2 on x86-64).

typealias Lanes = SIMD8<Float>
typealias LaneBits = SIMD8<Int32>

@inline(__always) func widen(_ v: SIMD8<Float>) -> Lanes { v }
@inline(__always) func low8(_ v: Lanes) -> SIMD8<Float> { v }
/// acc += v, as an eight-lane loop adds.
@inline(__always) func addLanes(_ v: Lanes, to acc: inout SIMD8<Float>) { acc += v }
