/// Summary statistics shared by benchmarks, calibration and loss-spike detection.
public enum Statistics {
    /// The middle value (the mean of the two middle ones for an even
    /// count); NaN when `values` is empty.
    public static func median(_ values: [Double]) -> Double {
        let s = values.sorted()
        guard !s.isEmpty else { return .nan }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
