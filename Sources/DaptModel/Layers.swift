import DaptBLAS
import DaptCore
import DaptCluster
import Foundation

/// An additive branch on a `Linear` (LoRA, for one): its forward adds to the
/// layer's output, its backward adds to the layer's input gradient and
/// accumulates its own parameter gradients. Pointers are valid only during
/// the call.
public protocol LinearAdapter: AnyObject {
    /// y[rows, out] += adapter(x[rows, in]).
    func forward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, rows: Int)
    /// dx[rows, in] += ∂/∂x given dy[rows, out] (and the adapter's own gradients).
    func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int)
}

/// How a pass runs: the attention kernel, worker threads and the precision
/// activations are rounded to. One value handed down to every layer.
public struct PassSettings {
    public var kernel: AttentionKernel
    /// Threads for the attention kernels and row-parallel loops (BLAS keeps its own count).
    public var threads: Int
    /// Activations and their gradients are rounded to this after every
    /// product or element-wise kernel; norm statistics, softmax and loss stay fp32.
    public var precision: Precision
    /// The ranks that split each layer (nil: the layers are whole).
    public var tensorGroup: (any Communicator)?

    public init(kernel: AttentionKernel = .tiled(AttentionTiles()), threads: Int = 1, precision: Precision = .fp32,
                tensorGroup: (any Communicator)? = nil) {
        self.kernel = kernel; self.threads = threads; self.precision = precision; self.tensorGroup = tensorGroup
    }

    @inline(__always) func round(_ p: UnsafeMutablePointer<Float>, _ count: Int) {
        if precision != .fp32 { roundInPlace(UnsafeMutableBufferPointer(start: p, count: count), to: precision) }
    }

    /// The fewest rows `forEachRowChunk` hands one thread.
    static let rowsPerWorker = 64

    /// Runs `body` on row ranges covering 0..<rows, on up to `threads`
    /// threads, each taking at least `rowsPerWorker` rows (rows are
    /// independent; BLAS is idle meanwhile).
    func forEachRowChunk(_ rows: Int, _ body: @escaping @Sendable (Range<Int>) -> Void) {
        let workers = min(threads, rows / Self.rowsPerWorker)
        if workers <= 1 {
            body(0..<rows)
            return
        }
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            body((rows * w / workers)..<(rows * (w + 1) / workers))
        }
    }

    /// Runs `body` on the query heads of each kv-head group, on `threads`
    /// threads when > 1 (groups write disjoint dq/dk/dv columns). BLAS runs
    /// single-threaded inside, so threads are not oversubscribed.
    func forEachKVHeadGroup(heads: Int, kvHeads: Int, _ body: @escaping @Sendable (Range<Int>) -> Void) {
        let group = heads / kvHeads
        let workers = min(threads, kvHeads)
        if workers <= 1 {
            body(0..<heads)
            return
        }
        let blasThreads = BLAS.threads
        BLAS.setThreads(1)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let first = kvHeads * w / workers, last = kvHeads * (w + 1) / workers
            body((first * group)..<(last * group))
        }
        BLAS.setThreads(blasThreads)
    }
}

/// y[rows, out] = x[rows, in] · Wᵀ, W [out, in] row-major (PyTorch's
/// layout) at `offset` in the flat parameter and gradient buffers.
/// Frozen (`trainable` false), backward computes only the input gradient.
public struct Linear {
    public let inFeatures: Int
    public let outFeatures: Int
    /// The weight's first element in the parameter (and gradient) buffer.
    public let offset: Int
    public var trainable = true
    public var adapter: (any LinearAdapter)?

    public init(inFeatures: Int, outFeatures: Int, offset: Int, trainable: Bool = true) {
        self.inFeatures = inFeatures; self.outFeatures = outFeatures; self.offset = offset; self.trainable = trainable
    }

    /// A layer over one parameter slice of shape [out, in].
    public init(_ slice: ParameterSlice) {
        precondition(slice.shape.count == 2, "\(slice.name): a linear layer needs a matrix, shape \(slice.shape)")
        self.init(inFeatures: slice.shape[1], outFeatures: slice.shape[0], offset: slice.offset)
    }

    /// y = x·Wᵀ, or y += x·Wᵀ when `accumulate`; then the adapter's branch.
    public func forward(x: UnsafePointer<Float>, rows: Int, weights: UnsafePointer<Float>,
                        y: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
        BLAS.sgemm(.none, .transpose, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures,
                   b: weights + offset, ldb: inFeatures, beta: accumulate ? 1 : 0, c: y, ldc: outFeatures)
        adapter?.forward(x: x, y: y, rows: rows)
    }

    /// dW += dyᵀ·x (when trainable), then dx = dy·W (or dx += dy·W when
    /// `accumulate`), then the adapter's backward. `gradients` may be nil
    /// only when frozen.
    public func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, weights: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>?, dx: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
        if trainable {
            guard let gradients else { preconditionFailure("a trainable Linear needs a gradient buffer") }
            BLAS.sgemm(.transpose, .none, m: outFeatures, n: inFeatures, k: rows, a: dy, lda: outFeatures, b: x, ldb: inFeatures,
                       beta: 1, c: gradients + offset, ldc: inFeatures)
        }
        BLAS.sgemm(.none, .none, m: rows, n: inFeatures, k: outFeatures, a: dy, lda: outFeatures, b: weights + offset,
                   ldb: inFeatures, beta: accumulate ? 1 : 0, c: dx, ldc: inFeatures)
        adapter?.backward(x: x, dy: dy, dx: dx, rows: rows)
    }
}

/// Token embedding: rows `firstToken ..< firstToken + rows` of a
/// vocabulary of `vocab` (all of it unless split), [rows, dim] at `offset`.
public struct Embedding {
    public let rows: Int
    public let dim: Int
    public let offset: Int
    public let firstToken: Int
    public let vocab: Int
    public var trainable = true

    public init(_ slice: ParameterSlice, firstToken: Int = 0, vocab: Int? = nil) {
        rows = slice.shape[0]; dim = slice.shape[1]; offset = slice.offset
        self.firstToken = firstToken; self.vocab = vocab ?? slice.shape[0]
    }

    var holdsWholeVocabulary: Bool { rows == vocab }

    /// out[i] = table[tokens[i]]; tokens outside this slice of the vocabulary give zero rows.
    public func forward(tokens: UnsafePointer<Int32>, count: Int, weights: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        let table = weights + offset
        if holdsWholeVocabulary {
            embeddingForward(tokens: tokens, count: count, table: table, vocab: rows, dim: dim, out: out)
            return
        }
        for i in 0..<count {
            let t = Int(tokens[i]) - firstToken
            if t >= 0 && t < rows {
                (out + i * dim).update(from: table + t * dim, count: dim)
            } else {
                (out + i * dim).update(repeating: 0, count: dim)
            }
        }
    }

    /// dTable[tokens[i]] += dOut[i] for the tokens in this slice.
    public func backward(tokens: UnsafePointer<Int32>, count: Int, dOut: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        guard trainable else { return }
        let dTable = gradients + offset
        if holdsWholeVocabulary {
            embeddingBackward(tokens: tokens, count: count, dOut: dOut, dim: dim, dTable: dTable)
            return
        }
        for i in 0..<count {
            let t = Int(tokens[i]) - firstToken
            if t >= 0 && t < rows { addInPlace(dTable + t * dim, dOut + i * dim, count: dim) }
        }
    }
}

/// Root-mean-square normalisation with a gain of `dim` values at `offset`.
public struct RMSNorm {
    public let dim: Int
    public let offset: Int
    public let eps: Float
    public var trainable = true

    public init(_ slice: ParameterSlice, eps: Float) {
        dim = slice.shape[0]; offset = slice.offset; self.eps = eps
    }

    /// out = norm(x), and `copy` = x when given (see `rmsNormForward`).
    public func forward(x: UnsafePointer<Float>, rows: Int, weights: UnsafePointer<Float>,
                        out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>, copy: UnsafeMutablePointer<Float>? = nil) {
        rmsNormForward(x: x, weight: weights + offset, rows: rows, dim: dim, eps: eps, out: out, rstd: rstd, copy: copy)
    }

    /// dx += ∂/∂x; the gain's gradient accumulates (into a scratch row when
    /// frozen, when `gradients` may be nil).
    public func backward(dOut: UnsafePointer<Float>, x: UnsafePointer<Float>, rstd: UnsafePointer<Float>, rows: Int,
                         weights: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>?, dx: UnsafeMutablePointer<Float>) {
        if trainable {
            guard let gradients else { preconditionFailure("a trainable RMSNorm needs a gradient buffer") }
            rmsNormBackward(dOut: dOut, x: x, weight: weights + offset, rstd: rstd, rows: rows, dim: dim, dX: dx, dWeight: gradients + offset)
        } else {
            let discard = UnsafeMutablePointer<Float>.allocate(capacity: dim)
            defer { discard.deallocate() }
            discard.initialize(repeating: 0, count: dim)
            rmsNormBackward(dOut: dOut, x: x, weight: weights + offset, rstd: rstd, rows: rows, dim: dim, dX: dx, dWeight: discard)
        }
    }
}

/// A float buffer reused across passes, grown (never shrunk) on demand; its
/// contents are not kept when it grows.
final class GrowableFloats {
    private(set) var capacity = 0
    private var storage = LargeAllocation.allocate(Float.self, count: 1)
    var pointer: UnsafeMutablePointer<Float> { storage.baseAddress! }

    func reserve(_ count: Int) {
        guard count > capacity else { return }
        LargeAllocation.deallocate(storage)
        storage = LargeAllocation.allocate(Float.self, count: count)
        capacity = count
    }

    deinit { LargeAllocation.deallocate(storage) }
}
