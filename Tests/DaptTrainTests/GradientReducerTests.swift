import DaptCluster
import DaptModel
import DaptTestSupport
import DaptTrain
import XCTest

final class GradientReducerTests: XCTestCase {
    let config = LlamaConfig(vocabSize: 64, hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 3, numAttentionHeads: 4,
                             numKeyValueHeads: 2, maxPositionEmbeddings: 16, rmsNormEps: 1e-5, ropeTheta: 100)

    /// Buckets tile the buffer from its end to its start, start at tensor
    /// boundaries, and each (but the first-in-buffer) holds at least the bucket size.
    func testBucketsTileTheBufferBackwardsAtTensorBoundaries() {
        let layout = ParameterLayout(config: config)
        let starts = Set(layout.slices.map(\.offset))
        for bytes in [1, 4 * 200, 4 * 1000, 4 * 5000, 4 * layout.totalCount, 1 << 30] {
            let buckets = GradientReducer.buckets(layout: layout, bucketBytes: bytes)
            XCTAssertEqual(buckets.first?.upperBound, layout.totalCount, "\(bytes)")
            XCTAssertEqual(buckets.last?.lowerBound, 0, "\(bytes)")
            for (a, b) in zip(buckets, buckets.dropFirst()) { XCTAssertEqual(b.upperBound, a.lowerBound, "\(bytes): contiguous") }
            for b in buckets {
                XCTAssertTrue(starts.contains(b.lowerBound), "\(bytes): \(b) starts inside a tensor")
                if b.lowerBound > 0 { XCTAssertGreaterThanOrEqual(b.count * 4, bytes, "\(bytes): \(b) too small") }
            }
        }
        // One byte: every tensor alone; no size: one bucket.
        XCTAssertEqual(GradientReducer.buckets(layout: layout, bucketBytes: 1).count, layout.slices.count)
        XCTAssertEqual(GradientReducer.buckets(layout: layout, bucketBytes: 0), [0..<layout.totalCount])
        // A tied head shares the embedding's offset: no empty bucket.
        var tied = config
        tied.tieWordEmbeddings = true
        let tiedLayout = ParameterLayout(config: tied)
        XCTAssertEqual(GradientReducer.buckets(layout: tiedLayout, bucketBytes: 1).count, tiedLayout.slices.count)
    }

    /// Buckets start as backward reports them final, and `finish` leaves
    /// the sum (one rank: the gradients themselves) ready for the next step.
    func testBucketsStartWhenFinalAndFinishCompletesTheStep() throws {
        let comm = RecordingCommunicator()
        let model = try LlamaModel(config: config)
        let reducer = GradientReducer(gradients: model.gradients, group: comm, bucketBytes: 4 * 1000)
        let layout = model.layout
        try reducer.gradientsFinal(from: layout.finalNorm!.offset)
        XCTAssertEqual(comm.started, reducer.buckets.prefix { $0.lowerBound >= layout.finalNorm!.offset })
        try reducer.gradientsFinal(from: layout.layers[1].range.lowerBound)
        XCTAssertEqual(comm.started, reducer.buckets.prefix { $0.lowerBound >= layout.layers[1].range.lowerBound })
        XCTAssertLessThan(comm.started.count, reducer.buckets.count)
        try reducer.finish()
        XCTAssertEqual(comm.started, reducer.buckets)
        comm.started.removeAll()
        try reducer.finish()
        XCTAssertEqual(comm.started, reducer.buckets, "the next step starts from the end again")
    }

    /// Under ZeRO-1 each bucket is reduce-scattered onto the owners of its
    /// elements: on 3 ranks, whose slices cut through buckets and tensors,
    /// buckets started as backward reports them final leave every rank's
    /// slice holding exactly the sums the one blocking reduce-scatter leaves.
    func testZeroBucketsReduceScatterOntoTheSlices() throws {
        let config = self.config
        let results = try InProcessGroup(size: 3).run { comm -> (bucketed: [Float], blocking: [Float], owned: Range<Int>, buckets: [Range<Int>]) in
            let model = try LlamaModel(config: config)
            let n = model.layout.totalCount
            // Small integers: every sum is exact whatever the order.
            func fill() { model.gradients.withBuffer { g in for i in 0..<n { g[i] = Float((i * 7 + comm.rank * 13) % 101) } } }
            let zero = model.parameters.withBuffer { ZeroSharding(group: comm, parameters: UnsafeBufferPointer($0), mixedPrecision: false) }
            let reducer = GradientReducer(gradients: model.gradients, group: comm, bucketBytes: 4 * 300, zero: zero)
            fill()
            try reducer.gradientsFinal(from: model.layout.finalNorm!.offset)
            for layer in model.layout.layers.reversed() { try reducer.gradientsFinal(from: layer.range.lowerBound) }
            try reducer.finish()
            let bucketed = model.gradients.withBuffer { Array($0[zero.owned]) }
            fill()
            try model.gradients.withBuffer { try zero.reduceGradients($0) }
            let blocking = model.gradients.withBuffer { Array($0[zero.owned]) }
            return (bucketed, blocking, zero.owned, reducer.buckets)
        }
        let n = ParameterLayout(config: config).totalCount
        XCTAssertEqual(results.map(\.owned), [0, 1, 2].map { dataShare(globalBatch: n, rank: $0, of: 3) })
        let edges = results.map(\.owned.lowerBound).dropFirst()
        XCTAssertTrue(edges.allSatisfy { e in results[0].buckets.contains { $0.lowerBound < e && e < $0.upperBound } },
                      "every slice edge falls inside a bucket: \(results[0].buckets)")
        for r in results {
            XCTAssertEqual(r.bucketed.map(\.bitPattern), r.blocking.map(\.bitPattern), "slice \(r.owned)")
            XCTAssertEqual(r.bucketed, r.owned.map { i in Float((0..<3).reduce(0) { $0 + (i * 7 + $1 * 13) % 101 }) }, "slice \(r.owned)")
        }
    }
}

/// One rank that records the ranges of the non-blocking all-reduces started.
final class RecordingCommunicator: Communicator {
    private let inner = SingleRankCommunicator()
    var started: [Range<Int>] = []
    var rank: Int { 0 }
    var size: Int { 1 }
    var hostName: String { inner.hostName }
    func barrier() throws {}
    func broadcast<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws { try inner.broadcast(buffer, root: root) }
    func allReduce<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {}
    func allGatherV<T: CollectiveElement>(_ values: [T]) throws -> [[T]] { [values] }
    func gatherV<T: CollectiveElement>(_ values: [T], root: Int) throws -> [[T]]? { [values] }
    func send<T: CollectiveElement>(_ values: [T], to peer: Int, tag: Int) throws { try inner.send(values, to: peer, tag: tag) }
    func receive<T: CollectiveElement>(_ type: T.Type, from peer: Int, tag: Int) throws -> [T] { try inner.receive(type, from: peer, tag: tag) }
    func split(color: Int, key: Int) throws -> any Communicator { self }
    func startAllReduce<S: StableStorage>(_ storage: S, range: Range<Int>, op: ReduceOp) throws -> any PendingCollective {
        try checkRange(range, in: storage.count)
        started.append(range)
        return FinishedCollective()
    }
}
