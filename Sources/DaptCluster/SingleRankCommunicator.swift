/// A group of one: collectives are identities and messages to self queue up.
/// What a process runs with outside `mpirun`, and what unit tests use.
public final class SingleRankCommunicator: Communicator {
    public let hostName: String
    private var mailbox: [Int: [[UInt8]]] = [:]

    public init(hostName: String = "localhost") { self.hostName = hostName }

    public var rank: Int { 0 }
    public var size: Int { 1 }

    public func barrier() throws {}

    public func broadcast<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {
        try checkPeer(root)
    }

    public func allReduce<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {}

    public func allGatherV<T: CollectiveElement>(_ values: [T]) throws -> [[T]] { [values] }

    public func gatherV<T: CollectiveElement>(_ values: [T], root: Int) throws -> [[T]]? {
        try checkPeer(root)
        return [values]
    }

    public func send<T: CollectiveElement>(_ values: [T], to peer: Int, tag: Int) throws {
        try checkPeer(peer)
        mailbox[tag, default: []].append(values.withUnsafeBytes { Array($0) })
    }

    public func receive<T: CollectiveElement>(_ type: T.Type, from peer: Int, tag: Int) throws -> [T] {
        try checkPeer(peer)
        guard var queue = mailbox[tag], !queue.isEmpty else { throw CommunicatorError.noMessage(from: peer, tag: tag) }
        let bytes = queue.removeFirst()
        mailbox[tag] = queue
        let count = bytes.count / MemoryLayout<T>.stride
        return [T](unsafeUninitializedCapacity: count) { buf, n in
            bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(buf).copyMemory(from: $0) }
            n = count
        }
    }

    public func split(color: Int, key: Int) throws -> any Communicator {
        SingleRankCommunicator(hostName: hostName)
    }

    private func checkPeer(_ peer: Int) throws {
        if peer != 0 { throw CommunicatorError.invalidRank(peer, size: 1) }
    }
}
