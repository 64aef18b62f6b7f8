import DaptCore
import Foundation

extension PretrainConfig {
    /// `pretrain.spikes`: loss-spike detection, rollback and skip.
    public struct Spikes: Codable, Equatable, Sendable {
        public var enabled = true
        /// Accepted losses the median and MAD are taken over.
        public var window = 50
        /// Steps of history needed before a loss can count as a spike.
        public var warmup = 20
        /// A loss above median + k · 1.4826 · MAD is suspicious.
        public var k = 6.0
        /// A gradient norm above median + gradient_k · 1.4826 · MAD of the window's norms is suspicious
        /// too (0: the gradient norm is tracked but only a non-finite one counts).
        public var gradientK = 0.0
        /// Suspicious losses in a row that make a spike (a non-finite loss or gradient is one at once).
        public var consecutive = 2
        /// Floor of the deviation scale, so a flat loss curve does not make every wobble a spike.
        public var minDeviation = 0.01
        /// Steps whose end states are rollback points; 0: checkpoint.every_steps, or 10 when checkpoints are
        /// written only at the end (rounded up to a multiple of at least `consecutive`).
        public var snapshotEverySteps = 0
        /// Steps' worth of batches skipped beyond the spike.
        public var marginSteps = 10
        /// Learning rate factor for `lr_steps` steps after a rollback (1: unchanged).
        public var lrFactor = 1.0
        public var lrSteps = 0
        /// A spike after this many rollbacks stops the run.
        public var maxRollbacks = 3
        enum CodingKeys: String, CodingKey, CaseIterable {
            case enabled, window, warmup, k, gradientK = "gradient_k", consecutive, minDeviation = "min_deviation"
            case snapshotEverySteps = "snapshot_every_steps", marginSteps = "margin_steps"
            case lrFactor = "lr_factor", lrSteps = "lr_steps", maxRollbacks = "max_rollbacks"
        }
        public init() {}
        public init(from decoder: Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self), d = Spikes()
            enabled = try c.value(.enabled, default: d.enabled)
            window = try c.value(.window, default: d.window)
            warmup = try c.value(.warmup, default: d.warmup)
            k = try c.value(.k, default: d.k)
            gradientK = try c.value(.gradientK, default: d.gradientK)
            consecutive = try c.value(.consecutive, default: d.consecutive)
            minDeviation = try c.value(.minDeviation, default: d.minDeviation)
            snapshotEverySteps = try c.value(.snapshotEverySteps, default: d.snapshotEverySteps)
            marginSteps = try c.value(.marginSteps, default: d.marginSteps)
            lrFactor = try c.value(.lrFactor, default: d.lrFactor)
            lrSteps = try c.value(.lrSteps, default: d.lrSteps)
            maxRollbacks = try c.value(.maxRollbacks, default: d.maxRollbacks)
        }

        public func validate(checkpointEvery: Int) throws {
            try Check.positive(window, "spikes.window")
            try Check.inRange(warmup, 1...window, "spikes.warmup")
            try Check.positive(k, "spikes.k")
            try Check.nonNegative(gradientK, "spikes.gradient_k")
            try Check.positive(consecutive, "spikes.consecutive")
            try Check.nonNegative(minDeviation, "spikes.min_deviation")
            try Check.nonNegative(snapshotEverySteps, "spikes.snapshot_every_steps")
            try Check.nonNegative(marginSteps, "spikes.margin_steps")
            try Check.inRange(lrFactor, Double.leastNonzeroMagnitude...1, "spikes.lr_factor")
            try Check.nonNegative(lrSteps, "spikes.lr_steps")
            try Check.nonNegative(maxRollbacks, "spikes.max_rollbacks")
        }

        /// Steps between rollback points: a multiple of the checkpoint cadence (so a resumed run finds the
        /// same points on disk) and at least `consecutive` (so the newest two always include one before
        /// any spike window).
        public func rollbackEvery(checkpointEvery: Int) -> Int {
            let base = snapshotEverySteps > 0 ? snapshotEverySteps : (checkpointEvery > 0 ? checkpointEvery : 10)
            return (consecutive + base - 1) / base * base
        }
    }
}

/// What the detector keeps between steps. Part of the training state so a
/// resumed run judges the next loss exactly as the uninterrupted one would.
public struct SpikeHistory: Codable, Equatable, Sendable {
    /// Accepted losses, oldest first, at most `window`.
    public var losses: [Double] = []
    /// The gradient norms of the same accepted steps (finite ones only).
    public var gradientNorms: [Double] = []
    /// Suspicious steps in a row so far, and the first of them (1-based step number).
    public var suspicious = 0
    public var firstSuspiciousStep = 0
    public init() {}
    enum CodingKeys: String, CodingKey { case losses, gradientNorms = "gradient_norms", suspicious, firstSuspiciousStep = "first_suspicious_step" }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        losses = try c.decode([Double].self, forKey: .losses)
        // Training states written before the gradient norms were kept have none.
        gradientNorms = try c.decodeIfPresent([Double].self, forKey: .gradientNorms) ?? []
        suspicious = try c.decode(Int.self, forKey: .suspicious)
        firstSuspiciousStep = try c.decode(Int.self, forKey: .firstSuspiciousStep)
    }
}

/// The robust figures a loss was judged against.
public struct SpikeStatistics: Equatable, Sendable {
    public var median: Double
    public var mad: Double
    public var threshold: Double
}

/// Why a step is a spike.
public struct Spike: Equatable, Sendable {
    /// First step (1-based) of the spike window.
    public var firstStep: Int
    public var step: Int
    public var loss: Double?
    public var statistics: SpikeStatistics?
    public var reason: String
}

/// Median/MAD loss-spike detection. Pure: the verdict depends on the history
/// and the step's figures alone.
public struct SpikeDetector: Sendable {
    public let config: PretrainConfig.Spikes
    public init(config: PretrainConfig.Spikes) { self.config = config }

    public func statistics(_ history: SpikeHistory) -> SpikeStatistics? {
        robust(history.losses, k: config.k)
    }

    /// The same figures for the gradient norms (nil before warm-up or when `gradient_k` is 0).
    public func gradientStatistics(_ history: SpikeHistory) -> SpikeStatistics? {
        config.gradientK > 0 ? robust(history.gradientNorms, k: config.gradientK) : nil
    }

    private func robust(_ values: [Double], k: Double) -> SpikeStatistics? {
        guard values.count >= config.warmup else { return nil }
        let median = Statistics.median(values)
        let mad = Statistics.median(values.map { abs($0 - median) })
        // 1.4826 · MAD estimates the standard deviation of normal data.
        let scale = max(1.4826 * mad, config.minDeviation)
        return SpikeStatistics(median: median, mad: mad, threshold: median + k * scale)
    }

    /// Judges step `step`'s loss and gradient norm (nil or non-finite gradients: `gradientsFinite` false)
    /// and updates `history`.
    public func observe(step: Int, loss: Double?, gradientNorm: Double? = nil, gradientsFinite: Bool,
                        history: inout SpikeHistory) -> Spike? {
        guard let loss, loss.isFinite, gradientsFinite else {
            let reason = loss.map { $0.isFinite ? "gradients are not finite" : "loss is \($0)" } ?? "gradients are not finite"
            history.suspicious = 0
            return Spike(firstStep: step, step: step, loss: loss, statistics: statistics(history), reason: reason)
        }
        let norm = gradientNorm.flatMap { $0.isFinite ? $0 : nil }
        let lossStats = statistics(history), normStats = gradientStatistics(history)
        let lossHigh = lossStats.map { loss > $0.threshold } ?? false
        var normHigh = false
        if let norm, let normStats { normHigh = norm > normStats.threshold }
        if lossHigh || normHigh {
            if history.suspicious == 0 { history.firstSuspiciousStep = step }
            history.suspicious += 1
            guard history.suspicious >= config.consecutive else { return nil }
            let first = history.firstSuspiciousStep
            history.suspicious = 0
            let reason = lossHigh
                ? String(format: "loss above median %.4f + %g × deviation (threshold %.4f) for %d steps",
                         lossStats!.median, config.k, lossStats!.threshold, config.consecutive)
                : String(format: "gradient norm above median %.4f + %g × deviation (threshold %.4f) for %d steps",
                         normStats!.median, config.gradientK, normStats!.threshold, config.consecutive)
            return Spike(firstStep: first, step: step, loss: loss, statistics: lossHigh ? lossStats : normStats, reason: reason)
        }
        // A lone outlier shorter than `consecutive` is dropped, not learned from.
        history.suspicious = 0
        history.losses.append(loss)
        if history.losses.count > config.window { history.losses.removeFirst(history.losses.count - config.window) }
        if let norm {
            history.gradientNorms.append(norm)
            if history.gradientNorms.count > config.window { history.gradientNorms.removeFirst(history.gradientNorms.count - config.window) }
        }
        return nil
    }
}
