import Foundation

/// Learning rate by step: linear warmup from 0 over `warmupSteps` (step 0
/// has rate 0, step `warmupSteps` the peak), then cosine decay from `peak`
/// to `floor` at `totalSteps` (constant after). Up to `totalSteps` this is
/// transformers' `get_cosine_with_min_lr_schedule_with_warmup` with
/// `min_lr_rate = floor / peak`, stepped once per optimizer step.
public struct LearningRateSchedule: Equatable, Sendable, Codable {
    public var peak: Double
    public var floor: Double
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(peak: Double, floor: Double, warmupSteps: Int, totalSteps: Int) {
        self.peak = peak; self.floor = floor; self.warmupSteps = warmupSteps; self.totalSteps = totalSteps
    }

    /// Warmup over `ceil(warmupRatio × totalSteps)` steps (the source recipe: 0.01).
    public init(peak: Double, floorRatio: Double, warmupRatio: Double, totalSteps: Int) {
        let warmup = Int((warmupRatio * Double(totalSteps)).rounded(.up))
        self.init(peak: peak, floor: peak * floorRatio, warmupSteps: warmup, totalSteps: totalSteps)
    }

    /// The rate for optimizer step `step` (0-based: the first update uses step 0).
    public func rate(at step: Int) -> Double {
        if step < warmupSteps { return peak * Double(step) / Double(warmupSteps) }
        let decaySteps = totalSteps - warmupSteps
        guard decaySteps > 0 else { return peak }
        let progress = min(1, Double(step - warmupSteps) / Double(decaySteps))
        return floor + (peak - floor) * 0.5 * (1 + cos(Double.pi * progress))
    }
}
