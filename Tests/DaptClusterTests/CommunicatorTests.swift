import DaptCluster
import DaptTestSupport
import XCTest

final class SingleRankCommunicatorTests: XCTestCase {
    func testCollectivesAreIdentities() throws {
        let comm = SingleRankCommunicator()
        XCTAssertEqual(comm.rank, 0)
        XCTAssertEqual(comm.size, 1)
        var v: [Float] = [1, 2, 3]
        try comm.allReduce(&v, op: .sum)
        XCTAssertEqual(v, [1, 2, 3])
        XCTAssertEqual(try comm.allReduce(Int64(7), op: .max), 7)
        XCTAssertEqual(try comm.allGatherV([Int64(1), 2]), [[1, 2]])
        XCTAssertEqual(try comm.gatherV([UInt8(9)], root: 0), [[9]])
        XCTAssertEqual(try comm.allGather("host"), ["host"])
        var b: [Double] = [4, 5]
        try comm.broadcast(&b, root: 0)
        XCTAssertEqual(b, [4, 5])
        XCTAssertEqual(try comm.broadcast("same", root: 0), "same")
    }

    /// A non-blocking all-reduce on one rank: finished at once, the
    /// storage untouched; a range outside the storage is refused.
    func testStartAllReduceOnOneRank() throws {
        let comm = SingleRankCommunicator()
        let storage = CollectiveBuffer<Float>([1, 2, 3, 4])
        let pending = try comm.startAllReduce(storage, range: 1..<3, op: .sum)
        XCTAssertTrue(try pending.test())
        try pending.wait()
        XCTAssertEqual(storage.values, [1, 2, 3, 4])
        XCTAssertThrowsError(try comm.startAllReduce(storage, range: 2..<5, op: .sum)) {
            XCTAssertEqual($0 as? CommunicatorError, .sizeMismatch(expected: 4, got: 5))
        }
    }

    func testMessagesToSelfQueuePerTag() throws {
        let comm = SingleRankCommunicator()
        try comm.send([Int32(1), 2], to: 0, tag: 5)
        try comm.send([Int32(3)], to: 0, tag: 6)
        try comm.send([Int32(4)], to: 0, tag: 5)
        XCTAssertEqual(try comm.receive(Int32.self, from: 0, tag: 6), [3])
        XCTAssertEqual(try comm.receive(Int32.self, from: 0, tag: 5), [1, 2])
        XCTAssertEqual(try comm.receive(Int32.self, from: 0, tag: 5), [4])
        XCTAssertThrowsError(try comm.receive(Int32.self, from: 0, tag: 5)) {
            XCTAssertEqual($0 as? CommunicatorError, .noMessage(from: 0, tag: 5))
        }
    }

    func testInvalidPeerIsAnError() {
        let comm = SingleRankCommunicator()
        XCTAssertThrowsError(try comm.send([UInt8(1)], to: 1, tag: 0)) {
            XCTAssertEqual($0 as? CommunicatorError, .invalidRank(1, size: 1))
        }
        XCTAssertThrowsError(try comm.gatherV([UInt8(1)], root: 2))
    }

    func testSplitGivesAGroupOfOne() throws {
        let sub = try SingleRankCommunicator().split(color: 3, key: 9)
        XCTAssertEqual(sub.size, 1)
        XCTAssertEqual(sub.rank, 0)
    }

    func testDiagnosticsPassOnOneRank() throws {
        let results = try ClusterDiagnostics.checkCollectives(SingleRankCommunicator())
        XCTAssertEqual(results.failures, [])
        XCTAssertEqual(results.allReduceSumInt64, 1)
        XCTAssertEqual(results.splitSize, 1)
    }

    /// The reduce-scatter, in-place all-gather and gather into a buffer every group has (through
    /// all-reduce and all-gather) on a group of one: the whole buffer is
    /// this rank's block; block counts that do not fit are an error.
    func testReduceScatterAndAllGatherOnOneRank() throws {
        let comm = SingleRankCommunicator()
        let source: [Float] = [1, 2, 3]
        var destination = [Float](repeating: 0, count: 3)
        try source.withUnsafeBufferPointer { s in
            try destination.withUnsafeMutableBufferPointer { try comm.reduceScatter(s, into: $0, counts: [3], op: .sum) }
        }
        XCTAssertEqual(destination, source)
        try destination.withUnsafeMutableBufferPointer { try comm.allGatherInPlace($0, counts: [3]) }
        XCTAssertEqual(destination, source)
        XCTAssertThrowsError(try destination.withUnsafeMutableBufferPointer { try comm.allGatherInPlace($0, counts: [2]) })
        XCTAssertThrowsError(try destination.withUnsafeMutableBufferPointer { try comm.allGatherInPlace($0, counts: [1, 2]) })
        var whole = [Float](repeating: 0, count: 3)
        try source.withUnsafeBufferPointer { s in try whole.withUnsafeMutableBufferPointer { try comm.gather(s, into: $0, counts: [3], root: 0) } }
        XCTAssertEqual(whole, source)
        XCTAssertThrowsError(try source.withUnsafeBufferPointer { s in try whole.withUnsafeMutableBufferPointer { try comm.gather(s, into: $0, counts: [2], root: 0) } })
    }
}

/// Point-to-point into preallocated memory, through the array messages of a
/// group without native sends: the values arrive in order, and a message of
/// another length is a size mismatch naming both counts.
final class BufferPointToPointTests: XCTestCase {
    func testReceiveIntoABufferOfTheMessageLength() throws {
        let received = try InProcessGroup(size: 2).run { rank -> [Float] in
            if rank.rank == 0 {
                try [Float(1), 2, 3].withUnsafeBufferPointer { try rank.send($0, to: 1, tag: 7) }
                try [Float(4), 5].withUnsafeBufferPointer { try rank.send($0, to: 1, tag: 7) }
                return []
            }
            var values = [Float](repeating: 0, count: 3)
            try values.withUnsafeMutableBufferPointer { try rank.receive(into: $0, from: 0, tag: 7) }
            var short = [Float](repeating: 0, count: 3)
            XCTAssertThrowsError(try short.withUnsafeMutableBufferPointer { try rank.receive(into: $0, from: 0, tag: 7) }) {
                XCTAssertEqual($0 as? CommunicatorError, .sizeMismatch(expected: 3, got: 2))
            }
            return values
        }
        XCTAssertEqual(received[1], [1, 2, 3])
    }
}
