import DaptKernels
import DaptKernelsWide
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

/// Scalar e^x with the same special-casing as the vector kernels' (0 below -87.3).
@inline(__always) public func scalarExp(_ x: Float) -> Float { DaptKernels.scalarExp(x) }

// MARK: - The exponential kernels, at the width this CPU runs best

/// Which build of the exponential kernels (SwiGLU, softmax rows and the
/// sums of cross-entropy and attention) this process calls: DaptKernelsWide's sixteen
/// lanes on Linux where the CPU has AVX-512 (F, CD, BW, DQ, VL, as the
/// build's `skylake-avx512` target assumes), else DaptKernels' eight. Both
/// give the same bits, so the choice changes speed only.
/// `DAPT_KERNEL_LANES=8` keeps the eight-lane build (to compare the two);
/// other values are ignored (sixteen lanes cannot be forced on a CPU
/// without AVX-512).
public enum ExponentialKernels {
    public static let lanes: Int = {
        if ProcessInfo.processInfo.environment["DAPT_KERNEL_LANES"] == "8" { return 8 }
        return cpuHasAVX512() ? 16 : 8
    }()
    static let wide = lanes == 16

    /// The AVX-512 subsets the wide build needs, from the kernel's CPU flags
    /// (listed only when the OS also saves the 512-bit registers).
    static func cpuHasAVX512() -> Bool {
        #if arch(x86_64) && os(Linux)
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
        return hasAVX512(cpuinfo: info)
        #else
        return false
        #endif
    }

    /// Whether the first `flags` line of a /proc/cpuinfo text lists every
    /// subset the wide build needs.
    static func hasAVX512(cpuinfo: String) -> Bool {
        guard let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return false }
        let flags = Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
        return ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
    }
}

/// row[i] = e^(row[i] − shift) for i in `range`; returns their sum.
@inline(__always) public func exponentiate(_ row: UnsafeMutablePointer<Float>, _ range: Range<Int>, minus shift: Float) -> Float {
    ExponentialKernels.wide ? DaptKernelsWide.exponentiate(row, range, minus: shift) : DaptKernels.exponentiate(row, range, minus: shift)
}

/// Σ e^(row[i] − shift) over `count` values, summed as `exponentiate` sums.
@inline(__always) func exponentialSum(_ row: UnsafePointer<Float>, _ count: Int, minus shift: Float) -> Float {
    ExponentialKernels.wide ? DaptKernelsWide.exponentialSum(row, count, minus: shift) : DaptKernels.exponentialSum(row, count, minus: shift)
}

/// Attention backward's row: p = e^(score − logSumExp), dS = p · (dP − rowDot) · scale, in place.
@inline(__always) public func softmaxBackwardRow(scores p: UnsafeMutablePointer<Float>, scoreGradients dp: UnsafeMutablePointer<Float>,
                                                 _ range: Range<Int>, logSumExp: Float, rowDot: Float, scale: Float) {
    if ExponentialKernels.wide {
        DaptKernelsWide.softmaxBackwardRow(scores: p, scoreGradients: dp, range, logSumExp: logSumExp, rowDot: rowDot, scale: scale)
    } else {
        DaptKernels.softmaxBackwardRow(scores: p, scoreGradients: dp, range, logSumExp: logSumExp, rowDot: rowDot, scale: scale)
    }
}

/// out = silu(gate) · up.
@inline(__always) public func swigluForward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int, out: UnsafeMutablePointer<Float>) {
    if ExponentialKernels.wide {
        DaptKernelsWide.swigluForward(gate: gate, up: up, count: count, out: out)
    } else {
        DaptKernels.swigluForward(gate: gate, up: up, count: count, out: out)
    }
}

/// dGate, dUp of `swigluForward` given dOut.
@inline(__always) public func swigluBackward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, dOut: UnsafePointer<Float>, count: Int,
                                             dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>) {
    if ExponentialKernels.wide {
        DaptKernelsWide.swigluBackward(gate: gate, up: up, dOut: dOut, count: count, dGate: dGate, dUp: dUp)
    } else {
        DaptKernels.swigluBackward(gate: gate, up: up, dOut: dOut, count: count, dGate: dGate, dUp: dUp)
    }
}

/// SwiGLU's output recomputed with dGate, dUp (one exponential per element).
@inline(__always) public func swigluRecomputeBackward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, dOut: UnsafePointer<Float>, count: Int,
                                                      out: UnsafeMutablePointer<Float>, dGate: UnsafeMutablePointer<Float>,
                                                      dUp: UnsafeMutablePointer<Float>) {
    if ExponentialKernels.wide {
        DaptKernelsWide.swigluRecomputeBackward(gate: gate, up: up, dOut: dOut, count: count, out: out, dGate: dGate, dUp: dUp)
    } else {
        DaptKernels.swigluRecomputeBackward(gate: gate, up: up, dOut: dOut, count: count, out: out, dGate: dGate, dUp: dUp)
    }
}

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

/// The largest of row[i] for i in `range` (−inf when empty). Four running
/// maxima, so each compare-and-select waits on the one four loads back rather
/// than the one before (the head's rows of a whole vocabulary are long).
public func maximum(_ row: UnsafePointer<Float>, _ range: Range<Int>) -> Float {
    var m0 = Vec8(repeating: -.infinity), m1 = m0, m2 = m0, m3 = m0
    var i = range.lowerBound
    while i + 32 <= range.upperBound {
        let a = load8(row + i), b = load8(row + i + 8), c = load8(row + i + 16), d = load8(row + i + 24)
        m0.replace(with: a, where: a .> m0); m1.replace(with: b, where: b .> m1)
        m2.replace(with: c, where: c .> m2); m3.replace(with: d, where: d .> m3)
        i += 32
    }
    while i + 8 <= range.upperBound { let x = load8(row + i); m0.replace(with: x, where: x .> m0); i += 8 }
    m0.replace(with: m1, where: m1 .> m0); m2.replace(with: m3, where: m3 .> m2); m0.replace(with: m2, where: m2 .> m0)
    var m = -Float.infinity
    for lane in 0..<8 { m = max(m, m0[lane]) }
    while i < range.upperBound { m = max(m, row[i]); i += 1 }
    return m
}

// MARK: - RMSNorm

/// out = weight · x / sqrt(mean(x²) + eps) per row; rstd[r] keeps the
/// reciprocal root for backward. `copy`, when given, receives the input x
/// (read before `out` is written, should they alias): a pre-norm layer's
/// residual stream starts from its input, and copying it while the row is
/// cached saves a pass over memory.
public func rmsNormForward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, rows: Int, dim: Int,
                           eps: Float, out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                           copy: UnsafeMutablePointer<Float>? = nil) {
    for r in 0..<rows {
        let xr = x + r * dim, yr = out + r * dim
        let ms = squaredNorm(xr, count: dim) / Float(dim)
        let s = 1 / (ms + eps).squareRoot()
        rstd[r] = s
        let sv = Vec8(repeating: s)
        var i = 0
        if let copy {
            let cr = copy + r * dim
            while i + 8 <= dim { let xv = load8(xr + i); store8(xv, cr + i); store8(load8(weight + i) * (xv * sv), yr + i); i += 8 }
            while i < dim { cr[i] = xr[i]; yr[i] = weight[i] * (xr[i] * s); i += 1 }
        } else {
            while i + 8 <= dim { store8(load8(weight + i) * (load8(xr + i) * sv), yr + i); i += 8 }
            while i < dim { yr[i] = weight[i] * (xr[i] * s); i += 1 }
        }
    }
}

/// Σ x[i]² in four interleaved vector sums (a row's sum is a chain of
/// dependent adds otherwise), added pairwise, then the tail in order.
@inline(__always) func squaredNorm(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var s0 = Vec8(), s1 = Vec8(), s2 = Vec8(), s3 = Vec8()
    var i = 0
    while i + 32 <= count {
        let a = load8(x + i), b = load8(x + i + 8), c = load8(x + i + 16), d = load8(x + i + 24)
        s0 = multiplyAdd(a, a, s0); s1 = multiplyAdd(b, b, s1); s2 = multiplyAdd(c, c, s2); s3 = multiplyAdd(d, d, s3)
        i += 32
    }
    while i + 8 <= count { let a = load8(x + i); s0 = multiplyAdd(a, a, s0); i += 8 }
    var s = ((s0 + s1) + (s2 + s3)).sum()
    while i < count { s += x[i] * x[i]; i += 1 }
    return s
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
