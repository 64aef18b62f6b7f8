import DaptBLAS
import DaptCore
import Foundation

/// A projection LoRA can adapt, named as in Hugging Face Llama (and PEFT's `target_modules`).
public enum LoraTarget: String, CaseIterable, Codable, Sendable, Comparable {
    case qProj = "q_proj", kProj = "k_proj", vProj = "v_proj", oProj = "o_proj"
    case gateProj = "gate_proj", upProj = "up_proj", downProj = "down_proj"

    /// The module path inside a decoder layer.
    public var modulePath: String {
        switch self {
        case .qProj, .kProj, .vProj, .oProj: return "self_attn." + rawValue
        case .gateProj, .upProj, .downProj: return "mlp." + rawValue
        }
    }

    public static func < (a: LoraTarget, b: LoraTarget) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// LoRA's shape: rank, scale (`lora_alpha / r`, or `/ √r` with rsLoRA),
/// dropout on the adapter's input, and the adapted projections.
public struct LoraSettings: Equatable, Sendable {
    public var rank: Int
    public var alpha: Double
    public var dropout: Double
    public var targets: [LoraTarget]
    public var useRSLoRA: Bool

    public init(rank: Int, alpha: Double, dropout: Double = 0, targets: [LoraTarget], useRSLoRA: Bool = false) {
        self.rank = rank; self.alpha = alpha; self.dropout = dropout
        self.targets = Array(Set(targets)).sorted(); self.useRSLoRA = useRSLoRA
    }

    public var scale: Float { Float(useRSLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank)) }
}

public enum LoraError: Error, CustomStringConvertible, Equatable {
    case badAdapter(path: String, field: String, reason: String)

    public var description: String {
        switch self {
        case let .badAdapter(path, field, reason): return field.isEmpty ? "\(path): \(reason)" : "\(path): \(field): \(reason)"
        }
    }
}

/// One adapted projection: A [r, in] and B [out, r] in the adapter buffer,
/// added to output columns `column ..< column + out` of a `Linear` whose rows
/// are `stride` wide (q_proj, k_proj and v_proj share the fused [q | k | v]
/// product, gate_proj and up_proj the fused [gate | up] one).
public struct LoraModule: Sendable, Equatable {
    public var layer: Int
    public var target: LoraTarget
    public var a: ParameterSlice
    public var b: ParameterSlice
    public var inFeatures: Int { a.shape[1] }
    public var outFeatures: Int { b.shape[0] }
    public var column: Int
    public var stride: Int
    /// PEFT's prefix for this module's tensors.
    public var peftPrefix: String { "base_model.model.model.layers.\(layer).\(target.modulePath)" }
}

/// The LoRA adapters of one model: every adapted projection's A and B in one
/// flat trainable buffer (their own layout), with gradients beside them.
/// `attach` hooks them onto the model's `Linear` layers and freezes the base:
/// the base then computes no weight gradients and needs no optimizer state.
public final class LoraAdapters: @unchecked Sendable {
    public let settings: LoraSettings
    public let config: LlamaConfig
    public let modules: [LoraModule]
    /// A then B per module, in layer and target order; names as PEFT saves them.
    public let slices: [ParameterSlice]
    public let totalCount: Int
    public let parameters: UnsafeMutableBufferPointer<Float>
    public let gradients: UnsafeMutableBufferPointer<Float>
    /// Dropout draws its masks from this seed (set it per micro-batch); off when false.
    public var dropoutSeed: UInt64 = 0
    public var training = false
    let scratch = LoraScratch()

    public init(config: LlamaConfig, settings: LoraSettings) throws {
        guard settings.rank > 0 else { throw LoraError.badAdapter(path: "", field: "r", reason: "must be > 0, got \(settings.rank)") }
        guard !settings.targets.isEmpty else { throw LoraError.badAdapter(path: "", field: "target_modules", reason: "is empty") }
        self.config = config
        self.settings = settings
        let H = config.hiddenSize, I = config.intermediateSize, qD = config.qDimension, kvD = config.kvDimension, r = settings.rank
        var offset = 0
        var modules: [LoraModule] = []
        var slices: [ParameterSlice] = []
        for l in 0..<config.numHiddenLayers {
            for t in settings.targets {
                let (input, output, column, stride): (Int, Int, Int, Int)
                switch t {
                case .qProj: (input, output, column, stride) = (H, qD, 0, qD + 2 * kvD)
                case .kProj: (input, output, column, stride) = (H, kvD, qD, qD + 2 * kvD)
                case .vProj: (input, output, column, stride) = (H, kvD, qD + kvD, qD + 2 * kvD)
                case .oProj: (input, output, column, stride) = (qD, H, 0, H)
                case .gateProj: (input, output, column, stride) = (H, I, 0, 2 * I)
                case .upProj: (input, output, column, stride) = (H, I, I, 2 * I)
                case .downProj: (input, output, column, stride) = (I, H, 0, H)
                }
                let prefix = "base_model.model.model.layers.\(l).\(t.modulePath)"
                let a = ParameterSlice(name: prefix + ".lora_A.weight", shape: [r, input], offset: offset)
                offset += a.count
                let b = ParameterSlice(name: prefix + ".lora_B.weight", shape: [output, r], offset: offset)
                offset += b.count
                slices += [a, b]
                modules.append(LoraModule(layer: l, target: t, a: a, b: b, column: column, stride: stride))
            }
        }
        self.modules = modules
        self.slices = slices
        totalCount = offset
        parameters = .allocate(capacity: max(offset, 1))
        gradients = .allocate(capacity: max(offset, 1))
        parameters.initialize(repeating: 0)
        gradients.initialize(repeating: 0)
    }

    deinit {
        parameters.deallocate()
        gradients.deallocate()
    }

    /// PEFT's default initialisation from a seeded generator: A uniform in
    /// ±1/√in (kaiming-uniform with a = √5), B zero, so the adapted model
    /// starts equal to the base.
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(seed: StableHash.mix64(seed ^ 0x4C6F_5241))
        for m in modules {
            let bound = 1 / Float(m.inFeatures).squareRoot()
            for i in m.a.range { parameters[i] = (Float(rng.next() >> 40) * 0x1.0p-24 * 2 - 1) * bound }
            for i in m.b.range { parameters[i] = 0 }
        }
    }

    public func zeroGradients() { gradients.update(repeating: 0) }

    /// Hooks the adapters onto `model`'s projections and freezes every base
    /// weight (embedding, norms, projections, head).
    public func attach(to model: LlamaModel) {
        precondition(model.config.architectureDifferences(from: config).isEmpty, "adapters made for another architecture")
        model.embedding?.trainable = false
        model.head?.norm.trainable = false
        model.head?.projection.trainable = false
        for l in model.blocks.indices {
            model.blocks[l].inputNorm.trainable = false
            model.blocks[l].postAttentionNorm.trainable = false
            model.blocks[l].attention.qkv.trainable = false
            model.blocks[l].attention.o.trainable = false
            model.blocks[l].mlp.gateUp.trainable = false
            model.blocks[l].mlp.down.trainable = false
            let here = modules.indices.filter { modules[$0].layer == l }
            func hook(_ targets: [LoraTarget]) -> LoraLinearAdapter? {
                let parts = here.filter { targets.contains(modules[$0].target) }
                return parts.isEmpty ? nil : LoraLinearAdapter(adapters: self, modules: parts)
            }
            model.blocks[l].attention.qkv.adapter = hook([.qProj, .kProj, .vProj])
            model.blocks[l].attention.o.adapter = hook([.oProj])
            model.blocks[l].mlp.gateUp.adapter = hook([.gateProj, .upProj])
            model.blocks[l].mlp.down.adapter = hook([.downProj])
        }
    }

    /// Adds scale·B·A to each adapted base weight of `model` (call on a model
    /// the adapters are not attached to).
    public func merge(into model: LlamaModel) {
        let scale = settings.scale
        model.parameters.withBuffer { w in
            for m in modules {
                let s = model.layout.layers[m.layer]
                let weight: ParameterSlice
                switch m.target {
                case .qProj: weight = s.q
                case .kProj: weight = s.k
                case .vProj: weight = s.v
                case .oProj: weight = s.o
                case .gateProj: weight = s.gate
                case .upProj: weight = s.up
                case .downProj: weight = s.down
                }
                BLAS.sgemm(.none, .none, m: m.outFeatures, n: m.inFeatures, k: settings.rank, alpha: scale,
                           a: parameters.baseAddress! + m.b.offset, lda: settings.rank,
                           b: parameters.baseAddress! + m.a.offset, ldb: m.inFeatures, beta: 1,
                           c: w.baseAddress! + weight.offset, ldc: m.inFeatures)
            }
        }
    }

    // MARK: PEFT format

    public static let configFile = "adapter_config.json"
    public static let weightsFile = "adapter_model.safetensors"

    /// Writes `adapter_config.json` and `adapter_model.safetensors` as PEFT's
    /// `save_pretrained` does, so `PeftModel.from_pretrained` loads them.
    public func save(directory: String, baseModel: String) throws {
        try FileSystem.makeDirectories(directory)
        let config: JSONValue = .object([
            ("base_model_name_or_path", .string(baseModel)),
            ("bias", .string("none")),
            ("fan_in_fan_out", .bool(false)),
            ("inference_mode", .bool(true)),
            ("init_lora_weights", .bool(true)),
            ("lora_alpha", .float(settings.alpha)),
            ("lora_dropout", .float(settings.dropout)),
            ("modules_to_save", .null),
            ("peft_type", .string("LORA")),
            ("r", .integer(settings.rank)),
            ("target_modules", .array(settings.targets.map { .string($0.rawValue) })),
            ("task_type", .string("CAUSAL_LM")),
            ("use_dora", .bool(false)),
            ("use_rslora", .bool(settings.useRSLoRA)),
        ])
        let writer = try FileWriter(path: directory + "/" + Self.configFile, atomic: true)
        try writer.write(config.text(indent: 2) + "\n")
        try writer.commit()
        let values = UnsafeBufferPointer(parameters)
        try SafeTensors.write(path: directory + "/" + Self.weightsFile, tensors: slices.map {
            .init(name: $0.name, shape: $0.shape, values: UnsafeBufferPointer(rebasing: values[$0.range]))
        }, metadata: ["format": "pt"])
    }

    /// Reads an adapter saved by PEFT (or by `save`) for a model of `config`.
    /// Only what dapt implements is accepted: plain LoRA (optionally rsLoRA)
    /// on Llama projections, one rank and alpha for all, no biases, no DoRA.
    public static func load(directory: String, config: LlamaConfig) throws -> LoraAdapters {
        let configPath = directory + "/" + configFile
        func bad(_ field: String, _ reason: String) -> LoraError { .badAdapter(path: configPath, field: field, reason: reason) }
        let root: JSONValue
        do { root = try JSONValue.parse(FileSystem.readAll(configPath)) } catch let e as JSONSyntaxError { throw bad("", e.description) }
        if let t = root["peft_type"]?.string, t != "LORA" { throw bad("peft_type", "\"\(t)\" is not supported (only LORA)") }
        guard let rank = root["r"]?.int, rank > 0 else { throw bad("r", "missing or not a positive integer") }
        guard let alpha = root["lora_alpha"]?.double else { throw bad("lora_alpha", "missing or not a number") }
        let dropout = root["lora_dropout"]?.double ?? 0
        if let b = root["bias"]?.string, b != "none" { throw bad("bias", "\"\(b)\" is not supported (only none)") }
        if root["use_dora"]?.bool == true { throw bad("use_dora", "DoRA is not supported") }
        if root["fan_in_fan_out"]?.bool == true { throw bad("fan_in_fan_out", "not supported for Llama projections") }
        for key in ["rank_pattern", "alpha_pattern"] {
            if let m = root[key]?.members, !m.isEmpty { throw bad(key, "per-module ranks and alphas are not supported") }
        }
        if let l = root["layers_to_transform"], !l.isNull { throw bad("layers_to_transform", "not supported (all layers are adapted)") }
        if let m = root["modules_to_save"], !m.isNull, m.array?.isEmpty != true { throw bad("modules_to_save", "not supported") }
        guard let names = root["target_modules"]?.array?.compactMap(\.string), !names.isEmpty else {
            throw bad("target_modules", "expected a non-empty list of module names (a regex string is not supported)")
        }
        var targets: [LoraTarget] = []
        for n in names {
            guard let t = LoraTarget(rawValue: n) else { throw bad("target_modules", "\"\(n)\" is not one of \(LoraTarget.allCases.map(\.rawValue).joined(separator: ", "))") }
            targets.append(t)
        }
        let adapters = try LoraAdapters(config: config, settings: LoraSettings(rank: rank, alpha: alpha, dropout: dropout, targets: targets,
                                                                               useRSLoRA: root["use_rslora"]?.bool ?? false))
        let file = try SafeTensorsFile(path: directory + "/" + weightsFile)
        let expected = Set(adapters.slices.map(\.name))
        if let extra = file.entries.map(\.name).first(where: { !expected.contains(Self.peftName($0)) }) {
            throw LoraError.badAdapter(path: directory + "/" + weightsFile, field: extra, reason: "is not a tensor of the configured adapter (rank \(rank), targets \(names.joined(separator: ", ")))")
        }
        for s in adapters.slices {
            guard let entry = file.entries.first(where: { Self.peftName($0.name) == s.name }) else {
                throw LoraError.badAdapter(path: directory + "/" + weightsFile, field: s.name, reason: "missing")
            }
            try file.read(entry.name, expectedShape: s.shape, into: UnsafeMutableBufferPointer(rebasing: adapters.parameters[s.range]))
        }
        return adapters
    }

    /// PEFT drops the adapter name on saving; older files may still carry `.default`.
    static func peftName(_ name: String) -> String {
        name.replacingOccurrences(of: ".lora_A.default.weight", with: ".lora_A.weight")
            .replacingOccurrences(of: ".lora_B.default.weight", with: ".lora_B.weight")
    }
}

/// Dropout's keep decisions for one module and micro-batch: element i is
/// dropped when its 16-bit uniform is below round(p·65536); four uniforms
/// come from each 64-bit draw of a generator seeded by the micro-batch's
/// seed and the module, so backward redraws forward's mask instead of
/// storing it. Kept elements are scaled by 1/(1 - p), as PyTorch does.
struct LoraDropout {
    let seed: UInt64
    let threshold: UInt64
    let keepScale: Float

    init(seed: UInt64, module: LoraModule, probability p: Double) {
        self.seed = StableHash.mix64(seed ^ StableHash.mix64(UInt64(module.a.offset)))
        threshold = UInt64((p * 65536).rounded())
        keepScale = Float(1 / (1 - p))
    }

    /// out[i] = kept(i) ? x[i]·keep : 0, or out[i] += that when `accumulate`.
    func apply(_ x: UnsafePointer<Float>, to out: UnsafeMutablePointer<Float>, count: Int, accumulate: Bool) {
        var rng = SplitMix64(seed: seed)
        let threshold = SIMD4<UInt32>(repeating: UInt32(self.threshold)), keep = SIMD4<Float>(repeating: keepScale)
        let shifts = SIMD4<UInt64>(0, 16, 32, 48)
        let whole = count / 4 * 4
        // Four elements per draw: lane j takes bits 16j ..< 16j + 16.
        var i = 0
        while i < whole {
            let u = SIMD4<UInt32>(truncatingIfNeeded: (SIMD4<UInt64>(repeating: rng.next()) &>> shifts) & 0xFFFF)
            var v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD4<Float>.self) * keep
            v.replace(with: 0, where: u .< threshold)
            let o = UnsafeMutableRawPointer(out + i)
            if accumulate { v += o.loadUnaligned(as: SIMD4<Float>.self) }
            o.storeBytes(of: v, as: SIMD4<Float>.self)
            i += 4
        }
        guard whole < count else { return }
        var bits = rng.next()
        for j in whole..<count {
            let v = bits & 0xFFFF >= self.threshold ? x[j] * keepScale : 0
            if accumulate { out[j] += v } else { out[j] = v }
            bits >>= 16
        }
    }

    /// Which of the first `count` elements are kept (the reference's mask).
    func kept(count: Int) -> [Bool] {
        var rng = SplitMix64(seed: seed)
        var mask: [Bool] = []
        mask.reserveCapacity(count)
        while mask.count < count {
            var bits = rng.next()
            for _ in 0..<min(4, count - mask.count) {
                mask.append(bits & 0xFFFF >= threshold)
                bits >>= 16
            }
        }
        return mask
    }
}

/// Scratch reused by every adapted projection of a model (their passes run
/// one after another): the dropped input, its input gradient, and the
/// rank-r intermediates.
final class LoraScratch {
    private let droppedBuffer = GrowableFloats(), droppedGradientBuffer = GrowableFloats()
    private let hBuffer = GrowableFloats(), dhBuffer = GrowableFloats()
    var dropped: UnsafeMutablePointer<Float> { droppedBuffer.pointer }
    var droppedGradient: UnsafeMutablePointer<Float> { droppedGradientBuffer.pointer }
    var h: UnsafeMutablePointer<Float> { hBuffer.pointer }
    var dh: UnsafeMutablePointer<Float> { dhBuffer.pointer }

    /// Makes room for `inputs` input values and `ranks` rank-r values.
    func reserve(inputs: Int, ranks: Int) {
        droppedBuffer.reserve(inputs); droppedGradientBuffer.reserve(inputs)
        hBuffer.reserve(ranks); dhBuffer.reserve(ranks)
    }
}

/// The LoRA branch on one `Linear`: y += scale · dropout(x)·Aᵀ·Bᵀ for each
/// of its modules (two on the fused gate/up product). Backward accumulates
/// dA and dB into the adapters' gradients and adds the input gradient; the
/// dropout mask is drawn again from the same seed, not stored.
final class LoraLinearAdapter: LinearAdapter {
    unowned let adapters: LoraAdapters
    let modules: [LoraModule]

    init(adapters: LoraAdapters, modules: [Int]) {
        self.adapters = adapters
        self.modules = modules.map { adapters.modules[$0] }
    }

    /// Module `m`'s dropout while training with dropout > 0, else nil.
    func dropout(_ m: LoraModule) -> LoraDropout? {
        let p = adapters.settings.dropout
        guard adapters.training, p > 0 else { return nil }
        return LoraDropout(seed: adapters.dropoutSeed, module: m, probability: p)
    }

    /// The adapter's input for `m`: x itself, or dropout(x) in the scratch.
    private func input(_ m: LoraModule, _ x: UnsafePointer<Float>, rows: Int) -> UnsafePointer<Float> {
        guard let d = dropout(m) else { return x }
        d.apply(x, to: adapters.scratch.dropped, count: rows * m.inFeatures, accumulate: false)
        return UnsafePointer(adapters.scratch.dropped)
    }

    func forward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, rows: Int) {
        let r = adapters.settings.rank, w = adapters.parameters.baseAddress!, scratch = adapters.scratch
        for m in modules {
            scratch.reserve(inputs: rows * m.inFeatures, ranks: rows * r)
            let input = self.input(m, x, rows: rows)
            // h = xd·Aᵀ; y += scale·h·Bᵀ.
            BLAS.sgemm(.none, .transpose, m: rows, n: r, k: m.inFeatures, a: input, lda: m.inFeatures,
                       b: w + m.a.offset, ldb: m.inFeatures, c: scratch.h, ldc: r)
            BLAS.sgemm(.none, .transpose, m: rows, n: m.outFeatures, k: r, alpha: adapters.settings.scale, a: scratch.h, lda: r,
                       b: w + m.b.offset, ldb: r, beta: 1, c: y + m.column, ldc: m.stride)
        }
    }

    func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int) {
        let r = adapters.settings.rank, scale = adapters.settings.scale, scratch = adapters.scratch
        let w = adapters.parameters.baseAddress!, g = adapters.gradients.baseAddress!
        for m in modules {
            scratch.reserve(inputs: rows * m.inFeatures, ranks: rows * r)
            let input = self.input(m, x, rows: rows), h = scratch.h, dh = scratch.dh
            // h = xd·Aᵀ; dB += scale·dyᵀ·h; dh = scale·dy·B; dA += dhᵀ·xd.
            BLAS.sgemm(.none, .transpose, m: rows, n: r, k: m.inFeatures, a: input, lda: m.inFeatures,
                       b: w + m.a.offset, ldb: m.inFeatures, c: h, ldc: r)
            BLAS.sgemm(.transpose, .none, m: m.outFeatures, n: r, k: rows, alpha: scale, a: dy + m.column, lda: m.stride,
                       b: h, ldb: r, beta: 1, c: g + m.b.offset, ldc: r)
            BLAS.sgemm(.none, .none, m: rows, n: r, k: m.outFeatures, alpha: scale, a: dy + m.column, lda: m.stride,
                       b: w + m.b.offset, ldb: r, c: dh, ldc: r)
            BLAS.sgemm(.transpose, .none, m: r, n: m.inFeatures, k: rows, a: dh, lda: r, b: input, ldb: m.inFeatures,
                       beta: 1, c: g + m.a.offset, ldc: m.inFeatures)
            // dx += dh·A, through the dropout mask.
            if let d = dropout(m) {
                BLAS.sgemm(.none, .none, m: rows, n: m.inFeatures, k: r, a: dh, lda: r, b: w + m.a.offset,
                           ldb: m.inFeatures, c: scratch.droppedGradient, ldc: m.inFeatures)
                d.apply(scratch.droppedGradient, to: dx, count: rows * m.inFeatures, accumulate: true)
            } else {
                BLAS.sgemm(.none, .none, m: rows, n: m.inFeatures, k: r, a: dh, lda: r, b: w + m.a.offset,
                           ldb: m.inFeatures, beta: 1, c: dx, ldc: m.inFeatures)
            }
        }
    }

    // MARK: Reference

    /// forward with plain loops and an explicit mask (tests compare the fast path with it).
    func referenceForward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, rows: Int) {
        let r = adapters.settings.rank, scale = adapters.settings.scale, w = adapters.parameters
        for m in modules {
            let xd = referenceInput(m, x, rows: rows)
            for row in 0..<rows {
                let h = (0..<r).map { k in (0..<m.inFeatures).reduce(Float(0)) { $0 + xd[row * m.inFeatures + $1] * w[m.a.offset + k * m.inFeatures + $1] } }
                for o in 0..<m.outFeatures {
                    y[row * m.stride + m.column + o] += scale * (0..<r).reduce(Float(0)) { $0 + h[$1] * w[m.b.offset + o * r + $1] }
                }
            }
        }
    }

    /// backward with plain loops and an explicit mask.
    func referenceBackward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int) {
        let r = adapters.settings.rank, scale = adapters.settings.scale, w = adapters.parameters, g = adapters.gradients
        for m in modules {
            let xd = referenceInput(m, x, rows: rows)
            let kept = dropout(m).map { ($0.kept(count: rows * m.inFeatures), $0.keepScale) }
            for row in 0..<rows {
                let h = (0..<r).map { k in (0..<m.inFeatures).reduce(Float(0)) { $0 + xd[row * m.inFeatures + $1] * w[m.a.offset + k * m.inFeatures + $1] } }
                let d = (0..<m.outFeatures).map { dy[row * m.stride + m.column + $0] }
                for o in 0..<m.outFeatures { for k in 0..<r { g[m.b.offset + o * r + k] += scale * d[o] * h[k] } }
                let dh = (0..<r).map { k in scale * (0..<m.outFeatures).reduce(Float(0)) { $0 + d[$1] * w[m.b.offset + $1 * r + k] } }
                for k in 0..<r { for i in 0..<m.inFeatures { g[m.a.offset + k * m.inFeatures + i] += dh[k] * xd[row * m.inFeatures + i] } }
                for i in 0..<m.inFeatures {
                    var v = (0..<r).reduce(Float(0)) { $0 + dh[$1] * w[m.a.offset + $1 * m.inFeatures + i] }
                    if let (mask, keep) = kept { v = mask[row * m.inFeatures + i] ? v * keep : 0 }
                    dx[row * m.inFeatures + i] += v
                }
            }
        }
    }

    private func referenceInput(_ m: LoraModule, _ x: UnsafePointer<Float>, rows: Int) -> [Float] {
        let count = rows * m.inFeatures
        guard let d = dropout(m) else { return Array(UnsafeBufferPointer(start: x, count: count)) }
        let mask = d.kept(count: count)
        return (0..<count).map { mask[$0] ? x[$0] * d.keepScale : 0 }
    }
}
