#if canImport(Glibc)
import Glibc
#endif

/// LSH banding: a signature of `numPerm` values is cut into `bands` bands of
/// `rows` values; two records become a candidate pair when any band agrees.
/// For a pair of Jaccard similarity s the probability of that is the S-curve
///
///     P(s) = 1 − (1 − s^r)^b
///
/// `choose` picks b and r (b·r ≤ numPerm) so that P(threshold) ≥ targetRecall
/// and, among those, the false-positive mass ∫₀^t P(s) ds (candidates below
/// the threshold, which verification has to reject) is smallest. If no
/// choice reaches the target, the one with the highest P(threshold) wins.
///
/// With num_perm = 128 and target 0.99 this gives (P at t, t−0.1, t−0.2):
///
///     threshold  b×r    P(t)    P(t−0.1)  P(t−0.2)
///     0.80       16×6   0.992   0.865     0.534
///     0.85       15×8   0.992   0.794     0.385
///     0.90       11×10  0.991   0.713     0.270
///
/// datasketch's choice for 0.9 (5 × 25) has P(0.9) = 0.31: two thirds of the
/// pairs right at the threshold are never even compared.
public enum LSHBanding {
    public struct Choice: Sendable, Equatable, Codable {
        public var bands: Int
        public var rows: Int
        /// P(threshold).
        public var recallAtThreshold: Double
        /// ∫₀^t P(s) ds.
        public var falsePositiveMass: Double

        public init(bands: Int, rows: Int, threshold: Double, withMass: Bool = true) {
            self.bands = bands
            self.rows = rows
            recallAtThreshold = LSHBanding.probability(similarity: threshold, bands: bands, rows: rows)
            falsePositiveMass = withMass ? LSHBanding.integral(from: 0, to: threshold, bands: bands, rows: rows) : .nan
        }
    }

    /// P(s) = 1 − (1 − s^r)^b.
    public static func probability(similarity s: Double, bands b: Int, rows r: Int) -> Double {
        1 - pow(1 - pow(s, Double(r)), Double(b))
    }

    /// ∫ P(s) ds over [lo, hi] by the midpoint rule (1000 steps).
    public static func integral(from lo: Double, to hi: Double, bands: Int, rows: Int) -> Double {
        let steps = 1000
        let h = (hi - lo) / Double(steps)
        var sum = 0.0
        for i in 0..<steps { sum += probability(similarity: lo + (Double(i) + 0.5) * h, bands: bands, rows: rows) }
        return sum * h
    }

    public static func choose(threshold: Double, numPerm: Int, targetRecall: Double) -> Choice {
        var best: Choice?
        var bestFallback: Choice?
        for r in 1...numPerm {
            let b = numPerm / r
            // More bands with the same rows only raise P everywhere: b = numPerm / r
            // is the largest, but a smaller b may cut false positives while still
            // meeting the target, so try every b.
            for bands in stride(from: b, through: 1, by: -1) {
                var c = Choice(bands: bands, rows: r, threshold: threshold, withMass: false)
                if c.recallAtThreshold >= targetRecall {
                    c = Choice(bands: bands, rows: r, threshold: threshold)
                    if best == nil || c.falsePositiveMass < best!.falsePositiveMass { best = c }
                }
                if bestFallback == nil || c.recallAtThreshold > bestFallback!.recallAtThreshold { bestFallback = c }
            }
        }
        return best ?? Choice(bands: bestFallback!.bands, rows: bestFallback!.rows, threshold: threshold)
    }

    /// The S-curve at `points` evenly spaced similarities in [0, 1].
    public static func curve(bands: Int, rows: Int, points: Int = 21) -> [(similarity: Double, probability: Double)] {
        (0..<points).map { i in
            let s = Double(i) / Double(points - 1)
            return (s, probability(similarity: s, bands: bands, rows: rows))
        }
    }
}
