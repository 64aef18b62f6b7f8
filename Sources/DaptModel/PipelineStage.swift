import DaptCore

/// One stage of a model split into a pipeline: a contiguous range of
/// decoder layers; the first stage also holds the token embedding, the last
/// the final norm and the LM head (with tied embeddings the last stage holds
/// its own copy of the embedding matrix as the head, as Megatron-LM does).
public struct PipelineStage: Equatable, Sendable {
    /// This stage's index and the number of stages.
    public var index: Int
    public var count: Int
    public var layers: Range<Int>

    public init(index: Int, count: Int, layers: Range<Int>) {
        precondition((0..<count).contains(index))
        self.index = index; self.count = count; self.layers = layers
    }

    /// The whole model as one stage.
    public static func whole(layers: Int) -> PipelineStage { PipelineStage(index: 0, count: 1, layers: 0..<layers) }

    public var isFirst: Bool { index == 0 }
    public var isLast: Bool { index == count - 1 }
    /// True when the model is split among more than one stage.
    public var isPartial: Bool { count > 1 }

    /// The stages of `config` split among `stages` ranks: `stageLayers`
    /// (layers per stage) when given, else balanced by `costs` (with each
    /// stage's rerun layers: `recomputedLayers` of its first, at most all
    /// but its last, or all with the `.mlp` granularity).
    /// Throws a configuration error naming the numbers when the model has
    /// fewer layers than stages or `stageLayers` does not fit.
    public static func partition(_ config: LlamaConfig, stages: Int, stageLayers: [Int]? = nil,
                                 recomputedLayers: Int = 0, granularity: RecomputeGranularity = .layer) throws -> [PipelineStage] {
        let layers = config.numHiddenLayers
        guard stages >= 1 else { throw ConfigError(field: "pretrain.parallel.pipeline", reason: "\(stages): must be at least 1") }
        if layers < stages {
            throw ConfigError(field: "pretrain.parallel.pipeline",
                              reason: "\(stages) pipeline stages for model.num_hidden_layers = \(layers): every stage needs at least one layer")
        }
        let counts: [Int]
        if let stageLayers {
            try validate(stageLayers: stageLayers, stages: stages, layers: layers)
            counts = stageLayers
        } else {
            counts = balancedLayerCounts(config, stages: stages, recomputedLayers: recomputedLayers, granularity: granularity)
        }
        var first = 0
        return counts.enumerated().map { i, n in
            defer { first += n }
            return PipelineStage(index: i, count: stages, layers: first..<(first + n))
        }
    }

    /// `pretrain.parallel.stage_layers`: one count per stage, each at least
    /// one, summing to the model's layers.
    public static func validate(stageLayers: [Int], stages: Int, layers: Int) throws {
        let field = "pretrain.parallel.stage_layers"
        if stageLayers.count != stages {
            throw ConfigError(field: field, reason: "\(stageLayers) has \(stageLayers.count) entries for \(stages) pipeline stages (parallel.pipeline): give one layer count per stage")
        }
        if let i = stageLayers.firstIndex(where: { $0 < 1 }) {
            throw ConfigError(field: field, reason: "\(stageLayers): stage \(i) has \(stageLayers[i]) layers; every stage needs at least one")
        }
        let sum = stageLayers.reduce(0, +)
        if sum != layers {
            throw ConfigError(field: field, reason: "\(stageLayers) sums to \(sum), but model.num_hidden_layers is \(layers)")
        }
    }

    /// Relative cost of one decoder layer and of the head, per token: the
    /// weights' multiply-adds (attention's quadratic term left out: equal on
    /// every layer, it does not move the split). The embedding lookup is
    /// nearly free; the head's vocab × hidden product falls on the last stage.
    /// `rerun`: a recomputed layer's second forward, without the down
    /// product, in the same units (a pass is a third of forward + backward);
    /// `gateUpRerun`: its [gate | up] product alone (the `.mlp` granularity).
    public static func costs(_ c: LlamaConfig) -> (layer: Double, head: Double, rerun: Double, gateUpRerun: Double) {
        let h = Double(c.hiddenSize), i = Double(c.intermediateSize)
        let layer = h * Double(c.qDimension) * 2 + h * Double(c.kvDimension) * 2 + 3 * h * i
        return (layer, Double(c.vocabSize) * h, (layer - h * i) / 3, 2 * h * i / 3)
    }

    /// Layers per stage minimising the largest stage's cost (the head counted
    /// on the last stage); among equal maxima, later stages take fewer layers.
    static func balancedLayerCounts(_ c: LlamaConfig, stages: Int, recomputedLayers: Int, granularity: RecomputeGranularity) -> [Int] {
        let (layerCost, headCost, layerRerun, gateUpRerun) = costs(c)
        let rerunCost = granularity == .layer ? layerRerun : gateUpRerun
        let layers = c.numHiddenLayers
        // best[s][l]: the smallest largest cost of the first l layers on s stages (s ≥ 1, l ≥ s).
        var best = [[Double]](repeating: [Double](repeating: .infinity, count: layers + 1), count: stages + 1)
        var choice = [[Int]](repeating: [Int](repeating: 0, count: layers + 1), count: stages + 1)
        best[0][0] = 0
        for s in 1...stages {
            for l in s...layers {
                let isLast = s == stages
                for n in 1...(l - s + 1) {
                    let reruns = granularity.recomputed(recomputedLayers, stageLayers: n)
                    let cost = Double(n) * layerCost + Double(reruns) * rerunCost + (isLast ? headCost : 0)
                    let candidate = max(best[s - 1][l - n], cost)
                    if candidate < best[s][l] { best[s][l] = candidate; choice[s][l] = n }
                }
            }
        }
        var counts: [Int] = []
        var l = layers
        for s in stride(from: stages, to: 0, by: -1) {
            counts.append(choice[s][l])
            l -= choice[s][l]
        }
        return counts.reversed()
    }
}
