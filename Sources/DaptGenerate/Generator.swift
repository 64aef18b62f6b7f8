import DaptCore
import DaptModel
import DaptTokenizer
import Foundation

/// Why a record's generation ended.
public enum FinishReason: String, Codable, Sendable, CaseIterable {
    /// A stop string or stop token.
    case stop
    /// The token budget ran out (unconstrained, or constrained and already complete).
    case length
    /// The model chose end-of-sequence.
    case eos
    /// The budget ran out under a constraint; its closing tokens were appended.
    case closed
    /// The budget ran out under a constraint that could not be closed: the output is an unfinished prefix.
    case truncated
}

/// One prompt to continue.
public struct GenerationPrompt {
    /// Names the record (and seeds its sampler).
    public var key: String
    public var tokens: [Int32]
    /// Restricts the output (grammar-constrained decoding), or nil.
    public var constraint: (any TokenConstraint)?

    public init(key: String, tokens: [Int32], constraint: (any TokenConstraint)? = nil) {
        self.key = key; self.tokens = tokens; self.constraint = constraint
    }
}

/// What one prompt produced.
public struct Generation: Equatable, Sendable {
    public var key: String
    /// Generated tokens, closing tokens included; end-of-sequence and stop tokens excluded.
    public var tokens: [Int32]
    /// The tokens' text, cut before a stop string.
    public var text: String
    public var promptTokens: Int
    public var finishReason: FinishReason
}

/// Continues batches of prompts with a KV cache: one prefill of every
/// prompt, then one token per step for each unfinished sequence.
public struct Generator {
    public let model: LlamaModel
    public let tokenizer: BPETokenizer
    public let config: GenerationConfig
    /// Tokens that end a record without being part of it.
    public var endTokens: Set<Int32>
    /// Tokens that end a record as a stop (e.g. a chat turn's end marker).
    public var stopTokens: Set<Int32> = []
    /// The model ids the tokenizer has text for, when that is not all of
    /// them (a vocabulary padded past the tokenizer's): no other id is ever
    /// generated, so every output decodes.
    public let decodableTokens: TokenMask?

    /// End of sequence: the config's `eos_token_id`, and the tokenizer's `<|eos|>`.
    public init(model: LlamaModel, tokenizer: BPETokenizer, config: GenerationConfig) throws {
        try config.validate()
        if tokenizer.vocabSize > model.config.vocabSize {
            throw ConfigError(field: "tokenizer", reason: "vocabulary of \(tokenizer.vocabSize) tokens exceeds the model's vocab_size \(model.config.vocabSize)")
        }
        self.model = model; self.tokenizer = tokenizer; self.config = config
        var ends = Set<Int32>()
        if let id = model.config.eosTokenId { ends.insert(Int32(id)) }
        if let id = tokenizer.id(of: SpecialTokens.eos) { ends.insert(Int32(id)) }
        endTokens = ends
        var decodable = TokenMask(count: model.config.vocabSize, allowed: true)
        for id in 0..<model.config.vocabSize where (try? tokenizer.bytes(of: UInt32(id))) == nil { decodable[id] = false }
        decodableTokens = decodable.allowedCount == model.config.vocabSize ? nil : decodable
    }

    /// Generates for `prompts` in batches of `config.batchSize`, in order.
    public func generate(_ prompts: [GenerationPrompt], progress: (Int) -> Void = { _ in }) throws -> [Generation] {
        var out: [Generation] = []
        for start in stride(from: 0, to: prompts.count, by: config.batchSize) {
            out += try generateBatch(Array(prompts[start..<min(start + config.batchSize, prompts.count)]))
            progress(out.count)
        }
        return out
    }

    /// One batch decoded together.
    public func generateBatch(_ prompts: [GenerationPrompt]) throws -> [Generation] {
        guard !prompts.isEmpty else { return [] }
        let vocab = model.config.vocabSize
        let capacity = (prompts.map(\.tokens.count).max() ?? 0) + config.maxNewTokens
        let cache = KVCache(config: model.config, batch: prompts.count, capacity: max(capacity, 1))
        var samplers = prompts.map { TokenSampler(config: config, recordKey: $0.key) }
        var constraints = prompts.map(\.constraint)
        var generated = [[Int32]](repeating: [], count: prompts.count)
        var finished = [FinishReason?](repeating: nil, count: prompts.count)
        var cut = [Int?](repeating: nil, count: prompts.count)
        var mask = TokenMask(count: vocab)
        let stopBytes = config.stop.map { Array($0.utf8) }
        var logits = try model.decode(prompts.map(\.tokens), cache: cache)
        while finished.contains(where: { $0 == nil }) {
            var next = [[Int32]](repeating: [], count: prompts.count)
            for i in prompts.indices where finished[i] == nil {
                if logits[i].isEmpty { throw ConfigError(field: "prompt", reason: "record \(prompts[i].key) has no prompt tokens") }
                var allowed = decodableTokens
                if constraints[i] != nil {
                    constraints[i]!.fillMask(&mask)
                    if let decodable = decodableTokens { mask.formIntersection(decodable) }
                    if mask.allowedCount == 0 { finished[i] = constraints[i]!.isComplete ? .eos : .truncated; continue }
                    allowed = mask
                }
                let token = Int32(samplers[i].next(logits: logits[i], mask: allowed))
                if endTokens.contains(token) { finished[i] = .eos; continue }
                if stopTokens.contains(token) { finished[i] = .stop; continue }
                try constraints[i]?.accept(Int(token))
                generated[i].append(token)
                if !stopBytes.isEmpty, let at = try firstStop(generated[i], stopBytes) { cut[i] = at; finished[i] = .stop; continue }
                if generated[i].count >= config.maxNewTokens {
                    if let constraint = constraints[i], !constraint.isComplete {
                        if let closing = constraint.closingTokens() {
                            generated[i] += closing.map { Int32($0) }
                            finished[i] = .closed
                        } else {
                            finished[i] = .truncated
                        }
                    } else {
                        finished[i] = .length
                    }
                    continue
                }
                next[i] = [token]
            }
            if next.allSatisfy(\.isEmpty) { break }
            logits = try model.decode(next, cache: cache)
        }
        return try prompts.indices.map { i in
            var bytes = try tokenizer.decode(generated[i].map { UInt32($0) })
            if let at = cut[i] { bytes.removeSubrange(at...) }
            return Generation(key: prompts[i].key, tokens: generated[i], text: String(decoding: bytes, as: UTF8.self),
                              promptTokens: prompts[i].tokens.count, finishReason: finished[i] ?? .length)
        }
    }

    /// The byte offset of the first stop string in the decoded tokens, if any.
    private func firstStop(_ tokens: [Int32], _ stops: [[UInt8]]) throws -> Int? {
        let bytes = try tokenizer.decode(tokens.map { UInt32($0) })
        var best: Int?
        for stop in stops where stop.count <= bytes.count {
            for at in 0...(bytes.count - stop.count) where bytes[at..<(at + stop.count)].elementsEqual(stop) {
                best = min(best ?? at, at)
                break
            }
        }
        return best
    }
}

extension TokenMask {
    /// `self = self ∩ other` (same count).
    mutating func formIntersection(_ other: TokenMask) {
        for id in 0..<count where self[id] && !other[id] { self[id] = false }
    }
}
