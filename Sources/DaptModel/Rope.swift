import Foundation

/// RoPE frequencies computed as transformers' `LlamaRotaryEmbedding` does
/// (fp32 inverse frequencies, fp32 angles = position · inv_freq, cos/sin
/// multiplied by the attention scaling), for each `rope_scaling` kind.
public struct RopeFrequencies: Equatable, Sendable {
    /// headDim / 2 inverse frequencies.
    public var inverseFrequencies: [Float]
    /// Multiplies cos and sin (YaRN's attention factor; 1 otherwise).
    public var attentionScaling: Float

    /// `sequenceLength` is max(position) + 1 of the batch, which dynamic NTK
    /// scaling uses (as transformers does on a fresh model).
    public init(config: LlamaConfig, sequenceLength: Int) {
        let dim = config.headDimension
        let base = config.ropeTheta
        func defaultFrequencies(base: Double) -> [Float] {
            let b = Float(base)
            return stride(from: 0, to: dim, by: 2).map { 1 / Foundation.pow(b, Float($0) / Float(dim)) }
        }
        attentionScaling = 1
        guard let scaling = config.ropeScaling else {
            inverseFrequencies = defaultFrequencies(base: base)
            return
        }
        switch scaling.type {
        case .linear:
            inverseFrequencies = defaultFrequencies(base: base).map { $0 / Float(scaling.factor) }
        case .dynamic:
            let maxPositions = config.maxPositionEmbeddings
            if sequenceLength > maxPositions {
                let seq = Double(sequenceLength)
                let scaled = base * Foundation.pow(scaling.factor * seq / Double(maxPositions) - (scaling.factor - 1),
                                                   Double(dim) / Double(dim - 2))
                inverseFrequencies = defaultFrequencies(base: scaled)
            } else {
                inverseFrequencies = defaultFrequencies(base: base)
            }
        case .yarn:
            let factor = scaling.factor
            let original = Double(scaling.originalMaxPositionEmbeddings ?? config.maxPositionEmbeddings)
            if let a = scaling.attentionFactor {
                attentionScaling = Float(a)
            } else {
                attentionScaling = Float(factor <= 1 ? 1.0 : 0.1 * Foundation.log(factor) + 1.0)
            }
            func correctionDim(_ rotations: Double) -> Double {
                Double(dim) * Foundation.log(original / (rotations * 2 * Double.pi)) / (2 * Foundation.log(base))
            }
            let low = max(Foundation.floor(correctionDim(scaling.betaFast)), 0)
            var high = min(Foundation.ceil(correctionDim(scaling.betaSlow)), Double(dim - 1))
            if low == high { high += 0.001 }
            let b = Float(base)
            let f = Float(factor)
            inverseFrequencies = (0..<(dim / 2)).map { i in
                let posFreq = Foundation.pow(b, Float(2 * i) / Float(dim))
                let extrapolation = 1 / posFreq
                let interpolation = 1 / (f * posFreq)
                let ramp = min(max((Float(i) - Float(low)) / (Float(high) - Float(low)), 0), 1)
                let extrapolationFactor = 1 - ramp
                return interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor
            }
        }
    }

    /// cos and sin tables [positions.count, headDim/2].
    public func tables(positions: [Int32]) -> (cos: [Float], sin: [Float]) {
        let half = inverseFrequencies.count
        var c = [Float](repeating: 0, count: positions.count * half)
        var s = c
        for (r, p) in positions.enumerated() {
            let pf = Float(p)
            for i in 0..<half {
                let angle = pf * inverseFrequencies[i]
                c[r * half + i] = Foundation.cos(angle) * attentionScaling
                s[r * half + i] = Foundation.sin(angle) * attentionScaling
            }
        }
        return (c, s)
    }
}
