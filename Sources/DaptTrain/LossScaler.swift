/// Dynamic loss scaling for fp16: gradients are computed for loss × scale;
/// a step whose gradients overflow is skipped and the scale halved; after
/// `growthInterval` clean steps the scale doubles.
public struct LossScaler: Equatable, Sendable, Codable {
    public var scale: Float
    public var growthInterval: Int
    public var cleanSteps: Int = 0
    public var skippedSteps: Int = 0
    public static let minimumScale: Float = 1

    public init(initialScale: Float = 65536, growthInterval: Int = 2000) {
        scale = initialScale
        self.growthInterval = growthInterval
    }

    /// Records the outcome of one step; returns true when the step should be applied.
    public mutating func update(gradientsFinite: Bool) -> Bool {
        if !gradientsFinite {
            scale = max(scale * 0.5, Self.minimumScale)
            cleanSteps = 0
            skippedSteps += 1
            return false
        }
        cleanSteps += 1
        if cleanSteps >= growthInterval {
            scale = min(scale * 2, 16_777_216)
            cleanSteps = 0
        }
        return true
    }
}
