import DaptBLAS
import DaptCore
import Foundation

/// The sizes one rank's layers compute with. Unsplit, the config's; with
/// the heads, intermediate size and vocabulary divided among tensor ranks,
/// this rank's share.
public struct LayerDimensions: Equatable, Sendable {
    public var hidden: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var intermediate: Int
    public var vocab: Int
    public var qDim: Int { heads * headDim }
    public var kvDim: Int { kvHeads * headDim }
    /// Width of the fused [q | k | v] rows.
    public var qkvDim: Int { qDim + 2 * kvDim }

    public init(config c: LlamaConfig, tensorParallel t: Int = 1) {
        hidden = c.hiddenSize; heads = c.numAttentionHeads / t; kvHeads = c.numKeyValueHeads / t
        headDim = c.headDimension; intermediate = c.intermediateSize / t; vocab = c.vocabSize / t
    }
}

/// What a recomputed layer drops after its forward and computes again in
/// its backward (`pretrain.parallel.recompute_granularity`).
public enum RecomputeGranularity: String, Codable, Sendable, CaseIterable {
    /// Everything but the layer's input: the layer's forward runs again.
    case layer
    /// The MLP's [gate | up] rows: their product runs again, block by block.
    case mlp

    /// How many of a stage's `layers` recompute when `requested` are asked
    /// for: whole layers all but the last at most (its forward leaves its
    /// tensors in place), [gate | up] rows all.
    public func recomputed(_ requested: Int, stageLayers layers: Int) -> Int {
        min(requested, self == .layer ? max(layers - 1, 0) : layers)
    }
}

/// The saved activations of one micro-batch (so a pipeline stage can hold
/// several at once), with the scratch its layers reuse. Sized for one batch
/// shape; `LlamaModel.prepare(_:in:)` sets the batch.
///
/// With `recomputedLayers` K > 0, the stage's first K + 1 layers keep only
/// their input (the residual stream) for backward: the rest of their saved
/// tensors (mid, q/k/v, the attention output and its log-sum-exp, the norm
/// scales, [gate | up]) have one slot that each of their forwards
/// overwrites, and backward runs a layer's forward again into it just
/// before the layer's backward. The last of them is still in the slot after
/// the forward pass, so K layers are rerun and K layers' tensors are saved.
///
/// With the `.mlp` granularity the stage's first K layers (at most all)
/// keep everything but their [gate | up] rows: forward writes each block
/// of rows into the start of one shared scratch, and the MLP's backward computes
/// the block's rows again, from the norm output it recomputes anyway, just
/// before it reads them.
public final class Activations {
    public let dims: LayerDimensions
    /// The layers held: `firstLayer ..< firstLayer + layers` (a pipeline stage's).
    public let layers: Int
    public let firstLayer: Int
    /// Layers whose saved tensors backward recomputes (the stage's first
    /// ones; whole layers: at most `layers − 1`, all but the last).
    public let recomputedLayers: Int
    public let granularity: RecomputeGranularity
    /// Layers (the stage's first) sharing the one slot: the recomputed
    /// ones and the next, whose tensors the forward pass leaves there.
    let slotSharers: Int
    /// The layer whose saved tensors the shared slot holds (after a forward
    /// pass, the last sharer's: its backward needs no rerun).
    var slotLayer: Int?
    public let batchSize: Int, seqLen: Int
    /// Rows (tokens) of the micro-batch.
    public let n: Int
    public internal(set) var batch: TokenBatch?
    let residual, mid, qkv, attnOut, lse, rstd1, rstd2, gateUp: UnsafeMutablePointer<Float>
    /// A block of [gate | up] rows of the layers that recompute them (`.mlp`),
    /// room for `gateUpBlockRows` rows.
    let gateUpBlock: UnsafeMutablePointer<Float>?
    let gateUpBlockRows: Int
    /// The final norm's output and scales (the head's logits are computed in
    /// chunks into the model's own scratch, not held per micro-batch).
    let finalOut, finalRstd: UnsafeMutablePointer<Float>
    // Scratch reused by every layer.
    let normOut, hAct, dResidual, dNorm, dAttnOut, dqkv, dHAct, dGateUp: UnsafeMutablePointer<Float>
    /// A row-parallel product's part, before it is summed over the tensor group.
    let partial: UnsafeMutablePointer<Float>
    var ropeCos: [Float] = [], ropeSin: [Float] = [], ropePositions: [Int32] = []
    var starts: [Int32] = []
    private var owned: [UnsafeMutableBufferPointer<Float>] = []
    /// Floats allocated in all (the layout planner's activation memory follows it).
    public let allocatedFloats: Int

    /// `recomputedLayers`: how many of the stage's first layers backward
    /// recomputes (0: none; whole layers capped at `layers − 1`, [gate | up]
    /// rows at `layers`); `gateUpBlockRows`: the MLP's rows per block, which
    /// the [gate | up] scratch holds (nil: all rows).
    public init(dims d: LayerDimensions, layers L: Int, firstLayer: Int = 0, batchSize: Int, seqLen: Int, recomputedLayers: Int = 0,
                granularity: RecomputeGranularity = .layer, gateUpBlockRows: Int? = nil) {
        precondition(recomputedLayers >= 0, "recomputedLayers \(recomputedLayers) < 0")
        self.dims = d; self.layers = L; self.firstLayer = firstLayer
        self.batchSize = batchSize; self.seqLen = seqLen; self.granularity = granularity
        let K = granularity.recomputed(recomputedLayers, stageLayers: L)
        self.recomputedLayers = K
        slotSharers = granularity == .layer && K > 0 ? K + 1 : 0
        // Layers whose saved tensors (beyond their input) are held at once,
        // and of those, whose [gate | up] rows are.
        let S = slotSharers > 0 ? L - K : L, gateUpLayers = granularity == .mlp ? L - K : S
        let n = batchSize * seqLen, H = d.hidden, I = d.intermediate
        self.n = n
        var all: [UnsafeMutableBufferPointer<Float>] = []
        var floats = 0
        // Each buffer starts on a cache line (on huge pages from 2 MiB), so
        // rows whose width is a multiple of 16 floats do too, and their wide
        // loads and stores never straddle two lines. (Huge pages may round a
        // buffer's resident memory up by as much as 2 MiB.)
        func make(_ count: Int) -> UnsafeMutablePointer<Float> {
            floats += count
            let buffer = LargeAllocation.allocate(repeating: Float(0), count: count)
            all.append(buffer)
            return buffer.baseAddress!
        }
        residual = make((L + 1) * n * H); mid = make(S * n * H)
        // Rows of [q | k | v]: one product with the adjacent q_proj, k_proj and v_proj weights.
        qkv = make(S * n * d.qkvDim)
        attnOut = make(S * n * d.qDim); lse = make(S * n * d.heads)
        rstd1 = make(S * n); rstd2 = make(S * n)
        // Rows of [gate | up]: one product with the adjacent gate_proj and up_proj weights.
        gateUp = make(gateUpLayers * n * 2 * I)
        // One block of rows (every row under a tensor split).
        self.gateUpBlockRows = min(gateUpBlockRows ?? n, n)
        gateUpBlock = granularity == .mlp && K > 0 ? make(self.gateUpBlockRows * 2 * I) : nil
        finalOut = make(n * H); finalRstd = make(n)
        normOut = make(n * H); hAct = make(n * I); dResidual = make(n * H); dNorm = make(n * H)
        dAttnOut = make(n * d.qDim); dqkv = make(n * d.qkvDim); dHAct = make(n * I)
        dGateUp = make(n * 2 * I)
        partial = make(n * H)
        owned = all
        allocatedFloats = floats
    }

    deinit { owned.forEach(LargeAllocation.deallocate) }

    /// q, k and v (and their gradients) are column blocks of the [q | k | v] rows.
    var attentionShape: AttentionShape {
        AttentionShape(batch: batchSize, seqLen: seqLen, heads: dims.heads, kvHeads: dims.kvHeads, headDim: dims.headDim,
                       qStride: dims.qkvDim, kvStride: dims.qkvDim)
    }

    /// Whether backward reruns model layer `model`'s forward.
    func recomputes(_ model: Int) -> Bool { granularity == .layer && model - firstLayer < recomputedLayers }

    /// Whether model layer `model`'s [gate | up] rows are computed again in its backward.
    func recomputesGateUp(_ model: Int) -> Bool { granularity == .mlp && model - firstLayer < recomputedLayers }

    /// Whether model layer `model`'s saved tensors live in the shared slot.
    func sharesSlot(_ model: Int) -> Bool { model - firstLayer < slotSharers }

    /// Layer `l`'s saved tensors: its input `x`, `mid` (after attention), its
    /// output, and the rest (in the one shared slot for the first sharers).
    func layer(_ model: Int) -> LayerActivations {
        let d = dims, l = model - firstLayer, k = slotSharers > 0 ? max(l - slotSharers + 1, 0) : l
        let blocked = recomputesGateUp(model)
        return LayerActivations(x: residual + l * n * d.hidden, mid: mid + k * n * d.hidden, out: residual + (l + 1) * n * d.hidden,
                                qkv: qkv + k * n * d.qkvDim,
                                attention: attnOut + k * n * d.qDim, lse: lse + k * n * d.heads,
                                rstd1: rstd1 + k * n, rstd2: rstd2 + k * n,
                                gateUp: blocked ? gateUpBlock! : gateUp + (granularity == .mlp ? l - recomputedLayers : k) * n * 2 * d.intermediate,
                                gateUpPerBlock: blocked)
    }

    /// The hidden state entering layer `boundary` of the model (`firstLayer … firstLayer + layers`).
    func hidden(_ boundary: Int) -> UnsafeMutablePointer<Float> {
        precondition((firstLayer...(firstLayer + layers)).contains(boundary), "boundary \(boundary) outside layers \(firstLayer)..<\(firstLayer + layers)")
        return residual + (boundary - firstLayer) * n * dims.hidden
    }
}

/// Pointers to one layer's saved activations inside an `Activations`.
struct LayerActivations {
    let x, mid, out, qkv, attention, lse, rstd1, rstd2, gateUp: UnsafeMutablePointer<Float>
    /// `gateUp` holds one block of rows (from its start), computed again in backward.
    var gateUpPerBlock = false

    /// Where block `r0…`'s [gate | up] rows are, `width` floats a row.
    func gateUpRows(_ r0: Int, width: Int) -> UnsafeMutablePointer<Float> { gateUpPerBlock ? gateUp : gateUp + r0 * width }
}

/// Grouped-query self-attention: the q/k/v projections as one product
/// (`qkv`, out = q_dim + 2·kv_dim, over the adjacent q_proj, k_proj and
/// v_proj weights), RoPE, the tiled (document-masked, causal) attention
/// kernel reading q, k and v in place from the [q | k | v] rows, and the
/// output projection.
public struct Attention {
    public var qkv, o: Linear
    public let heads: Int, kvHeads: Int, headDim: Int
    var qDim: Int { heads * headDim }
    var kvDim: Int { kvHeads * headDim }

    /// out += attention(input)·Woᵀ for input [n, hidden] (the normed
    /// residual), `prepare` called on each block of rows of `input` just
    /// before the product reads them (the norm, so its rows are cached).
    func forward(input: UnsafeMutablePointer<Float>, saved s: LayerActivations, out: UnsafeMutablePointer<Float>,
                 _ a: Activations, weights w: UnsafePointer<Float>, settings: PassSettings,
                 prepare: (Range<Int>) -> Void = { _ in }) throws {
        let n = a.n, qD = qDim, width = qkv.outFeatures, block = rowsPerBlock(n, settings)
        // RoPE rotates each block of rows while the product's output is still cached.
        for r0 in stride(from: 0, to: n, by: block) {
            let rows = r0..<min(r0 + block, n)
            prepare(rows)
            qkv.forward(x: input + r0 * qkv.inFeatures, rows: rows.count, weights: w, y: s.qkv + r0 * width)
            rotate(s.qkv, rows, a, settings: settings, backward: false)
            settings.round(s.qkv + r0 * width, rows.count * width)
        }
        let shape = a.attentionShape
        let q = s.qkv, k = s.qkv + qD, v = s.qkv + qD + kvDim
        a.starts.withUnsafeBufferPointer { st in
            switch settings.kernel {
            case .tiled(let tiles):
                let ptrs = Unchecked((q, k, v, st.baseAddress!, s.attention, s.lse))
                settings.forEachKVHeadGroup(heads: heads, kvHeads: kvHeads) { heads in
                    let (q, k, v, st, att, lse) = ptrs.value
                    attentionForward(q: q, k: k, v: v, shape: shape, documentStarts: st, headRange: heads, tiles: tiles, out: att, lse: lse)
                }
            case .reference:
                attentionReferenceForward(q: q, k: k, v: v, shape: shape, documentStarts: st.baseAddress!, out: s.attention, lse: s.lse)
            }
        }
        settings.round(s.attention, n * qD)
        try o.addRowParallel(x: s.attention, rows: n, weights: w, out: out, scratch: a.partial, settings: settings)
    }

    /// Rows the forward pass takes through the norm, the q/k/v product and
    /// RoPE at a time, so RoPE rotates rows the product just wrote and the
    /// product reads rows the norm just wrote, both still cached.
    var blockRows = DecoderBlock.defaultBlockRows

    /// Rows per block of the forward's q/k/v product: all of them under an
    /// adapter (LoRA's dropout masks are drawn per call over all rows);
    /// with several threads at least `PassSettings.rowsPerWorker` per thread.
    func rowsPerBlock(_ n: Int, _ settings: PassSettings) -> Int {
        if qkv.adapter != nil { return max(n, 1) }
        return settings.threads > 1 ? max(blockRows, settings.threads * PassSettings.rowsPerWorker) : blockRows
    }

    /// RoPE (or its transpose, `backward`) on the q and k columns of rows
    /// `range` of the [q | k | v] rows `x` (activations or their
    /// gradients), the rows shared among the pass's threads (each is
    /// rotated alone).
    private func rotate(_ x: UnsafeMutablePointer<Float>, _ range: Range<Int>, _ a: Activations, settings: PassSettings, backward: Bool) {
        a.ropeCos.withUnsafeBufferPointer { cosT in
            a.ropeSin.withUnsafeBufferPointer { sinT in
                let ptrs = Unchecked((x, cosT.baseAddress!, sinT.baseAddress!, heads, kvHeads, headDim, qDim, qkv.outFeatures))
                let first = range.lowerBound
                settings.forEachRowChunk(range.count) { chunk in
                    let (x, cosT, sinT, heads, kvHeads, headDim, qD, width) = ptrs.value
                    let r0 = first + chunk.lowerBound, half = headDim / 2, cos = cosT + r0 * half, sin = sinT + r0 * half
                    let q = x + r0 * width, k = q + qD
                    if backward {
                        ropeBackward(dX: q, rows: chunk.count, heads: heads, headDim: headDim, stride: width, cos: cos, sin: sin)
                        ropeBackward(dX: k, rows: chunk.count, heads: kvHeads, headDim: headDim, stride: width, cos: cos, sin: sin)
                    } else {
                        ropeForward(x: q, rows: chunk.count, heads: heads, headDim: headDim, stride: width, cos: cos, sin: sin)
                        ropeForward(x: k, rows: chunk.count, heads: kvHeads, headDim: headDim, stride: width, cos: cos, sin: sin)
                    }
                }
            }
        }
    }

    /// Given dOut [n, hidden] and the recomputed `input`, accumulates the
    /// weight gradients and writes ∂/∂input to `dInput`.
    func backward(dOut: UnsafeMutablePointer<Float>, input: UnsafeMutablePointer<Float>, saved s: LayerActivations,
                  dInput: UnsafeMutablePointer<Float>, _ a: Activations,
                  weights w: UnsafePointer<Float>, gradients g: UnsafeMutablePointer<Float>?, settings: PassSettings) throws {
        let n = a.n, qD = qDim, width = qkv.outFeatures
        o.backward(x: s.attention, dy: dOut, rows: n, weights: w, gradients: g, dx: a.dAttnOut)
        settings.round(a.dAttnOut, n * qD)
        let shape = a.attentionShape
        let q = s.qkv, k = s.qkv + qD, v = s.qkv + qD + kvDim
        let dq = a.dqkv, dk = a.dqkv + qD, dv = a.dqkv + qD + kvDim
        a.starts.withUnsafeBufferPointer { st in
            switch settings.kernel {
            case .tiled(let tiles):
                // The kernel also takes RoPE back off each head's dq and dk rows.
                a.ropeCos.withUnsafeBufferPointer { cosT in
                    a.ropeSin.withUnsafeBufferPointer { sinT in
                        let rope = RopeTables(cos: cosT.baseAddress!, sin: sinT.baseAddress!)
                        let ptrs = Unchecked((q, k, v, s.attention, s.lse, a.dAttnOut, st.baseAddress!, dq, dk, dv, rope))
                        settings.forEachKVHeadGroup(heads: heads, kvHeads: kvHeads) { heads in
                            let (q, k, v, att, lse, dOut, st, dq, dk, dv, rope) = ptrs.value
                            attentionBackward(q: q, k: k, v: v, out: att, lse: lse, dOut: dOut, shape: shape,
                                              documentStarts: st, headRange: heads, tiles: tiles, rope: rope, dq: dq, dk: dk, dv: dv)
                        }
                    }
                }
            case .reference:
                // The reference accumulates; the tiled kernel writes every q/k/v gradient column itself.
                a.dqkv.update(repeating: 0, count: n * width)
                attentionReferenceBackward(q: q, k: k, v: v, dOut: a.dAttnOut, shape: shape, documentStarts: st.baseAddress!,
                                           dq: dq, dk: dk, dv: dv)
                rotate(a.dqkv, 0..<n, a, settings: settings, backward: true)
            }
        }
        settings.round(a.dqkv, n * width)
        qkv.backward(x: input, dy: a.dqkv, rows: n, weights: w, gradients: g, dx: dInput)
        try settings.sumOverTensorGroup(dInput, n * qkv.inFeatures)
    }
}

/// The SwiGLU feed-forward: down(silu(gate(x)) ⊙ up(x)). Gate and up are one
/// product (`gateUp`, out = 2·intermediate) over their adjacent weights.
public struct MLP {
    public var gateUp: Linear
    public var down: Linear
    public var intermediate: Int { down.inFeatures }

    /// Rows the passes take through the norm, the products and SwiGLU at a time, so a
    /// block's [gate | up] rows, activations and their gradients are still
    /// cached when the next product or kernel reads them (and OpenBLAS's
    /// zeroing of a beta-0 product's output meets cached rows). Much larger
    /// blocks fall out of the cache; much smaller ones repack the weights
    /// too often. With several threads a block has at least
    /// `PassSettings.rowsPerWorker` rows per thread, so SwiGLU's rows are
    /// shared among them all.
    var blockRows = DecoderBlock.defaultBlockRows

    /// Rows per block of a pass over `n` rows: all of them under an adapter
    /// (LoRA's dropout masks are drawn per call over all rows) or a tensor
    /// split (one all-reduce of the row-parallel product per pass).
    func rowsPerBlock(_ n: Int, _ settings: PassSettings) -> Int {
        if gateUp.adapter != nil || down.adapter != nil || settings.tensorGroup != nil { return max(n, 1) }
        return settings.threads > 1 ? max(blockRows, settings.threads * PassSettings.rowsPerWorker) : blockRows
    }

    /// out += mlp(input), keeping the [gate | up] rows in `saved.gateUp`;
    /// `prepare` is called on each block of rows of `input` just before
    /// the product reads them. `savedOnly`: the [gate | up] rows alone (a
    /// recomputation: `out` already holds the result, and backward
    /// recomputes the activation itself).
    func forward(input: UnsafeMutablePointer<Float>, saved s: LayerActivations, out: UnsafeMutablePointer<Float>,
                 _ a: Activations, weights w: UnsafePointer<Float>, settings: PassSettings, savedOnly: Bool = false,
                 prepare: (Range<Int>) -> Void = { _ in }) throws {
        let n = a.n, I = intermediate, H = gateUp.inFeatures, block = rowsPerBlock(n, settings)
        checkGateUpScratch(s, block, a)
        for r0 in stride(from: 0, to: n, by: block) {
            let rows = r0..<min(r0 + block, n), m = rows.count
            prepare(rows)
            let gu = s.gateUpRows(r0, width: 2 * I)
            gateUp.forward(x: input + r0 * H, rows: m, weights: w, y: gu)
            settings.round(gu, m * 2 * I)
            if savedOnly { continue }
            activate(m, gu, a, settings: settings)
            try down.addRowParallel(x: a.hAct, rows: m, weights: w, out: out + r0 * down.outFeatures,
                                    scratch: a.partial + r0 * down.outFeatures, settings: settings)
        }
    }

    /// A context made before the blocks grew (more threads, more block
    /// rows) has too small a [gate | up] scratch: make a new one.
    private func checkGateUpScratch(_ s: LayerActivations, _ block: Int, _ a: Activations) {
        precondition(!s.gateUpPerBlock || min(block, a.n) <= a.gateUpBlockRows,
                     "the context's [gate | up] scratch holds \(a.gateUpBlockRows) rows, blocks take \(block): make the context after setting threads and block rows")
    }

    /// hAct[0 ..< rows] = silu(gate) ⊙ up of the block's `rows` [gate | up]
    /// rows at `gateUp`, rounded: a block's activations start at hAct's
    /// first row, so every block reuses the same (still cached) scratch
    /// rather than touching new memory.
    private func activate(_ rows: Int, _ gateUp: UnsafeMutablePointer<Float>, _ a: Activations, settings: PassSettings) {
        let I = intermediate
        let swiglu = Unchecked((gateUp, a.hAct))
        settings.forEachRowChunk(rows) { chunk in
            let (gateUp, hAct) = swiglu.value
            for r in chunk { swigluForward(gate: gateUp + r * 2 * I, up: gateUp + r * 2 * I + I, count: I, out: hAct + r * I) }
        }
        settings.round(a.hAct, rows * I)
    }

    /// Given dOut and `input` (recomputed by `prepare`, called on each block
    /// of rows before they are read), accumulates the weight gradients and
    /// writes ∂/∂input to `dInput`, calling `finish` on each block of rows
    /// once their ∂/∂input is complete (summed over the tensor group) and
    /// their dOut rows are read for the last time (the norm's backward, on
    /// rows still cached).
    func backward(dOut: UnsafeMutablePointer<Float>, input: UnsafeMutablePointer<Float>, saved s: LayerActivations,
                  dInput: UnsafeMutablePointer<Float>, _ a: Activations,
                  weights w: UnsafePointer<Float>, gradients g: UnsafeMutablePointer<Float>?, settings: PassSettings,
                  prepare: (Range<Int>) -> Void = { _ in }, finish: (Range<Int>) -> Void = { _ in }) throws {
        let n = a.n, I = intermediate, H = gateUp.inFeatures
        if down.adapter == nil {
            let block = rowsPerBlock(n, settings)
            checkGateUpScratch(s, block, a)
            for r0 in stride(from: 0, to: n, by: block) {
                let m = min(block, n - r0)
                prepare(r0..<(r0 + m))
                let gu = s.gateUpRows(r0, width: 2 * I)
                if s.gateUpPerBlock {
                    // The forward's product on the same rows of the same norm output: the same bits.
                    gateUp.forward(x: input + r0 * H, rows: m, weights: w, y: gu)
                    settings.round(gu, m * 2 * I)
                }
                let dy = dOut + r0 * H, hAct = a.hAct, dHAct = a.dHAct, dGateUp = a.dGateUp
                // ∂/∂hAct first, so one pass recomputes hAct (for down's weight
                // gradient) and computes [dGate | dUp] with one exp and one
                // division per element.
                down.backwardInput(dy: dy, rows: m, weights: w, dx: dHAct)
                settings.round(dHAct, m * I)
                let ptrs = Unchecked((gu, dHAct, dGateUp, hAct))
                settings.forEachRowChunk(m) { chunk in
                    let (gateUp, dHAct, dGateUp, hAct) = ptrs.value
                    for r in chunk {
                        let gu = gateUp + r * 2 * I, d = dGateUp + r * 2 * I
                        swigluRecomputeBackward(gate: gu, up: gu + I, dOut: dHAct + r * I, count: I, out: hAct + r * I, dGate: d, dUp: d + I)
                    }
                }
                settings.round(hAct, m * I)
                down.backwardWeights(x: hAct, dy: dy, rows: m, gradients: g)
                settings.round(dGateUp, m * 2 * I)
                gateUp.backward(x: input + r0 * H, dy: dGateUp, rows: m, weights: w, gradients: g, dx: dInput + r0 * H)
                // Under a tensor split the block holds every row: one sum, as before blocks.
                try settings.sumOverTensorGroup(dInput + r0 * H, m * H)
                finish(r0..<(r0 + m))
            }
        } else {
            precondition(!s.gateUpPerBlock, "layers with LoRA adapters do not recompute [gate | up]")
            prepare(0..<n)
            activate(n, s.gateUp, a, settings: settings)
            down.backward(x: a.hAct, dy: dOut, rows: n, weights: w, gradients: g, dx: a.dHAct)
            settings.round(a.dHAct, n * I)
            // Rows of [dGate | dUp], then one product each for the weight and input gradients.
            let ptrs = Unchecked((s.gateUp, a.dHAct, a.dGateUp))
            settings.forEachRowChunk(n) { rows in
                let (gateUp, dHAct, dGateUp) = ptrs.value
                for r in rows {
                    let gu = gateUp + r * 2 * I, d = dGateUp + r * 2 * I
                    swigluBackward(gate: gu, up: gu + I, dOut: dHAct + r * I, count: I, dGate: d, dUp: d + I)
                }
            }
            settings.round(a.dGateUp, n * 2 * I)
            gateUp.backward(x: input, dy: a.dGateUp, rows: n, weights: w, gradients: g, dx: dInput)
            try settings.sumOverTensorGroup(dInput, n * H)
            finish(0..<n)
        }
    }
}

/// One pre-norm decoder layer: x + attention(norm(x)), then + mlp(norm(·)).
public struct DecoderBlock {
    /// Rows a layer's blocked passes take at a time (`MLP.blockRows`, `Attention.blockRows`).
    public static let defaultBlockRows = 256

    public var inputNorm: RMSNorm
    public var attention: Attention
    public var postAttentionNorm: RMSNorm
    public var mlp: MLP

    init(_ s: ParameterLayout.LayerSlices, dims d: LayerDimensions, eps: Float) {
        inputNorm = RMSNorm(s.inputNorm, eps: eps)
        postAttentionNorm = RMSNorm(s.postAttentionNorm, eps: eps)
        // The fused q/k/v product relies on the three weights being adjacent
        // (as this rank's slices are under a tensor split: heads by rows).
        precondition(s.k.offset == s.q.offset + s.q.count && s.v.offset == s.k.offset + s.k.count,
                     "q_proj, k_proj and v_proj must be adjacent")
        attention = Attention(qkv: Linear(inFeatures: d.hidden, outFeatures: s.q.shape[0] + 2 * s.k.shape[0], offset: s.q.offset),
                              o: Linear(s.o), heads: d.heads, kvHeads: d.kvHeads, headDim: d.headDim)
        // The fused gate/up product relies on the two weights being adjacent.
        precondition(s.up.offset == s.gate.offset + s.gate.count, "gate_proj and up_proj must be adjacent")
        mlp = MLP(gateUp: Linear(inFeatures: d.hidden, outFeatures: 2 * s.gate.shape[0], offset: s.gate.offset), down: Linear(s.down))
    }

    /// Layer `l` of `a`: hidden[l] → hidden[l + 1]. `recomputing`: the
    /// layer's saved tensors again from its kept input, for its backward;
    /// the same products and kernels on the same rows write the same bits,
    /// and the MLP stops at the [gate | up] rows (the output is kept).
    func forward(layer l: Int, _ a: Activations, weights w: UnsafePointer<Float>, settings: PassSettings,
                 recomputing: Bool = false) throws {
        // An adapter's dropout would draw new masks in a second forward.
        precondition(!(recomputing || a.recomputesGateUp(l)) || (attention.qkv.adapter == nil && attention.o.adapter == nil
                                                                 && mlp.gateUp.adapter == nil && mlp.down.adapter == nil),
                     "layers with LoRA adapters are not recomputed")
        let s = a.layer(l), n = a.n, H = a.dims.hidden
        // mid = x + attention(norm(x)): the norm's pass also starts mid at x.
        // Each norm runs on the rows its layer's next product reads, just before it.
        try attention.forward(input: a.normOut, saved: s, out: s.mid, a, weights: w, settings: settings) { rows in
            inputNorm.forward(x: s.x, rows, weights: w, out: a.normOut, rstd: s.rstd1, copy: s.mid, settings: settings)
        }
        settings.round(s.mid, n * H)
        // out = mid + mlp(norm(mid)), likewise.
        try mlp.forward(input: a.normOut, saved: s, out: s.out, a, weights: w, settings: settings, savedOnly: recomputing) { rows in
            postAttentionNorm.forward(x: s.mid, rows, weights: w, out: a.normOut, rstd: s.rstd2, copy: recomputing ? nil : s.out,
                                      settings: settings)
        }
        if !recomputing { settings.round(s.out, n * H) }
        if a.sharesSlot(l) { a.slotLayer = l }
    }

    /// Layer `l` backward: takes ∂/∂hidden[l + 1] in `a.dResidual`, leaves ∂/∂hidden[l] there.
    func backward(layer l: Int, _ a: Activations, weights w: UnsafePointer<Float>, gradients g: UnsafeMutablePointer<Float>?,
                  settings: PassSettings) throws {
        let s = a.layer(l), n = a.n, H = a.dims.hidden, dy = a.dResidual
        // The norms' outputs are recomputed rather than saved. The MLP's norm
        // runs block by block: forward as its products read the rows, backward
        // once the MLP has done with them (its gain's gradient accumulates row
        // by row, in the same order as over all rows at once).
        try mlp.backward(dOut: dy, input: a.normOut, saved: s, dInput: a.dNorm, a, weights: w, gradients: g, settings: settings,
                         prepare: { rows in
                             postAttentionNorm.forward(x: s.mid, rows, weights: w, out: a.normOut, rstd: s.rstd2, settings: settings)
                         },
                         finish: { rows in
                             let r0 = rows.lowerBound
                             settings.round(a.dNorm + r0 * H, rows.count * H)
                             postAttentionNorm.backward(dOut: a.dNorm + r0 * H, x: s.mid + r0 * H, rstd: s.rstd2 + r0, rows: rows.count,
                                                        weights: w, gradients: g, dx: dy + r0 * H)
                             settings.round(dy + r0 * H, rows.count * H)
                         })

        // The q/k/v weight gradient is one product over all rows (in blocks it was slower).
        inputNorm.forward(x: s.x, 0..<n, weights: w, out: a.normOut, rstd: s.rstd1, settings: settings)
        try attention.backward(dOut: dy, input: a.normOut, saved: s, dInput: a.dNorm, a, weights: w, gradients: g, settings: settings)
        settings.round(a.dNorm, n * H)
        inputNorm.backward(dOut: a.dNorm, x: s.x, rstd: s.rstd1, rows: n, weights: w, gradients: g, dx: dy)
        settings.round(dy, n * H)
    }
}

/// The final norm and the LM head projection onto (this rank's share of) the vocabulary.
public struct LanguageModelHead {
    public var norm: RMSNorm
    public var projection: Linear
    /// The first token id of this rank's vocabulary rows.
    public let firstToken: Int
}

extension Linear {
    /// `backward`'s input gradient alone: dx = dy·W (no adapter).
    func backwardInput(dy: UnsafePointer<Float>, rows: Int, weights: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        precondition(adapter == nil, "an adapter's backward needs the whole Linear.backward")
        BLAS.sgemm(.none, .none, m: rows, n: inFeatures, k: outFeatures, a: dy, lda: outFeatures, b: weights + offset,
                   ldb: inFeatures, c: dx, ldc: inFeatures)
    }

    /// `backward`'s weight gradient alone: dW += dyᵀ·x when trainable.
    func backwardWeights(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, gradients: UnsafeMutablePointer<Float>?) {
        guard trainable else { return }
        guard let gradients else { preconditionFailure("a trainable Linear needs a gradient buffer") }
        BLAS.sgemm(.transpose, .none, m: outFeatures, n: inFeatures, k: rows, a: dy, lda: outFeatures, b: x, ldb: inFeatures,
                   beta: 1, c: gradients + offset, ldc: inFeatures)
    }
}

extension RMSNorm {
    /// `forward` with the rows shared among the pass's threads (each row is
    /// normalised alone, so the result does not depend on the split).
    func forward(x: UnsafePointer<Float>, rows: Int, weights: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                 rstd: UnsafeMutablePointer<Float>, copy: UnsafeMutablePointer<Float>? = nil, settings: PassSettings) {
        let ptrs = Unchecked((self, x, weights, out, rstd, copy))
        settings.forEachRowChunk(rows) { chunk in
            let (norm, x, w, out, rstd, copy) = ptrs.value
            let r0 = chunk.lowerBound
            norm.forward(x: x + r0 * norm.dim, rows: chunk.count, weights: w, out: out + r0 * norm.dim, rstd: rstd + r0,
                         copy: copy.map { $0 + r0 * norm.dim })
        }
    }

    /// `forward` on rows `rows` of x, out, rstd and copy, the output rounded
    /// to the pass's precision.
    func forward(x: UnsafePointer<Float>, _ rows: Range<Int>, weights: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                 rstd: UnsafeMutablePointer<Float>, copy: UnsafeMutablePointer<Float>? = nil, settings: PassSettings) {
        let r0 = rows.lowerBound
        forward(x: x + r0 * dim, rows: rows.count, weights: weights, out: out + r0 * dim, rstd: rstd + r0,
                copy: copy.map { $0 + r0 * dim }, settings: settings)
        settings.round(out + r0 * dim, rows.count * dim)
    }
}
