import DaptBLAS
import DaptCore
import Foundation

/// A decoding request the cache cannot hold, naming what is wrong.
public enum DecodeError: Error, CustomStringConvertible, Equatable {
    case wrongBatch(expected: Int, found: Int)
    case capacityExceeded(sequence: Int, length: Int, capacity: Int)
    case tokenOutOfRange(sequence: Int, index: Int, value: Int32, vocab: Int)

    public var description: String {
        switch self {
        case let .wrongBatch(expected, found): return "decode: \(found) token lists for a cache of \(expected) sequences"
        case let .capacityExceeded(sequence, length, capacity):
            return "decode: sequence \(sequence) would reach \(length) tokens, more than the cache's capacity of \(capacity)"
        case let .tokenOutOfRange(sequence, index, value, vocab):
            return "decode: sequence \(sequence) token \(index): \(value) is outside the vocabulary of \(vocab)"
        }
    }
}

/// The keys and values (after RoPE) of every token a batch of sequences has
/// seen, per layer, so a new token attends to them without recomputing them.
/// Sequences are independent and may have different lengths; each holds up
/// to `capacity` tokens.
public final class KVCache {
    public let config: LlamaConfig
    public let batch: Int
    public let capacity: Int
    /// Tokens held per sequence (the position of its next token).
    public internal(set) var lengths: [Int]
    /// [layer][sequence][capacity][kvDimension], keys and values alike.
    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<Float>

    public init(config: LlamaConfig, batch: Int, capacity: Int) {
        precondition(batch > 0 && capacity > 0, "KVCache: batch \(batch) and capacity \(capacity) must be positive")
        self.config = config; self.batch = batch; self.capacity = capacity
        lengths = [Int](repeating: 0, count: batch)
        let count = config.numHiddenLayers * batch * capacity * config.kvDimension
        keys = .allocate(capacity: count); keys.initialize(repeating: 0, count: count)
        values = .allocate(capacity: count); values.initialize(repeating: 0, count: count)
    }

    deinit { keys.deallocate(); values.deallocate() }

    /// Row 0 of `sequence`'s keys (or values) in `layer`.
    @inline(__always) func offset(layer: Int, sequence: Int) -> Int {
        (layer * batch + sequence) * capacity * config.kvDimension
    }
}

extension LlamaModel {
    /// Runs the new tokens of each sequence (`tokens[i]`, possibly empty)
    /// after what `cache` holds, appends their keys and values to it, and
    /// returns each sequence's logits: of its last new token ([vocab]), or
    /// of every new token ([count·vocab]) with `allPositions`; empty for a
    /// sequence without new tokens. Token j of sequence i sits at position
    /// `cache.lengths[i] + j`. Inference runs in fp32 whatever the
    /// training precision.
    public func decode(_ tokens: [[Int32]], cache: KVCache, allPositions: Bool = false) throws -> [[Float]] {
        let c = config, H = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize
        let qD = c.qDimension, kvD = c.kvDimension, qkvD = qD + 2 * kvD, D = c.headDimension
        let heads = c.numAttentionHeads, group = heads / c.numKeyValueHeads
        guard tokens.count == cache.batch else { throw DecodeError.wrongBatch(expected: cache.batch, found: tokens.count) }
        precondition(cache.config == config, "decode: the cache was made for another model shape")
        // Rows: every new token of every sequence, sequence by sequence.
        var flat: [Int32] = [], positions: [Int32] = [], rowRanges: [Range<Int>] = []
        for (i, seq) in tokens.enumerated() {
            let start = cache.lengths[i]
            if start + seq.count > cache.capacity {
                throw DecodeError.capacityExceeded(sequence: i, length: start + seq.count, capacity: cache.capacity)
            }
            if let j = seq.firstIndex(where: { $0 < 0 || Int($0) >= V }) {
                throw DecodeError.tokenOutOfRange(sequence: i, index: j, value: seq[j], vocab: V)
            }
            rowRanges.append(flat.count..<(flat.count + seq.count))
            flat += seq
            positions += (0..<seq.count).map { Int32(start + $0) }
        }
        let n = flat.count
        guard n > 0 else { return tokens.map { _ in [] } }
        // As transformers: dynamic NTK scaling follows the longest position in the batch.
        let rope = RopeFrequencies(config: c, sequenceLength: Int(positions.max()!) + 1).tables(positions: positions)

        let scratch = DecodeScratch(rows: n, config: c, keys: cache.capacity)
        defer { scratch.deallocate() }
        let x = scratch.x, norm = scratch.norm, mid = scratch.mid, q = scratch.qkv, k = q + qD, v = k + kvD
        let att = scratch.att, gateUp = scratch.gateUp, hAct = scratch.hAct, rstd = scratch.rstd, scores = scratch.scores
        let eps = Float(c.rmsNormEps)
        return parameters.withBuffer { buffer -> [[Float]] in
            let w = UnsafePointer(buffer.baseAddress!)
            flat.withUnsafeBufferPointer { t in
                embeddingForward(tokens: t.baseAddress!, count: n, table: w + layout.embedding!.offset, vocab: V, dim: H, out: x)
            }
            for l in 0..<c.numHiddenLayers {
                let s = layout.layers[l]
                // mid starts at x (the residual), copied in the norm's pass.
                rmsNormForward(x: x, weight: w + s.inputNorm.offset, rows: n, dim: H, eps: eps, out: norm, rstd: rstd, copy: mid)
                // q_proj, k_proj and v_proj are adjacent (as training relies on): one product gives rows of [q | k | v].
                BLAS.sgemm(.none, .transpose, m: n, n: qkvD, k: H, a: norm, lda: H, b: w + s.q.offset, ldb: H, c: q, ldc: qkvD)
                rope.cos.withUnsafeBufferPointer { cosT in
                    rope.sin.withUnsafeBufferPointer { sinT in
                        ropeForward(x: q, rows: n, heads: heads, headDim: D, stride: qkvD, cos: cosT.baseAddress!, sin: sinT.baseAddress!)
                        ropeForward(x: k, rows: n, heads: c.numKeyValueHeads, headDim: D, stride: qkvD,
                                    cos: cosT.baseAddress!, sin: sinT.baseAddress!)
                    }
                }
                for (i, rows) in rowRanges.enumerated() where !rows.isEmpty {
                    let start = cache.lengths[i], base = cache.offset(layer: l, sequence: i)
                    let kCache = cache.keys + base, vCache = cache.values + base
                    for (j, r) in rows.enumerated() {
                        (kCache + (start + j) * kvD).update(from: k + r * qkvD, count: kvD)
                        (vCache + (start + j) * kvD).update(from: v + r * qkvD, count: kvD)
                    }
                    // Row j (position start + j) sees keys 0...start + j.
                    let nq = rows.count, nk = start + nq
                    for h in 0..<heads {
                        let kvh = h / group
                        let qRows = q + rows.lowerBound * qkvD + h * D
                        BLAS.sgemm(.none, .transpose, m: nq, n: nk, k: D, alpha: 1 / Float(D).squareRoot(),
                                   a: qRows, lda: qkvD, b: kCache + kvh * D, ldb: kvD, c: scores, ldc: nk)
                        for j in 0..<nq { softmaxRow(scores + j * nk, visible: start + j + 1, count: nk) }
                        BLAS.sgemm(.none, .none, m: nq, n: D, k: nk, a: scores, lda: nk, b: vCache + kvh * D, ldb: kvD,
                                   c: att + rows.lowerBound * qD + h * D, ldc: qD)
                    }
                }
                BLAS.sgemm(.none, .transpose, m: n, n: H, k: qD, a: att, lda: qD, b: w + s.o.offset, ldb: qD, beta: 1, c: mid, ldc: H)
                rmsNormForward(x: mid, weight: w + s.postAttentionNorm.offset, rows: n, dim: H, eps: eps, out: norm, rstd: rstd, copy: x)
                // gate_proj and up_proj are adjacent: one product gives rows of [gate | up].
                BLAS.sgemm(.none, .transpose, m: n, n: 2 * I, k: H, a: norm, lda: H, b: w + s.gate.offset, ldb: H, c: gateUp, ldc: 2 * I)
                for r in 0..<n { swigluForward(gate: gateUp + r * 2 * I, up: gateUp + r * 2 * I + I, count: I, out: hAct + r * I) }
                BLAS.sgemm(.none, .transpose, m: n, n: H, k: I, a: hAct, lda: I, b: w + s.down.offset, ldb: I, beta: 1, c: x, ldc: H)
            }
            for i in 0..<cache.batch { cache.lengths[i] += tokens[i].count }
            // Only the rows whose logits are wanted go through the head.
            var wanted: [Int] = []
            for rows in rowRanges where !rows.isEmpty { wanted += allPositions ? Array(rows) : [rows.upperBound - 1] }
            for (j, r) in wanted.enumerated() where j != r { (x + j * H).update(from: x + r * H, count: H) }
            let m = wanted.count
            rmsNormForward(x: x, weight: w + layout.finalNorm!.offset, rows: m, dim: H, eps: eps, out: norm, rstd: rstd)
            var logits = [Float](repeating: 0, count: m * V)
            logits.withUnsafeMutableBufferPointer { out in
                BLAS.sgemm(.none, .transpose, m: m, n: V, k: H, a: norm, lda: H, b: w + layout.lmHead!.offset, ldb: H,
                           c: out.baseAddress!, ldc: V)
            }
            var result: [[Float]] = [], row = 0
            for rows in rowRanges {
                let count = rows.isEmpty ? 0 : (allPositions ? rows.count : 1)
                result.append(Array(logits[(row * V)..<((row + count) * V)]))
                row += count
            }
            return result
        }
    }
}

/// Softmax in place over the first `visible` entries of a row of `count`
/// scores; the rest (future positions) become 0.
@inline(__always) private func softmaxRow(_ row: UnsafeMutablePointer<Float>, visible: Int, count: Int) {
    let sum = exponentiate(row, 0..<visible, minus: maximum(row, 0..<visible))
    scale(row, by: 1 / sum, count: visible, into: row)
    if visible < count { (row + visible).update(repeating: 0, count: count - visible) }
}

/// Activation buffers of one decoding call.
private struct DecodeScratch {
    let x, norm, mid, qkv, att, gateUp, hAct, rstd, scores: UnsafeMutablePointer<Float>

    init(rows n: Int, config c: LlamaConfig, keys: Int) {
        func make(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            p.initialize(repeating: 0, count: max(count, 1))
            return p
        }
        x = make(n * c.hiddenSize); norm = make(n * c.hiddenSize); mid = make(n * c.hiddenSize)
        qkv = make(n * (c.qDimension + 2 * c.kvDimension)); att = make(n * c.qDimension)
        gateUp = make(n * 2 * c.intermediateSize); hAct = make(n * c.intermediateSize); rstd = make(n)
        scores = make(n * keys)
    }

    func deallocate() { [x, norm, mid, qkv, att, gateUp, hAct, rstd, scores].forEach { $0.deallocate() } }
}
