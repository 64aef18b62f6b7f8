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
    /// Weight decay applies to matrices, not to norm gains.
    public var isNormWeight: Bool { shape.count == 1 }
}

/// Where every parameter lives in the one contiguous buffer that holds all
/// parameters (and, with the same offsets, gradients and optimizer moments).
/// Order: embedding; per layer q,k,v,o, gate,up,down, the two norms; final
/// norm; `lm_head` unless tied. A layer's tensors are contiguous, so a
/// pipeline stage owns one range of the buffer.
public struct ParameterLayout: Equatable, Sendable {
    public struct LayerSlices: Equatable, Sendable {
        public var q, k, v, o, gate, up, down, inputNorm, postAttentionNorm: ParameterSlice
        public var all: [ParameterSlice] { [q, k, v, o, gate, up, down, inputNorm, postAttentionNorm] }
        /// The contiguous buffer range of this layer's parameters.
        public var range: Range<Int> { q.offset..<(postAttentionNorm.range.upperBound) }
    }

    public let slices: [ParameterSlice]
    public let embedding: ParameterSlice
    public let layers: [LayerSlices]
    public let finalNorm: ParameterSlice
    /// The LM head's weight: `lm_head.weight`, or the embedding when tied.
    public let lmHead: ParameterSlice
    public let totalCount: Int

    public init(config c: LlamaConfig) {
        var offset = 0
        var all: [ParameterSlice] = []
        func add(_ name: String, _ shape: [Int]) -> ParameterSlice {
            let s = ParameterSlice(name: name, shape: shape, offset: offset)
            offset += s.count
            all.append(s)
            return s
        }
        let h = c.hiddenSize
        embedding = add("model.embed_tokens.weight", [c.vocabSize, h])
        var layers: [LayerSlices] = []
        for i in 0..<c.numHiddenLayers {
            let p = "model.layers.\(i)."
            let q = add(p + "self_attn.q_proj.weight", [c.qDimension, h])
            let k = add(p + "self_attn.k_proj.weight", [c.kvDimension, h])
            let v = add(p + "self_attn.v_proj.weight", [c.kvDimension, h])
            let o = add(p + "self_attn.o_proj.weight", [h, c.qDimension])
            let g = add(p + "mlp.gate_proj.weight", [c.intermediateSize, h])
            let u = add(p + "mlp.up_proj.weight", [c.intermediateSize, h])
            let d = add(p + "mlp.down_proj.weight", [h, c.intermediateSize])
            let n1 = add(p + "input_layernorm.weight", [h])
            let n2 = add(p + "post_attention_layernorm.weight", [h])
            layers.append(LayerSlices(q: q, k: k, v: v, o: o, gate: g, up: u, down: d, inputNorm: n1, postAttentionNorm: n2))
        }
        self.layers = layers
        finalNorm = add("model.norm.weight", [h])
        lmHead = c.tieWordEmbeddings ? embedding : add("lm_head.weight", [c.vocabSize, h])
        slices = all
        totalCount = offset
    }

    public func slice(named name: String) -> ParameterSlice? { slices.first { $0.name == name } }
}

/// A contiguous Float buffer with a layout: parameters, gradients or
/// optimizer moments. A class so that kernels write into it without copies;
/// unsafe pointers are handed out only inside closures.
public final class ParameterBuffer: @unchecked Sendable {
    public let layout: ParameterLayout
    public let storage: UnsafeMutableBufferPointer<Float>

    public init(layout: ParameterLayout) {
        self.layout = layout
        storage = .allocate(capacity: max(layout.totalCount, 1))
        storage.initialize(repeating: 0)
    }

    deinit { storage.deallocate() }

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
