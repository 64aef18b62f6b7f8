import DaptCore

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

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case sequenceLength = "sequence_length", batchSize = "batch_size", maxSequences = "max_sequences"
        case addBos = "add_bos", addEos = "add_eos"
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self), d = EvalConfig()
        sequenceLength = try c.value(.sequenceLength, default: d.sequenceLength)
        batchSize = try c.value(.batchSize, default: d.batchSize)
        maxSequences = try c.value(.maxSequences, default: d.maxSequences)
        addBos = try c.value(.addBos, default: d.addBos)
        addEos = try c.value(.addEos, default: d.addEos)
    }

    public func validate() throws {
        try Check.positive(sequenceLength, "sequence_length")
        try Check.positive(batchSize, "batch_size")
        try Check.nonNegative(maxSequences, "max_sequences")
    }

    /// The evaluation of `model` on `input` with these settings.
    public func request(model: String, input: String, tokenizer: String?) -> PerplexityRequest {
        var request = PerplexityRequest(model: model, input: input, tokenizer: tokenizer)
        request.sequenceLength = sequenceLength
        request.batchSize = batchSize
        request.maxSequences = maxSequences
        request.addBos = addBos
        request.addEos = addEos
        return request
    }
}
