import DaptCore
import DaptModel
import Foundation

/// AdamW hyper-parameters (decoupled weight decay, as `torch.optim.AdamW`).
public struct AdamWHyperparameters: Equatable, Sendable, Codable {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    public var epsilon: Float = 1e-8
    public var weightDecay: Float = 0.1
    public init() {}
    public init(beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float) {
        self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon; self.weightDecay = weightDecay
    }
}

/// A contiguous range of the flat parameter buffer and whether weight decay
/// applies to it (matrices yes, norm gains no).
public struct DecaySegment: Equatable, Sendable, Codable {
    public var range: Range<Int>
    public var decay: Bool
    public init(range: Range<Int>, decay: Bool) { self.range = range; self.decay = decay }
}

/// AdamW over one flat parameter buffer. The moments live in two flat
/// buffers with the parameters' offsets, so they checkpoint and shard like
/// the parameters do.
public final class AdamW: @unchecked Sendable {
    public let hyper: AdamWHyperparameters
    public let segments: [DecaySegment]
    public let count: Int
    /// Completed optimizer steps (the bias corrections use `stepCount`).
    public var stepCount: Int = 0
    public let firstMoment: UnsafeMutableBufferPointer<Float>
    public let secondMoment: UnsafeMutableBufferPointer<Float>

    /// `segments` must tile `0..<count` in order.
    public init(count: Int, segments: [DecaySegment], hyper: AdamWHyperparameters = .init()) {
        var cursor = 0
        for s in segments {
            precondition(s.range.lowerBound == cursor, "decay segments must tile the buffer in order")
            cursor = s.range.upperBound
        }
        precondition(cursor == count, "decay segments cover \(cursor) of \(count) parameters")
        self.count = count
        self.segments = segments
        self.hyper = hyper
        firstMoment = .allocate(capacity: max(count, 1))
        secondMoment = .allocate(capacity: max(count, 1))
        firstMoment.initialize(repeating: 0)
        secondMoment.initialize(repeating: 0)
    }

    deinit {
        firstMoment.deallocate()
        secondMoment.deallocate()
    }

    /// One update with learning rate `lr` (gradients already unscaled).
    /// `gradientScale` multiplies each gradient as it is read: the clipping
    /// coefficient, applied without a pass of its own over the buffer (the
    /// same product as scaling the buffer first).
    public func step(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeBufferPointer<Float>, learningRate lr: Float,
                     gradientScale: Float = 1) {
        precondition(parameters.count >= count && gradients.count >= count)
        stepCount += 1
        let t = Double(stepCount)
        let bias1 = 1 - pow(Double(hyper.beta1), t)
        let bias2 = 1 - pow(Double(hyper.beta2), t)
        let stepSize = Float(Double(lr) / bias1)
        let bias2Sqrt = Float(bias2.squareRoot())
        for s in segments {
            let decayFactor: Float = s.decay ? 1 - lr * hyper.weightDecay : 1
            adamWKernel(parameters: parameters.baseAddress! + s.range.lowerBound,
                        gradients: gradients.baseAddress! + s.range.lowerBound,
                        m: firstMoment.baseAddress! + s.range.lowerBound,
                        v: secondMoment.baseAddress! + s.range.lowerBound,
                        count: s.range.count, gradientScale: gradientScale, beta1: hyper.beta1, beta2: hyper.beta2,
                        epsilon: hyper.epsilon, decayFactor: decayFactor,
                        stepSize: stepSize, bias2Sqrt: bias2Sqrt)
        }
    }
}

/// The AdamW element update, in PyTorch's operation order, on g = gradient · gradientScale:
/// p *= 1 - lr·wd; m = m + (1-β1)(g - m); v = β2·v + (1-β2)g²;
/// p -= stepSize · m / (sqrt(v)/sqrt(1-β2^t) + ε).
public func adamWKernel(parameters p: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>,
                        m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count: Int,
                        gradientScale: Float = 1, beta1: Float, beta2: Float, epsilon: Float, decayFactor: Float,
                        stepSize: Float, bias2Sqrt: Float) {
    let oneMinusB1 = 1 - beta1, oneMinusB2 = 1 - beta2
    var i = 0
    typealias V = SIMD8<Float>
    while i + 8 <= count {
        let gv = UnsafeRawPointer(g + i).loadUnaligned(as: V.self) * gradientScale
        var mv = UnsafeRawPointer(m + i).loadUnaligned(as: V.self)
        var vv = UnsafeRawPointer(v + i).loadUnaligned(as: V.self)
        var pv = UnsafeRawPointer(p + i).loadUnaligned(as: V.self)
        pv *= decayFactor
        mv += (gv - mv) * oneMinusB1
        vv = vv * beta2 + gv * gv * oneMinusB2
        let denom = vv.squareRoot() / bias2Sqrt + epsilon
        pv -= stepSize * (mv / denom)
        UnsafeMutableRawPointer(m + i).storeBytes(of: mv, as: V.self)
        UnsafeMutableRawPointer(v + i).storeBytes(of: vv, as: V.self)
        UnsafeMutableRawPointer(p + i).storeBytes(of: pv, as: V.self)
        i += 8
    }
    while i < count {
        let gi = g[i] * gradientScale
        var pi = p[i] * decayFactor
        let mi = m[i] + (gi - m[i]) * oneMinusB1
        let vi = v[i] * beta2 + gi * gi * oneMinusB2
        pi -= stepSize * (mi / (vi.squareRoot() / bias2Sqrt + epsilon))
        m[i] = mi; v[i] = vi; p[i] = pi
        i += 1
    }
}

/// Sum of squares in Double, in a fixed order (chunked), so the global norm
/// is the same on every run.
public func sumOfSquares(_ x: UnsafeBufferPointer<Float>) -> Double {
    var total = 0.0
    var i = 0
    let n = x.count
    guard let base = x.baseAddress else { return 0 }
    while i < n {
        let end = min(i + 4096, n)
        var acc = SIMD8<Float>()
        var j = i
        while j + 8 <= end {
            let v = UnsafeRawPointer(base + j).loadUnaligned(as: SIMD8<Float>.self)
            acc += v * v
            j += 8
        }
        var chunk = Double(acc.sum())
        while j < end { chunk += Double(base[j]) * Double(base[j]); j += 1 }
        total += chunk
        i = end
    }
    return total
}

/// Multiplies every element by `factor`.
public func scaleInPlace(_ x: UnsafeMutableBufferPointer<Float>, by factor: Float) {
    guard let base = x.baseAddress else { return }
    var i = 0
    while i + 8 <= x.count {
        let v = UnsafeRawPointer(base + i).loadUnaligned(as: SIMD8<Float>.self) * factor
        UnsafeMutableRawPointer(base + i).storeBytes(of: v, as: SIMD8<Float>.self)
        i += 8
    }
    while i < x.count { base[i] *= factor; i += 1 }
}

/// Clips by global L2 norm as `torch.nn.utils.clip_grad_norm_`: scales by
/// max/(norm+1e-6) when that is below 1. Returns the norm before clipping
/// (non-finite when the gradients overflowed; nothing is scaled then).
/// `maxNorm` 0 only measures. The trainers do not scale the buffer: they pass
/// `clippingCoefficient` to `AdamW.step`; this is the reference the tests
/// hold that path to.
@discardableResult
public func clipGlobalNorm(_ gradients: UnsafeMutableBufferPointer<Float>, maxNorm: Float) -> Float {
    let norm = Float(sumOfSquares(UnsafeBufferPointer(gradients)).squareRoot())
    let coefficient = clippingCoefficient(norm: norm, maxNorm: maxNorm)
    if coefficient < 1 { scaleInPlace(gradients, by: coefficient) }
    return norm
}

/// What clipping to `maxNorm` multiplies gradients of global norm `norm` by:
/// max/(norm+1e-6) when that is below 1, else 1 (and 1 for a non-finite
/// norm or `maxNorm` 0).
public func clippingCoefficient(norm: Float, maxNorm: Float) -> Float {
    guard norm.isFinite, maxNorm > 0 else { return 1 }
    return min(1, maxNorm / (norm + 1e-6))
}

extension AdamW {
    /// Writes both moments as `exp_avg.NAME` / `exp_avg_sq.NAME` tensors, one per parameter slice.
    public func saveMoments(path: String, slices: [ParameterSlice]) throws {
        let m = UnsafeBufferPointer(firstMoment), v = UnsafeBufferPointer(secondMoment)
        var tensors: [SafeTensors.Tensor] = []
        for s in slices {
            tensors.append(.init(name: "exp_avg." + s.name, shape: s.shape, values: UnsafeBufferPointer(rebasing: m[s.range])))
            tensors.append(.init(name: "exp_avg_sq." + s.name, shape: s.shape, values: UnsafeBufferPointer(rebasing: v[s.range])))
        }
        try SafeTensors.write(path: path, tensors: tensors)
    }

    /// Reads the moments `saveMoments` wrote, checking every shape.
    public func loadMoments(path: String, slices: [ParameterSlice]) throws {
        let moments = try SafeTensorsFile(path: path)
        for s in slices {
            try moments.read("exp_avg." + s.name, expectedShape: s.shape, into: UnsafeMutableBufferPointer(rebasing: firstMoment[s.range]))
            try moments.read("exp_avg_sq." + s.name, expectedShape: s.shape, into: UnsafeMutableBufferPointer(rebasing: secondMoment[s.range]))
        }
    }
}
