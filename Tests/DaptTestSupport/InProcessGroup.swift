import DaptCluster
import Dispatch
import Foundation

/// `size` ranks on threads of one process: each collective waits until every
/// rank has handed in its part, then gives every rank all the parts.
public final class InProcessGroup: @unchecked Sendable {
    public let size: Int
    private let condition = NSCondition()
    private var deposits: [[UInt8]?]
    private var arrived = 0, generation = 0
    private var result: [[UInt8]] = []

    public init(size: Int) {
        self.size = size
        deposits = Array(repeating: nil, count: size)
    }

    /// Collectives completed so far. Read by a rank between its own
    /// collectives, it counts exactly those it has taken part in: no other
    /// can complete without it.
    public var collectives: Int {
        condition.lock()
        defer { condition.unlock() }
        return generation
    }

    func exchange(rank: Int, _ bytes: [UInt8]) -> [[UInt8]] {
        condition.lock()
        defer { condition.unlock() }
        let current = generation
        deposits[rank] = bytes
        arrived += 1
        if arrived == size {
            result = deposits.map { $0! }
            deposits = Array(repeating: nil, count: size)
            arrived = 0
            generation += 1
            condition.broadcast()
        } else {
            while generation == current { condition.wait() }
        }
        return result
    }

    private var mailboxes: [[Int]: [[UInt8]]] = [:]

    /// Point-to-point: a message from `from` to `to` with `tag`, queued.
    func post(from: Int, to: Int, tag: Int, _ bytes: [UInt8]) {
        condition.lock()
        mailboxes[[from, to, tag], default: []].append(bytes)
        condition.broadcast()
        condition.unlock()
    }

    /// The oldest message from `from` to `to` with `tag`, waiting for it.
    func take(from: Int, to: Int, tag: Int) -> [UInt8] {
        condition.lock()
        defer { condition.unlock() }
        while mailboxes[[from, to, tag]]?.isEmpty ?? true { condition.wait() }
        return mailboxes[[from, to, tag]]!.removeFirst()
    }

    /// Runs `body(rank)` for every rank on its own thread and returns the results in rank order.
    public func run<R>(_ body: @escaping @Sendable (InProcessRank) throws -> R) throws -> [R] {
        let results = Results<R>(size)
        // One thread per rank (not a pool as wide as the cores): ranks block on each other.
        let finished = DispatchSemaphore(value: 0)
        for r in 0..<size {
            let thread = Thread {
                results.set(r, Result { try body(InProcessRank(group: self, rank: r)) })
                finished.signal()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        for _ in 0..<size { finished.wait() }
        return try results.values.map { try $0!.get() }
    }

    private final class Results<R>: @unchecked Sendable {
        let lock = NSLock()
        var values: [Result<R, any Error>?]
        init(_ n: Int) { values = Array(repeating: nil, count: n) }
        func set(_ i: Int, _ v: Result<R, any Error>) { lock.lock(); values[i] = v; lock.unlock() }
    }
}

/// One rank of an `InProcessGroup`.
public final class InProcessRank: Communicator {
    public let group: InProcessGroup
    public let rank: Int
    public var size: Int { group.size }
    public var hostName: String { "localhost" }

    public init(group: InProcessGroup, rank: Int) { self.group = group; self.rank = rank }

    private func bytes<T>(_ buffer: UnsafeBufferPointer<T>) -> [UInt8] { Array(UnsafeRawBufferPointer(buffer)) }

    public func barrier() throws { _ = group.exchange(rank: rank, []) }

    public func broadcast<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {
        let all = group.exchange(rank: rank, bytes(UnsafeBufferPointer(buffer)))
        all[root].withUnsafeBytes { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: $0) }
    }

    public func allReduce<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {
        let all = group.exchange(rank: rank, bytes(UnsafeBufferPointer(buffer)))
        func reduce<E: CollectiveElement & AdditiveArithmetic>(_: E.Type) {
            let out = UnsafeMutableRawBufferPointer(buffer).bindMemory(to: E.self)
            let parts = all.map { b in b.withUnsafeBytes { Array($0.bindMemory(to: E.self)) } }
            for i in out.indices {
                var v = parts[0][i]
                for p in parts.dropFirst() {
                    switch op {
                    case .sum: v += p[i]
                    case .max: v = max(v, p[i])
                    case .min: v = min(v, p[i])
                    }
                }
                out[i] = v
            }
        }
        switch T.kind {
        case .float: reduce(Float.self)
        case .double: reduce(Double.self)
        case .int32: reduce(Int32.self)
        case .int64: reduce(Int64.self)
        default: fatalError("not used by the model")
        }
    }

    public func allGatherV<T: CollectiveElement>(_ values: [T]) throws -> [[T]] {
        let all = values.withUnsafeBufferPointer { group.exchange(rank: rank, bytes($0)) }
        return all.map { b in b.withUnsafeBytes { Array($0.bindMemory(to: T.self)) } }
    }

    public func gatherV<T: CollectiveElement>(_ values: [T], root: Int) throws -> [[T]]? {
        let all = try allGatherV(values)
        return rank == root ? all : nil
    }

    /// Buffered: returns at once; the peer's `receive` takes the values in order.
    public func send<T: CollectiveElement>(_ values: [T], to peer: Int, tag: Int) throws {
        values.withUnsafeBufferPointer { group.post(from: rank, to: peer, tag: tag, bytes($0)) }
    }

    public func receive<T: CollectiveElement>(_ type: T.Type, from peer: Int, tag: Int) throws -> [T] {
        group.take(from: peer, to: rank, tag: tag).withUnsafeBytes { Array($0.bindMemory(to: T.self)) }
    }
    public func split(color: Int, key: Int) throws -> any Communicator { fatalError("not used by the model") }
}

