import DaptCluster
import DaptCore
import DaptModel

/// ZeRO stage 1 over the data-parallel group: each data rank owns one
/// contiguous slice of the flat parameter buffer (`dataShare` of its
/// length, so the slices are disjoint, in rank order and fixed by the
/// parameter count and D alone) and keeps the AdamW moments — and, in mixed
/// precision, the fp32 master weights — of that slice only. A step
/// reduce-scatters the gradients (each rank receives the sum of its slice),
/// updates its slice, and all-gathers the parameters; the optimizer state
/// per rank falls by D while the arithmetic per element is the unsharded
/// one. Checkpoints stream the slices to rank 0 (`CheckpointShardMap`) and
/// hold the same files as an unsharded run; loading takes each rank's slice of them.
public final class ZeroSharding {
    public let group: any Communicator
    /// Elements owned by each data rank, in rank order.
    public let counts: [Int]
    /// This rank's slice of the flat buffer.
    public let owned: Range<Int>
    /// fp32 master weights of `owned` in mixed precision (the model then
    /// holds the rounded working copy of every weight); nil in fp32, where
    /// the model's buffer is the master.
    public let master: UnsafeMutableBufferPointer<Float>?
    /// Where the reduce-scatter puts this rank's summed gradients (MPI does
    /// not let a reduction's input and output overlap); stable storage, so
    /// bucketed reduce-scatters can run in it during backward.
    private let reduced: CollectiveBuffer<Float>

    /// The slices of a buffer of `total` elements over `ranks` data ranks.
    public static func counts(total: Int, ranks: Int) -> [Int] {
        (0..<ranks).map { dataShare(globalBatch: total, rank: $0, of: ranks).count }
    }

    /// `parameters`: the model's starting weights (full; the master slice is copied from them).
    public init(group: any Communicator, parameters: UnsafeBufferPointer<Float>, mixedPrecision: Bool) {
        self.group = group
        counts = Self.counts(total: parameters.count, ranks: group.size)
        owned = dataShare(globalBatch: parameters.count, rank: group.rank, of: group.size)
        reduced = CollectiveBuffer(repeating: 0, count: owned.count)
        if mixedPrecision {
            let m = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(owned.count, 1))
            _ = m.initialize(fromContentsOf: parameters[owned])
            master = m
        } else {
            master = nil
        }
    }

    deinit {
        master?.deallocate()
    }

    /// Sums `gradients` over the group; afterwards only `owned` holds the
    /// sum (the rest is this rank's own, unreduced, and must not be used).
    public func reduceGradients(_ gradients: UnsafeMutableBufferPointer<Float>) throws {
        try reduced.withBuffer { try group.reduceScatter(UnsafeBufferPointer(gradients), into: $0, counts: counts, op: .sum) }
        adoptReduced(into: gradients)
    }

    /// One bucket's reduce-scatter: data rank d's block of it is
    /// `bucket ∩ owned_d` (empty when the bucket misses its slice), and this
    /// rank's block lands at `destination` in its slice. Fixed by the bucket
    /// and the slices, so made once per run (`GradientReducer`'s init).
    struct BucketScatter: Sendable {
        let bucket: Range<Int>
        /// Every data rank's block of the bucket, in rank order.
        let blocks: [Int]
        /// Where this rank's block goes in `reduced` (relative to `owned`).
        let destination: Range<Int>
    }

    /// The reduce-scatter of `bucket`, a range of the flat buffer. Buckets
    /// thus need no alignment with the slices and the ownership stays the
    /// one contiguous slice per rank.
    func scatter(of bucket: Range<Int>) -> BucketScatter {
        var first = 0
        let blocks = counts.map { count in
            defer { first += count }
            return (first..<(first + count)).clamped(to: bucket).count
        }
        let mine = bucket.clamped(to: owned)
        return BucketScatter(bucket: bucket, blocks: blocks, destination: (mine.lowerBound - owned.lowerBound)..<(mine.upperBound - owned.lowerBound))
    }

    /// Starts one bucket's reduce-scatter without waiting; once every
    /// bucket has finished, `adoptReduced` holds what `reduceGradients` would.
    func startReducing(_ gradients: ParameterBuffer, _ scatter: BucketScatter) throws -> any PendingCollective {
        try group.startReduceScatter(gradients, range: scatter.bucket, into: reduced, at: scatter.destination, counts: scatter.blocks, op: .sum)
    }

    /// Copies the reduced sums of this rank's slice into `gradients[owned]`
    /// (after every reduce-scatter into them finished).
    public func adoptReduced(into gradients: UnsafeMutableBufferPointer<Float>) {
        reduced.withBuffer { _ = UnsafeMutableBufferPointer(rebasing: gradients[owned]).update(fromContentsOf: $0) }
    }

    /// After this rank updated its slice: rounds the master slice into the
    /// working copy (mixed precision) and gathers every rank's slice, so
    /// every rank holds the whole updated model.
    public func publish(into parameters: UnsafeMutableBufferPointer<Float>, precision: Precision) throws {
        if let master {
            roundedCopy(UnsafeBufferPointer(master), into: UnsafeMutableBufferPointer(rebasing: parameters[owned]), precision: precision)
        }
        try group.allGatherInPlace(parameters, counts: counts)
    }

    /// Bytes of optimizer state this rank holds: both moments and the master slice.
    public var stateBytes: Int { (owned.count * 2 + (master?.count ?? 0)) * MemoryLayout<Float>.stride }
}

extension AdamW {
    /// AdamW over the slice `range` of a flat buffer tiled by `segments`: its
    /// own segments, shifted to start at 0.
    public convenience init(range: Range<Int>, segments: [DecaySegment], hyper: AdamWHyperparameters) {
        let within = segments.compactMap { s -> DecaySegment? in
            let lower = max(s.range.lowerBound, range.lowerBound), upper = min(s.range.upperBound, range.upperBound)
            guard lower < upper else { return nil }
            return DecaySegment(range: (lower - range.lowerBound)..<(upper - range.lowerBound), decay: s.decay)
        }
        self.init(count: range.count, segments: within, hyper: hyper)
    }
}
