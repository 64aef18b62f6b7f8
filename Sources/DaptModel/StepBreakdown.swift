import DaptBLAS
import DaptCore

/// Where a training step's time goes: inside `sgemm` or outside it (the
/// element-wise kernels, attention's softmax, copies), and how fast plain
/// sgemm runs the very same products in the same process — the machine's
/// sgemm rate the step is held against.
public struct StepBreakdown: Sendable {
    /// The step kept (the median ratio of plain sgemm to step time).
    public var stepSeconds: Double
    /// That step's time inside `sgemm`.
    public var sgemmSeconds: Double
    /// That step's `sgemm` calls and their floating-point operations (2mnk each).
    public var calls: Int
    public var sgemmFlops: Double
    /// The same calls replayed back to back right after the step, on
    /// buffers reused from call to call (cached when small: the best case)
    /// and on operands no call finds cached (`SgemmRecorder.replay`).
    public var plainSgemmSeconds: Double
    public var coldSgemmSeconds: Double
    /// The products grouped by shape (transposes, m, n, k), the ones that
    /// lose most time against their cached replay first.
    public var shapes: [ShapeTime] = []

    /// One product shape's calls in the step against the same calls replayed on cached buffers.
    public struct ShapeTime: Sendable, Equatable {
        public var transA, transB: BLAS.Transpose
        public var m, n, k: Int
        public var calls: Int
        public var stepSeconds: Double
        public var plainSeconds: Double
        public var flops: Double
        /// "NT 2048x768x256": op(A) m×k times op(B) k×n.
        public var label: String {
            "\(transA == .none ? "N" : "T")\(transB == .none ? "N" : "T") \(m)x\(n)x\(k)"
        }
    }

    /// What a product's calls are grouped by.
    struct ShapeKey: Hashable {
        let transA, transB: BLAS.Transpose
        let m, n, k: Int
    }

    /// Groups `calls` by shape with each call's replay time beside its step time.
    static func shapes(_ calls: [SgemmCall], replayed: [Double]) -> [ShapeTime] {
        var groups: [ShapeKey: ShapeTime] = [:]
        for (c, plain) in zip(calls, replayed) {
            let key = ShapeKey(transA: c.transA, transB: c.transB, m: c.m, n: c.n, k: c.k)
            var g = groups[key]
                ?? ShapeTime(transA: c.transA, transB: c.transB, m: c.m, n: c.n, k: c.k, calls: 0, stepSeconds: 0, plainSeconds: 0, flops: 0)
            g.calls += 1; g.stepSeconds += c.seconds; g.plainSeconds += plain; g.flops += c.flops
            groups[key] = g
        }
        return groups.values.sorted { ($0.stepSeconds - $0.plainSeconds, $0.label) > ($1.stepSeconds - $1.plainSeconds, $1.label) }
    }

    public var outsideSgemmShare: Double { stepSeconds > 0 ? 1 - sgemmSeconds / stepSeconds : 0 }

    /// Runs `step` `steps` times with every sgemm recorded, each followed by
    /// a replay of its products as plain sgemm (so step and reference see
    /// the same machine load), and keeps the pair with the median ratio.
    public static func measure(steps: Int, _ step: () throws -> Void) throws -> StepBreakdown {
        precondition(BLAS.recorder == nil, "a breakdown is already being measured")
        var runs: [StepBreakdown] = []
        for _ in 0..<max(steps, 1) {
            let recorder = SgemmRecorder()
            BLAS.recorder = recorder
            let start = monotonicSeconds()
            do { try step() } catch { BLAS.recorder = nil; throw error }
            let seconds = monotonicSeconds() - start
            BLAS.recorder = nil
            let calls = recorder.calls
            var perCall = [Double](repeating: 0, count: calls.count)
            let plain = perCall.withUnsafeMutableBufferPointer { SgemmRecorder.replay(calls, cold: false, perCall: $0) }
            runs.append(StepBreakdown(stepSeconds: seconds, sgemmSeconds: calls.reduce(0) { $0 + $1.seconds },
                                      calls: calls.count, sgemmFlops: calls.reduce(0) { $0 + $1.flops },
                                      plainSgemmSeconds: plain,
                                      coldSgemmSeconds: SgemmRecorder.replay(calls, cold: true),
                                      shapes: shapes(calls, replayed: perCall)))
        }
        runs.sort { $0.plainSgemmSeconds / $0.stepSeconds < $1.plainSgemmSeconds / $1.stepSeconds }
        return runs[runs.count / 2]
    }
}
