import Foundation

// The kernels that spend their time in e^x: SwiGLU, softmax rows and
// cross-entropy's sums. This file is compiled twice: in DaptKernels with
// `Lanes` = SIMD8<Float> (AVX2) and, through a symbolic link, in
// DaptKernelsWide with `Lanes` = SIMD16<Float> (AVX-512), which covers
// twice the elements per instruction (SwiGLU's forward took a third less
// time in a training step). Every element takes the same operations in
// either build, a run of eight that does not fill the wide vector takes its
// low half, and sums keep sixteen running lanes in both builds (`Sums`: one
// wide vector, or two eight-lane ones): the two builds give the same bits.
// DaptModel calls the build its CPU has.

@inline(__always) func load(_ p: UnsafePointer<Float>) -> Lanes { UnsafeRawPointer(p).loadUnaligned(as: Lanes.self) }
@inline(__always) func store(_ v: Lanes, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: Lanes.self) }
@inline(__always) func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
@inline(__always) func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}
/// Eight floats from `p` in the low lanes (zeros above): the last run of
/// eight in the wide build.
@inline(__always) func loadLow8(_ p: UnsafePointer<Float>) -> Lanes { widen(load8(p)) }

/// a·b + c in one rounding (a fused multiply-add instruction).
@inline(__always) func multiplyAdd(_ a: Lanes, _ b: Lanes, _ c: Lanes) -> Lanes { c.addingProduct(a, b) }

/// e^x per lane (Cephes' expf: range reduction by ln 2 and a degree-6
/// polynomial, evaluated with fused multiply-adds; within 2 ulp of `expf`).
/// Inputs below -87.3 give exactly 0, so masked scores (-inf) vanish.
@inline(__always) func exponential(_ x: Lanes) -> Lanes {
    let low = Lanes(repeating: -87.3), high = Lanes(repeating: 88.0)
    let clamped = x.replacing(with: low, where: x .< low).replacing(with: high, where: x .> high)
    // Round x·log2(e) to the nearest integer by adding 1.5·2²³: the integer
    // lands in the low mantissa bits (avoids slow generic SIMD conversions).
    let magic = Lanes(repeating: 12582912.0)
    let shifted = multiplyAdd(clamped, Lanes(repeating: 1.44269504088896341), magic)
    let n = shifted - magic
    // r = x − n·ln 2, with ln 2 in two parts so r keeps its low bits.
    var r = multiplyAdd(n, Lanes(repeating: -0.693359375), clamped)
    r = multiplyAdd(n, Lanes(repeating: 2.12194440e-4), r)
    let r2 = r * r
    var p = Lanes(repeating: 1.9875691500e-4)
    p = multiplyAdd(p, r, Lanes(repeating: 1.3981999507e-3))
    p = multiplyAdd(p, r, Lanes(repeating: 8.3334519073e-3))
    p = multiplyAdd(p, r, Lanes(repeating: 4.1665795894e-2))
    p = multiplyAdd(p, r, Lanes(repeating: 1.6666665459e-1))
    p = multiplyAdd(p, r, Lanes(repeating: 5.0000001201e-1))
    p = multiplyAdd(p, r2, r) + 1
    let integer = unsafeBitCast(shifted, to: LaneBits.self) &- unsafeBitCast(magic, to: LaneBits.self)
    let scale = unsafeBitCast((integer &+ 127) &<< 23, to: Lanes.self)
    return (p * scale).replacing(with: 0, where: x .< low)
}

/// e^x for eight lanes: `exponential` over the low half in the wide build.
@inline(__always) public func vectorExp(_ x: SIMD8<Float>) -> SIMD8<Float> { low8(exponential(widen(x))) }

/// Scalar e^x with the same special-casing as `vectorExp`.
@inlinable public func scalarExp(_ x: Float) -> Float { x < -87.3 ? 0 : Foundation.exp(x) }

// MARK: - Softmax and cross-entropy

/// row[i] = e^(row[i] − shift) for i in `range`; returns their sum: sixteen
/// running lanes over each run of sixteen, a last run of eight added into
/// the low eight, the halves added lane by lane, then the tail in order.
public func exponentiate(_ row: UnsafeMutablePointer<Float>, _ range: Range<Int>, minus shift: Float) -> Float {
    let sv = Lanes(repeating: shift)
    var sums = Sums()
    var i = range.lowerBound, part = 0
    // Runs of sixteen: one vector each in the wide build, two halves in the
    // narrow one (one loop with one call of `exponential`, which the
    // compiler then inlines).
    let runs = range.lowerBound + range.count / 16 * 16
    while i < runs {
        let e = exponential(load(row + i) - sv)
        store(e, row + i); sums.add(e, part: part)
        part = Sums.nextPart(part); i += Lanes.scalarCount
    }
    if i + 8 <= range.upperBound { let e = low8(exponential(loadLow8(row + i) - sv)); store8(e, row + i); sums.addLow8(e); i += 8 }
    var sum = sums.folded.sum()
    while i < range.upperBound { let e = scalarExp(row[i] - shift); row[i] = e; sum += e; i += 1 }
    return sum
}

/// Σ e^(row[i] − shift) over `count` values, summed as `exponentiate` sums,
/// the row left as it is.
public func exponentialSum(_ row: UnsafePointer<Float>, _ count: Int, minus shift: Float) -> Float {
    let sv = Lanes(repeating: shift)
    var sums = Sums()
    var i = 0, part = 0
    while i < count / 16 * 16 { sums.add(exponential(load(row + i) - sv), part: part); part = Sums.nextPart(part); i += Lanes.scalarCount }
    if i + 8 <= count { sums.addLow8(low8(exponential(loadLow8(row + i) - sv))); i += 8 }
    var sum = sums.folded.sum()
    while i < count { sum += scalarExp(row[i] - shift); i += 1 }
    return sum
}

/// One row of attention's backward over the visible keys `range`: the
/// probabilities p = e^(score − logSumExp) over the raw scores, and the score
/// gradients dS = p · (dP − rowDot) · scale over dP, both in place.
public func softmaxBackwardRow(scores p: UnsafeMutablePointer<Float>, scoreGradients dp: UnsafeMutablePointer<Float>, _ range: Range<Int>,
                               logSumExp: Float, rowDot: Float, scale: Float) {
    let l = Lanes(repeating: logSumExp), dd = Lanes(repeating: rowDot), sc = Lanes(repeating: scale)
    @inline(__always) func rowGradients(_ p: Lanes, _ dp: Lanes) -> (p: Lanes, dp: Lanes) {
        let pv = exponential(p - l)
        return (pv, pv * (dp - dd) * sc)
    }
    var s = range.lowerBound
    while s + Lanes.scalarCount <= range.upperBound {
        let (pv, dv) = rowGradients(load(p + s), load(dp + s))
        store(pv, p + s); store(dv, dp + s)
        s += Lanes.scalarCount
    }
    while s + 8 <= range.upperBound {
        let (pv, dv) = rowGradients(loadLow8(p + s), loadLow8(dp + s))
        store8(low8(pv), p + s); store8(low8(dv), dp + s)
        s += 8
    }
    while s < range.upperBound {
        let pv = scalarExp(p[s] - logSumExp)
        p[s] = pv
        dp[s] = pv * (dp[s] - rowDot) * scale
        s += 1
    }
}

// MARK: - SwiGLU

/// σ(g) = 1 / (1 + e^−g) per lane.
@inline(__always) func sigmoid(_ g: Lanes) -> Lanes {
    let one = Lanes(repeating: 1)
    return one / (one + exponential(-g))
}

/// out = silu(gate) · up = gate · σ(gate) · up, computed as (g · σ) · up so
/// `swigluRecomputeBackward`'s output equals it bit for bit.
public func swigluForward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int, out: UnsafeMutablePointer<Float>) {
    var i = 0
    while i + Lanes.scalarCount <= count {
        let g = load(gate + i)
        store(g * sigmoid(g) * load(up + i), out + i)
        i += Lanes.scalarCount
    }
    while i + 8 <= count {
        let g = loadLow8(gate + i)
        store8(low8(g * sigmoid(g) * loadLow8(up + i)), out + i)
        i += 8
    }
    while i < count { out[i] = gate[i] * (1 / (1 + scalarExp(-gate[i]))) * up[i]; i += 1 }
}

/// SwiGLU's gradients for lanes of gate, up and dOut: ∂/∂gate, ∂/∂up and
/// the output, one exponential and one division for all three.
@inline(__always) func swigluLanes(_ g: Lanes, _ u: Lanes, _ d: Lanes) -> (out: Lanes, dGate: Lanes, dUp: Lanes) {
    let one = Lanes(repeating: 1)
    let s = sigmoid(g)
    return (g * s * u, d * u * s * (one + g * (one - s)), d * g * s)
}

/// dGate, dUp of `swigluForward` given dOut. dGate/dUp may alias gate/up
/// (each element is read before it is written).
public func swigluBackward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, dOut: UnsafePointer<Float>, count: Int,
                           dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>) {
    var i = 0
    while i + Lanes.scalarCount <= count {
        let v = swigluLanes(load(gate + i), load(up + i), load(dOut + i))
        store(v.dGate, dGate + i); store(v.dUp, dUp + i)
        i += Lanes.scalarCount
    }
    while i + 8 <= count {
        let v = swigluLanes(loadLow8(gate + i), loadLow8(up + i), loadLow8(dOut + i))
        store8(low8(v.dGate), dGate + i); store8(low8(v.dUp), dUp + i)
        i += 8
    }
    while i < count {
        let g = gate[i], u = up[i], d = dOut[i]
        let s = 1 / (1 + scalarExp(-g))
        dGate[i] = d * u * s * (1 + g * (1 - s))
        dUp[i] = d * g * s
        i += 1
    }
}

/// Backward of SwiGLU that also recomputes its output: hAct = silu(gate)·up
/// (bit for bit `swigluForward`'s) and dGate, dUp given dHAct, with one
/// exponential and one division per element where `swigluForward` then
/// `swigluBackward` take two of each. A backward pass that computes dHAct
/// before it needs hAct (the down projection's input gradient first, its
/// weight gradient after) saves a pass. dGate/dUp may alias gate/up.
public func swigluRecomputeBackward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, dOut: UnsafePointer<Float>, count: Int,
                                    out: UnsafeMutablePointer<Float>, dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>) {
    var i = 0
    while i + Lanes.scalarCount <= count {
        let v = swigluLanes(load(gate + i), load(up + i), load(dOut + i))
        store(v.out, out + i); store(v.dGate, dGate + i); store(v.dUp, dUp + i)
        i += Lanes.scalarCount
    }
    while i + 8 <= count {
        let v = swigluLanes(loadLow8(gate + i), loadLow8(up + i), loadLow8(dOut + i))
        store8(low8(v.out), out + i); store8(low8(v.dGate), dGate + i); store8(low8(v.dUp), dUp + i)
        i += 8
    }
    while i < count {
        let g = gate[i], u = up[i], d = dOut[i]
        let s = 1 / (1 + scalarExp(-g))
        out[i] = g * s * u
        dGate[i] = d * u * s * (1 + g * (1 - s))
        dUp[i] = d * g * s
        i += 1
    }
}
