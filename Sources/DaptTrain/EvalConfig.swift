import DaptCore
import DaptModel

/// The `eval:` section: how `dapt eval ppl` packs its input into sequences.
public struct EvalConfig: StageConfig, Equatable {
    /// Tokens per sequence.
    public var sequenceLength = 256
    /// Sequences per forward pass.
    public var batchSize = 4
    /// Evaluate at most this many sequences (0: all).
    public var maxSequences = 0
    /// JSONL input: start / end each document with <|bos|> / <|eos|> (as `tokenizer encode`).
    public var addBos = false
    public var addEos = true
    /// Evaluate under this RoPE scaling instead of the model's own (context
    /// extension without training; as Hugging Face's `rope_scaling`).
    public var ropeScaling: RopeScaling? = nil
    /// Evaluate with this RoPE base instead of the model's own.
    public var ropeTheta: Double? = nil
    /// Evaluate with this position limit instead of the model's own (plain
    /// RoPE past the trained context, for comparison with scaling).
    public var maxPositionEmbeddings: Int? = nil

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case sequenceLength = "sequence_length", batchSize = "batch_size", maxSequences = "max_sequences"
        case addBos = "add_bos", addEos = "add_eos", ropeScaling = "rope_scaling", ropeTheta = "rope_theta"
        case maxPositionEmbeddings = "max_position_embeddings"
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self), d = EvalConfig()
        sequenceLength = try c.value(.sequenceLength, default: d.sequenceLength)
        batchSize = try c.value(.batchSize, default: d.batchSize)
        maxSequences = try c.value(.maxSequences, default: d.maxSequences)
        addBos = try c.value(.addBos, default: d.addBos)
        addEos = try c.value(.addEos, default: d.addEos)
        ropeScaling = try c.decodeIfPresent(RopeScaling.self, forKey: .ropeScaling)
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta)
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings)
    }

    public func validate() throws {
        try Check.positive(sequenceLength, "sequence_length")
        try Check.positive(batchSize, "batch_size")
        try Check.nonNegative(maxSequences, "max_sequences")
        if let ropeTheta { try Check.positive(ropeTheta, "rope_theta") }
        if let maxPositionEmbeddings { try Check.positive(maxPositionEmbeddings, "max_position_embeddings") }
    }

    /// The evaluation of `model` on `input` with these settings.
    public func request(model: String, input: String, tokenizer: String?) -> PerplexityRequest {
        var request = PerplexityRequest(model: model, input: input, tokenizer: tokenizer)
        request.sequenceLength = sequenceLength
        request.batchSize = batchSize
        request.maxSequences = maxSequences
        request.addBos = addBos
        request.addEos = addEos
        request.ropeScaling = ropeScaling
        request.ropeTheta = ropeTheta
        request.maxPositionEmbeddings = maxPositionEmbeddings
        return request
    }
}
