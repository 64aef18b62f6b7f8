import DaptCluster
import DaptCore
import XCTest

final class ExchangeFrameTests: XCTestCase {
    func frames(sender: Int, payloads: [[UInt8]]) -> ([ExchangeFrame], ExchangeFrame) {
        var checksum: UInt64 = 0, bytes: UInt64 = 0
        let data = payloads.enumerated().map { i, p -> ExchangeFrame in
            let f = ExchangeFrame.data(sender: sender, round: 0, sequence: UInt64(i), payload: p)
            checksum = PeerLedger.fold(checksum, f.checksum); bytes += UInt64(p.count)
            return f
        }
        let end = ExchangeFrame(kind: .end, sender: sender, round: 0, sequenceOrCount: UInt64(payloads.count), lengthOrBytes: bytes, checksum: checksum)
        return (data, end)
    }

    func decode(_ frame: ExchangeFrame) throws -> ExchangeFrame {
        try frame.encoded().withUnsafeBytes { try ExchangeFrame.decode($0, peers: 4) }
    }

    func testRoundTrip() throws {
        let f = ExchangeFrame.data(sender: 3, round: 2, sequence: 17, payload: [1, 2, 3, 250])
        XCTAssertEqual(try decode(f), f)
        XCTAssertEqual(f.encoded().count, ExchangeFrame.headerSize + 4)
    }

    func testCompleteStreamIsAccepted() throws {
        let (data, end) = frames(sender: 1, payloads: [[1], [2, 3], [], [4, 5, 6]])
        var ledger = PeerLedger(sender: 1)
        for f in data { try ledger.accept(try decode(f)) }
        try ledger.accept(try decode(end))
        XCTAssertTrue(ledger.ended)
        XCTAssertEqual(ledger.messages, 4)
        XCTAssertEqual(ledger.bytes, 6)
    }

    func testTruncatedFrameIsDetected() {
        let bytes = ExchangeFrame.data(sender: 1, round: 0, sequence: 0, payload: [1, 2, 3, 4]).encoded()
        XCTAssertThrowsError(try Array(bytes.dropLast()).withUnsafeBytes { try ExchangeFrame.decode($0, peers: 2) }) {
            XCTAssertEqual($0 as? ExchangeError, .truncatedFrame(length: bytes.count - 1, needed: bytes.count))
        }
        XCTAssertThrowsError(try Array(bytes.prefix(10)).withUnsafeBytes { try ExchangeFrame.decode($0, peers: 2) }) {
            XCTAssertEqual($0 as? ExchangeError, .truncatedFrame(length: 10, needed: ExchangeFrame.headerSize))
        }
    }

    func testBadMagicAndSenderAreRejected() {
        var bytes = ExchangeFrame.data(sender: 1, round: 0, sequence: 0, payload: [1]).encoded()
        bytes[0] ^= 0xFF
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try ExchangeFrame.decode($0, peers: 2) })
        let far = ExchangeFrame.data(sender: 9, round: 0, sequence: 0, payload: [1]).encoded()
        XCTAssertThrowsError(try far.withUnsafeBytes { try ExchangeFrame.decode($0, peers: 4) }) {
            XCTAssertEqual($0 as? ExchangeError, .badSender(9, peers: 4))
        }
    }

    func testDuplicatedMessageIsDetected() throws {
        let (data, _) = frames(sender: 2, payloads: [[1], [2]])
        var ledger = PeerLedger(sender: 2)
        try ledger.accept(data[0])
        XCTAssertThrowsError(try ledger.accept(data[0])) { XCTAssertEqual($0 as? ExchangeError, .duplicate(from: 2, sequence: 0)) }
    }

    func testLostMessageIsDetected() throws {
        let (data, end) = frames(sender: 2, payloads: [[1], [2], [3]])
        var ledger = PeerLedger(sender: 2)
        try ledger.accept(data[0])
        XCTAssertThrowsError(try ledger.accept(data[2])) { XCTAssertEqual($0 as? ExchangeError, .gap(from: 2, expected: 1, got: 2)) }
        // The last message lost: only the end marker's count can tell.
        var tail = PeerLedger(sender: 2)
        try tail.accept(data[0]); try tail.accept(data[1])
        XCTAssertThrowsError(try tail.accept(end)) {
            XCTAssertEqual($0 as? ExchangeError, .countMismatch(from: 2, sentMessages: 3, receivedMessages: 2, sentBytes: 3, receivedBytes: 2))
        }
    }

    func testCorruptedPayloadIsDetected() {
        var f = ExchangeFrame.data(sender: 1, round: 0, sequence: 0, payload: [1, 2, 3])
        f.payload[1] = 99
        var ledger = PeerLedger(sender: 1)
        XCTAssertThrowsError(try ledger.accept(f)) { XCTAssertEqual($0 as? ExchangeError, .payloadChecksum(from: 1, sequence: 0)) }
    }

    func testDataAfterEndAndSecondEndAreErrors() throws {
        let (data, end) = frames(sender: 1, payloads: [[1]])
        var ledger = PeerLedger(sender: 1)
        try ledger.accept(data[0]); try ledger.accept(end)
        XCTAssertThrowsError(try ledger.accept(data[0])) { XCTAssertEqual($0 as? ExchangeError, .dataAfterEnd(from: 1)) }
        XCTAssertThrowsError(try ledger.accept(end)) { XCTAssertEqual($0 as? ExchangeError, .duplicateEnd(from: 1)) }
    }

    func testRecordBatchRoundTripAndMalformedBatch() throws {
        var batch: [UInt8] = []
        let records: [[UInt8]] = [[], [1], Array(repeating: 7, count: 300)]
        for r in records { r.withUnsafeBytes { RecordBatch.append($0, to: &batch) } }
        var got: [[UInt8]] = []
        try RecordBatch.forEach(in: batch, from: 0) { got.append(Array($0)) }
        XCTAssertEqual(got, records)
        XCTAssertThrowsError(try RecordBatch.forEach(in: Array(batch.dropLast()), from: 3) { _ in }) {
            XCTAssertEqual($0 as? ExchangeError, .malformedRecord(from: 3, offset: 9))
        }
    }
}

/// Two in-process ranks over a scripted transport: the round logic on its
/// own, including what happens when the wire drops or repeats a frame.
final class RecordExchangeTests: XCTestCase {
    func testSingleRankRoundDeliversToSelfInOrder() throws {
        let exchange = RecordExchange(transport: SelfOnlyTransport(), communicator: SingleRankCommunicator())
        var options = ExchangeOptions(); options.batchBytes = 64
        let small = RecordExchange(transport: SelfOnlyTransport(), communicator: SingleRankCommunicator(), options: options)
        for ex in [exchange, small] {
            var got: [String] = []
            let stats = try ex.round(produce: { out in
                for i in 0..<100 { try out.append(Array("record \(i)".utf8), to: 0) }
            }, consume: { sender, bytes in
                XCTAssertEqual(sender, 0)
                got.append(String(decoding: bytes, as: UTF8.self))
            })
            XCTAssertEqual(got, (0..<100).map { "record \($0)" })
            XCTAssertEqual(stats.recordsSent, 100)
            XCTAssertEqual(stats.recordsReceived, 100)
        }
        XCTAssertGreaterThan(small.roundNumber, 0)
    }

    func testOversizedRecordIsRefused() {
        var options = ExchangeOptions(); options.maxRecordBytes = 8
        let ex = RecordExchange(transport: SelfOnlyTransport(), communicator: SingleRankCommunicator(), options: options)
        XCTAssertThrowsError(try ex.round(produce: { try $0.append([UInt8](repeating: 0, count: 9), to: 0) }, consume: { _, _ in })) {
            XCTAssertEqual($0 as? ExchangeError, .recordTooLarge(bytes: 9, limit: 8))
        }
    }

    /// Rank 1's view: frames from rank 0 arrive from a script, possibly damaged.
    final class ScriptedTransport: FrameTransport {
        var incoming: [[UInt8]]
        var sent: [[UInt8]] = []
        init(incoming: [[UInt8]]) { self.incoming = incoming }
        var rank: Int { 1 }
        var size: Int { 2 }
        var endpoint: String { "scripted" }
        func trySend(_ frame: [UInt8], to peer: Int) throws -> Bool { sent.append(frame); return true }
        func receive(timeoutMilliseconds: Int) throws -> [UInt8]? { incoming.isEmpty ? nil : incoming.removeFirst() }
    }

    func streamFromRankZero(_ records: [[UInt8]]) -> [ExchangeFrame] {
        var frames: [ExchangeFrame] = []
        var checksum: UInt64 = 0, bytes: UInt64 = 0
        for (i, r) in records.enumerated() {
            var batch: [UInt8] = []
            r.withUnsafeBytes { RecordBatch.append($0, to: &batch) }
            let f = ExchangeFrame.data(sender: 0, round: 0, sequence: UInt64(i), payload: batch)
            checksum = PeerLedger.fold(checksum, f.checksum); bytes += UInt64(batch.count)
            frames.append(f)
        }
        frames.append(ExchangeFrame(kind: .end, sender: 0, round: 0, sequenceOrCount: UInt64(records.count), lengthOrBytes: bytes, checksum: checksum))
        return frames
    }

    func run(_ frames: [[UInt8]]) throws -> [[UInt8]] {
        var options = ExchangeOptions(); options.idleTimeoutSeconds = 0.3
        let transport = ScriptedTransport(incoming: frames)
        let ex = RecordExchange(transport: transport, communicator: SingleRankCommunicator(), options: options)
        var got: [[UInt8]] = []
        try ex.round(produce: { try $0.append([42], to: 0) }, consume: { _, r in got.append(Array(r)) })
        // What rank 1 sent rank 0: one data frame and an end marker with its totals.
        let sentFrames = try transport.sent.map { try $0.withUnsafeBytes { try ExchangeFrame.decode($0, peers: 2) } }
        XCTAssertEqual(sentFrames.map(\.kind), [.data, .end])
        XCTAssertEqual(sentFrames.last?.sequenceOrCount, 1)
        return got
    }

    func testCleanStreamIsDelivered() throws {
        let frames = streamFromRankZero([[1], [2, 2], [3, 3, 3]]).map { $0.encoded() }
        XCTAssertEqual(try run(frames), [[1], [2, 2], [3, 3, 3]])
    }

    func testDroppedFrameFailsTheRound() {
        var frames = streamFromRankZero([[1], [2], [3]]).map { $0.encoded() }
        frames.remove(at: 1)
        XCTAssertThrowsError(try run(frames)) { XCTAssertEqual($0 as? ExchangeError, .gap(from: 0, expected: 1, got: 2)) }
    }

    func testDuplicatedFrameFailsTheRound() {
        var frames = streamFromRankZero([[1], [2]]).map { $0.encoded() }
        frames.insert(frames[0], at: 1)
        XCTAssertThrowsError(try run(frames)) { XCTAssertEqual($0 as? ExchangeError, .duplicate(from: 0, sequence: 0)) }
    }

    func testTruncatedFrameFailsTheRound() {
        var frames = streamFromRankZero([[1, 2, 3, 4]]).map { $0.encoded() }
        frames[0].removeLast()
        XCTAssertThrowsError(try run(frames)) {
            guard case .truncatedFrame = $0 as? ExchangeError else { return XCTFail("\($0)") }
        }
    }

    func testMissingEndMarkerTimesOut() {
        var frames = streamFromRankZero([[1]]).map { $0.encoded() }
        frames.removeLast()
        XCTAssertThrowsError(try run(frames)) { XCTAssertEqual($0 as? ExchangeError, .timeout(seconds: 0.3, waitingFor: [0])) }
    }
}
