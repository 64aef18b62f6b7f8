import Foundation

/// How a candidate pair's similarity is decided (`verify:` in the config).
///
/// - `estimated`: the share of agreeing signature values, Ĵ, against the threshold t.
/// - `exact`: the Jaccard of the two shingle sets, for every pair.
/// - `hybrid`: Ĵ decides when it is far from t: accepted when Ĵ ≥ t + m,
///   rejected when Ĵ < t − m, with m = k · sqrt(t(1 − t) / num_perm) (k
///   standard errors of Ĵ at J = t); the pairs in between (|Ĵ − t| < m) get
///   the exact Jaccard. See docs/dedup.md for the error bound.
public struct VerificationRule: Sendable, Equatable {
    public enum Decision: Sendable, Equatable { case accept, reject, exact }

    public let mode: String
    public let threshold: Double
    /// m, the half-width of the band of estimates checked exactly (hybrid).
    public let margin: Double

    public init(mode: String, threshold: Double, numPerm: Int, sigmas: Double) {
        self.mode = mode
        self.threshold = threshold
        margin = sigmas * (threshold * (1 - threshold) / Double(numPerm)).squareRoot()
    }

    /// Whether the shingle sets (hence the texts) can be needed.
    public var needsText: Bool { mode != "estimated" }

    /// The decision from the signature estimate alone.
    public func decide(estimate: Double) -> Decision {
        switch mode {
        case "estimated": return estimate >= threshold ? .accept : .reject
        case "exact": return .exact
        default:
            if estimate >= threshold + margin { return .accept }
            if estimate < threshold - margin { return .reject }
            return .exact
        }
    }

    /// The lowest estimate that can still be accepted (exactly or not): a
    /// prefilter for the sampled estimate.
    public var lowestCandidateEstimate: Double {
        switch mode {
        case "estimated": return threshold
        case "exact": return max(threshold - 0.15, 0)  // ~5 standard errors at 0.85 with 128 values
        default: return max(threshold - margin, 0)
        }
    }
}
