import DaptCore
import Foundation

/// RoPE frequency scaling, as Hugging Face's `rope_scaling` object.
public struct RopeScaling: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case linear, dynamic, yarn
    }
    public var type: Kind
    public var factor: Double
    /// YaRN (and optionally dynamic): the context length the base model was trained at.
    public var originalMaxPositionEmbeddings: Int?
    public var betaFast: Double
    public var betaSlow: Double
    /// YaRN: overrides 0.1·ln(factor)+1 when given.
    public var attentionFactor: Double?
    /// YaRN: round the correction range outward to whole dimensions
    /// (transformers' default).
    public var truncate: Bool = true

    public init(type: Kind, factor: Double, originalMaxPositionEmbeddings: Int? = nil,
                betaFast: Double = 32, betaSlow: Double = 1, attentionFactor: Double? = nil) {
        self.type = type; self.factor = factor
        self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
        self.betaFast = betaFast; self.betaSlow = betaSlow; self.attentionFactor = attentionFactor
    }

    enum CodingKeys: String, CodingKey {
        case type, ropeType = "rope_type", factor
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case betaFast = "beta_fast", betaSlow = "beta_slow", attentionFactor = "attention_factor"
        case truncate, mscale, mscaleAllDim = "mscale_all_dim"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // transformers writes `rope_type` (and older files `type`).
        let name = try c.decodeIfPresent(String.self, forKey: .ropeType) ?? c.decodeIfPresent(String.self, forKey: .type)
        guard let name, let kind = Kind(rawValue: name) else {
            throw ConfigError(field: "rope_scaling.rope_type",
                              reason: "must be one of \(Kind.allCases.map(\.rawValue).joined(separator: ", ")), got \(name.map { "\"\($0)\"" } ?? "nothing")")
        }
        type = kind
        factor = try c.decode(Double.self, forKey: .factor)
        originalMaxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings)
        betaFast = try c.value(.betaFast, default: 32)
        betaSlow = try c.value(.betaSlow, default: 1)
        attentionFactor = try c.decodeIfPresent(Double.self, forKey: .attentionFactor)
        truncate = try c.value(.truncate, default: true)
        if c.contains(.mscale) || c.contains(.mscaleAllDim) {
            throw ConfigError(field: "rope_scaling.mscale", reason: "DeepSeek-style mscale is not supported")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(type.rawValue, forKey: .ropeType)
        try c.encode(type.rawValue, forKey: .type)
        try c.encode(factor, forKey: .factor)
        try c.encodeIfPresent(originalMaxPositionEmbeddings, forKey: .originalMaxPositionEmbeddings)
        if type == .yarn {
            try c.encode(betaFast, forKey: .betaFast)
            try c.encode(betaSlow, forKey: .betaSlow)
            try c.encodeIfPresent(attentionFactor, forKey: .attentionFactor)
            if !truncate { try c.encode(false, forKey: .truncate) }
        }
    }
}

/// A Llama-style decoder's shape, with Hugging Face `LlamaConfig` keys so
/// that `config.json` files move between dapt and transformers unchanged.
public struct LlamaConfig: Codable, Equatable, Sendable {
    public var vocabSize: Int = 32000
    public var hiddenSize: Int = 4096
    public var intermediateSize: Int = 11008
    public var numHiddenLayers: Int = 32
    public var numAttentionHeads: Int = 32
    public var numKeyValueHeads: Int = 32
    public var maxPositionEmbeddings: Int = 2048
    public var rmsNormEps: Double = 1e-6
    public var ropeTheta: Double = 10000
    public var ropeScaling: RopeScaling? = nil
    public var tieWordEmbeddings: Bool = false
    public var headDim: Int? = nil
    public var bosTokenId: Int? = nil
    public var eosTokenId: Int? = nil

    public init() {}

    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
                numAttentionHeads: Int, numKeyValueHeads: Int? = nil, maxPositionEmbeddings: Int = 2048,
                rmsNormEps: Double = 1e-6, ropeTheta: Double = 10000, ropeScaling: RopeScaling? = nil,
                tieWordEmbeddings: Bool = false) {
        self.vocabSize = vocabSize; self.hiddenSize = hiddenSize; self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers; self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads ?? numAttentionHeads
        self.maxPositionEmbeddings = maxPositionEmbeddings; self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta; self.ropeScaling = ropeScaling; self.tieWordEmbeddings = tieWordEmbeddings
    }

    /// Size of one attention head (`head_dim`, default hidden / heads).
    public var headDimension: Int { headDim ?? hiddenSize / max(numAttentionHeads, 1) }
    public var kvDimension: Int { numKeyValueHeads * headDimension }
    public var qDimension: Int { numAttentionHeads * headDimension }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", maxPositionEmbeddings = "max_position_embeddings"
        case rmsNormEps = "rms_norm_eps", ropeTheta = "rope_theta", ropeScaling = "rope_scaling"
        case tieWordEmbeddings = "tie_word_embeddings", headDim = "head_dim"
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
        case modelType = "model_type", architectures, hiddenAct = "hidden_act"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias", torchDtype = "torch_dtype"
        case ropeParameters = "rope_parameters"
    }

    /// transformers ≥ 5 writes `rope_parameters` (theta and scaling in one object).
    struct RopeParameters: Codable {
        var ropeTheta: Double?
        var ropeType: String?
        enum CodingKeys: String, CodingKey { case ropeTheta = "rope_theta", ropeType = "rope_type" }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vocabSize = try c.value(.vocabSize, default: 32000)
        hiddenSize = try c.value(.hiddenSize, default: 4096)
        intermediateSize = try c.value(.intermediateSize, default: 11008)
        numHiddenLayers = try c.value(.numHiddenLayers, default: 32)
        numAttentionHeads = try c.value(.numAttentionHeads, default: 32)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        maxPositionEmbeddings = try c.value(.maxPositionEmbeddings, default: 2048)
        rmsNormEps = try c.value(.rmsNormEps, default: 1e-6)
        ropeTheta = try c.value(.ropeTheta, default: 10000)
        ropeScaling = try c.decodeIfPresent(RopeScaling.self, forKey: .ropeScaling)
        if let parameters = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters) {
            if let theta = parameters.ropeTheta { ropeTheta = theta }
            if let type = parameters.ropeType, type != "default" {
                ropeScaling = try c.decode(RopeScaling.self, forKey: .ropeParameters)
            }
        }
        tieWordEmbeddings = try c.value(.tieWordEmbeddings, default: false)
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        bosTokenId = try? c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        eosTokenId = try? c.decodeIfPresent(Int.self, forKey: .eosTokenId)
        if let type = try c.decodeIfPresent(String.self, forKey: .modelType), type != "llama" {
            throw ConfigError(field: "model_type", reason: "\"\(type)\" is not a Llama model (dapt loads model_type \"llama\")")
        }
        // Features dapt does not implement must not be silently ignored.
        if let act = try c.decodeIfPresent(String.self, forKey: .hiddenAct), act != "silu" {
            throw ConfigError(field: "hidden_act", reason: "only \"silu\" is supported, got \"\(act)\"")
        }
        if try c.decodeIfPresent(Bool.self, forKey: .attentionBias) == true {
            throw ConfigError(field: "attention_bias", reason: "biases are not supported")
        }
        if try c.decodeIfPresent(Bool.self, forKey: .mlpBias) == true {
            throw ConfigError(field: "mlp_bias", reason: "biases are not supported")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(["LlamaForCausalLM"], forKey: .architectures)
        try c.encode("llama", forKey: .modelType)
        try c.encode("silu", forKey: .hiddenAct)
        try c.encode(false, forKey: .attentionBias)
        try c.encode(false, forKey: .mlpBias)
        try c.encode("float32", forKey: .torchDtype)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        if let ropeScaling { try c.encode(ropeScaling, forKey: .ropeScaling) } else { try c.encodeNil(forKey: .ropeScaling) }
        // Both spellings, so transformers 4.x (rope_theta/rope_scaling) and 5.x (rope_parameters) agree.
        var parameters = c.nestedContainer(keyedBy: AnyCodingKey.self, forKey: .ropeParameters)
        try parameters.encode(ropeTheta, forKey: AnyCodingKey(stringValue: "rope_theta"))
        try parameters.encode(ropeScaling?.type.rawValue ?? "default", forKey: AnyCodingKey(stringValue: "rope_type"))
        if let s = ropeScaling {
            try parameters.encode(s.factor, forKey: AnyCodingKey(stringValue: "factor"))
            try parameters.encodeIfPresent(s.originalMaxPositionEmbeddings, forKey: AnyCodingKey(stringValue: "original_max_position_embeddings"))
            if s.type == .yarn {
                try parameters.encode(s.betaFast, forKey: AnyCodingKey(stringValue: "beta_fast"))
                try parameters.encode(s.betaSlow, forKey: AnyCodingKey(stringValue: "beta_slow"))
                try parameters.encodeIfPresent(s.attentionFactor, forKey: AnyCodingKey(stringValue: "attention_factor"))
                if !s.truncate { try parameters.encode(false, forKey: AnyCodingKey(stringValue: "truncate")) }
            }
        }
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encodeIfPresent(headDim, forKey: .headDim)
        try c.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        try c.encodeIfPresent(eosTokenId, forKey: .eosTokenId)
    }

    /// Throws a `ConfigError` naming the first inconsistent field.
    public func validate() throws {
        try Check.positive(vocabSize, "vocab_size")
        try Check.positive(hiddenSize, "hidden_size")
        try Check.positive(intermediateSize, "intermediate_size")
        try Check.positive(numHiddenLayers, "num_hidden_layers")
        try Check.positive(numAttentionHeads, "num_attention_heads")
        try Check.positive(numKeyValueHeads, "num_key_value_heads")
        try Check.positive(maxPositionEmbeddings, "max_position_embeddings")
        try Check.positive(rmsNormEps, "rms_norm_eps")
        try Check.positive(ropeTheta, "rope_theta")
        if headDim == nil, hiddenSize % numAttentionHeads != 0 {
            throw ConfigError(field: "hidden_size", reason: "\(hiddenSize) is not divisible by num_attention_heads \(numAttentionHeads)")
        }
        if numAttentionHeads % numKeyValueHeads != 0 {
            throw ConfigError(field: "num_key_value_heads", reason: "\(numKeyValueHeads) does not divide num_attention_heads \(numAttentionHeads)")
        }
        if headDimension % 2 != 0 || headDimension <= 0 {
            throw ConfigError(field: "head_dim", reason: "must be even and > 0 for RoPE, got \(headDimension)")
        }
        if let s = ropeScaling {
            try Check.finite(s.factor, "rope_scaling.factor")
            if s.type == .linear || s.type == .dynamic {
                if s.factor < 1 { throw ConfigError(field: "rope_scaling.factor", reason: "must be >= 1, got \(s.factor)") }
            } else {
                if s.factor <= 0 { throw ConfigError(field: "rope_scaling.factor", reason: "must be > 0, got \(s.factor)") }
                if let o = s.originalMaxPositionEmbeddings { try Check.positive(o, "rope_scaling.original_max_position_embeddings") }
                if s.betaFast <= s.betaSlow {
                    throw ConfigError(field: "rope_scaling.beta_fast", reason: "must be > beta_slow (\(s.betaSlow)), got \(s.betaFast)")
                }
            }
        }
    }

    /// Reads and validates a Hugging Face `config.json`.
    public static func load(path: String) throws -> LlamaConfig {
        let bytes = try FileSystem.readAll(path)
        let config: LlamaConfig
        do {
            config = try JSONDecoder().decode(LlamaConfig.self, from: Data(bytes))
        } catch let error as ConfigError {
            throw ConfigError(file: path, field: error.field, reason: error.reason)
        } catch let error as DecodingError {
            throw ConfigLoader.describe(error, file: path)
        } catch {
            throw ConfigError(file: path, field: "", reason: "not a valid config.json: \(error)")
        }
        do { try config.validate() } catch var error as ConfigError { error.file = path; throw error }
        return config
    }

    /// The longest sequence the positions cover: `max_position_embeddings`,
    /// or with RoPE scaling `factor` × the original context when that is more.
    public var positionLimit: Int {
        guard let s = ropeScaling else { return maxPositionEmbeddings }
        let scaled = s.factor * Double(s.originalMaxPositionEmbeddings ?? maxPositionEmbeddings)
        return max(maxPositionEmbeddings, Int(scaled.rounded(.down)))
    }

    /// The fields in which two configs describe different networks (name:
    /// this value vs the other's); token ids and dtype do not count.
    public func architectureDifferences(from other: LlamaConfig) -> [String] {
        var out: [String] = []
        func compare<T: Equatable>(_ name: String, _ a: T, _ b: T) { if a != b { out.append("\(name) \(a) vs \(b)") } }
        compare("vocab_size", vocabSize, other.vocabSize)
        compare("hidden_size", hiddenSize, other.hiddenSize)
        compare("intermediate_size", intermediateSize, other.intermediateSize)
        compare("num_hidden_layers", numHiddenLayers, other.numHiddenLayers)
        compare("num_attention_heads", numAttentionHeads, other.numAttentionHeads)
        compare("num_key_value_heads", numKeyValueHeads, other.numKeyValueHeads)
        compare("head_dim", headDimension, other.headDimension)
        compare("max_position_embeddings", maxPositionEmbeddings, other.maxPositionEmbeddings)
        compare("rms_norm_eps", rmsNormEps, other.rmsNormEps)
        compare("rope_theta", ropeTheta, other.ropeTheta)
        compare("rope_scaling", ropeScaling.map { "\($0.type.rawValue) × \($0.factor)" } ?? "none",
                other.ropeScaling.map { "\($0.type.rawValue) × \($0.factor)" } ?? "none")
        if ropeScaling != other.ropeScaling, out.last?.hasPrefix("rope_scaling") != true { out.append("rope_scaling parameters") }
        compare("tie_word_embeddings", tieWordEmbeddings, other.tieWordEmbeddings)
        return out
    }

    public func jsonBytes() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return Array(try encoder.encode(self)) + [0x0A]
    }

    /// Writes `config.json` atomically.
    public func save(path: String) throws {
        let writer = try FileWriter(path: path, atomic: true)
        try writer.write(jsonBytes())
        try writer.commit()
    }
}
