import Foundation

// Element-wise kernels: free functions over raw pointers with explicit
// shapes, vectorised with SIMD8<Float>. Backward kernels accumulate into
// parameter gradients (`+=`) so micro-batches and tied weights add up.

public typealias Vec8 = SIMD8<Float>

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> Vec8 {
    UnsafeRawPointer(p).loadUnaligned(as: Vec8.self)
}

@inline(__always) func store8(_ v: Vec8, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec8.self)
}

/// a·b + c in one rounding (a fused multiply-add instruction on CPUs that have one).
@inline(__always) func multiplyAdd(_ a: Vec8, _ b: Vec8, _ c: Vec8) -> Vec8 { c.addingProduct(a, b) }

/// e^x for eight lanes (Cephes' expf: range reduction by ln 2 and a degree-6
/// polynomial, evaluated with fused multiply-adds; within 2 ulp of `expf`).
/// Inputs below -87.3 give exactly 0, so masked scores (-inf) vanish.
@inline(__always) public func vectorExp(_ x: Vec8) -> Vec8 {
    let low = Vec8(repeating: -87.3), high = Vec8(repeating: 88.0)
    let clamped = x.replacing(with: low, where: x .< low).replacing(with: high, where: x .> high)
    // Round x·log2(e) to the nearest integer by adding 1.5·2²³: the integer
    // lands in the low mantissa bits (avoids slow generic SIMD conversions).
    let magic = Vec8(repeating: 12582912.0)
    let shifted = multiplyAdd(clamped, Vec8(repeating: 1.44269504088896341), magic)
    let n = shifted - magic
    // r = x − n·ln 2, with ln 2 in two parts so r keeps its low bits.
    var r = multiplyAdd(n, Vec8(repeating: -0.693359375), clamped)
    r = multiplyAdd(n, Vec8(repeating: 2.12194440e-4), r)
    let r2 = r * r
    var p = Vec8(repeating: 1.9875691500e-4)
    p = multiplyAdd(p, r, Vec8(repeating: 1.3981999507e-3))
    p = multiplyAdd(p, r, Vec8(repeating: 8.3334519073e-3))
    p = multiplyAdd(p, r, Vec8(repeating: 4.1665795894e-2))
    p = multiplyAdd(p, r, Vec8(repeating: 1.6666665459e-1))
    p = multiplyAdd(p, r, Vec8(repeating: 5.0000001201e-1))
    p = multiplyAdd(p, r2, r) + 1
    let integer = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
    let scale = unsafeBitCast((integer &+ 127) &<< 23, to: Vec8.self)
    return (p * scale).replacing(with: 0, where: x .< low)
}

/// Scalar e^x with the same special-casing as `vectorExp`.
@inline(__always) public func scalarExp(_ x: Float) -> Float { x < -87.3 ? 0 : Foundation.exp(x) }

// MARK: - Embedding

/// out[i, :] = table[tokens[i], :] for `count` tokens of width `dim`.
public func embeddingForward(tokens: UnsafePointer<Int32>, count: Int, table: UnsafePointer<Float>,
                             vocab: Int, dim: Int, out: UnsafeMutablePointer<Float>) {
    for i in 0..<count {
        let t = Int(tokens[i])
        precondition(t >= 0 && t < vocab, "token id \(t) outside the vocabulary of \(vocab)")
        (out + i * dim).update(from: table + t * dim, count: dim)
    }
}

/// dTable[tokens[i], :] += dOut[i, :].
public func embeddingBackward(tokens: UnsafePointer<Int32>, count: Int, dOut: UnsafePointer<Float>,
                              dim: Int, dTable: UnsafeMutablePointer<Float>) {
    for i in 0..<count {
        addInPlace(dTable + Int(tokens[i]) * dim, dOut + i * dim, count: dim)
    }
}

// MARK: - Vector helpers

/// p[0..<count] = 0 with vector stores: for the short runs of the attention
/// kernels (a head's columns of a row, a row's masked keys), where a call
/// to memset per run costs more than the stores.
@inline(__always) public func zero(_ p: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count { store8(Vec8(), p + i); i += 8 }
    while i < count { p[i] = 0; i += 1 }
}

/// a[i] += b[i].
public func addInPlace(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count { store8(load8(a + i) + load8(b + i), a + i); i += 8 }
    while i < count { a[i] += b[i]; i += 1 }
}

/// out[i] = a[i] + b[i] (out may alias a or b).
public func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int, out: UnsafeMutablePointer<Float>) {
    var i = 0
    while i + 8 <= count { store8(load8(a + i) + load8(b + i), out + i); i += 8 }
    while i < count { out[i] = a[i] + b[i]; i += 1 }
}

@inline(__always) func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    var acc = Vec8()
    var i = 0
    while i + 8 <= count { acc += load8(a + i) * load8(b + i); i += 8 }
    var s = acc.sum()
    while i < count { s += a[i] * b[i]; i += 1 }
    return s
}

/// out[i] = x[i] · factor (out may alias x).
public func scale(_ x: UnsafePointer<Float>, by factor: Float, count: Int, into out: UnsafeMutablePointer<Float>) {
    let f = Vec8(repeating: factor)
    var i = 0
    while i + 8 <= count { store8(load8(x + i) * f, out + i); i += 8 }
    while i < count { out[i] = x[i] * factor; i += 1 }
}

// MARK: - Softmax

// The attention kernels' row loops call these rather than `vectorExp`
// directly: in a large caller the optimiser leaves `vectorExp` as a call per
// eight lanes; in these small functions it is inlined.

/// The largest of row[i] for i in `range` (−inf when empty).
public func maximum(_ row: UnsafePointer<Float>, _ range: Range<Int>) -> Float {
    var mv = Vec8(repeating: -.infinity)
    var i = range.lowerBound
    while i + 8 <= range.upperBound { let x = load8(row + i); mv.replace(with: x, where: x .> mv); i += 8 }
    var m = -Float.infinity
    for lane in 0..<8 { m = max(m, mv[lane]) }
    while i < range.upperBound { m = max(m, row[i]); i += 1 }
    return m
}

/// row[i] = e^(row[i] − shift) for i in `range`; returns their sum (the
/// vector lanes summed first, then the tail in order).
public func exponentiate(_ row: UnsafeMutablePointer<Float>, _ range: Range<Int>, minus shift: Float) -> Float {
    let sv = Vec8(repeating: shift)
    var acc = Vec8()
    var i = range.lowerBound
    while i + 8 <= range.upperBound { let e = vectorExp(load8(row + i) - sv); store8(e, row + i); acc += e; i += 8 }
    var sum = acc.sum()
    while i < range.upperBound { let e = scalarExp(row[i] - shift); row[i] = e; sum += e; i += 1 }
    return sum
}

/// One row of attention's backward over the visible keys `range`: the
/// probabilities p = e^(score − logSumExp) over the raw scores, and the score
/// gradients dS = p · (dP − rowDot) · scale over dP, both in place.
public func softmaxBackwardRow(scores p: UnsafeMutablePointer<Float>, scoreGradients dp: UnsafeMutablePointer<Float>, _ range: Range<Int>,
                               logSumExp: Float, rowDot: Float, scale: Float) {
    let l = Vec8(repeating: logSumExp), dd = Vec8(repeating: rowDot), sc = Vec8(repeating: scale)
    var s = range.lowerBound
    while s + 8 <= range.upperBound {
        let pv = vectorExp(load8(p + s) - l)
        store8(pv, p + s)
        store8(pv * (load8(dp + s) - dd) * sc, dp + s)
        s += 8
    }
    while s < range.upperBound {
        let pv = scalarExp(p[s] - logSumExp)
        p[s] = pv
        dp[s] = pv * (dp[s] - rowDot) * scale
        s += 1
    }
}

// MARK: - RMSNorm

/// out = weight · x / sqrt(mean(x²) + eps) per row; rstd[r] keeps the
/// reciprocal root for backward. `copy`, when given, receives x as well: a
/// pre-norm layer's residual stream starts from its input, and copying it
/// while the row is cached saves a pass over memory.
public func rmsNormForward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, rows: Int, dim: Int,
                           eps: Float, out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                           copy: UnsafeMutablePointer<Float>? = nil) {
    for r in 0..<rows {
        let xr = x + r * dim, yr = out + r * dim
        let ms = dot(xr, xr, count: dim) / Float(dim)
        let s = 1 / (ms + eps).squareRoot()
        rstd[r] = s
        let sv = Vec8(repeating: s)
        var i = 0
        while i + 8 <= dim { store8(load8(weight + i) * (load8(xr + i) * sv), yr + i); i += 8 }
        while i < dim { yr[i] = weight[i] * (xr[i] * s); i += 1 }
        if let copy { (copy + r * dim).update(from: xr, count: dim) }
    }
}

/// dX += ∂/∂x, dWeight += ∂/∂w of `rmsNormForward` given dOut.
public func rmsNormBackward(dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                            rstd: UnsafePointer<Float>, rows: Int, dim: Int,
                            dX: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        let xr = x + r * dim, gr = dOut + r * dim, dxr = dX + r * dim
        let s = rstd[r]
        let sv = Vec8(repeating: s)
        // c = Σ w·g·x; dx = s·w·g − s³/dim · c · x
        var acc = Vec8()
        var i = 0
        while i + 8 <= dim {
            let g = load8(gr + i), xv = load8(xr + i)
            acc += load8(weight + i) * g * xv
            store8(load8(dWeight + i) + g * xv * sv, dWeight + i)
            i += 8
        }
        var c = acc.sum()
        while i < dim { c += weight[i] * gr[i] * xr[i]; dWeight[i] += gr[i] * xr[i] * s; i += 1 }
        let k = s * s * s * c / Float(dim)
        let kv = Vec8(repeating: k)
        i = 0
        while i + 8 <= dim {
            store8(load8(dxr + i) + sv * load8(weight + i) * load8(gr + i) - kv * load8(xr + i), dxr + i)
            i += 8
        }
        while i < dim { dxr[i] += s * weight[i] * gr[i] - k * xr[i]; i += 1 }
    }
}

// MARK: - SwiGLU

/// out = silu(gate) · up = gate · σ(gate) · up, σ(g) = 1 / (1 + e^−g),
/// computed as (g · σ) · up so `swigluRecomputeBackward`'s output equals it
/// bit for bit.
public func swigluForward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int, out: UnsafeMutablePointer<Float>) {
    var i = 0
    let one = Vec8(repeating: 1)
    while i + 8 <= count {
        let g = load8(gate + i)
        store8(g * (one / (one + vectorExp(-g))) * load8(up + i), out + i)
        i += 8
    }
    while i < count { out[i] = gate[i] * (1 / (1 + scalarExp(-gate[i]))) * up[i]; i += 1 }
}

/// dGate, dUp of `swigluForward` given dOut. dGate/dUp may alias gate/up
/// (each element is read before it is written).
public func swigluBackward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, dOut: UnsafePointer<Float>, count: Int,
                           dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>) {
    var i = 0
    let one = Vec8(repeating: 1)
    while i + 8 <= count {
        let g = load8(gate + i), u = load8(up + i), d = load8(dOut + i)
        let s = one / (one + vectorExp(-g))
        store8(d * u * s * (one + g * (one - s)), dGate + i)
        store8(d * g * s, dUp + i)
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
    let one = Vec8(repeating: 1)
    while i + 8 <= count {
        let g = load8(gate + i), u = load8(up + i), d = load8(dOut + i)
        let s = one / (one + vectorExp(-g))
        store8(g * s * u, out + i)
        store8(d * u * s * (one + g * (one - s)), dGate + i)
        store8(d * g * s, dUp + i)
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

// MARK: - RoPE

/// Rotates each head of `x` ([rows, heads·headDim]) in place, Hugging Face's
/// rotate-half layout: (x1, x2) → (x1·cos − x2·sin, x2·cos + x1·sin) with
/// cos/sin tables of [rows, headDim/2]. `stride`: the row stride when the
/// heads are the first columns of wider rows (the fused [q | k | v] rows).
public func ropeForward(x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, headDim: Int, stride: Int? = nil,
                        cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
    let half = headDim / 2
    let width = stride ?? heads * headDim
    for r in 0..<rows {
        let c = cos + r * half, s = sin + r * half
        for h in 0..<heads {
            let x1 = x + r * width + h * headDim, x2 = x1 + half
            var i = 0
            while i + 8 <= half {
                let a = load8(x1 + i), b = load8(x2 + i), cv = load8(c + i), sv = load8(s + i)
                store8(a * cv - b * sv, x1 + i)
                store8(b * cv + a * sv, x2 + i)
                i += 8
            }
            while i < half {
                let a = x1[i], b = x2[i]
                x1[i] = a * c[i] - b * s[i]
                x2[i] = b * c[i] + a * s[i]
                i += 1
            }
        }
    }
}

/// The transpose of `ropeForward`: turns ∂/∂(rotated) into ∂/∂(input), in place.
public func ropeBackward(dX: UnsafeMutablePointer<Float>, rows: Int, heads: Int, headDim: Int, stride: Int? = nil,
                         cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
    let half = headDim / 2
    let width = stride ?? heads * headDim
    for r in 0..<rows {
        let c = cos + r * half, s = sin + r * half
        for h in 0..<heads {
            let g1 = dX + r * width + h * headDim, g2 = g1 + half
            var i = 0
            while i + 8 <= half {
                let a = load8(g1 + i), b = load8(g2 + i), cv = load8(c + i), sv = load8(s + i)
                store8(a * cv + b * sv, g1 + i)
                store8(b * cv - a * sv, g2 + i)
                i += 8
            }
            while i < half {
                let a = g1[i], b = g2[i]
                g1[i] = a * c[i] + b * s[i]
                g2[i] = b * c[i] - a * s[i]
                i += 1
            }
        }
    }
}

// MARK: - Cross-entropy

/// Σ e^(row[i] − shift) over `count` values, summed as `exponentiate` sums
/// (lanes first, then the tail in order), the row left as it is.
func exponentialSum(_ row: UnsafePointer<Float>, _ count: Int, minus shift: Float) -> Float {
    let sv = Vec8(repeating: shift)
    var acc = Vec8()
    var i = 0
    while i + 8 <= count { acc += vectorExp(load8(row + i) - sv); i += 8 }
    var sum = acc.sum()
    while i < count { sum += scalarExp(row[i] - shift); i += 1 }
    return sum
}

/// The token id that contributes no loss (PyTorch's default ignore_index).
public let ignoreIndex: Int32 = -100

/// Softmax cross-entropy per row of `logits` [rows, vocab] against
/// `targets` (`ignoreIndex` skipped). Returns the summed loss (Double) and
/// the number of counted rows. When `gradientScale` is given, `logits` is
/// overwritten with gradientScale · (softmax − onehot) (zero for ignored rows).
/// `rowLoss`, when given, receives each row's loss (0 for ignored rows).
@discardableResult
public func crossEntropy(logits: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>, rows: Int, vocab: Int,
                         gradientScale: Float?, rowLoss: UnsafeMutablePointer<Float>? = nil) -> (sum: Double, count: Int) {
    var total = 0.0
    var counted = 0
    for r in 0..<rows {
        let row = logits + r * vocab
        let t = Int(targets[r])
        if t == Int(ignoreIndex) {
            rowLoss?[r] = 0
            if gradientScale != nil { row.update(repeating: 0, count: vocab) }
            continue
        }
        precondition(t >= 0 && t < vocab, "target id \(t) outside the vocabulary of \(vocab)")
        let m = maximum(row, 0..<vocab)
        let target = row[t]
        // With a gradient, keep e^(x−m) in the row so each logit takes one exp.
        let sum = gradientScale == nil ? exponentialSum(row, vocab, minus: m) : exponentiate(row, 0..<vocab, minus: m)
        let loss = Foundation.log(sum) + m - target
        rowLoss?[r] = loss
        total += Double(loss)
        counted += 1
        if let g = gradientScale {
            scale(row, by: g / sum, count: vocab, into: row)
            row[t] -= g
        }
    }
    return (total, counted)
}
