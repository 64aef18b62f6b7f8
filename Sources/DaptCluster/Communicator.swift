import DaptCore

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
    /// Sums (by `op`) `source` element-wise across ranks and leaves block
    /// `rank` of the result in `destination`: the blocks are consecutive in
    /// rank order, block r holding `counts[r]` elements (`source.count` is
    /// their total, `destination.count` this rank's).
    func reduceScatter<T: CollectiveElement>(_ source: UnsafeBufferPointer<T>, into destination: UnsafeMutableBufferPointer<T>,
                                             counts: [Int], op: ReduceOp) throws
    /// Fills `buffer` on every rank with every rank's block, in place: block
    /// r (consecutive in rank order, `counts[r]` elements) comes from rank r.
    func allGatherInPlace<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, counts: [Int]) throws
    /// Every rank's `block` (`counts[r]` elements from rank r) into `whole`
    /// on `root`, consecutive in rank order; `whole` is nil elsewhere.
    func gather<T: CollectiveElement>(_ block: UnsafeBufferPointer<T>, into whole: UnsafeMutableBufferPointer<T>?, counts: [Int], root: Int) throws
    /// Every rank's `values` (any count per rank), indexed by rank, on every rank.
    func allGatherV<T: CollectiveElement>(_ values: [T]) throws -> [[T]]
    /// Every rank's `values`, indexed by rank, on `root`; nil elsewhere.
    func gatherV<T: CollectiveElement>(_ values: [T], root: Int) throws -> [[T]]?
    /// Point-to-point; `receive` learns the count from the message.
    func send<T: CollectiveElement>(_ values: [T], to peer: Int, tag: Int) throws
    func receive<T: CollectiveElement>(_ type: T.Type, from peer: Int, tag: Int) throws -> [T]
    /// Point-to-point from and into preallocated memory (no copies where the
    /// group sends natively); the message must hold exactly `buffer.count` elements.
    func send<T: CollectiveElement>(_ buffer: UnsafeBufferPointer<T>, to peer: Int, tag: Int) throws
    func receive<T: CollectiveElement>(into buffer: UnsafeMutableBufferPointer<T>, from peer: Int, tag: Int) throws
    /// Splits into sub-groups: ranks with the same `color` form one group,
    /// ordered by `key` (then by old rank). For data × tensor × pipeline grids.
    func split(color: Int, key: Int) throws -> any Communicator
    /// Starts reducing `storage[range]` element-wise across ranks, in place,
    /// and returns at once; the result is there after the returned
    /// collective's `wait()`. Until then nothing may touch `range`. The
    /// collective keeps `storage` alive, so the address it works on stays valid.
    func startAllReduce<S: StableStorage>(_ storage: S, range: Range<Int>, op: ReduceOp) throws -> any PendingCollective
    /// Starts `reduceScatter` of `source[range]` into `destination[into]`
    /// and returns at once: block r of the reduced range (`counts[r]`
    /// elements, consecutive in rank order; zero is allowed) lands on rank
    /// r. Until the returned collective's `wait()` nothing may touch either
    /// range, and afterwards `source[range]` may hold partial sums (the MPI
    /// group's ring makes them in place). The collective keeps both storages
    /// (and its counts) alive.
    func startReduceScatter<S: StableStorage, D: StableStorage>(_ source: S, range: Range<Int>, into destination: D, at into: Range<Int>,
                                                                counts: [Int], op: ReduceOp) throws -> any PendingCollective
        where S.Element == D.Element
}

/// Storage whose elements keep one address for as long as it lives (a
/// class owning one allocation): what a non-blocking collective may work on.
public protocol StableStorage: AnyObject {
    associatedtype Element: CollectiveElement
    var count: Int { get }
    func withBuffer<R>(_ body: (UnsafeMutableBufferPointer<Element>) throws -> R) rethrows -> R
}

/// A buffer for collectives that owns its memory (on huge pages when large,
/// see `LargeAllocation`): stable storage for non-blocking collectives.
public final class CollectiveBuffer<Element: CollectiveElement>: StableStorage {
    private let storage: UnsafeMutableBufferPointer<Element>

    public init(repeating value: Element, count: Int, hugePages: Bool = true) {
        storage = LargeAllocation.allocate(repeating: value, count: count, hugePages: hugePages)
    }

    public init(_ values: [Element]) {
        storage = LargeAllocation.allocate(Element.self, count: values.count)
        _ = storage.initialize(fromContentsOf: values)
    }

    deinit { LargeAllocation.deallocate(storage) }

    public var count: Int { storage.count }
    public var values: [Element] { Array(storage) }

    public func withBuffer<R>(_ body: (UnsafeMutableBufferPointer<Element>) throws -> R) rethrows -> R { try body(storage) }
}

/// A non-blocking collective in flight. It owns its requests and the
/// storage it works on; dropping it unfinished waits for it first (a
/// collective cannot be abandoned).
public protocol PendingCollective: AnyObject {
    /// Lets the collective progress; true once it has finished.
    func test() throws -> Bool
    /// Returns once the collective has finished.
    func wait() throws
}

/// How many non-blocking reductions a group runs at once (`MPICommunicator`'s
/// rings); later ones wait their turn. Each holds at most one block of the
/// reduced range as scratch, which `dapt plan` counts.
public enum NonBlockingReductions {
    public static let running = 8
}

/// A collective that finished before it was returned.
public final class FinishedCollective: PendingCollective {
    public init() {}
    public func test() throws -> Bool { true }
    public func wait() throws {}
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

    /// Through the array `send`, for groups without native point-to-point.
    public func send<T: CollectiveElement>(_ buffer: UnsafeBufferPointer<T>, to peer: Int, tag: Int) throws {
        try send(Array(buffer), to: peer, tag: tag)
    }

    /// Through the array `receive`, for groups without native point-to-point.
    public func receive<T: CollectiveElement>(into buffer: UnsafeMutableBufferPointer<T>, from peer: Int, tag: Int) throws {
        let values = try receive(T.self, from: peer, tag: tag)
        guard values.count == buffer.count else { throw CommunicatorError.sizeMismatch(expected: buffer.count, got: values.count) }
        _ = buffer.update(fromContentsOf: values)
    }

    /// Through `allReduce`, for groups without a native reduce-scatter.
    public func reduceScatter<T: CollectiveElement>(_ source: UnsafeBufferPointer<T>, into destination: UnsafeMutableBufferPointer<T>,
                                                    counts: [Int], op: ReduceOp) throws {
        try checkBlocks(counts, total: source.count, mine: destination.count)
        var all = Array(source)
        try allReduce(&all, op: op)
        let first = counts[..<rank].reduce(0, +)
        _ = destination.update(fromContentsOf: all[first..<(first + counts[rank])])
    }

    /// Through `allGatherV`, for groups without a native in-place all-gather.
    public func allGatherInPlace<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, counts: [Int]) throws {
        try checkBlocks(counts, total: buffer.count, mine: nil)
        let first = counts[..<rank].reduce(0, +)
        let blocks = try allGatherV(Array(buffer[first..<(first + counts[rank])]))
        var offset = 0
        for block in blocks {
            _ = UnsafeMutableBufferPointer(rebasing: buffer[offset..<(offset + block.count)]).update(fromContentsOf: block)
            offset += block.count
        }
    }

    /// Through `gatherV`, for groups without a native gather into a buffer.
    public func gather<T: CollectiveElement>(_ block: UnsafeBufferPointer<T>, into whole: UnsafeMutableBufferPointer<T>?, counts: [Int], root: Int) throws {
        try checkBlocks(counts, total: whole?.count ?? counts.reduce(0, +), mine: block.count)
        guard let blocks = try gatherV(Array(block), root: root), let whole else { return }
        var offset = 0
        for b in blocks {
            _ = UnsafeMutableBufferPointer(rebasing: whole[offset..<(offset + b.count)]).update(fromContentsOf: b)
            offset += b.count
        }
    }

    /// `total` elements in one block per rank, nearly equal: the first
    /// `total % size` blocks one element longer.
    public func nearlyEqualBlocks(of total: Int) -> [Int] {
        (0..<size).map { total / size + ($0 < total % size ? 1 : 0) }
    }

    /// Block counts of a reduce-scatter or all-gather: one per rank, summing to `total`.
    public func checkBlocks(_ counts: [Int], total: Int, mine: Int?) throws {
        guard counts.count == size else { throw CommunicatorError.sizeMismatch(expected: size, got: counts.count) }
        let sum = counts.reduce(0, +)
        guard sum == total else { throw CommunicatorError.sizeMismatch(expected: sum, got: total) }
        if let mine, mine != counts[rank] { throw CommunicatorError.sizeMismatch(expected: counts[rank], got: mine) }
    }

    /// Through the blocking `allReduce`, for groups without non-blocking collectives.
    public func startAllReduce<S: StableStorage>(_ storage: S, range: Range<Int>, op: ReduceOp) throws -> any PendingCollective {
        try checkRange(range, in: storage.count)
        try storage.withBuffer { try allReduce(UnsafeMutableBufferPointer(rebasing: $0[range]), op: op) }
        return FinishedCollective()
    }

    /// Through the blocking `reduceScatter`, for groups without non-blocking collectives.
    public func startReduceScatter<S: StableStorage, D: StableStorage>(_ source: S, range: Range<Int>, into destination: D, at into: Range<Int>,
                                                                       counts: [Int], op: ReduceOp) throws -> any PendingCollective
        where S.Element == D.Element {
        try checkRange(range, in: source.count)
        try checkRange(into, in: destination.count)
        try source.withBuffer { s in
            try destination.withBuffer { d in
                try reduceScatter(UnsafeBufferPointer(rebasing: s[range]), into: UnsafeMutableBufferPointer(rebasing: d[into]), counts: counts, op: op)
            }
        }
        return FinishedCollective()
    }

    /// A range of a collective's storage must lie inside it.
    public func checkRange(_ range: Range<Int>, in count: Int) throws {
        guard range.lowerBound >= 0, range.upperBound <= count else { throw CommunicatorError.sizeMismatch(expected: count, got: range.upperBound) }
    }

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
