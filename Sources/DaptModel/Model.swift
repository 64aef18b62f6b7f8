import DaptBLAS
import DaptCluster
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
    public init(sum: Double, count: Int) { self.sum = sum; self.count = count }
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

/// A Llama-style decoder with hand-written forward and backward passes,
/// composed of layer types (`Embedding`, `DecoderBlock` = `RMSNorm` +
/// `Attention` + `MLP`, `LanguageModelHead`) over `Linear` products.
/// Parameters and gradients each live in one flat buffer sliced by
/// `layout`; backward accumulates into `gradients` (zero it between steps),
/// which is allocated on first use: a model whose base is frozen (LoRA,
/// evaluation, generation) never holds one.
/// The passes are exposed per stage — embedding, a range of layers, the
/// head — on an `Activations` context per micro-batch, so a pipeline stage
/// can run only its layers and hold several micro-batches; the methods
/// without a context use one the model keeps.
public final class LlamaModel: @unchecked Sendable {
    /// Fixed but for the RoPE settings (`setRope`).
    public private(set) var config: LlamaConfig
    public let layout: ParameterLayout
    public let parameters: ParameterBuffer
    /// The base parameters' gradients, allocated (zeroed) on first use.
    public var gradients: ParameterBuffer {
        if let g = gradientStorage { return g }
        let g = ParameterBuffer(layout: layout)
        gradientStorage = g
        return g
    }
    private var gradientStorage: ParameterBuffer?
    /// False until something asks for `gradients`: backward under a frozen
    /// base computes input gradients only and leaves it unallocated.
    public var holdsGradientBuffer: Bool { gradientStorage != nil }
    /// The sizes this model's layers compute with.
    public let dimensions: LayerDimensions
    /// Nil on a pipeline stage other than the first.
    public var embedding: Embedding?
    /// The layers of `layout.stage` (all of them unless a pipeline stage); `block(l)` by model index.
    public var blocks: [DecoderBlock]
    /// Nil on a pipeline stage other than the last.
    public var head: LanguageModelHead?
    public var attentionKernel: AttentionKernel = .tiled(AttentionTiles())
    /// Threads for the attention kernels (split by kv-head groups). Matrix
    /// products use OpenBLAS's own thread count (`BLAS.setThreads`).
    /// (A change drops the model's own context: blocks of rows, and so the
    /// [gate | up] scratch, grow with the threads.)
    public var threads: Int = 1 {
        didSet { if threads != oldValue { current = nil } }
    }
    /// Mixed precision: every activation and activation gradient that a
    /// matrix product or element-wise kernel produces is rounded to this
    /// precision (weights are rounded by the caller, who keeps fp32 master
    /// weights). Norm statistics, softmax and loss stay in fp32.
    public var activationPrecision: Precision = .fp32
    /// The ranks that split every layer with this one (tensor parallelism);
    /// nil when this model is whole.
    public let tensorGroup: (any Communicator)?
    /// The context of the methods that take none.
    private var current: Activations?
    /// Whether a frozen head runs on the rows with a target only when at
    /// most three quarters have one (off: the reference, in tests).
    var gathersHeadRows = true
    /// Rows the output head and its loss compute at once (nil: chosen by
    /// `HeadChunking.rows` from the head's size; see `headChunks`). Not
    /// used under a tensor split, where the head takes all rows at once.
    public var headChunkRows: Int?
    /// How many of each stage's first layers keep only their input in
    /// contexts made from now on, backward recomputing the rest of their
    /// saved tensors before their backward (activation recomputation: per
    /// layer about one more forward without the MLP's down product, for its
    /// saved tensors but the input). At most a stage's layers − 1 take
    /// effect (the last is never rerun), so the model's layer count means
    /// all. Gradients and losses are the same bits either way. Not for
    /// layers with LoRA adapters.
    public var recomputedLayers = 0 {
        didSet { if recomputedLayers != oldValue { current = nil } }
    }
    /// What those layers recompute: the whole layer, or (`.mlp`) only the
    /// [gate | up] rows, about half of a layer's saved floats for their one
    /// product (no attention, no all-reduce): less compute per float saved
    /// than whole layers, the more so the longer the context. With `.mlp`
    /// a stage's last layer can recompute too.
    public var recomputeGranularity = RecomputeGranularity.layer {
        didSet { if recomputeGranularity != oldValue { current = nil } }
    }
    /// Rows each layer's MLP takes through its norm, products and SwiGLU
    /// at a time, forward and backward (`MLP.blockRows`), and its
    /// attention through its norm, the q/k/v product and RoPE in the
    /// forward pass (`Attention.blockRows`; its backward takes all rows);
    /// for tuning against a machine's caches. A pass may take more
    /// (`rowsPerBlock`): at least `PassSettings.rowsPerWorker` per thread,
    /// and all rows under an adapter (or, in the MLP, a tensor split). The
    /// setter sets both; the getter reads the MLP's.
    public var layerBlockRows: Int {
        get { blocks.first?.mlp.blockRows ?? DecoderBlock.defaultBlockRows }
        set {
            precondition(newValue > 0, "layer block rows \(newValue)")
            for i in blocks.indices { blocks[i].mlp.blockRows = newValue; blocks[i].attention.blockRows = newValue }
            current = nil
        }
    }
    let headScratch = HeadScratch()

    /// A model, whole or — given a tensor group of T > 1 ranks — this rank's
    /// part of it: 1/T of the attention heads, kv heads, intermediate size
    /// and vocabulary (which T must divide; see `tensorParallelProblems`);
    /// given a pipeline stage, only that stage's layers (and the embedding
    /// on the first, the head on the last).
    public init(config: LlamaConfig, tensorGroup: (any Communicator)? = nil, stage: PipelineStage? = nil) throws {
        try config.validate()
        let group = tensorGroup.flatMap { $0.size > 1 ? $0 : nil }
        let t = group?.size ?? 1, rank = group?.rank ?? 0
        if let problem = config.tensorParallelProblems(t).first { throw ConfigError(field: "pretrain.parallel.tensor", reason: problem) }
        self.config = config
        self.tensorGroup = group
        layout = ParameterLayout(config: config, tensorRank: rank, tensorParallel: t, stage: stage)
        parameters = ParameterBuffer(layout: layout)
        let d = LayerDimensions(config: config, tensorParallel: t)
        dimensions = d
        let eps = Float(config.rmsNormEps)
        embedding = layout.embedding.map { Embedding($0, firstToken: rank * d.vocab, vocab: config.vocabSize) }
        blocks = layout.layers.map { DecoderBlock($0, dims: d, eps: eps) }
        if let finalNorm = layout.finalNorm, let lmHead = layout.lmHead {
            head = LanguageModelHead(norm: RMSNorm(finalNorm, eps: eps), projection: Linear(lmHead), firstToken: rank * d.vocab)
        }
    }

    /// Loads `config.json` and the safetensors weights from a Hugging Face
    /// model directory (this rank's part of them, given a tensor group).
    public convenience init(directory: String, tensorGroup: (any Communicator)? = nil, stage: PipelineStage? = nil) throws {
        try self.init(config: LlamaConfig.load(path: directory + "/config.json"), tensorGroup: tensorGroup, stage: stage)
        try parameters.loadSafeTensors(directory: directory)
    }

    /// Writes `config.json` and `model.safetensors` (F32 unless `dtype`) of a whole model.
    public func save(directory: String, dtype: SafeTensorsDType = .f32) throws {
        try FileSystem.makeDirectories(directory)
        try config.save(path: directory + "/config.json")
        try parameters.saveSafeTensors(path: directory + "/model.safetensors", dtype: dtype)
    }

    /// Normal(0, std) matrices and unit norm gains (transformers' init),
    /// from a seeded generator: the same seed gives the same weights, split
    /// or not (a part is cut from the whole model's values).
    public func initializeRandom(seed: UInt64, std: Float = 0.02) {
        guard layout.isSplit || layout.stage.isPartial else { return Self.initializeRandom(parameters, seed: seed, std: std) }
        let whole = ParameterBuffer(layout: ParameterLayout(config: config))
        Self.initializeRandom(whole, seed: seed, std: std)
        parameters.copyParts(of: whole)
    }

    private static func initializeRandom(_ parameters: ParameterBuffer, seed: UInt64, std: Float) {
        let layout = parameters.layout
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

    /// The stage methods without a context run the model's own context.
    /// Only the collectives of a split model can fail, and a failed
    /// collective leaves the tensor group unusable: it stops the process.
    private func unsplit<R>(_ body: () throws -> R) -> R {
        do { return try body() } catch { preconditionFailure("a pass failed: \(error)") }
    }

    var settings: PassSettings {
        PassSettings(kernel: attentionKernel, threads: threads, precision: activationPrecision, tensorGroup: tensorGroup)
    }

    /// True when some base parameter is trainable (not frozen by `trainable = false`).
    public var trainsBaseParameters: Bool {
        embedding?.trainable == true || head?.norm.trainable == true || head?.projection.trainable == true || blocks.contains {
            $0.inputNorm.trainable || $0.postAttentionNorm.trainable || $0.attention.qkv.trainable
                || $0.attention.o.trainable || $0.mlp.gateUp.trainable || $0.mlp.down.trainable
        }
    }

    /// Where backward accumulates base gradients; nil when the whole base is frozen.
    var gradientPointer: UnsafeMutablePointer<Float>? {
        trainsBaseParameters ? gradients.storage.baseAddress! : nil
    }

    // MARK: Whole passes

    /// Forward and backward on `batch`: gradients += ∂(lossScale · Σ loss /
    /// normalizer)/∂θ, where normalizer defaults to the batch's counted
    /// tokens (mean loss). Pass the global token count as `normalizer` to
    /// accumulate micro-batches. Returns the unscaled summed loss.
    /// `gradientsFinal(offset)` is called as soon as this pass has added its
    /// last to every gradient at flat index ≥ offset (after the head, after
    /// each layer, last with 0), so their reduction can start during backward.
    @discardableResult
    public func forwardBackward(_ batch: TokenBatch, lossScale: Float = 1, normalizer: Double? = nil,
                                gradientsFinal: ((_ offset: Int) throws -> Void)? = nil) throws -> LossResult {
        try prepare(batch)
        let a = current!
        try embedForward(a)
        try forwardLayers(layout.stage.layers, a)
        let loss = try headForwardBackward(a, lossScale: lossScale, normalizer: normalizer)
        if let finalNorm = layout.finalNorm { try gradientsFinal?(finalNorm.offset) }
        try backwardLayers(layout.stage.layers, a, gradientsFinal: gradientsFinal)
        try embedBackward(a)
        try gradientsFinal?(0)
        return loss
    }

    /// Forward only: the loss (evaluation).
    public func loss(_ batch: TokenBatch) throws -> LossResult {
        try prepare(batch)
        let a = current!
        try embedForward(a)
        try forwardLayers(layout.stage.layers, a)
        return try headForward(a)
    }

    /// Forward only: each position's loss (negative log-likelihood of its
    /// target; 0 where the target is `ignoreIndex`), [batch·seqLen]. Scoring
    /// needs the losses per document, not only their sum.
    public func tokenLosses(_ batch: TokenBatch) throws -> [Float] {
        precondition(!layout.isSplit, "per-token losses are computed by a whole model")
        try prepare(batch)
        let a = current!
        try embedForward(a)
        try forwardLayers(layout.stage.layers, a)
        headNormForward(a)
        // Only positions with a target need the LM head: gather their rows
        // (padding and window overlaps have none), so the head's matrix
        // product and the softmax cover just the predicted tokens.
        let (rows, targets) = compactTargetRows(a)
        var losses = [Float](repeating: 0, count: a.n)
        let m = rows.count
        guard m > 0 else { return losses }
        var compact = [Float](repeating: 0, count: m)
        _ = try compact.withUnsafeMutableBufferPointer { out in
            try targets.withUnsafeBufferPointer { t in
                try headChunks(x: a.finalOut, targets: t.baseAddress!, rows: m, backward: nil, rowLoss: out.baseAddress!)
            }
        }
        for (k, r) in rows.enumerated() { losses[r] = compact[k] }
        return losses
    }

    /// The rows of `a`'s batch that have a target, and their targets; moves
    /// those rows of `finalOut` to its first slots (row i to slot k ≤ i,
    /// earlier slots already moved), for a head over them only.
    private func compactTargetRows(_ a: Activations) -> (rows: [Int], targets: [Int32]) {
        let H = dimensions.hidden
        var rows: [Int] = [], targets: [Int32] = []
        rows.reserveCapacity(a.n)
        targets.reserveCapacity(a.n)
        for (r, t) in a.batch!.targets.enumerated() where t != ignoreIndex { rows.append(r); targets.append(t) }
        for (k, r) in rows.enumerated() where k != r { (a.finalOut + k * H).update(from: a.finalOut + r * H, count: H) }
        return (rows, targets)
    }

    /// Forward only: logits [batch·seqLen, vocab] (of this rank's vocabulary when split).
    public func logits(_ batch: TokenBatch) throws -> [Float] {
        try prepare(batch)
        let a = current!
        try embedForward(a)
        try forwardLayers(layout.stage.layers, a)
        headNormForward(a)
        return headLogits(a, rows: a.n)
    }

    /// Forward only: the logits at positions `rows` (ascending indices into
    /// the batch's batch·seqLen positions), [rows.count, vocab]. Scoring that
    /// reads a few positions (the last of each prompt) skips the LM head on the others.
    public func logits(_ batch: TokenBatch, rows: [Int]) throws -> [Float] {
        precondition(!layout.isSplit, "selected logits are computed by a whole model")
        precondition(zip(rows, rows.dropFirst()).allSatisfy { $0 < $1 } && rows.allSatisfy { $0 >= 0 && $0 < batch.tokenCount },
                     "rows must be ascending positions of the batch")
        try prepare(batch)
        let a = current!, H = dimensions.hidden
        try embedForward(a)
        try forwardLayers(layout.stage.layers, a)
        guard !rows.isEmpty else { return [] }
        headNormForward(a)
        // Compact in place, as tokenLosses does (row i moves to slot k ≤ i).
        for (k, r) in rows.enumerated() where k != r { (a.finalOut + k * H).update(from: a.finalOut + r * H, count: H) }
        return headLogits(a, rows: rows.count)
    }

    // MARK: Stages

    /// A context for `batch`: activations for its shape, RoPE tables and document starts.
    public func makeActivations(_ batch: TokenBatch) throws -> Activations {
        let a = Activations(dims: dimensions, layers: layout.stage.layers.count, firstLayer: layout.stage.layers.lowerBound,
                            batchSize: batch.batchSize, seqLen: batch.seqLen, recomputedLayers: recomputedLayers,
                            granularity: recomputeGranularity, gateUpBlockRows: gateUpBlockRows(batch))
        try prepare(batch, in: a)
        return a
    }

    /// Rows of the MLP's blocks for `batch` (the [gate | up] scratch's, when recomputed).
    private func gateUpBlockRows(_ batch: TokenBatch) -> Int {
        blocks.map { $0.mlp.rowsPerBlock(batch.batchSize * batch.seqLen, settings) }.max() ?? 1
    }

    /// Changes the RoPE settings (a context-length curriculum stage): the
    /// weights do not depend on them; cached RoPE tables are dropped.
    public func setRope(theta: Double, scaling: RopeScaling?) throws {
        var changed = config
        changed.ropeTheta = theta
        changed.ropeScaling = scaling
        try changed.validate()
        config = changed
        current = nil
    }

    /// Sets `batch` in `a` (whose shape it must have): RoPE tables and
    /// document starts, reused when positions and documents repeat.
    public func prepare(_ batch: TokenBatch, in a: Activations) throws {
        try batch.check(vocab: config.vocabSize)
        precondition(a.batchSize == batch.batchSize && a.seqLen == batch.seqLen, "a context for \(a.batchSize)×\(a.seqLen) given a \(batch.batchSize)×\(batch.seqLen) batch")
        // Tables depend only on positions (and documents on ids): reuse them
        // across steps when those repeat, as they do for fixed-length packing.
        if a.ropePositions != batch.positions {
            let maxPosition = Int(batch.positions.max() ?? 0)
            let freqs = RopeFrequencies(config: config, sequenceLength: maxPosition + 1)
            (a.ropeCos, a.ropeSin) = freqs.tables(positions: batch.positions)
            a.ropePositions = batch.positions
        }
        a.starts = documentStarts(documentIds: batch.documentIds, batch: batch.batchSize, seqLen: batch.seqLen)
        a.batch = batch
    }

    /// Sets the batch of the model's own context, allocating activations
    /// for its shape (kept while the shape is unchanged).
    public func prepare(_ batch: TokenBatch) throws {
        // The whole passes use this context; a pipeline stage runs its stage methods on contexts of its own.
        precondition(!layout.stage.isPartial, "a whole pass on pipeline stage \(layout.stage.index) of \(layout.stage.count)")
        try batch.check(vocab: config.vocabSize)
        if current == nil || current!.batchSize != batch.batchSize || current!.seqLen != batch.seqLen {
            current = nil
            current = Activations(dims: dimensions, layers: layout.stage.layers.count, firstLayer: layout.stage.layers.lowerBound,
                                  batchSize: batch.batchSize, seqLen: batch.seqLen, recomputedLayers: recomputedLayers,
                                  granularity: recomputeGranularity, gateUpBlockRows: gateUpBlockRows(batch))
        }
        try prepare(batch, in: current!)
    }

    /// Hidden state entering layer `boundary` (0…layers; `layers` is the
    /// input of the final norm), [batch·seqLen, hidden]. Pipeline stages
    /// read and write activations here.
    public func withHidden<R>(boundary: Int, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try withHidden(boundary: boundary, current!, body)
    }

    public func withHidden<R>(boundary: Int, _ a: Activations, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeMutableBufferPointer(start: a.hidden(boundary), count: a.n * dimensions.hidden))
    }

    /// ∂loss/∂hidden at the boundary the backward pass has reached.
    public func withHiddenGradient<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try withHiddenGradient(current!, body)
    }

    public func withHiddenGradient<R>(_ a: Activations, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeMutableBufferPointer(start: a.dResidual, count: a.n * dimensions.hidden))
    }

    public func embedForward() { unsplit { try embedForward(current!) } }

    public func embedForward(_ a: Activations) throws {
        let b = a.batch!
        parameters.withBuffer { p in
            b.tokens.withUnsafeBufferPointer { t in
                embedding!.forward(tokens: t.baseAddress!, count: a.n, weights: p.baseAddress!, out: a.residual)
            }
        }
        // Each rank looked up the tokens of its vocabulary rows, zeros for the rest.
        try settings.sumOverTensorGroup(a.residual, a.n * dimensions.hidden)
        settings.round(a.residual, a.n * dimensions.hidden)
    }

    public func embedBackward() { unsplit { try embedBackward(current!) } }

    public func embedBackward(_ a: Activations) throws {
        guard embedding?.trainable == true else { return }
        let b = a.batch!
        gradients.withBuffer { g in
            b.tokens.withUnsafeBufferPointer { t in
                embedding!.backward(tokens: t.baseAddress!, count: a.n, dOut: a.dResidual, gradients: g.baseAddress!)
            }
        }
    }

    /// Runs layers `range` forward: hidden[range.lowerBound] → hidden[range.upperBound].
    public func forwardLayers(_ range: Range<Int>) { unsplit { try forwardLayers(range, current!) } }

    public func forwardLayers(_ range: Range<Int>, _ a: Activations) throws {
        let w = UnsafePointer(parameters.storage.baseAddress!), settings = self.settings
        let first = layout.stage.layers.lowerBound
        for l in range { try blocks[l - first].forward(layer: l, a, weights: w, settings: settings) }
    }

    /// Runs layers `range` backward (in reverse), taking ∂/∂hidden[upper]
    /// from the hidden gradient and leaving ∂/∂hidden[lower] there.
    public func backwardLayers(_ range: Range<Int>) { unsplit { try backwardLayers(range, current!) } }

    public func backwardLayers(_ range: Range<Int>, _ a: Activations, gradientsFinal: ((_ offset: Int) throws -> Void)? = nil) throws {
        let w = UnsafePointer(parameters.storage.baseAddress!), g = gradientPointer, settings = self.settings
        let first = layout.stage.layers.lowerBound
        for l in range.reversed() {
            if a.recomputes(l) && a.slotLayer != l {
                try blocks[l - first].forward(layer: l, a, weights: w, settings: settings, recomputing: true)
            }
            try blocks[l - first].backward(layer: l, a, weights: w, gradients: g, settings: settings)
            // A layer's gradients are its own range; later ranges were final before it.
            try gradientsFinal?(layout.layer(l).range.lowerBound)
        }
    }

    /// The final norm over all rows of `a` into `finalOut` (rounded).
    private func headNormForward(_ a: Activations) {
        let w = UnsafePointer(parameters.storage.baseAddress!)
        head!.norm.forward(x: a.hidden(config.numHiddenLayers), rows: a.n, weights: w, out: a.finalOut, rstd: a.finalRstd)
        settings.round(a.finalOut, a.n * dimensions.hidden)
    }

    /// The logits of the first `rows` rows of `finalOut`, [rows, vocab] (rounded).
    private func headLogits(_ a: Activations, rows: Int) -> [Float] {
        let V = dimensions.vocab, settings = self.settings, head = self.head!
        let w = UnsafePointer(parameters.storage.baseAddress!)
        return [Float](unsafeUninitializedCapacity: rows * V) { out, count in
            if rows > 0 {
                head.projection.forward(x: a.finalOut, rows: rows, weights: w, y: out.baseAddress!)
                settings.round(out.baseAddress!, rows * V)
            }
            count = rows * V
        }
    }

    /// Final norm, LM head and loss (no gradient).
    @discardableResult
    public func headForward() -> LossResult { unsplit { try headForward(current!) } }

    @discardableResult
    public func headForward(_ a: Activations) throws -> LossResult {
        headNormForward(a)
        let r = try a.batch!.targets.withUnsafeBufferPointer {
            try headChunks(x: a.finalOut, targets: $0.baseAddress!, rows: a.n, backward: nil)
        }
        return LossResult(sum: r.sum, count: r.count)
    }

    /// Head forward, loss, and head backward: leaves ∂/∂hidden[layers] in
    /// the hidden gradient (overwriting it) and adds LM-head and final-norm
    /// gradients.
    public func headForwardBackward(lossScale: Float = 1, normalizer: Double? = nil) -> LossResult {
        unsplit { try headForwardBackward(current!, lossScale: lossScale, normalizer: normalizer) }
    }

    public func headForwardBackward(_ a: Activations, lossScale: Float = 1, normalizer: Double? = nil) throws -> LossResult {
        let n = a.n, H = dimensions.hidden, settings = self.settings
        let w = UnsafePointer(parameters.storage.baseAddress!), g = gradientPointer
        let batch = a.batch!, head = self.head!
        let counted = batch.targets.reduce(0) { $0 + ($1 == ignoreIndex ? 0 : 1) }
        let denominator = normalizer ?? Double(max(counted, 1))
        let gradientScale = Float(Double(lossScale) / denominator)
        // A frozen head (fine-tuning, whose loss covers the assistant tokens
        // only) runs on the rows with a target. A trained head runs over all
        // rows, so its loss has the bits of `loss`.
        if gathersHeadRows && tensorGroup == nil && !head.projection.trainable && counted * 4 <= n * 3 {
            return try headForwardBackwardGathered(a, gradientScale: gradientScale)
        }
        headNormForward(a)
        let r = try batch.targets.withUnsafeBufferPointer {
            try headChunks(x: a.finalOut, targets: $0.baseAddress!, rows: n, backward: (gradientScale, a.dNorm))
        }
        try settings.sumOverTensorGroup(a.dNorm, n * H)
        settings.round(a.dNorm, n * H)
        a.dResidual.update(repeating: 0, count: n * H)
        head.norm.backward(dOut: a.dNorm, x: a.hidden(config.numHiddenLayers), rstd: a.finalRstd, rows: n,
                           weights: w, gradients: g, dx: a.dResidual)
        settings.round(a.dResidual, n * H)
        return LossResult(sum: r.sum, count: r.count)
    }

    /// `headForwardBackward` over the rows that have a target only (a
    /// fine-tuning batch whose loss covers the assistant tokens): the LM
    /// head's products and the softmax skip the rest, whose gradient is zero.
    private func headForwardBackwardGathered(_ a: Activations, gradientScale: Float) throws -> LossResult {
        let n = a.n, H = dimensions.hidden, settings = self.settings
        let w = UnsafePointer(parameters.storage.baseAddress!), g = gradientPointer, head = self.head!
        let last = a.hidden(config.numHiddenLayers)
        headNormForward(a)
        let (rows, targets) = compactTargetRows(a)
        let m = rows.count
        let r = try targets.withUnsafeBufferPointer {
            try headChunks(x: a.finalOut, targets: $0.baseAddress!, rows: m, backward: (gradientScale, a.dNorm))
        }
        settings.round(a.dNorm, m * H)
        // Scatter the rows back (slot k to row rows[k] ≥ k, last first); rows without a target get zero.
        var next = n
        for k in stride(from: m - 1, through: 0, by: -1) {
            let row = rows[k]
            (a.dNorm + (row + 1) * H).update(repeating: 0, count: (next - row - 1) * H)
            if row != k { (a.dNorm + row * H).update(from: a.dNorm + k * H, count: H) }
            next = row
        }
        a.dNorm.update(repeating: 0, count: next * H)
        a.dResidual.update(repeating: 0, count: n * H)
        head.norm.backward(dOut: a.dNorm, x: last, rstd: a.finalRstd, rows: n, weights: w, gradients: g, dx: a.dResidual)
        settings.round(a.dResidual, n * H)
        return LossResult(sum: r.sum, count: r.count)
    }
}

extension LlamaConfig {
    /// Floating-point operations of one forward + backward pass over `batch`
    /// (matrix products: 6 per weight per token, embedding lookup excluded;
    /// attention: 12 · qDim per visible key per token per layer). The
    /// benchmark's PyTorch peer uses the same formula.
    public func trainingFlops(_ batch: TokenBatch) -> Double {
        let matmulWeights = Double(numHiddenLayers * layerMatrixWeights + vocabSize * hiddenSize)
        let starts = documentStarts(documentIds: batch.documentIds, batch: batch.batchSize, seqLen: batch.seqLen)
        var visibleKeys = 0.0
        for idx in 0..<batch.tokenCount { visibleKeys += Double(idx % batch.seqLen - Int(starts[idx]) + 1) }
        return 6 * matmulWeights * Double(batch.tokenCount)
            + 12 * Double(qDimension) * visibleKeys * Double(numHiddenLayers)
    }

    /// Weights of one decoder layer's matrices (q, k, v, o, gate, up, down).
    public var layerMatrixWeights: Int {
        hiddenSize * qDimension * 2 + hiddenSize * kvDimension * 2 + 3 * hiddenSize * intermediateSize
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
