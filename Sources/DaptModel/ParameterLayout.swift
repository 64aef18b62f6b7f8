import DaptCluster
import DaptCore
/// One named tensor inside a flat Float buffer.
public struct ParameterSlice: Equatable, Sendable {
    /// Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    public var name: String
    /// Row-major shape (PyTorch's `[out, in]` for projections).
    public var shape: [Int]
    /// First element in the flat buffer.
    public var offset: Int
    public var count: Int { shape.reduce(1, *) }
    public var range: Range<Int> { offset..<(offset + count) }
    /// How the tensor is divided among tensor-parallel ranks (nil: whole, on every rank).
    public var split: TensorSplit?
    /// Weight decay applies to matrices, not to norm gains.
    public var isNormWeight: Bool { shape.count == 1 }
    /// The whole tensor's shape (the saved one).
    public var fullShape: [Int] { split?.fullShape ?? shape }

    public init(name: String, shape: [Int], offset: Int, split: TensorSplit? = nil) {
        self.name = name; self.shape = shape; self.offset = offset; self.split = split
    }
}

/// One rank's part of a tensor split among `parts` tensor-parallel ranks:
/// a block of rows (axis 0: output features, vocabulary entries) or of
/// columns (axis 1: input features) of the `[out, in]` matrix.
public struct TensorSplit: Equatable, Sendable {
    public var axis: Int
    public var part: Int
    public var parts: Int
    public var fullShape: [Int]

    /// The shape of one part.
    public var shape: [Int] {
        var s = fullShape
        s[axis] /= parts
        return s
    }

    /// Copies this part out of the whole tensor.
    public func extract(from whole: UnsafeBufferPointer<Float>, into part: UnsafeMutableBufferPointer<Float>) {
        extract(elements: 0..<part.count, from: whole, into: part)
    }

    /// Copies this part into its place in the whole tensor.
    public func insert(_ part: UnsafeBufferPointer<Float>, into whole: UnsafeMutableBufferPointer<Float>) {
        insert(part, elements: 0..<part.count, into: whole)
    }

    /// Copies elements `elements` of this part (row-major in the part) out of
    /// the whole tensor into `values` (`elements.count` of them).
    public func extract(elements: Range<Int>, from whole: UnsafeBufferPointer<Float>, into values: UnsafeMutableBufferPointer<Float>) {
        forEachRun(elements) { wholeStart, partStart, count in
            let at = partStart - elements.lowerBound
            _ = UnsafeMutableBufferPointer(rebasing: values[at..<(at + count)])
                .update(fromContentsOf: whole[wholeStart..<(wholeStart + count)])
        }
    }

    /// Copies `values`, elements `elements` of this part, into their places in the whole tensor.
    public func insert(_ values: UnsafeBufferPointer<Float>, elements: Range<Int>, into whole: UnsafeMutableBufferPointer<Float>) {
        forEachRun(elements) { wholeStart, partStart, count in
            let at = partStart - elements.lowerBound
            _ = UnsafeMutableBufferPointer(rebasing: whole[wholeStart..<(wholeStart + count)])
                .update(fromContentsOf: values[at..<(at + count)])
        }
    }

    /// The contiguous runs of the part's `elements` inside the whole: a piece
    /// of one block of rows, or a piece of every row it touches.
    public func forEachRun(_ elements: Range<Int>, _ body: (_ wholeStart: Int, _ partStart: Int, _ count: Int) -> Void) {
        guard !elements.isEmpty else { return }
        let rows = fullShape[0], columns = fullShape.count > 1 ? fullShape[1] : 1
        if axis == 0 {
            let start = part * (rows / parts * columns)
            body(start + elements.lowerBound, elements.lowerBound, elements.count)
        } else {
            let width = columns / parts
            var p = elements.lowerBound
            while p < elements.upperBound {
                let r = p / width, c = p % width
                let n = min(width - c, elements.upperBound - p)
                body(r * columns + part * width + c, p, n)
                p += n
            }
        }
    }
}

/// Where every parameter lives in the one contiguous buffer that holds all
/// parameters (and, with the same offsets, gradients and optimizer moments).
/// Order: embedding; per layer q,k,v,o, gate,up,down, the two norms; final
/// norm; `lm_head` unless tied. A layer's tensors are contiguous. Split among
/// T tensor ranks, a rank holds its part of each matrix (Megatron-LM's split:
/// q/k/v and gate/up by output rows — attention heads —, o_proj and
/// down_proj by input columns, the embedding and LM head by vocabulary rows)
/// and every norm gain. Split among pipeline stages, a rank holds only its
/// stage's tensors (`PipelineStage`): its layers, the embedding on the
/// first stage, the final norm and head on the last; with tied embeddings
/// the last stage's head is its own copy of `model.embed_tokens.weight`.
public struct ParameterLayout: Equatable, Sendable {
    public struct LayerSlices: Equatable, Sendable {
        public var q, k, v, o, gate, up, down, inputNorm, postAttentionNorm: ParameterSlice
        public var all: [ParameterSlice] { [q, k, v, o, gate, up, down, inputNorm, postAttentionNorm] }
        /// The contiguous buffer range of this layer's parameters.
        public var range: Range<Int> { q.offset..<(postAttentionNorm.range.upperBound) }
    }

    public let slices: [ParameterSlice]
    /// The token embedding (nil on a pipeline stage other than the first).
    public let embedding: ParameterSlice?
    /// The layers this layout holds, `stage.layers` in order (`layer(_:)` by model index).
    public let layers: [LayerSlices]
    /// Nil on a pipeline stage other than the last.
    public let finalNorm: ParameterSlice?
    /// The LM head's weight: `lm_head.weight`, or the embedding when tied
    /// (on a last stage that is not also the first, its own copy of it).
    public let lmHead: ParameterSlice?
    public let totalCount: Int
    /// This layout's tensor rank and the tensor degree (0 and 1 unsplit).
    public let tensorRank: Int, tensorParallel: Int
    /// The pipeline stage this layout holds (the whole model: one stage).
    public let stage: PipelineStage

    /// The layout of tensor rank `tensorRank` of `tensorParallel` (the
    /// config's sizes must divide; see `LlamaConfig.tensorParallelProblems`)
    /// on pipeline stage `stage` (nil: every layer).
    public init(config c: LlamaConfig, tensorRank: Int = 0, tensorParallel: Int = 1, stage: PipelineStage? = nil) {
        precondition((0..<tensorParallel).contains(tensorRank))
        let stage = stage ?? .whole(layers: c.numHiddenLayers)
        precondition(stage.layers.lowerBound >= 0 && stage.layers.upperBound <= c.numHiddenLayers, "stage \(stage.layers) outside the model's layers")
        self.tensorRank = tensorRank
        self.tensorParallel = tensorParallel
        self.stage = stage
        var offset = 0
        var all: [ParameterSlice] = []
        /// `axis`: the dimension split among tensor ranks (nil: replicated).
        func add(_ name: String, _ shape: [Int], split axis: Int? = nil) -> ParameterSlice {
            let split = axis.flatMap { tensorParallel > 1 ? TensorSplit(axis: $0, part: tensorRank, parts: tensorParallel, fullShape: shape) : nil }
            let s = ParameterSlice(name: name, shape: split?.shape ?? shape, offset: offset, split: split)
            offset += s.count
            all.append(s)
            return s
        }
        let h = c.hiddenSize
        let embeddingName = "model.embed_tokens.weight"
        embedding = stage.isFirst ? add(embeddingName, [c.vocabSize, h], split: 0) : nil
        var layers: [LayerSlices] = []
        for i in stage.layers {
            let p = "model.layers.\(i)."
            let q = add(p + "self_attn.q_proj.weight", [c.qDimension, h], split: 0)
            let k = add(p + "self_attn.k_proj.weight", [c.kvDimension, h], split: 0)
            let v = add(p + "self_attn.v_proj.weight", [c.kvDimension, h], split: 0)
            let o = add(p + "self_attn.o_proj.weight", [h, c.qDimension], split: 1)
            let g = add(p + "mlp.gate_proj.weight", [c.intermediateSize, h], split: 0)
            let u = add(p + "mlp.up_proj.weight", [c.intermediateSize, h], split: 0)
            let d = add(p + "mlp.down_proj.weight", [h, c.intermediateSize], split: 1)
            let n1 = add(p + "input_layernorm.weight", [h])
            let n2 = add(p + "post_attention_layernorm.weight", [h])
            layers.append(LayerSlices(q: q, k: k, v: v, o: o, gate: g, up: u, down: d, inputNorm: n1, postAttentionNorm: n2))
        }
        self.layers = layers
        if stage.isLast {
            finalNorm = add("model.norm.weight", [h])
            if !c.tieWordEmbeddings {
                lmHead = add("lm_head.weight", [c.vocabSize, h], split: 0)
            } else {
                lmHead = embedding ?? add(embeddingName, [c.vocabSize, h], split: 0)
            }
        } else {
            finalNorm = nil; lmHead = nil
        }
        slices = all
        totalCount = offset
    }

    public func slice(named name: String) -> ParameterSlice? { slices.first { $0.name == name } }

    /// Layer `l` of the model (which this layout's stage must hold).
    public func layer(_ l: Int) -> LayerSlices { layers[l - stage.layers.lowerBound] }

    /// True when the tensors are parts of a model split among tensor ranks.
    public var isSplit: Bool { tensorParallel > 1 }

    /// True for the last stage's copy of a tied embedding matrix, which the
    /// first stage holds too (counted once in a norm, saved once).
    public func isTiedCopy(_ s: ParameterSlice) -> Bool {
        stage.isPartial && !stage.isFirst && s.name == "model.embed_tokens.weight"
    }
}

/// Non-blocking collectives may work on a buffer in place: its storage never moves.
extension ParameterBuffer: StableStorage {}

/// A contiguous Float buffer with a layout: parameters, gradients or
/// optimizer moments. A class so that kernels write into it without copies;
/// unsafe pointers are handed out only inside closures.
public final class ParameterBuffer: @unchecked Sendable {
    public let layout: ParameterLayout
    let storage: UnsafeMutableBufferPointer<Float>

    public init(layout: ParameterLayout) {
        self.layout = layout
        // Huge pages when large: collectives over it copy about twice as fast.
        storage = LargeAllocation.allocate(repeating: 0, count: max(layout.totalCount, 1))
    }

    deinit { LargeAllocation.deallocate(storage) }

    public var count: Int { layout.totalCount }

    public func zero() { storage.update(repeating: 0) }

    /// Copies of one tensor's values (tests, checkpoints).
    public func values(_ slice: ParameterSlice) -> [Float] { Array(storage[slice.range]) }

    public func values(named name: String) -> [Float]? { layout.slice(named: name).map(values) }

    public func set(_ slice: ParameterSlice, _ values: [Float]) {
        precondition(values.count == slice.count, "\(slice.name): \(values.count) values for \(slice.count) elements")
        for (i, v) in values.enumerated() { storage[slice.offset + i] = v }
    }

    public subscript(index: Int) -> Float {
        get { storage[index] }
        set { storage[index] = newValue }
    }

    /// The whole buffer, for all-reduce or the optimizer.
    public func withBuffer<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(storage)
    }

    public func withSlice<R>(_ slice: ParameterSlice, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeMutableBufferPointer(rebasing: storage[slice.range]))
    }

    public func copy(from other: ParameterBuffer) {
        precondition(other.layout == layout, "copying between different layouts")
        _ = storage.update(fromContentsOf: other.storage)
    }
}
