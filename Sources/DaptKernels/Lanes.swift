// This build of ExponentialKernels.swift: eight lanes (AVX2 on x86-64).

typealias Lanes = SIMD8<Float>
typealias LaneBits = SIMD8<Int32>

@inline(__always) func widen(_ v: SIMD8<Float>) -> Lanes { v }
@inline(__always) func low8(_ v: Lanes) -> SIMD8<Float> { v }

/// Sixteen running sums as two eight-lane vectors: the first eight of each
/// run of sixteen go to `low`, the second to `high`, as the wide build's
/// halves take them.
struct Sums {
    var low = SIMD8<Float>(), high = SIMD8<Float>()
    @inline(__always) mutating func add(_ v: Lanes, part: Int) { if part == 0 { low += v } else { high += v } }
    @inline(__always) mutating func addLow8(_ v: SIMD8<Float>) { low += v }
    /// The part the next vector of a run of sixteen fills: the halves alternate.
    @inline(__always) static func nextPart(_ part: Int) -> Int { 1 - part }
    /// The halves added lane by lane.
    var folded: SIMD8<Float> { @inline(__always) get { low + high } }
}
