import DaptCluster
import DaptModel

/// Sums a flat gradient buffer over the data group in buckets, each started
/// as a non-blocking all-reduce — under ZeRO-1 a non-blocking
/// reduce-scatter of the bucket among the data ranks' slices
/// (`ZeroSharding.startReducing`) — as soon as backward has finished every
/// gradient in it, so the communication runs behind the rest of backward.
///
/// Buckets are contiguous ranges of the buffer cut at tensor boundaries,
/// about `bucketBytes` each, laid out from the end of the buffer: backward
/// finishes the LM head and final norm first, then the layers from last to
/// first, then the embedding, i.e. the flat buffer from its end to its start.
/// A schedule tells the reducer what is final with `gradientsFinal(from:)`
/// ("every gradient at index ≥ offset is final"); `finish()` starts what is
/// left and waits for all. Each element is summed by one all-reduce over the
/// same ranks as the blocking path, so with two data ranks (a + b = b + a)
/// the result is bit-identical to it; with more ranks the bucket's ring
/// (`Communicator.startAllReduce`) sums each element in an order set by its
/// block within the bucket, and the blocking path in Open MPI's order for
/// the whole buffer (equal within fp32 rounding, fixed from run to run).
public final class GradientReducer {
    public let group: any Communicator
    public let gradients: ParameterBuffer
    /// ZeRO-1: each bucket is reduce-scattered onto the owners of its elements.
    public let zero: ZeroSharding?
    /// The buckets in the order they are started (from the end of the buffer).
    public let buckets: [Range<Int>]
    /// ZeRO-1: each bucket's blocks per data rank, in `buckets`' order (made once, used every step).
    let scatters: [ZeroSharding.BucketScatter]
    private var next = 0
    private var pending: [any PendingCollective] = []

    /// `bucketBytes` ≤ 0: one bucket, the whole buffer (started by `finish()`).
    public init(gradients: ParameterBuffer, group: any Communicator, bucketBytes: Int, zero: ZeroSharding? = nil) {
        precondition(zero.map { $0.group === group } ?? true, "ZeRO-1 shards over the reducer's group")
        self.gradients = gradients
        self.group = group
        self.zero = zero
        let buckets = Self.buckets(layout: gradients.layout, bucketBytes: bucketBytes)
        self.buckets = buckets
        scatters = zero.map { zero in buckets.map { zero.scatter(of: $0) } } ?? []
    }

    /// Ranges of at least `bucketBytes` (the last one may be smaller), cut at
    /// tensor boundaries, from the end of the buffer to its start.
    public static func buckets(layout: ParameterLayout, bucketBytes: Int) -> [Range<Int>] {
        let total = layout.totalCount
        guard total > 0 else { return [] }
        guard bucketBytes > 0 else { return [0..<total] }
        let minimum = max(1, bucketBytes / MemoryLayout<Float>.stride)
        // Tensor starts are the only places a bucket may begin.
        let starts = Set(layout.slices.map(\.offset)).sorted(by: >)
        var out: [Range<Int>] = []
        var upper = total
        for start in starts where upper - start >= minimum || start == 0 {
            guard start < upper else { continue }
            out.append(start..<upper)
            upper = start
        }
        return out
    }

    /// Every gradient at flat index ≥ `offset` is final for this step: start
    /// each bucket that lies wholly there, and let started ones progress.
    public func gradientsFinal(from offset: Int) throws {
        while next < buckets.count, buckets[next].lowerBound >= offset {
            pending.append(try zero?.startReducing(gradients, scatters[next]) ?? group.startAllReduce(gradients, range: buckets[next], op: .sum))
            next += 1
        }
        // Open MPI moves non-blocking collectives forward only inside MPI calls.
        for p in pending { _ = try p.test() }
    }

    /// Starts every bucket not started yet and waits for all: the buffer then
    /// holds the sum over the group (under ZeRO-1: its owned slice does, the
    /// rest is this rank's own). Ready for the next step afterwards.
    public func finish() throws {
        try gradientsFinal(from: 0)
        for p in pending { try p.wait() }
        pending.removeAll()
        next = 0
        if let zero { gradients.withBuffer { zero.adoptReduced(into: $0) } }
    }
}
