// This build of ExponentialKernels.swift: sixteen lanes (AVX-512 on x86-64).

typealias Lanes = SIMD16<Float>
typealias LaneBits = SIMD16<Int32>

/// Eight lanes in the low half, zeros above.
@inline(__always) func widen(_ v: SIMD8<Float>) -> Lanes { Lanes(lowHalf: v, highHalf: SIMD8()) }
@inline(__always) func low8(_ v: Lanes) -> SIMD8<Float> { v.lowHalf }

/// Sixteen running sums in one vector (the narrow build keeps them as two halves).
struct Sums {
    var lanes = SIMD16<Float>()
    @inline(__always) mutating func add(_ v: Lanes, part: Int) { lanes += v }
    @inline(__always) mutating func addLow8(_ v: SIMD8<Float>) { lanes.lowHalf += v }
    /// The part the next vector of a run of sixteen fills: one vector is the whole run.
    @inline(__always) static func nextPart(_ part: Int) -> Int { 0 }
    /// The halves added lane by lane.
    var folded: SIMD8<Float> { @inline(__always) get { lanes.lowHalf + lanes.highHalf } }
}
