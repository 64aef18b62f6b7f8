import DaptCore

/// Moves frames between ranks. The ZeroMQ transport is the real one; the
/// exchange logic above it (batching, ledgers, end markers) is transport-free.
public protocol FrameTransport: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Where this rank receives (e.g. `tcp://127.0.0.1:40123`).
    var endpoint: String { get }
    /// Sends `frame` to `peer` unless that would block (the peer's queue is at
    /// its high-water mark); returns false then and the caller retries later.
    func trySend(_ frame: [UInt8], to peer: Int) throws -> Bool
    /// Waits up to `timeoutMilliseconds` for one frame from any peer.
    func receive(timeoutMilliseconds: Int) throws -> [UInt8]?
}

public struct ExchangeOptions: Sendable, Equatable {
    /// Records to one peer are gathered into messages of about this size.
    public var batchBytes: Int = 256 << 10
    /// A single record larger than this is refused.
    public var maxRecordBytes: Int = 64 << 20
    /// A round fails if nothing arrives for this long while ranks are awaited.
    public var idleTimeoutSeconds: Double = 300
    public init() {}
}

public struct ExchangeRoundStats: Sendable, Equatable {
    public var recordsSent = 0, messagesSent = 0, bytesSent = 0
    public var recordsReceived = 0, messagesReceived = 0, bytesReceived = 0
    public var seconds = 0.0
    public init() {}
}

/// All-to-all streaming of small records between ranks, in rounds.
///
/// In a round, `produce` appends records for any rank (itself included) to an
/// outbox; records are batched per destination and sent as they fill. While a
/// send is blocked by backpressure the exchange receives, so ranks that all
/// send at once never deadlock. `consume(sender, record)` is called on the
/// calling thread for every record that arrives — possibly while `produce` is
/// still running — in send order per sender. A round ends once every rank's
/// end marker (message count, byte count, checksum) has arrived and matched,
/// followed by a barrier, so rounds never overlap.
public final class RecordExchange {
    public let transport: any FrameTransport
    public let communicator: any Communicator
    public let options: ExchangeOptions
    public private(set) var roundNumber = 0

    public init(transport: any FrameTransport, communicator: any Communicator, options: ExchangeOptions = ExchangeOptions()) {
        self.transport = transport
        self.communicator = communicator
        self.options = options
    }

    public var rank: Int { transport.rank }
    public var size: Int { transport.size }

    @discardableResult
    public func round(produce: (ExchangeOutbox) throws -> Void,
                      consume: (Int, UnsafeRawBufferPointer) throws -> Void) throws -> ExchangeRoundStats {
        let started = monotonicSeconds()
        let state = try withoutActuallyEscaping(consume) { consume -> ExchangeRoundStats in
            let round = RoundState(exchange: self, round: roundNumber, consume: consume)
            let outbox = ExchangeOutbox(round: round)
            try produce(outbox)
            try outbox.flushAll()
            try round.finish()
            return round.stats
        }
        roundNumber += 1
        try communicator.barrier()
        var stats = state
        stats.seconds = monotonicSeconds() - started
        return stats
    }
}

/// Where `produce` puts records; see `RecordExchange.round`.
public final class ExchangeOutbox {
    fileprivate let round: RoundState
    private var batches: [[UInt8]]

    fileprivate init(round: RoundState) {
        self.round = round
        batches = Array(repeating: [], count: round.size)
    }

    public var size: Int { round.size }

    public func append(_ record: UnsafeRawBufferPointer, to peer: Int) throws {
        precondition(peer >= 0 && peer < round.size, "peer \(peer) outside 0..<\(round.size)")
        guard record.count <= round.options.maxRecordBytes else {
            throw ExchangeError.recordTooLarge(bytes: record.count, limit: round.options.maxRecordBytes)
        }
        if batches[peer].isEmpty {
            // Room for the frame header, written in place when the batch is sent.
            batches[peer].reserveCapacity(FrameHeader.size + round.options.batchBytes + 64)
            batches[peer].append(contentsOf: repeatElement(0, count: FrameHeader.size))
        }
        RecordBatch.append(record, to: &batches[peer])
        round.stats.recordsSent += 1
        if batches[peer].count - FrameHeader.size >= round.options.batchBytes { try flush(peer) }
    }

    public func append(_ record: [UInt8], to peer: Int) throws {
        try record.withUnsafeBytes { try append($0, to: peer) }
    }

    fileprivate func flush(_ peer: Int) throws {
        guard !batches[peer].isEmpty else { return }
        try round.sendBatch(&batches[peer], to: peer)
        batches[peer].removeAll(keepingCapacity: true)
    }

    fileprivate func flushAll() throws {
        for peer in 0..<batches.count { try flush(peer) }
    }
}

fileprivate final class RoundState {
    let transport: any FrameTransport
    let options: ExchangeOptions
    let round: Int
    let rank: Int
    let size: Int
    let consume: (Int, UnsafeRawBufferPointer) throws -> Void
    var ledgers: [PeerLedger]
    var sequence: [UInt64]
    var sentBytes: [UInt64]
    var sentChecksum: [UInt64]
    var stats = ExchangeRoundStats()

    init(exchange: RecordExchange, round: Int, consume: @escaping (Int, UnsafeRawBufferPointer) throws -> Void) {
        transport = exchange.transport
        options = exchange.options
        self.round = round
        rank = transport.rank
        size = transport.size
        self.consume = consume
        ledgers = (0..<size).map { PeerLedger(sender: $0) }
        sequence = Array(repeating: 0, count: size)
        sentBytes = Array(repeating: 0, count: size)
        sentChecksum = Array(repeating: 0, count: size)
    }

    /// Sends `frame`: a reserved header followed by a batch of records.
    func sendBatch(_ frame: inout [UInt8], to peer: Int) throws {
        let payloadCount = frame.count - FrameHeader.size
        stats.messagesSent += 1
        stats.bytesSent += payloadCount
        if peer == rank {
            // Records to self skip the wire.
            stats.messagesReceived += 1
            stats.bytesReceived += payloadCount
            try frame.withUnsafeBytes { try deliver(UnsafeRawBufferPointer(rebasing: $0[FrameHeader.size...]), from: rank) }
            return
        }
        let seq = sequence[peer]
        let checksum = frame.withUnsafeBytes { StableHash.xxh64(UnsafeRawBufferPointer(rebasing: $0[FrameHeader.size...]), seed: seq) }
        let header = FrameHeader(kind: .data, sender: rank, round: round, sequenceOrCount: seq,
                                 lengthOrBytes: UInt64(payloadCount), checksum: checksum)
        frame.withUnsafeMutableBytes { header.write(into: $0) }
        sequence[peer] += 1
        sentBytes[peer] += UInt64(payloadCount)
        sentChecksum[peer] = PeerLedger.fold(sentChecksum[peer], checksum)
        try sendBlocking(frame, to: peer)
    }

    private func sendBlocking(_ bytes: [UInt8], to peer: Int) throws {
        var idleSince = monotonicSeconds()
        while try !transport.trySend(bytes, to: peer) {
            // Backpressure: receive while we wait, so two senders never deadlock.
            if try receiveOne(timeoutMilliseconds: 2) { idleSince = monotonicSeconds() }
            if monotonicSeconds() - idleSince > options.idleTimeoutSeconds {
                throw ExchangeError.timeout(seconds: options.idleTimeoutSeconds, waitingFor: [peer])
            }
        }
    }

    /// Sends end markers and receives until every peer's stream is complete.
    func finish() throws {
        for peer in 0..<size where peer != rank {
            let end = FrameHeader(kind: .end, sender: rank, round: round, sequenceOrCount: sequence[peer],
                                  lengthOrBytes: sentBytes[peer], checksum: sentChecksum[peer])
            var bytes = [UInt8](repeating: 0, count: FrameHeader.size)
            bytes.withUnsafeMutableBytes { end.write(into: $0) }
            try sendBlocking(bytes, to: peer)
        }
        var idleSince = monotonicSeconds()
        while true {
            let waiting = (0..<size).filter { $0 != rank && !ledgers[$0].ended }
            if waiting.isEmpty { return }
            if try receiveOne(timeoutMilliseconds: 100) {
                idleSince = monotonicSeconds()
            } else if monotonicSeconds() - idleSince > options.idleTimeoutSeconds {
                throw ExchangeError.timeout(seconds: options.idleTimeoutSeconds, waitingFor: waiting)
            }
        }
    }

    private func receiveOne(timeoutMilliseconds: Int) throws -> Bool {
        guard let bytes = try transport.receive(timeoutMilliseconds: timeoutMilliseconds) else { return false }
        try bytes.withUnsafeBytes { raw in
            let header = try FrameHeader.read(raw, peers: size)
            guard header.round == round else { throw ExchangeError.wrongRound(from: header.sender, expected: round, got: header.round) }
            guard header.sender != rank else { throw ExchangeError.badSender(header.sender, peers: size) }
            let payload = UnsafeRawBufferPointer(rebasing: raw[FrameHeader.size...])
            try ledgers[header.sender].accept(header, payload: payload)
            if header.kind == .data {
                stats.messagesReceived += 1
                stats.bytesReceived += payload.count
                try deliver(payload, from: header.sender)
            }
        }
        return true
    }

    private func deliver(_ payload: UnsafeRawBufferPointer, from sender: Int) throws {
        try RecordBatch.forEach(in: payload, from: sender) { record in
            stats.recordsReceived += 1
            try consume(sender, record)
        }
    }
}

/// A transport for a group of one: there are no peers, so nothing is sent.
public final class SelfOnlyTransport: FrameTransport {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var endpoint: String { "self" }
    public func trySend(_ frame: [UInt8], to peer: Int) throws -> Bool {
        throw ExchangeError.transport("a single-rank transport has no peer \(peer)")
    }
    public func receive(timeoutMilliseconds: Int) throws -> [UInt8]? { nil }
}
