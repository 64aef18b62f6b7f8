/// Reduction applied by `allReduce`.
public enum ReduceOp: String, Sendable, CaseIterable {
    case sum, max, min
}

/// The element types collectives move, each mapped to one MPI datatype.
public enum ElementKind: Sendable {
    case uint8, int32, int64, uint64, float, double
}

public protocol CollectiveElement: BitwiseCopyable, Comparable, Sendable {
    static var kind: ElementKind { get }
}
extension UInt8: CollectiveElement { public static var kind: ElementKind { .uint8 } }
extension Int32: CollectiveElement { public static var kind: ElementKind { .int32 } }
extension Int64: CollectiveElement { public static var kind: ElementKind { .int64 } }
extension UInt64: CollectiveElement { public static var kind: ElementKind { .uint64 } }
extension Float: CollectiveElement { public static var kind: ElementKind { .float } }
extension Double: CollectiveElement { public static var kind: ElementKind { .double } }

/// A group of ranks that talk to each other. Passed explicitly to everything
/// that communicates; there is no global parallel state. `MPICommunicator`
/// is the real one; `SingleRankCommunicator` serves one process and tests.
///
/// Collective calls must be made by every rank of the group in the same order.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// The host this rank runs on.
    var hostName: String { get }

    func barrier() throws
    /// Replaces `buffer` on every rank with root's contents.
    func broadcast<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws
    /// Reduces `buffer` element-wise across ranks, in place, on every rank.
    func allReduce<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws
    /// Every rank's `values` (any count per rank), indexed by rank, on every rank.
    func allGatherV<T: CollectiveElement>(_ values: [T]) throws -> [[T]]
    /// Every rank's `values`, indexed by rank, on `root`; nil elsewhere.
    func gatherV<T: CollectiveElement>(_ values: [T], root: Int) throws -> [[T]]?
    /// Point-to-point; `receive` learns the count from the message.
    func send<T: CollectiveElement>(_ values: [T], to peer: Int, tag: Int) throws
    func receive<T: CollectiveElement>(_ type: T.Type, from peer: Int, tag: Int) throws -> [T]
    /// Splits into sub-groups: ranks with the same `color` form one group,
    /// ordered by `key` (then by old rank). For data × tensor × pipeline grids.
    func split(color: Int, key: Int) throws -> any Communicator
}

public enum CommunicatorError: Error, CustomStringConvertible, Equatable {
    case invalidRank(Int, size: Int)
    case noMessage(from: Int, tag: Int)
    case sizeMismatch(expected: Int, got: Int)

    public var description: String {
        switch self {
        case .invalidRank(let r, let size): return "rank \(r) is outside 0..<\(size)"
        case .noMessage(let from, let tag): return "no message from rank \(from) with tag \(tag)"
        case .sizeMismatch(let e, let g): return "collective size mismatch: expected \(e) elements, got \(g)"
        }
    }
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }

    public func allReduce<T: CollectiveElement>(_ values: inout [T], op: ReduceOp) throws {
        try values.withUnsafeMutableBufferPointer { try allReduce($0, op: op) }
    }

    public func allReduce<T: CollectiveElement>(_ value: T, op: ReduceOp) throws -> T {
        var v = [value]
        try allReduce(&v, op: op)
        return v[0]
    }

    public func broadcast<T: CollectiveElement>(_ values: inout [T], root: Int) throws {
        // The count goes first so receivers can size their buffer.
        var count = [Int64(values.count)]
        try count.withUnsafeMutableBufferPointer { try broadcast($0, root: root) }
        if rank != root { values = [T](unsafeUninitializedCapacity: Int(count[0])) { buf, n in
            // Filled by the broadcast below; start from a copy of zero bytes.
            UnsafeMutableRawBufferPointer(buf).initializeMemory(as: UInt8.self, repeating: 0)
            n = Int(count[0])
        } }
        try values.withUnsafeMutableBufferPointer { try broadcast($0, root: root) }
    }

    public func broadcast(_ string: String, root: Int) throws -> String {
        var bytes = Array(string.utf8)
        try broadcast(&bytes, root: root)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Every rank's `value`, indexed by rank.
    public func allGather<T: CollectiveElement>(_ value: T) throws -> [T] {
        try allGatherV([value]).map { $0[0] }
    }

    public func allGather(_ string: String) throws -> [String] {
        try allGatherV(Array(string.utf8)).map { String(decoding: $0, as: UTF8.self) }
    }

    public func gather(_ string: String, root: Int) throws -> [String]? {
        try gatherV(Array(string.utf8), root: root)?.map { String(decoding: $0, as: UTF8.self) }
    }
}

/// An error every rank throws alike, after the ranks agreed on it with a
/// collective (e.g. the first bad record in input order under `--strict`).
/// The command line prints it once, on rank 0, and ends every rank cleanly
/// instead of aborting the job from whichever rank got there first.
public protocol CollectiveError: Error, CustomStringConvertible {
    /// The process exit status (1 unless the error says otherwise, e.g. 2 for a bad setting).
    var exitCode: Int32 { get }
}

extension CollectiveError {
    public var exitCode: Int32 { 1 }
}
