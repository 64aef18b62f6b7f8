import DaptBLAS
import DaptCore
import Foundation

/// A malformed batch, naming what is wrong.
public enum BatchError: Error, CustomStringConvertible, Equatable {
    case wrongCount(field: String, expected: Int, found: Int)
    case tokenOutOfRange(field: String, index: Int, value: Int32, vocab: Int)
    case negativePosition(index: Int, value: Int32)
    case documentNotContiguous(row: Int, position: Int, documentId: Int32)

    public var description: String {
        switch self {
        case let .wrongCount(field, expected, found): return "batch: \(field): \(found) values, expected \(expected) (batch × seq_len)"
        case let .tokenOutOfRange(field, index, value, vocab): return "batch: \(field)[\(index)]: \(value) is outside the vocabulary of \(vocab)"
        case let .negativePosition(index, value): return "batch: positions[\(index)]: \(value) is negative"
        case let .documentNotContiguous(row, position, id):
            return "batch: document_ids: row \(row) position \(position): document \(id) reappears after another document (documents must be contiguous runs)"
        }
    }
}

/// One packed batch: `batchSize` rows of `seqLen` tokens, row-major.
/// `targets` are the next-token labels already aligned with `tokens`
/// (`ignoreIndex` = no loss). `documentIds` (optional) give each token's
/// document; a token attends only to earlier tokens of its own document.
public struct TokenBatch: Sendable, Equatable {
    public let batchSize: Int
    public let seqLen: Int
    public var tokens: [Int32]
    public var targets: [Int32]
    public var positions: [Int32]
    public var documentIds: [Int32]?

    public init(batchSize: Int, seqLen: Int, tokens: [Int32], targets: [Int32],
                positions: [Int32]? = nil, documentIds: [Int32]? = nil) throws {
        let n = batchSize * seqLen
        self.batchSize = batchSize; self.seqLen = seqLen
        self.tokens = tokens; self.targets = targets
        if tokens.count != n { throw BatchError.wrongCount(field: "tokens", expected: n, found: tokens.count) }
        if targets.count != n { throw BatchError.wrongCount(field: "targets", expected: n, found: targets.count) }
        if let documentIds {
            if documentIds.count != n { throw BatchError.wrongCount(field: "document_ids", expected: n, found: documentIds.count) }
            for b in 0..<batchSize {
                var finished = Set<Int32>()
                for t in 1..<max(seqLen, 1) where documentIds[b * seqLen + t] != documentIds[b * seqLen + t - 1] {
                    finished.insert(documentIds[b * seqLen + t - 1])
                    if finished.contains(documentIds[b * seqLen + t]) {
                        throw BatchError.documentNotContiguous(row: b, position: t, documentId: documentIds[b * seqLen + t])
                    }
                }
            }
        }
        self.documentIds = documentIds
        if let positions {
            if positions.count != n { throw BatchError.wrongCount(field: "positions", expected: n, found: positions.count) }
            if let i = positions.firstIndex(where: { $0 < 0 }) { throw BatchError.negativePosition(index: i, value: positions[i]) }
            self.positions = positions
        } else if let documentIds {
            // Positions restart at 0 at every document start.
            let starts = DaptModel.documentStarts(documentIds: documentIds, batch: batchSize, seqLen: seqLen)
            self.positions = (0..<n).map { Int32($0 % max(seqLen, 1)) - starts[$0] }
        } else {
            self.positions = (0..<n).map { Int32($0 % max(seqLen, 1)) }
        }
    }

    public var tokenCount: Int { batchSize * seqLen }

    func check(vocab: Int) throws {
        if let i = tokens.firstIndex(where: { $0 < 0 || Int($0) >= vocab }) {
            throw BatchError.tokenOutOfRange(field: "tokens", index: i, value: tokens[i], vocab: vocab)
        }
        if let i = targets.firstIndex(where: { $0 != ignoreIndex && ($0 < 0 || Int($0) >= vocab) }) {
            throw BatchError.tokenOutOfRange(field: "targets", index: i, value: targets[i], vocab: vocab)
        }
    }
}

/// Summed token loss and the number of tokens counted (targets ≠ ignoreIndex).
public struct LossResult: Equatable, Sendable {
    public var sum: Double
    public var count: Int
    public var mean: Double { count > 0 ? sum / Double(count) : 0 }
}

/// Which attention kernel the model runs.
public enum AttentionKernel: Sendable {
    /// Tiled online-softmax kernels (memory linear in sequence length).
    case tiled(AttentionTiles)
    /// The T×T reference (tests).
    case reference
}

/// Hands non-Sendable values (raw pointers into buffers that the workers
/// split disjointly) to concurrent workers.
struct Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Saved activations of one batch shape, sliced per layer.
final class Activations {
    let n: Int, batch: Int, seqLen: Int
    let residual, mid, q, k, v, attnOut, lse, rstd1, rstd2, gateUp: UnsafeMutablePointer<Float>
    let finalOut, finalRstd, logits: UnsafeMutablePointer<Float>
    // Scratch reused by every layer.
    let normOut, hAct, dResidual, dNorm, dAttnOut, dq, dk, dv, dHAct, dGateUp: UnsafeMutablePointer<Float>
    var ropeCos: [Float] = [], ropeSin: [Float] = [], ropePositions: [Int32] = []
    var starts: [Int32] = []
    private var owned: [UnsafeMutablePointer<Float>] = []

    init(config c: LlamaConfig, batch: Int, seqLen: Int) {
        self.batch = batch; self.seqLen = seqLen
        let n = batch * seqLen, L = c.numHiddenLayers, H = c.hiddenSize
        self.n = n
        var all: [UnsafeMutablePointer<Float>] = []
        func make(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            p.initialize(repeating: 0, count: max(count, 1))
            all.append(p)
            return p
        }
        residual = make((L + 1) * n * H); mid = make(L * n * H)
        q = make(L * n * c.qDimension); k = make(L * n * c.kvDimension); v = make(L * n * c.kvDimension)
        attnOut = make(L * n * c.qDimension); lse = make(L * n * c.numAttentionHeads)
        rstd1 = make(L * n); rstd2 = make(L * n)
        // Rows of [gate | up]: one product with the adjacent gate_proj and up_proj weights.
        gateUp = make(L * n * 2 * c.intermediateSize)
        finalOut = make(n * H); finalRstd = make(n); logits = make(n * c.vocabSize)
        normOut = make(n * H); hAct = make(n * c.intermediateSize); dResidual = make(n * H); dNorm = make(n * H)
        dAttnOut = make(n * c.qDimension); dq = make(n * c.qDimension)
        dk = make(n * c.kvDimension); dv = make(n * c.kvDimension); dHAct = make(n * c.intermediateSize)
        dGateUp = make(n * 2 * c.intermediateSize)
        owned = all
    }

    deinit { owned.forEach { $0.deallocate() } }
}

/// A Llama-style decoder with hand-written forward and backward passes.
/// Parameters and gradients each live in one flat buffer sliced by
/// `layout`; backward accumulates into `gradients` (zero it between steps).
/// The passes are exposed per stage — embedding, a range of layers, the
/// head — so a pipeline stage can run only its layers.
public final class LlamaModel: @unchecked Sendable {
    public let config: LlamaConfig
    public let layout: ParameterLayout
    public let parameters: ParameterBuffer
    public let gradients: ParameterBuffer
    public var attentionKernel: AttentionKernel = .tiled(AttentionTiles())
    /// Threads for the attention kernels (split by kv-head groups). Matrix
    /// products use OpenBLAS's own thread count (`BLAS.setThreads`).
    public var threads: Int = 1
    /// Mixed precision: every activation and activation gradient that a
    /// matrix product or element-wise kernel produces is rounded to this
    /// precision (weights are rounded by the caller, who keeps fp32 master
    /// weights). Norm statistics, softmax and loss stay in fp32.
    public var activationPrecision: Precision = .fp32
    private var acts: Activations?
    private var batch: TokenBatch?

    public init(config: LlamaConfig) throws {
        try config.validate()
        self.config = config
        layout = ParameterLayout(config: config)
        parameters = ParameterBuffer(layout: layout)
        gradients = ParameterBuffer(layout: layout)
        // The fused gate/up product relies on the two weights being adjacent.
        for l in layout.layers { precondition(l.up.offset == l.gate.offset + l.gate.count, "gate_proj and up_proj must be adjacent") }
    }

    /// Loads `config.json` and the safetensors weights from a Hugging Face
    /// model directory.
    public convenience init(directory: String) throws {
        try self.init(config: LlamaConfig.load(path: directory + "/config.json"))
        try parameters.loadSafeTensors(directory: directory)
    }

    /// Writes `config.json` and `model.safetensors` (F32 unless `dtype`).
    public func save(directory: String, dtype: SafeTensorsDType = .f32) throws {
        try FileSystem.makeDirectories(directory)
        try config.save(path: directory + "/config.json")
        try parameters.saveSafeTensors(path: directory + "/model.safetensors", dtype: dtype)
    }

    /// Normal(0, std) matrices and unit norm gains (transformers' init),
    /// from a seeded generator: the same seed gives the same weights.
    public func initializeRandom(seed: UInt64, std: Float = 0.02) {
        var rng = SplitMix64(seed: seed)
        parameters.withBuffer { buf in
            for s in layout.slices {
                if s.isNormWeight {
                    for i in s.range { buf[i] = 1 }
                    continue
                }
                var i = s.offset
                while i < s.range.upperBound {
                    // Box–Muller pairs.
                    let u1 = max(Double(rng.next() >> 11) * 0x1.0p-53, 1e-300)
                    let u2 = Double(rng.next() >> 11) * 0x1.0p-53
                    let r = (-2 * Foundation.log(u1)).squareRoot()
                    buf[i] = Float(r * Foundation.cos(2 * .pi * u2)) * std
                    if i + 1 < s.range.upperBound { buf[i + 1] = Float(r * Foundation.sin(2 * .pi * u2)) * std }
                    i += 2
                }
            }
        }
    }

    // MARK: Whole passes

    /// Forward and backward on `batch`: gradients += ∂(lossScale · Σ loss /
    /// normalizer)/∂θ, where normalizer defaults to the batch's counted
    /// tokens (mean loss). Pass the global token count as `normalizer` to
    /// accumulate micro-batches. Returns the unscaled summed loss.
    @discardableResult
    public func forwardBackward(_ batch: TokenBatch, lossScale: Float = 1, normalizer: Double? = nil) throws -> LossResult {
        try prepare(batch)
        embedForward()
        forwardLayers(0..<config.numHiddenLayers)
        let loss = headForwardBackward(lossScale: lossScale, normalizer: normalizer)
        backwardLayers(0..<config.numHiddenLayers)
        embedBackward()
        return loss
    }

    /// Forward only: the loss (evaluation).
    public func loss(_ batch: TokenBatch) throws -> LossResult {
        try prepare(batch)
        embedForward()
        forwardLayers(0..<config.numHiddenLayers)
        return headForward()
    }

    /// Forward only: each position's loss (negative log-likelihood of its
    /// target; 0 where the target is `ignoreIndex`), [batch·seqLen]. Scoring
    /// needs the losses per document, not only their sum.
    public func tokenLosses(_ batch: TokenBatch) throws -> [Float] {
        try prepare(batch)
        embedForward()
        forwardLayers(0..<config.numHiddenLayers)
        let a = acts!, c = config, H = c.hiddenSize, V = c.vocabSize
        let w = parameters.storage.baseAddress!
        rmsNormForward(x: a.residual + c.numHiddenLayers * a.n * H, weight: w + layout.finalNorm.offset, rows: a.n, dim: H,
                       eps: Float(c.rmsNormEps), out: a.finalOut, rstd: a.finalRstd)
        lowPrecision(a.finalOut, a.n * H)
        // Only positions with a target need the LM head: gather their rows
        // (padding and window overlaps have none), so the head's matrix
        // product and the softmax cover just the predicted tokens.
        var rows: [Int] = []
        rows.reserveCapacity(a.n)
        var targets: [Int32] = []
        targets.reserveCapacity(a.n)
        for (r, t) in batch.targets.enumerated() where t != ignoreIndex { rows.append(r); targets.append(t) }
        var losses = [Float](repeating: 0, count: a.n)
        let m = rows.count
        guard m > 0 else { return losses }
        // finalOut is not read again in a forward-only pass: compact it in
        // place (row i moves to slot k ≤ i, earlier slots already consumed).
        for (k, r) in rows.enumerated() where k != r {
            (a.finalOut + k * H).update(from: a.finalOut + r * H, count: H)
        }
        BLAS.sgemm(.none, .transpose, m: m, n: V, k: H, a: a.finalOut, lda: H, b: w + layout.lmHead.offset, ldb: H, c: a.logits, ldc: V)
        lowPrecision(a.logits, m * V)
        var compact = [Float](repeating: 0, count: m)
        compact.withUnsafeMutableBufferPointer { out in
            targets.withUnsafeBufferPointer { t in
                let ptrs = Unchecked((a.logits, t.baseAddress!, out.baseAddress!))
                forEachRowChunk(m) { rows in
                    let (logits, t, out) = ptrs.value
                    _ = crossEntropy(logits: logits + rows.lowerBound * V, targets: t + rows.lowerBound, rows: rows.count, vocab: V,
                                     gradientScale: nil, rowLoss: out + rows.lowerBound)
                }
            }
        }
        for (k, r) in rows.enumerated() { losses[r] = compact[k] }
        return losses
    }

    /// Forward only: logits [batch·seqLen, vocab].
    public func logits(_ batch: TokenBatch) throws -> [Float] {
        try prepare(batch)
        embedForward()
        forwardLayers(0..<config.numHiddenLayers)
        headLogits()
        let a = acts!
        return Array(UnsafeBufferPointer(start: a.logits, count: a.n * config.vocabSize))
    }

    // MARK: Stages

    /// Sets the batch: allocates activations for its shape (kept while the
    /// shape is unchanged), RoPE tables and document starts.
    public func prepare(_ batch: TokenBatch) throws {
        try batch.check(vocab: config.vocabSize)
        if acts == nil || acts!.batch != batch.batchSize || acts!.seqLen != batch.seqLen {
            acts = nil
            acts = Activations(config: config, batch: batch.batchSize, seqLen: batch.seqLen)
        }
        let a = acts!
        // Tables depend only on positions (and documents on ids): reuse them
        // across steps when those repeat, as they do for fixed-length packing.
        if a.ropePositions != batch.positions {
            let maxPosition = Int(batch.positions.max() ?? 0)
            let freqs = RopeFrequencies(config: config, sequenceLength: maxPosition + 1)
            (a.ropeCos, a.ropeSin) = freqs.tables(positions: batch.positions)
            a.ropePositions = batch.positions
        }
        a.starts = documentStarts(documentIds: batch.documentIds, batch: batch.batchSize, seqLen: batch.seqLen)
        self.batch = batch
    }

    /// Hidden state entering layer `boundary` (0…layers; `layers` is the
    /// input of the final norm), [batch·seqLen, hidden]. Pipeline stages
    /// read and write activations here.
    public func withHidden<R>(boundary: Int, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        let a = acts!
        let size = a.n * config.hiddenSize
        return try body(UnsafeMutableBufferPointer(start: a.residual + boundary * size, count: size))
    }

    /// ∂loss/∂hidden at the boundary the backward pass has reached.
    public func withHiddenGradient<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        let a = acts!
        return try body(UnsafeMutableBufferPointer(start: a.dResidual, count: a.n * config.hiddenSize))
    }

    public func embedForward() {
        let a = acts!, b = batch!
        parameters.withBuffer { p in
            b.tokens.withUnsafeBufferPointer { t in
                embeddingForward(tokens: t.baseAddress!, count: a.n, table: p.baseAddress! + layout.embedding.offset,
                                 vocab: config.vocabSize, dim: config.hiddenSize, out: a.residual)
            }
        }
        lowPrecision(a.residual, a.n * config.hiddenSize)
    }

    public func embedBackward() {
        let a = acts!, b = batch!
        gradients.withBuffer { g in
            b.tokens.withUnsafeBufferPointer { t in
                embeddingBackward(tokens: t.baseAddress!, count: a.n, dOut: a.dResidual, dim: config.hiddenSize,
                                  dTable: g.baseAddress! + layout.embedding.offset)
            }
        }
    }

    /// Runs `body` on the query heads of each kv-head group, on `threads`
    /// threads when > 1 (groups write disjoint dq/dk/dv columns). BLAS runs
    /// single-threaded inside, so threads are not oversubscribed.
    private func forEachKVHeadGroup(_ body: @escaping @Sendable (Range<Int>) -> Void) {
        let kvHeads = config.numKeyValueHeads, group = config.numAttentionHeads / kvHeads
        let workers = min(threads, kvHeads)
        if workers <= 1 {
            body(0..<config.numAttentionHeads)
            return
        }
        let blasThreads = BLAS.threads
        BLAS.setThreads(1)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let first = kvHeads * w / workers, last = kvHeads * (w + 1) / workers
            body((first * group)..<(last * group))
        }
        BLAS.setThreads(blasThreads)
    }

    /// Runs `body` on row ranges covering 0..<rows, on `threads` threads
    /// when > 1 (rows are independent; BLAS is idle meanwhile).
    private func forEachRowChunk(_ rows: Int, _ body: @escaping @Sendable (Range<Int>) -> Void) {
        let workers = min(threads, rows / 64)
        if workers <= 1 {
            body(0..<rows)
            return
        }
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            body((rows * w / workers)..<(rows * (w + 1) / workers))
        }
    }

    @inline(__always) private func lowPrecision(_ p: UnsafeMutablePointer<Float>, _ count: Int) {
        if activationPrecision != .fp32 { roundInPlace(UnsafeMutableBufferPointer(start: p, count: count), to: activationPrecision) }
    }

    private var shape: AttentionShape {
        AttentionShape(batch: acts!.batch, seqLen: acts!.seqLen, heads: config.numAttentionHeads,
                       kvHeads: config.numKeyValueHeads, headDim: config.headDimension)
    }

    /// Runs layers `range` forward: hidden[range.lowerBound] → hidden[range.upperBound].
    public func forwardLayers(_ range: Range<Int>) {
        for l in range { forwardLayer(l) }
    }

    /// Runs layers `range` backward (in reverse), taking ∂/∂hidden[upper]
    /// from the hidden gradient and leaving ∂/∂hidden[lower] there.
    public func backwardLayers(_ range: Range<Int>) {
        for l in range.reversed() { backwardLayer(l) }
    }

    private func forwardLayer(_ l: Int) {
        let a = acts!, c = config, n = a.n, H = c.hiddenSize, I = c.intermediateSize
        let qD = c.qDimension, kvD = c.kvDimension, s = layout.layers[l]
        let x = a.residual + l * n * H, mid = a.mid + l * n * H, next = a.residual + (l + 1) * n * H
        let q = a.q + l * n * qD, k = a.k + l * n * kvD, v = a.v + l * n * kvD
        let att = a.attnOut + l * n * qD, lse = a.lse + l * n * c.numAttentionHeads
        let gateUp = a.gateUp + l * n * 2 * I
        let w = parameters.storage.baseAddress!
        rmsNormForward(x: x, weight: w + s.inputNorm.offset, rows: n, dim: H, eps: Float(c.rmsNormEps),
                       out: a.normOut, rstd: a.rstd1 + l * n)
        lowPrecision(a.normOut, n * H)
        BLAS.sgemm(.none, .transpose, m: n, n: qD, k: H, a: a.normOut, lda: H, b: w + s.q.offset, ldb: H, c: q, ldc: qD)
        BLAS.sgemm(.none, .transpose, m: n, n: kvD, k: H, a: a.normOut, lda: H, b: w + s.k.offset, ldb: H, c: k, ldc: kvD)
        BLAS.sgemm(.none, .transpose, m: n, n: kvD, k: H, a: a.normOut, lda: H, b: w + s.v.offset, ldb: H, c: v, ldc: kvD)
        a.ropeCos.withUnsafeBufferPointer { cosT in
            a.ropeSin.withUnsafeBufferPointer { sinT in
                ropeForward(x: q, rows: n, heads: c.numAttentionHeads, headDim: c.headDimension, cos: cosT.baseAddress!, sin: sinT.baseAddress!)
                ropeForward(x: k, rows: n, heads: c.numKeyValueHeads, headDim: c.headDimension, cos: cosT.baseAddress!, sin: sinT.baseAddress!)
            }
        }
        lowPrecision(q, n * qD); lowPrecision(k, n * kvD); lowPrecision(v, n * kvD)
        a.starts.withUnsafeBufferPointer { st in
            switch attentionKernel {
            case .tiled(let tiles):
                let shape = self.shape, ptrs = Unchecked((q, k, v, st.baseAddress!, att, lse))
                forEachKVHeadGroup { heads in
                    let (q, k, v, st, att, lse) = ptrs.value
                    attentionForward(q: q, k: k, v: v, shape: shape, documentStarts: st, headRange: heads, tiles: tiles, out: att, lse: lse)
                }
            case .reference:
                attentionReferenceForward(q: q, k: k, v: v, shape: shape, documentStarts: st.baseAddress!, out: att, lse: lse)
            }
        }
        lowPrecision(att, n * qD)
        // mid = x + att · Woᵀ
        mid.update(from: x, count: n * H)
        BLAS.sgemm(.none, .transpose, m: n, n: H, k: qD, a: att, lda: qD, b: w + s.o.offset, ldb: qD, beta: 1, c: mid, ldc: H)
        lowPrecision(mid, n * H)
        rmsNormForward(x: mid, weight: w + s.postAttentionNorm.offset, rows: n, dim: H, eps: Float(c.rmsNormEps),
                       out: a.normOut, rstd: a.rstd2 + l * n)
        lowPrecision(a.normOut, n * H)
        BLAS.sgemm(.none, .transpose, m: n, n: 2 * I, k: H, a: a.normOut, lda: H, b: w + s.gate.offset, ldb: H, c: gateUp, ldc: 2 * I)
        lowPrecision(gateUp, n * 2 * I)
        let swiglu = Unchecked((gateUp, a.hAct))
        forEachRowChunk(n) { rows in
            let (gateUp, hAct) = swiglu.value
            for r in rows { swigluForward(gate: gateUp + r * 2 * I, up: gateUp + r * 2 * I + I, count: I, out: hAct + r * I) }
        }
        lowPrecision(a.hAct, n * I)
        next.update(from: mid, count: n * H)
        BLAS.sgemm(.none, .transpose, m: n, n: H, k: I, a: a.hAct, lda: I, b: w + s.down.offset, ldb: I, beta: 1, c: next, ldc: H)
        lowPrecision(next, n * H)
    }

    private func backwardLayer(_ l: Int) {
        let a = acts!, c = config, n = a.n, H = c.hiddenSize, I = c.intermediateSize
        let qD = c.qDimension, kvD = c.kvDimension, s = layout.layers[l]
        let x = a.residual + l * n * H, mid = a.mid + l * n * H
        let q = a.q + l * n * qD, k = a.k + l * n * kvD, v = a.v + l * n * kvD
        let att = a.attnOut + l * n * qD, lse = a.lse + l * n * c.numAttentionHeads
        let gateUp = a.gateUp + l * n * 2 * I
        let w = parameters.storage.baseAddress!, g = gradients.storage.baseAddress!
        let dy = a.dResidual
        let eps = Float(c.rmsNormEps)

        // MLP: next = mid + swiglu(norm(mid)·Wgᵀ, norm(mid)·Wuᵀ)·Wdᵀ
        rmsNormForward(x: mid, weight: w + s.postAttentionNorm.offset, rows: n, dim: H, eps: eps, out: a.normOut, rstd: a.rstd2 + l * n)
        lowPrecision(a.normOut, n * H)
        for r in 0..<n { swigluForward(gate: gateUp + r * 2 * I, up: gateUp + r * 2 * I + I, count: I, out: a.hAct + r * I) }
        lowPrecision(a.hAct, n * I)
        BLAS.sgemm(.transpose, .none, m: H, n: I, k: n, a: dy, lda: H, b: a.hAct, ldb: I, beta: 1, c: g + s.down.offset, ldc: I)
        BLAS.sgemm(.none, .none, m: n, n: I, k: H, a: dy, lda: H, b: w + s.down.offset, ldb: I, c: a.dHAct, ldc: I)
        lowPrecision(a.dHAct, n * I)
        // Rows of [dGate | dUp], then one product each for the weight and input gradients.
        for r in 0..<n {
            let gu = gateUp + r * 2 * I, d = a.dGateUp + r * 2 * I
            swigluBackward(gate: gu, up: gu + I, dOut: a.dHAct + r * I, count: I, dGate: d, dUp: d + I)
        }
        lowPrecision(a.dGateUp, n * 2 * I)
        BLAS.sgemm(.transpose, .none, m: 2 * I, n: H, k: n, a: a.dGateUp, lda: 2 * I, b: a.normOut, ldb: H, beta: 1,
                   c: g + s.gate.offset, ldc: H)
        BLAS.sgemm(.none, .none, m: n, n: H, k: 2 * I, a: a.dGateUp, lda: 2 * I, b: w + s.gate.offset, ldb: H, c: a.dNorm, ldc: H)
        lowPrecision(a.dNorm, n * H)
        rmsNormBackward(dOut: a.dNorm, x: mid, weight: w + s.postAttentionNorm.offset, rstd: a.rstd2 + l * n, rows: n, dim: H,
                        dX: dy, dWeight: g + s.postAttentionNorm.offset)
        lowPrecision(dy, n * H)

        // Attention: mid = x + attention(rope(norm(x)·Wqᵀ), rope(norm(x)·Wkᵀ), norm(x)·Wvᵀ)·Woᵀ
        BLAS.sgemm(.transpose, .none, m: H, n: qD, k: n, a: dy, lda: H, b: att, ldb: qD, beta: 1, c: g + s.o.offset, ldc: qD)
        BLAS.sgemm(.none, .none, m: n, n: qD, k: H, a: dy, lda: H, b: w + s.o.offset, ldb: qD, c: a.dAttnOut, ldc: qD)
        lowPrecision(a.dAttnOut, n * qD)
        a.dq.update(repeating: 0, count: n * qD)
        a.dk.update(repeating: 0, count: n * kvD)
        a.dv.update(repeating: 0, count: n * kvD)
        a.starts.withUnsafeBufferPointer { st in
            switch attentionKernel {
            case .tiled(let tiles):
                let shape = self.shape, ptrs = Unchecked((q, k, v, att, lse, a.dAttnOut, st.baseAddress!, a.dq, a.dk, a.dv))
                forEachKVHeadGroup { heads in
                    let (q, k, v, att, lse, dOut, st, dq, dk, dv) = ptrs.value
                    attentionBackward(q: q, k: k, v: v, out: att, lse: lse, dOut: dOut, shape: shape,
                                      documentStarts: st, headRange: heads, tiles: tiles, dq: dq, dk: dk, dv: dv)
                }
            case .reference:
                attentionReferenceBackward(q: q, k: k, v: v, dOut: a.dAttnOut, shape: shape, documentStarts: st.baseAddress!,
                                           dq: a.dq, dk: a.dk, dv: a.dv)
            }
        }
        a.ropeCos.withUnsafeBufferPointer { cosT in
            a.ropeSin.withUnsafeBufferPointer { sinT in
                ropeBackward(dX: a.dq, rows: n, heads: c.numAttentionHeads, headDim: c.headDimension, cos: cosT.baseAddress!, sin: sinT.baseAddress!)
                ropeBackward(dX: a.dk, rows: n, heads: c.numKeyValueHeads, headDim: c.headDimension, cos: cosT.baseAddress!, sin: sinT.baseAddress!)
            }
        }
        lowPrecision(a.dq, n * qD); lowPrecision(a.dk, n * kvD); lowPrecision(a.dv, n * kvD)
        rmsNormForward(x: x, weight: w + s.inputNorm.offset, rows: n, dim: H, eps: eps, out: a.normOut, rstd: a.rstd1 + l * n)
        lowPrecision(a.normOut, n * H)
        BLAS.sgemm(.transpose, .none, m: qD, n: H, k: n, a: a.dq, lda: qD, b: a.normOut, ldb: H, beta: 1, c: g + s.q.offset, ldc: H)
        BLAS.sgemm(.transpose, .none, m: kvD, n: H, k: n, a: a.dk, lda: kvD, b: a.normOut, ldb: H, beta: 1, c: g + s.k.offset, ldc: H)
        BLAS.sgemm(.transpose, .none, m: kvD, n: H, k: n, a: a.dv, lda: kvD, b: a.normOut, ldb: H, beta: 1, c: g + s.v.offset, ldc: H)
        BLAS.sgemm(.none, .none, m: n, n: H, k: qD, a: a.dq, lda: qD, b: w + s.q.offset, ldb: H, c: a.dNorm, ldc: H)
        BLAS.sgemm(.none, .none, m: n, n: H, k: kvD, a: a.dk, lda: kvD, b: w + s.k.offset, ldb: H, beta: 1, c: a.dNorm, ldc: H)
        BLAS.sgemm(.none, .none, m: n, n: H, k: kvD, a: a.dv, lda: kvD, b: w + s.v.offset, ldb: H, beta: 1, c: a.dNorm, ldc: H)
        lowPrecision(a.dNorm, n * H)
        rmsNormBackward(dOut: a.dNorm, x: x, weight: w + s.inputNorm.offset, rstd: a.rstd1 + l * n, rows: n, dim: H,
                        dX: dy, dWeight: g + s.inputNorm.offset)
        lowPrecision(dy, n * H)
    }

    private func headLogits() {
        let a = acts!, c = config, n = a.n, H = c.hiddenSize, V = c.vocabSize
        let w = parameters.storage.baseAddress!
        rmsNormForward(x: a.residual + c.numHiddenLayers * n * H, weight: w + layout.finalNorm.offset, rows: n, dim: H,
                       eps: Float(c.rmsNormEps), out: a.finalOut, rstd: a.finalRstd)
        lowPrecision(a.finalOut, n * H)
        BLAS.sgemm(.none, .transpose, m: n, n: V, k: H, a: a.finalOut, lda: H, b: w + layout.lmHead.offset, ldb: H, c: a.logits, ldc: V)
        lowPrecision(a.logits, n * V)
    }

    /// Final norm, LM head and loss (no gradient).
    @discardableResult
    public func headForward() -> LossResult {
        let a = acts!, n = a.n, V = config.vocabSize
        headLogits()
        let r = batch!.targets.withUnsafeBufferPointer {
            crossEntropy(logits: a.logits, targets: $0.baseAddress!, rows: n, vocab: V, gradientScale: nil)
        }
        return LossResult(sum: r.sum, count: r.count)
    }

    /// Head forward, loss, and head backward: leaves ∂/∂hidden[layers] in
    /// the hidden gradient (overwriting it) and adds LM-head and final-norm
    /// gradients.
    public func headForwardBackward(lossScale: Float = 1, normalizer: Double? = nil) -> LossResult {
        let a = acts!, c = config, n = a.n, H = c.hiddenSize, V = c.vocabSize
        let w = parameters.storage.baseAddress!, g = gradients.storage.baseAddress!
        headLogits()
        let counted = batch!.targets.reduce(0) { $0 + ($1 == ignoreIndex ? 0 : 1) }
        let denominator = normalizer ?? Double(max(counted, 1))
        let r = batch!.targets.withUnsafeBufferPointer {
            crossEntropy(logits: a.logits, targets: $0.baseAddress!, rows: n, vocab: V,
                         gradientScale: Float(Double(lossScale) / denominator))
        }
        lowPrecision(a.logits, n * V)
        BLAS.sgemm(.transpose, .none, m: V, n: H, k: n, a: a.logits, lda: V, b: a.finalOut, ldb: H, beta: 1,
                   c: g + layout.lmHead.offset, ldc: H)
        BLAS.sgemm(.none, .none, m: n, n: H, k: V, a: a.logits, lda: V, b: w + layout.lmHead.offset, ldb: H, c: a.dNorm, ldc: H)
        lowPrecision(a.dNorm, n * H)
        a.dResidual.update(repeating: 0, count: n * H)
        rmsNormBackward(dOut: a.dNorm, x: a.residual + c.numHiddenLayers * n * H, weight: w + layout.finalNorm.offset,
                        rstd: a.finalRstd, rows: n, dim: H, dX: a.dResidual, dWeight: g + layout.finalNorm.offset)
        lowPrecision(a.dResidual, n * H)
        return LossResult(sum: r.sum, count: r.count)
    }
}

extension LlamaConfig {
    /// Floating-point operations of one forward + backward pass over `batch`
    /// (matrix products: 6 per weight per token, embedding lookup excluded;
    /// attention: 12 · qDim per visible key per token per layer). The
    /// benchmark's PyTorch peer uses the same formula.
    public func trainingFlops(_ batch: TokenBatch) -> Double {
        let h = Double(hiddenSize), i = Double(intermediateSize)
        let perLayer = h * Double(qDimension) * 2 + h * Double(kvDimension) * 2 + 3 * h * i
        let matmulWeights = Double(numHiddenLayers) * perLayer + Double(vocabSize) * h
        let starts = documentStarts(documentIds: batch.documentIds, batch: batch.batchSize, seqLen: batch.seqLen)
        var visibleKeys = 0.0
        for idx in 0..<batch.tokenCount { visibleKeys += Double(idx % batch.seqLen - Int(starts[idx]) + 1) }
        return 6 * matmulWeights * Double(batch.tokenCount)
            + 12 * Double(qDimension) * visibleKeys * Double(numHiddenLayers)
    }
}

extension TokenBatch {
    /// A deterministic synthetic batch (token i of the whole batch is
    /// (i·7919 + 13) mod vocab), packed into documents of `documentLength`
    /// tokens when given; targets are the next token within a document.
    /// The benchmark's PyTorch peer builds the same batch.
    public static func synthetic(vocab: Int, batchSize: Int, seqLen: Int, documentLength: Int? = nil) throws -> TokenBatch {
        let n = batchSize * seqLen
        let tokens = (0..<n).map { Int32((($0 * 7919) + 13) % vocab) }
        let docs: [Int32]? = documentLength.map { len in (0..<n).map { Int32(($0 % seqLen) / len) } }
        var targets = [Int32](repeating: ignoreIndex, count: n)
        for idx in 0..<n where (idx + 1) % seqLen != 0 {
            if let docs, docs[idx] != docs[idx + 1] { continue }
            targets[idx] = tokens[idx + 1]
        }
        return try TokenBatch(batchSize: batchSize, seqLen: seqLen, tokens: tokens, targets: targets, documentIds: docs)
    }
}
