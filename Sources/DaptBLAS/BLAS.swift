import COpenBLAS
import DaptCore
import Foundation

/// Matrix products through OpenBLAS. Row-major throughout; shapes are
/// explicit and checked against the buffers before any C call.
public enum BLAS {
    public enum Transpose: Sendable { case none, transpose }

    /// OpenBLAS's worker threads for this process. Keep
    /// `threads × ranks on a host ≤ cores`, or the ranks fight for cores.
    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
    }

    public static func setThreads(_ n: Int) {
        precondition(n >= 1, "BLAS thread count must be >= 1")
        openblas_set_num_threads(Int32(n))
    }

    /// OpenBLAS's build description (its kernel family and threading).
    public static var configuration: String { String(cString: openblas_get_config()) }

    /// C = alpha · op(A) · op(B) + beta · C, with op(A) m×k, op(B) k×n, C m×n,
    /// all row-major with leading dimensions `lda`, `ldb`, `ldc`.
    public static func sgemm(
        _ transA: Transpose, _ transB: Transpose,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative dimension m=\(m) n=\(n) k=\(k)")
        precondition(lda >= max(1, transA == .none ? k : m), "sgemm: lda \(lda) too small")
        precondition(ldb >= max(1, transB == .none ? n : k), "sgemm: ldb \(ldb) too small")
        precondition(ldc >= max(1, n), "sgemm: ldc \(ldc) too small")
        if m == 0 || n == 0 { return }
        if let recorder = BLAS.recorder {
            let start = DispatchTime.now().uptimeNanoseconds
            cblas_sgemm(CblasRowMajor,
                        transA == .none ? CblasNoTrans : CblasTrans,
                        transB == .none ? CblasNoTrans : CblasTrans,
                        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
            recorder.record(SgemmCall(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc,
                                      beta: beta, seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
            return
        }
        cblas_sgemm(CblasRowMajor,
                    transA == .none ? CblasNoTrans : CblasTrans,
                    transB == .none ? CblasNoTrans : CblasTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// The same product on Swift buffers, with their sizes checked against
    /// the shapes (dense: leading dimension = row length).
    public static func sgemm(
        _ transA: Transpose, _ transB: Transpose,
        m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafeBufferPointer<Float>, b: UnsafeBufferPointer<Float>,
        beta: Float = 0, c: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(a.count >= m * k, "sgemm: A has \(a.count) elements, needs \(m * k)")
        precondition(b.count >= k * n, "sgemm: B has \(b.count) elements, needs \(k * n)")
        precondition(c.count >= m * n, "sgemm: C has \(c.count) elements, needs \(m * n)")
        guard m > 0, n > 0 else { return }
        if k == 0 {
            // BLAS leaves C scaled by beta when k = 0; do it here since a k=0
            // buffer may have no base address.
            for i in 0..<(m * n) { c[i] = beta == 0 ? 0 : beta * c[i] }
            return
        }
        sgemm(transA, transB, m: m, n: n, k: k, alpha: alpha,
              a: a.baseAddress!, lda: transA == .none ? k : m,
              b: b.baseAddress!, ldb: transB == .none ? n : k,
              beta: beta, c: c.baseAddress!, ldc: n)
    }

    /// Naive reference for `sgemm`, kept beside it for tests.
    public static func sgemmReference(
        _ transA: Transpose, _ transB: Transpose, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: [Float], b: [Float], beta: Float = 0, c: inout [Float]
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var sum: Double = 0
                for p in 0..<k {
                    let av = transA == .none ? a[i * k + p] : a[p * m + i]
                    let bv = transB == .none ? b[p * n + j] : b[j * k + p]
                    sum += Double(av) * Double(bv)
                }
                c[i * n + j] = alpha * Float(sum) + (beta == 0 ? 0 : beta * c[i * n + j])
            }
        }
    }

    /// While set, every `sgemm` is timed and its shape kept (a profile of a
    /// training step: time in matrix products against the rest, and the
    /// shapes to replay as a plain-sgemm reference).
    nonisolated(unsafe) public static var recorder: SgemmRecorder?
}

/// One recorded `sgemm` call: its shape and how long it took.
public struct SgemmCall: Sendable, Equatable {
    public var transA, transB: BLAS.Transpose
    public var m, n, k, lda, ldb, ldc: Int
    public var beta: Float
    public var seconds: Double
    public var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
}

/// Collects the `sgemm` calls made while it is `BLAS.recorder` (from any thread).
public final class SgemmRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [SgemmCall] = []

    public init() {}

    func record(_ call: SgemmCall) {
        lock.lock(); recorded.append(call); lock.unlock()
    }

    public var calls: [SgemmCall] {
        lock.lock(); defer { lock.unlock() }
        return recorded
    }

    public func reset() {
        lock.lock(); recorded.removeAll(keepingCapacity: true); lock.unlock()
    }

    /// Runs every call of `calls` once more, back to back (same transposes,
    /// leading dimensions and beta, operands of small values), and returns
    /// the time taken: what plain sgemm needs for the same products. `cold`:
    /// each call's operands follow the previous call's in a ring of buffers
    /// larger than the caches, so no product finds its operands cached (a
    /// step's products sit between the two: some inputs were just written);
    /// otherwise every call reuses one set of buffers, cached when small.
    /// `perCall`, when given, receives each call's own replay time.
    public static func replay(_ calls: [SgemmCall], cold: Bool, perCall: UnsafeMutableBufferPointer<Double>? = nil) -> Double {
        precondition(perCall.map { $0.count >= calls.count } ?? true, "replay: perCall holds fewer than \(calls.count) times")
        // Each operand starts on a cache line (64 bytes), as the model's buffers (not every slice of them) do.
        func span(rows: Int, cols: Int, ld: Int) -> Int { ((rows - 1) * ld + cols + 15) / 16 * 16 }
        let spans = calls.map { c in
            (a: c.transA == .none ? span(rows: c.m, cols: c.k, ld: c.lda) : span(rows: c.k, cols: c.m, ld: c.lda),
             b: c.transB == .none ? span(rows: c.k, cols: c.n, ld: c.ldb) : span(rows: c.n, cols: c.k, ld: c.ldb),
             c: span(rows: c.m, cols: c.n, ld: c.ldc))
        }
        let largest = spans.map { $0.a + $0.b + $0.c }.max() ?? 0
        let ring = cold ? max(2 * largest, 16 << 20) : max(largest, 1)  // floats: cold, at least 64 MiB
        // Allocated as the model's activations and parameters are (aligned, on huge pages).
        let storage = LargeAllocation.allocate(Float.self, count: ring)
        defer { LargeAllocation.deallocate(storage) }
        let buffer = storage.baseAddress!
        for i in 0..<ring { buffer[i] = Float(i % 7) * 0.01 }
        var offset = 0
        let start = DispatchTime.now().uptimeNanoseconds
        var previous = start
        for (i, (c, s)) in zip(calls, spans).enumerated() {
            if !cold || offset + s.a + s.b + s.c > ring { offset = 0 }
            let a = buffer + offset, b = a + s.a, out = b + s.b
            offset += s.a + s.b + s.c
            BLAS.sgemm(c.transA, c.transB, m: c.m, n: c.n, k: c.k, a: a, lda: c.lda, b: b, ldb: c.ldb,
                       beta: c.beta, c: out, ldc: c.ldc)
            if let perCall {
                let now = DispatchTime.now().uptimeNanoseconds
                perCall[i] = Double(now - previous) / 1e9
                previous = now
            }
        }
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}
