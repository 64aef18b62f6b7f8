import DaptBLAS
import DaptCore

/// Where a training step's time goes: inside `sgemm` or outside it (the
/// element-wise kernels, attention's softmax, copies), and how fast plain
/// sgemm runs the very same products in the same process — the machine's
/// sgemm rate the step is held against.
public struct StepBreakdown: Sendable {
    /// The median step of those measured.
    public var stepSeconds: Double
    /// That step's time inside `sgemm`.
    public var sgemmSeconds: Double
    /// That step's `sgemm` calls and their floating-point operations (2mnk each).
    public var calls: Int
    public var sgemmFlops: Double
    /// The same calls replayed back to back on fresh buffers (fastest of three).
    public var plainSgemmSeconds: Double

    public var outsideSgemmShare: Double { stepSeconds > 0 ? 1 - sgemmSeconds / stepSeconds : 0 }

    /// Runs `step` `steps` times with every sgemm recorded, keeps the median
    /// step, and replays its products as plain sgemm.
    public static func measure(steps: Int, _ step: () throws -> Void) throws -> StepBreakdown {
        precondition(BLAS.recorder == nil, "a breakdown is already being measured")
        let recorder = SgemmRecorder()
        var runs: [(seconds: Double, calls: [SgemmCall])] = []
        BLAS.recorder = recorder
        defer { BLAS.recorder = nil }
        for _ in 0..<max(steps, 1) {
            recorder.reset()
            let start = monotonicSeconds()
            try step()
            runs.append((monotonicSeconds() - start, recorder.calls))
        }
        BLAS.recorder = nil
        runs.sort { $0.seconds < $1.seconds }
        let median = runs[runs.count / 2]
        return StepBreakdown(stepSeconds: median.seconds, sgemmSeconds: median.calls.reduce(0) { $0 + $1.seconds },
                             calls: median.calls.count, sgemmFlops: median.calls.reduce(0) { $0 + $1.flops },
                             plainSgemmSeconds: SgemmRecorder.replay(median.calls))
    }
}
