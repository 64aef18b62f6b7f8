import DaptBLAS
import Foundation

/// Shapes of one causal self-attention call. Activations are row-major
/// `[batch·seqLen, heads·headDim]` (q, out) and `[batch·seqLen,
/// kvHeads·headDim]` (k, v), exactly as the projections produce them, so
/// a head is a strided column block and needs no transpose. q, k and v
/// (and dq, dk, dv) may be column blocks of wider rows — the fused
/// [q | k | v] product's — with the row strides `qStride` and `kvStride`.
public struct AttentionShape: Equatable, Sendable {
    public var batch: Int
    public var seqLen: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    /// Row strides of q (and dq) and of k, v (and dk, dv).
    public var qStride: Int
    public var kvStride: Int

    public init(batch: Int, seqLen: Int, heads: Int, kvHeads: Int, headDim: Int, qStride: Int? = nil, kvStride: Int? = nil) {
        precondition(heads % kvHeads == 0, "heads \(heads) not a multiple of kv heads \(kvHeads)")
        self.batch = batch; self.seqLen = seqLen; self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim
        self.qStride = qStride ?? heads * headDim
        self.kvStride = kvStride ?? kvHeads * headDim
        precondition(self.qStride >= heads * headDim && self.kvStride >= kvHeads * headDim, "row strides narrower than the heads")
    }

    /// Row stride of the output and its gradient (always dense).
    public var outStride: Int { heads * headDim }
    public var group: Int { heads / kvHeads }
    public var scale: Float { 1 / Float(headDim).squareRoot() }
}

/// The document mask in the form the kernels use: for every token, the
/// position (within its sequence) where its document starts. Token t attends
/// to keys s with documentStart[t] ≤ s ≤ t. Without documents every entry is 0
/// (plain causal attention).
public func documentStarts(documentIds: [Int32]?, batch: Int, seqLen: Int) -> [Int32] {
    var starts = [Int32](repeating: 0, count: batch * seqLen)
    guard let ids = documentIds else { return starts }
    for b in 0..<batch {
        var start = 0
        for t in 0..<seqLen {
            if t > 0, ids[b * seqLen + t] != ids[b * seqLen + t - 1] { start = t }
            starts[b * seqLen + t] = Int32(start)
        }
    }
    return starts
}

// MARK: - Reference attention (T×T scores per head; for tests)

/// Straightforward attention: materialises the masked T×T score matrix per
/// head. out [B·T, H·D], lse [B, H, T].
public func attentionReferenceForward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                      shape: AttentionShape, documentStarts: UnsafePointer<Int32>,
                                      out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
    let T = shape.seqLen, D = shape.headDim
    var p = [Float](repeating: 0, count: T * T)
    for b in 0..<shape.batch {
        for h in 0..<shape.heads {
            let kvh = h / shape.group
            referenceProbabilities(q: q, k: k, shape: shape, b: b, h: h, documentStarts: documentStarts, p: &p, lse: lse)
            for t in 0..<T {
                let o = out + (b * T + t) * shape.outStride + h * D
                for d in 0..<D {
                    var acc: Float = 0
                    for s in 0..<T { acc += p[t * T + s] * v[(b * T + s) * shape.kvStride + kvh * D + d] }
                    o[d] = acc
                }
            }
        }
    }
}

private func referenceProbabilities(q: UnsafePointer<Float>, k: UnsafePointer<Float>, shape: AttentionShape, b: Int, h: Int,
                                    documentStarts: UnsafePointer<Int32>, p: inout [Float], lse: UnsafeMutablePointer<Float>?) {
    let T = shape.seqLen, D = shape.headDim, kvh = h / shape.group
    for t in 0..<T {
        let lo = Int(documentStarts[b * T + t])
        var m = -Float.infinity
        for s in 0..<T {
            var score = -Float.infinity
            if s >= lo && s <= t {
                var acc: Float = 0
                for d in 0..<D { acc += q[(b * T + t) * shape.qStride + h * D + d] * k[(b * T + s) * shape.kvStride + kvh * D + d] }
                score = acc * shape.scale
            }
            p[t * T + s] = score
            m = max(m, score)
        }
        var sum: Float = 0
        for s in 0..<T { let e = p[t * T + s] == -.infinity ? 0 : Foundation.exp(p[t * T + s] - m); p[t * T + s] = e; sum += e }
        for s in 0..<T { p[t * T + s] /= sum }
        lse?[(b * shape.heads + h) * T + t] = m + Foundation.log(sum)
    }
}

/// Backward of `attentionReferenceForward`: dq, dk, dv += gradients.
public func attentionReferenceBackward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                       dOut: UnsafePointer<Float>, shape: AttentionShape, documentStarts: UnsafePointer<Int32>,
                                       dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>) {
    let T = shape.seqLen, D = shape.headDim
    var p = [Float](repeating: 0, count: T * T)
    var dp = [Float](repeating: 0, count: T * T)
    for b in 0..<shape.batch {
        for h in 0..<shape.heads {
            let kvh = h / shape.group
            referenceProbabilities(q: q, k: k, shape: shape, b: b, h: h, documentStarts: documentStarts, p: &p, lse: nil)
            for t in 0..<T {
                for s in 0..<T {
                    var acc: Float = 0
                    for d in 0..<D { acc += dOut[(b * T + t) * shape.outStride + h * D + d] * v[(b * T + s) * shape.kvStride + kvh * D + d] }
                    dp[t * T + s] = acc
                }
                var rowDot: Float = 0
                for s in 0..<T { rowDot += p[t * T + s] * dp[t * T + s] }
                for s in 0..<T { dp[t * T + s] = p[t * T + s] * (dp[t * T + s] - rowDot) * shape.scale }
            }
            for t in 0..<T {
                for s in 0..<T where p[t * T + s] != 0 || dp[t * T + s] != 0 {
                    for d in 0..<D {
                        let qi = (b * T + t) * shape.qStride + h * D + d
                        let ki = (b * T + s) * shape.kvStride + kvh * D + d
                        dq[qi] += dp[t * T + s] * k[ki]
                        dk[ki] += dp[t * T + s] * q[qi]
                        dv[ki] += p[t * T + s] * dOut[(b * T + t) * shape.outStride + h * D + d]
                    }
                }
            }
        }
    }
}

// MARK: - Tiled attention (online softmax, O(T) memory per head)

/// Tile sizes of the tiled kernels. A query tile's keys stop at its last
/// row, so with the default 256-key tile a query tile of a sequence up to
/// 256 tokens meets all its visible keys in one product (a third fewer
/// products than 128-key tiles at 256 tokens, the same work); longer
/// sequences keep the O(query · key) scratch per call.
public struct AttentionTiles: Equatable, Sendable {
    public var query: Int
    public var key: Int
    public init(query: Int = 64, key: Int = 256) { self.query = query; self.key = key }
}

/// Which keys a query tile [i0, i1) can see, and whether key tile [j0, j1)
/// needs per-element masking or can be skipped entirely.
@inline(__always)
private func tileStatus(starts: UnsafePointer<Int32>, i0: Int, i1: Int, j0: Int, j1: Int) -> (skip: Bool, masked: Bool) {
    var allSee = true, noneSee = true
    for t in i0..<i1 {
        let lo = Int(starts[t])
        if j1 <= lo || j0 > t { allSee = false } else {
            noneSee = false
            if j0 < lo || j1 - 1 > t { allSee = false }
        }
    }
    return (noneSee, !allSee)
}

/// Per-row masked bounds of key tile [j0, j1) for query t: [lo, hi) local.
@inline(__always)
private func visibleRange(start: Int, t: Int, j0: Int, j1: Int) -> (Int, Int) {
    (max(start, j0) - j0, min(t + 1, j1) - j0)
}

/// Flash-style attention forward for query heads `headRange`: per query tile,
/// key tiles are visited with an online softmax (running max and sum), so the
/// only per-head state beyond `out` is `lse` [B, H, T]. Key tiles before the
/// earliest document start of the query tile, and tiles no query can see,
/// are skipped. Returns the number of (query tile, key tile) pairs computed.
@discardableResult
public func attentionForward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                             shape: AttentionShape, documentStarts: UnsafePointer<Int32>,
                             headRange: Range<Int>? = nil, tiles: AttentionTiles = AttentionTiles(),
                             out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) -> Int {
    let T = shape.seqLen, D = shape.headDim, BQ = tiles.query, BK = tiles.key
    var visited = 0
    let scores = UnsafeMutablePointer<Float>.allocate(capacity: BQ * BK)
    let acc = UnsafeMutablePointer<Float>.allocate(capacity: BQ * D)
    let rowMax = UnsafeMutablePointer<Float>.allocate(capacity: BQ)
    let rowSum = UnsafeMutablePointer<Float>.allocate(capacity: BQ)
    defer { scores.deallocate(); acc.deallocate(); rowMax.deallocate(); rowSum.deallocate() }
    for b in 0..<shape.batch {
        let starts = documentStarts + b * T
        for h in headRange ?? 0..<shape.heads {
            let kvh = h / shape.group
            let kBase = k + b * T * shape.kvStride + kvh * D
            let vBase = v + b * T * shape.kvStride + kvh * D
            for i0 in stride(from: 0, to: T, by: BQ) {
                let i1 = min(i0 + BQ, T), nq = i1 - i0
                let qTile = q + (b * T + i0) * shape.qStride + h * D
                var lo = i0
                for t in i0..<i1 { lo = min(lo, Int(starts[t])) }
                zero(acc, count: nq * D)
                rowMax.update(repeating: -.infinity, count: nq)
                zero(rowSum, count: nq)
                for j0 in stride(from: lo, to: i1, by: BK) {
                    let j1 = min(j0 + BK, i1), nk = j1 - j0
                    let status = tileStatus(starts: starts, i0: i0, i1: i1, j0: j0, j1: j1)
                    if status.skip { continue }
                    visited += 1
                    BLAS.sgemm(.none, .transpose, m: nq, n: nk, k: D, alpha: shape.scale,
                               a: qTile, lda: shape.qStride, b: kBase + j0 * shape.kvStride, ldb: shape.kvStride,
                               c: scores, ldc: nk)
                    for r in 0..<nq {
                        let row = scores + r * nk
                        let (a, e) = status.masked ? visibleRange(start: Int(starts[i0 + r]), t: i0 + r, j0: j0, j1: j1) : (0, nk)
                        if a >= e { zero(row, count: nk); continue }
                        let m = max(rowMax[r], maximum(row, a..<e))
                        let alpha = scalarExp(rowMax[r] - m)
                        rowMax[r] = m
                        if a > 0 { zero(row, count: a) }
                        let sum = exponentiate(row, a..<e, minus: m)
                        if e < nk { zero(row + e, count: nk - e) }
                        rowSum[r] = rowSum[r] * alpha + sum
                        if alpha != 1 { scale(acc + r * D, by: alpha, count: D, into: acc + r * D) }
                    }
                    BLAS.sgemm(.none, .none, m: nq, n: D, k: nk, a: scores, lda: nk,
                               b: vBase + j0 * shape.kvStride, ldb: shape.kvStride, beta: 1, c: acc, ldc: D)
                }
                for r in 0..<nq {
                    scale(acc + r * D, by: 1 / rowSum[r], count: D, into: out + (b * T + i0 + r) * shape.outStride + h * D)
                    lse[(b * shape.heads + h) * T + i0 + r] = rowMax[r] + Foundation.log(rowSum[r])
                }
            }
        }
    }
    return visited
}

/// Backward of `attentionForward` (FlashAttention-2 style: scores are
/// recomputed per tile from q, k and the saved lse), and of the RoPE before
/// it when given its tables. Writes dq for the heads
/// of `headRange` and dk, dv for their kv heads (whatever the buffers held:
/// a kv head's gradient rows are zeroed just before its first tile, while
/// they are about to be cached anyway, and each dq block's first product
/// overwrites it). For GQA several query heads add into one kv head, so
/// `headRange` must hold whole kv-head groups, and a parallel split must be
/// by kv-head groups.
public func attentionBackward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                              out: UnsafePointer<Float>, lse: UnsafePointer<Float>, dOut: UnsafePointer<Float>,
                              shape: AttentionShape, documentStarts: UnsafePointer<Int32>,
                              headRange: Range<Int>? = nil, tiles: AttentionTiles = AttentionTiles(),
                              rope: RopeTables? = nil,
                              dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>) {
    let T = shape.seqLen, D = shape.headDim, BQ = tiles.query, BK = tiles.key
    let heads = headRange ?? 0..<shape.heads
    precondition(heads.lowerBound % shape.group == 0 && heads.upperBound % shape.group == 0,
                 "heads \(heads) split a kv-head group of \(shape.group)")
    let probs = UnsafeMutablePointer<Float>.allocate(capacity: BQ * BK)
    let dProbs = UnsafeMutablePointer<Float>.allocate(capacity: BQ * BK)
    let rowDot = UnsafeMutablePointer<Float>.allocate(capacity: BQ)
    defer { probs.deallocate(); dProbs.deallocate(); rowDot.deallocate() }
    for b in 0..<shape.batch {
        let starts = documentStarts + b * T
        for h in heads {
            let kvh = h / shape.group
            let kvOffset = b * T * shape.kvStride + kvh * D
            if h % shape.group == 0 {
                for t in 0..<T {
                    zero(dk + kvOffset + t * shape.kvStride, count: D)
                    zero(dv + kvOffset + t * shape.kvStride, count: D)
                }
            }
            for i0 in stride(from: 0, to: T, by: BQ) {
                let i1 = min(i0 + BQ, T), nq = i1 - i0
                let qOffset = (b * T + i0) * shape.qStride + h * D
                let outOffset = (b * T + i0) * shape.outStride + h * D
                let lseRow = lse + (b * shape.heads + h) * T + i0
                var lo = i0
                for t in i0..<i1 { lo = min(lo, Int(starts[t])) }
                for r in 0..<nq { rowDot[r] = dot(dOut + outOffset + r * shape.outStride, out + outOffset + r * shape.outStride, count: D) }
                // Every query sees itself, so some tile is computed; the first writes the dq block.
                var dqBeta: Float = 0
                for j0 in stride(from: lo, to: i1, by: BK) {
                    let j1 = min(j0 + BK, i1), nk = j1 - j0
                    let status = tileStatus(starts: starts, i0: i0, i1: i1, j0: j0, j1: j1)
                    if status.skip { continue }
                    let kTile = kvOffset + j0 * shape.kvStride
                    BLAS.sgemm(.none, .transpose, m: nq, n: nk, k: D, alpha: shape.scale,
                               a: q + qOffset, lda: shape.qStride, b: k + kTile, ldb: shape.kvStride, c: probs, ldc: nk)
                    BLAS.sgemm(.none, .transpose, m: nq, n: nk, k: D,
                               a: dOut + outOffset, lda: shape.outStride, b: v + kTile, ldb: shape.kvStride, c: dProbs, ldc: nk)
                    for r in 0..<nq {
                        let p = probs + r * nk, dp = dProbs + r * nk
                        let (a, e) = status.masked ? visibleRange(start: Int(starts[i0 + r]), t: i0 + r, j0: j0, j1: j1) : (0, nk)
                        if a >= e { zero(p, count: nk); zero(dp, count: nk); continue }
                        if a > 0 { zero(p, count: a); zero(dp, count: a) }
                        if e < nk { zero(p + e, count: nk - e); zero(dp + e, count: nk - e) }
                        softmaxBackwardRow(scores: p, scoreGradients: dp, a..<e, logSumExp: lseRow[r], rowDot: rowDot[r], scale: shape.scale)
                    }
                    // dV += Pᵀ dO; dQ += dS K; dK += dSᵀ Q
                    BLAS.sgemm(.transpose, .none, m: nk, n: D, k: nq, a: probs, lda: nk,
                               b: dOut + outOffset, ldb: shape.outStride, beta: 1, c: dv + kTile, ldc: shape.kvStride)
                    BLAS.sgemm(.none, .none, m: nq, n: D, k: nk, a: dProbs, lda: nk,
                               b: k + kTile, ldb: shape.kvStride, beta: dqBeta, c: dq + qOffset, ldc: shape.qStride)
                    dqBeta = 1
                    BLAS.sgemm(.transpose, .none, m: nk, n: D, k: nq, a: dProbs, lda: nk,
                               b: q + qOffset, ldb: shape.qStride, beta: 1, c: dk + kTile, ldc: shape.kvStride)
                }
            }
            // This head's dq rows are final, and after the group's last head
            // its kv head's dk rows: rotate them back while they are cached.
            if let rope {
                let half = D / 2, cos = rope.cos + b * T * half, sin = rope.sin + b * T * half
                ropeBackward(dX: dq + b * T * shape.qStride + h * D, rows: T, heads: 1, headDim: D, stride: shape.qStride, cos: cos, sin: sin)
                if h % shape.group == shape.group - 1 {
                    ropeBackward(dX: dk + kvOffset, rows: T, heads: 1, headDim: D, stride: shape.kvStride, cos: cos, sin: sin)
                }
            }
        }
    }
}

/// RoPE's cos and sin tables of an attention call's rows ([batch·seqLen,
/// headDim/2] each, as `RopeFrequencies.tables` makes them): given to
/// `attentionBackward`, it turns the gradients of the rotated q and k into
/// those of the unrotated ones (`ropeBackward`) head by head.
public struct RopeTables {
    public var cos, sin: UnsafePointer<Float>
    public init(cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) { self.cos = cos; self.sin = sin }
}
