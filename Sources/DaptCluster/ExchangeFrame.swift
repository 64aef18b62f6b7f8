import DaptCore

/// The wire format of the all-to-all exchange. Every frame starts with a
/// fixed 40-byte little-endian header; data frames carry a batch of
/// length-prefixed records, end frames carry the totals the receiver checks.
///
///     offset  size  field
///     0       4     magic "DXF1"
///     4       1     kind (0 data, 1 end)
///     5       3     zero
///     8       4     sender rank
///     12      4     round
///     16      8     data: sequence number; end: messages sent
///     24      8     data: payload length;  end: payload bytes sent
///     32      8     data: xxh64 of payload; end: running checksum
public struct FrameHeader: Equatable, Sendable {
    public enum Kind: UInt8, Sendable { case data = 0, end = 1 }

    public static let magic: UInt32 = 0x3146_5844 // "DXF1" little-endian
    public static let size = 40

    public var kind: Kind
    public var sender: Int
    public var round: Int
    public var sequenceOrCount: UInt64
    public var lengthOrBytes: UInt64
    public var checksum: UInt64

    public init(kind: Kind, sender: Int, round: Int, sequenceOrCount: UInt64, lengthOrBytes: UInt64, checksum: UInt64) {
        self.kind = kind; self.sender = sender; self.round = round
        self.sequenceOrCount = sequenceOrCount; self.lengthOrBytes = lengthOrBytes; self.checksum = checksum
    }

    /// Writes the 40 header bytes at the start of `buffer`.
    public func write(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.size)
        buffer.storeBytes(of: Self.magic.littleEndian, toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: UInt32(kind.rawValue).littleEndian, toByteOffset: 4, as: UInt32.self)
        buffer.storeBytes(of: UInt32(sender).littleEndian, toByteOffset: 8, as: UInt32.self)
        buffer.storeBytes(of: UInt32(round).littleEndian, toByteOffset: 12, as: UInt32.self)
        buffer.storeBytes(of: sequenceOrCount.littleEndian, toByteOffset: 16, as: UInt64.self)
        buffer.storeBytes(of: lengthOrBytes.littleEndian, toByteOffset: 24, as: UInt64.self)
        buffer.storeBytes(of: checksum.littleEndian, toByteOffset: 32, as: UInt64.self)
    }

    /// Parses the header of a whole frame received from the network, checking
    /// every length against the bytes actually there before anything is used.
    public static func read(_ bytes: UnsafeRawBufferPointer, peers: Int) throws -> FrameHeader {
        guard bytes.count >= size else { throw ExchangeError.truncatedFrame(length: bytes.count, needed: size) }
        func get<I: FixedWidthInteger>(_ offset: Int, _: I.Type) -> I { I(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: I.self)) }
        guard get(0, UInt32.self) == magic else { throw ExchangeError.badMagic(get(0, UInt32.self)) }
        guard let kind = Kind(rawValue: bytes[4]) else { throw ExchangeError.badKind(bytes[4]) }
        let sender = Int(get(8, UInt32.self))
        guard sender < peers else { throw ExchangeError.badSender(sender, peers: peers) }
        let length = get(24, UInt64.self)
        let payloadCount = bytes.count - size
        if kind == .data {
            guard length == UInt64(payloadCount) else {
                throw ExchangeError.truncatedFrame(length: bytes.count, needed: size + Int(clamping: length))
            }
        } else if payloadCount != 0 {
            throw ExchangeError.truncatedFrame(length: bytes.count, needed: size)
        }
        return FrameHeader(kind: kind, sender: sender, round: Int(get(12, UInt32.self)),
                           sequenceOrCount: get(16, UInt64.self), lengthOrBytes: length, checksum: get(32, UInt64.self))
    }
}

/// The wire format of the all-to-all exchange. Every frame starts with a
/// fixed 40-byte little-endian header; data frames carry a batch of
/// length-prefixed records, end frames carry the totals the receiver checks.
///
///     offset  size  field
///     0       4     magic "DXF1"
///     4       1     kind (0 data, 1 end)
///     5       3     zero
///     8       4     sender rank
///     12      4     round
///     16      8     data: sequence number; end: messages sent
///     24      8     data: payload length;  end: payload bytes sent
///     32      8     data: xxh64 of payload (seeded by sequence); end: running checksum
///
/// The exchange itself writes headers in place in front of each batch; this
/// value type (header plus a copied payload) is for tests and tools.
public struct ExchangeFrame: Equatable, Sendable {
    public typealias Kind = FrameHeader.Kind
    public static let headerSize = FrameHeader.size

    public var header: FrameHeader
    public var payload: [UInt8]

    public init(kind: Kind, sender: Int, round: Int, sequenceOrCount: UInt64, lengthOrBytes: UInt64, checksum: UInt64, payload: [UInt8] = []) {
        header = FrameHeader(kind: kind, sender: sender, round: round, sequenceOrCount: sequenceOrCount,
                             lengthOrBytes: lengthOrBytes, checksum: checksum)
        self.payload = payload
    }

    public var kind: Kind { header.kind }
    public var sender: Int { header.sender }
    public var round: Int { header.round }
    public var sequenceOrCount: UInt64 { header.sequenceOrCount }
    public var lengthOrBytes: UInt64 { header.lengthOrBytes }
    public var checksum: UInt64 { header.checksum }

    public static func data(sender: Int, round: Int, sequence: UInt64, payload: [UInt8]) -> ExchangeFrame {
        ExchangeFrame(kind: .data, sender: sender, round: round, sequenceOrCount: sequence,
                      lengthOrBytes: UInt64(payload.count), checksum: StableHash.xxh64(payload, seed: sequence), payload: payload)
    }

    public func encoded() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.headerSize)
        out.withUnsafeMutableBytes { header.write(into: $0) }
        return out + payload
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer, peers: Int) throws -> ExchangeFrame {
        let header = try FrameHeader.read(bytes, peers: peers)
        return ExchangeFrame(kind: header.kind, sender: header.sender, round: header.round, sequenceOrCount: header.sequenceOrCount,
                             lengthOrBytes: header.lengthOrBytes, checksum: header.checksum,
                             payload: Array(UnsafeRawBufferPointer(rebasing: bytes[headerSize...])))
    }
}

public enum ExchangeError: Error, CustomStringConvertible, Equatable {
    case truncatedFrame(length: Int, needed: Int)
    case badMagic(UInt32)
    case badKind(UInt8)
    case badSender(Int, peers: Int)
    case wrongRound(from: Int, expected: Int, got: Int)
    case duplicate(from: Int, sequence: UInt64)
    case gap(from: Int, expected: UInt64, got: UInt64)
    case payloadChecksum(from: Int, sequence: UInt64)
    case countMismatch(from: Int, sentMessages: UInt64, receivedMessages: UInt64, sentBytes: UInt64, receivedBytes: UInt64)
    case streamChecksum(from: Int)
    case dataAfterEnd(from: Int)
    case duplicateEnd(from: Int)
    case malformedRecord(from: Int, offset: Int)
    case recordTooLarge(bytes: Int, limit: Int)
    case timeout(seconds: Double, waitingFor: [Int])
    case transport(String)

    public var description: String {
        switch self {
        case .truncatedFrame(let l, let n): return "exchange: truncated frame (\(l) bytes, needs \(n))"
        case .badMagic(let m): return "exchange: bad frame magic 0x\(String(m, radix: 16))"
        case .badKind(let k): return "exchange: unknown frame kind \(k)"
        case .badSender(let s, let p): return "exchange: frame from rank \(s) but only \(p) ranks"
        case .wrongRound(let f, let e, let g): return "exchange: rank \(f) sent round \(g) during round \(e)"
        case .duplicate(let f, let s): return "exchange: duplicated message \(s) from rank \(f)"
        case .gap(let f, let e, let g): return "exchange: lost message(s) from rank \(f): expected #\(e), got #\(g)"
        case .payloadChecksum(let f, let s): return "exchange: message \(s) from rank \(f) fails its checksum"
        case .countMismatch(let f, let sm, let rm, let sb, let rb):
            return "exchange: rank \(f) sent \(sm) messages / \(sb) bytes but \(rm) / \(rb) arrived"
        case .streamChecksum(let f): return "exchange: stream from rank \(f) fails its end checksum"
        case .dataAfterEnd(let f): return "exchange: data from rank \(f) after its end marker"
        case .duplicateEnd(let f): return "exchange: second end marker from rank \(f)"
        case .malformedRecord(let f, let o): return "exchange: malformed record in a batch from rank \(f) at offset \(o)"
        case .recordTooLarge(let b, let l): return "exchange: record of \(b) bytes exceeds the \(l)-byte limit"
        case .timeout(let s, let w): return "exchange: nothing arrived for \(s) s; still waiting for ranks \(w)"
        case .transport(let m): return "exchange transport: \(m)"
        }
    }
}

/// What one receiver knows of one sender's stream in a round; it turns every
/// loss, duplicate, truncation or reordering into an error.
public struct PeerLedger: Sendable {
    public let sender: Int
    public private(set) var messages: UInt64 = 0
    public private(set) var bytes: UInt64 = 0
    public private(set) var checksum: UInt64 = 0
    public private(set) var ended = false

    public init(sender: Int) { self.sender = sender }

    /// Folds one message's payload checksum into a stream checksum.
    public static func fold(_ running: UInt64, _ payloadChecksum: UInt64) -> UInt64 {
        StableHash.mix64(running ^ payloadChecksum)
    }

    public mutating func accept(_ frame: ExchangeFrame) throws {
        try frame.payload.withUnsafeBytes { try accept(frame.header, payload: $0) }
    }

    /// Checks one frame (its header and the payload bytes that followed it).
    public mutating func accept(_ frame: FrameHeader, payload: UnsafeRawBufferPointer) throws {
        switch frame.kind {
        case .data:
            if ended { throw ExchangeError.dataAfterEnd(from: sender) }
            let seq = frame.sequenceOrCount
            if seq < messages { throw ExchangeError.duplicate(from: sender, sequence: seq) }
            if seq > messages { throw ExchangeError.gap(from: sender, expected: messages, got: seq) }
            guard StableHash.xxh64(payload, seed: seq) == frame.checksum else {
                throw ExchangeError.payloadChecksum(from: sender, sequence: seq)
            }
            messages += 1
            bytes += UInt64(payload.count)
            checksum = Self.fold(checksum, frame.checksum)
        case .end:
            if ended { throw ExchangeError.duplicateEnd(from: sender) }
            guard frame.sequenceOrCount == messages, frame.lengthOrBytes == bytes else {
                throw ExchangeError.countMismatch(from: sender, sentMessages: frame.sequenceOrCount, receivedMessages: messages,
                                                  sentBytes: frame.lengthOrBytes, receivedBytes: bytes)
            }
            guard frame.checksum == checksum else { throw ExchangeError.streamChecksum(from: sender) }
            ended = true
        }
    }
}

/// Records inside a data payload: each a little-endian UInt32 length and its bytes.
public enum RecordBatch {
    public static func append(_ record: UnsafeRawBufferPointer, to batch: inout [UInt8]) {
        withUnsafeBytes(of: UInt32(record.count).littleEndian) { batch.append(contentsOf: $0) }
        batch.append(contentsOf: record)
    }

    public static func forEach(in payload: [UInt8], from sender: Int, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try payload.withUnsafeBytes { try forEach(in: $0, from: sender, body) }
    }

    public static func forEach(in raw: UnsafeRawBufferPointer, from sender: Int, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        var offset = 0
        while offset < raw.count {
            guard raw.count - offset >= 4 else { throw ExchangeError.malformedRecord(from: sender, offset: offset) }
            let length = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            guard raw.count - offset - 4 >= length else { throw ExchangeError.malformedRecord(from: sender, offset: offset) }
            try body(UnsafeRawBufferPointer(rebasing: raw[(offset + 4)..<(offset + 4 + length)]))
            offset += 4 + length
        }
    }
}
