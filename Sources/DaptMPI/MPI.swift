import CMPI
import DaptCluster
import DaptCore
#if canImport(Glibc)
import Glibc
#endif

/// An Open MPI call that returned an error code.
public struct MPIError: Error, CustomStringConvertible, Equatable {
    public var function: String
    public var code: Int32
    public var message: String
    public var description: String { "\(function) failed (code \(code)): \(message)" }
}

/// Turns every MPI return code into a typed error naming the function and
/// `MPI_Error_string`. All MPI calls go through here.
@inline(__always)
func checked(_ function: String, _ body: () -> Int32) throws {
    let code = body()
    guard code != dapt_mpi_success() else { return }
    var buffer = [CChar](repeating: 0, count: Int(dapt_mpi_max_error_string()) + 1)
    var length: Int32 = 0
    _ = MPI_Error_string(code, &buffer, &length)
    throw MPIError(function: function, code: code, message: String(nulTerminated: buffer))
}

/// Starts and stops MPI for this process. MPI can be initialised once per
/// process; `start()` is idempotent and `stop()` finalises.
public enum MPIRuntime {
    /// True when this process was started by `mpirun` (or another PMIx launcher).
    public static var launchedByMPI: Bool {
        let env = ProcessEnvironment.self
        return env.value("OMPI_COMM_WORLD_SIZE") != nil || env.value("PMIX_RANK") != nil || env.value("PMI_RANK") != nil
    }

    /// Initialises MPI (funneled threading: only the main thread calls MPI)
    /// and returns the world communicator, with errors returned, not aborting.
    public static func start() throws -> MPICommunicator {
        var initialized: Int32 = 0
        try checked("MPI_Initialized") { MPI_Initialized(&initialized) }
        if initialized == 0 {
            var provided: Int32 = 0
            try checked("MPI_Init_thread") { MPI_Init_thread(nil, nil, dapt_mpi_thread_funneled(), &provided) }
        }
        guard let world = dapt_mpi_comm_world() else {
            throw MPIError(function: "MPI_COMM_WORLD", code: -1, message: "no world communicator")
        }
        try checked("MPI_Comm_set_errhandler") { MPI_Comm_set_errhandler(world, dapt_mpi_errors_return()) }
        return try MPICommunicator(handle: world, owned: false)
    }

    public static func stop() throws {
        var finalized: Int32 = 0
        try checked("MPI_Finalized") { MPI_Finalized(&finalized) }
        if finalized == 0 { try checked("MPI_Finalize") { MPI_Finalize() } }
    }

    /// Ends every rank of the job at once (used after an error on one rank,
    /// so the others do not wait forever in a collective).
    public static func abort(code: Int32) -> Never {
        _ = MPI_Abort(dapt_mpi_comm_world(), code)
        exit(code)
    }
}

/// The MPI communicator. Owns its handle and frees it once, except the world
/// communicator, which MPI owns.
public final class MPICommunicator: Communicator {
    private let handle: MPI_Comm
    private let owned: Bool
    public let rank: Int
    public let size: Int
    public let hostName: String

    init(handle: MPI_Comm, owned: Bool) throws {
        self.handle = handle
        self.owned = owned
        var r: Int32 = 0, s: Int32 = 0
        try checked("MPI_Comm_rank") { MPI_Comm_rank(handle, &r) }
        try checked("MPI_Comm_size") { MPI_Comm_size(handle, &s) }
        rank = Int(r); size = Int(s)
        var name = [CChar](repeating: 0, count: Int(dapt_mpi_max_processor_name()) + 1)
        var length: Int32 = 0
        try checked("MPI_Get_processor_name") { MPI_Get_processor_name(&name, &length) }
        hostName = String(nulTerminated: name)
    }

    deinit {
        if owned {
            var h: MPI_Comm? = handle
            _ = MPI_Comm_free(&h)
        }
    }

    static func datatype(_ kind: ElementKind) -> MPI_Datatype {
        switch kind {
        case .uint8: return dapt_mpi_byte()
        case .int32: return dapt_mpi_int32()
        case .int64: return dapt_mpi_int64()
        case .uint64: return dapt_mpi_uint64()
        case .float: return dapt_mpi_float()
        case .double: return dapt_mpi_double()
        }
    }

    static func op(_ op: ReduceOp) -> MPI_Op {
        switch op {
        case .sum: return dapt_mpi_sum()
        case .max: return dapt_mpi_max()
        case .min: return dapt_mpi_min()
        }
    }

    private func checkPeer(_ peer: Int) throws {
        if peer < 0 || peer >= size { throw CommunicatorError.invalidRank(peer, size: size) }
    }

    public func barrier() throws {
        try checked("MPI_Barrier") { MPI_Barrier(handle) }
    }

    public func broadcast<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws {
        try checkPeer(root)
        // MPI counts are Int32: move large buffers in chunks.
        try forEachChunk(buffer.count) { offset, count in
            try checked("MPI_Bcast") {
                MPI_Bcast(buffer.baseAddress! + offset, Int32(count), Self.datatype(T.kind), Int32(root), handle)
            }
        }
    }

    public func allReduce<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {
        try forEachChunk(buffer.count) { offset, count in
            try checked("MPI_Allreduce") {
                MPI_Allreduce(dapt_mpi_in_place(), buffer.baseAddress! + offset, Int32(count),
                              Self.datatype(T.kind), Self.op(op), handle)
            }
        }
    }

    /// The rings that run this group's non-blocking reductions, made on the
    /// first one (duplicating the communicator is collective, and every rank
    /// starts its first non-blocking reduction at the same point).
    private var rings: RingCollectives?

    private func ringCollectives() throws -> RingCollectives {
        if let rings { return rings }
        let made = try RingCollectives(duplicating: handle, rank: rank, size: size)
        rings = made
        return made
    }

    /// A buffer's first element; an empty buffer may have none, and MPI
    /// reads and writes nothing at the address of zero elements.
    private static func address<T>(_ buffer: UnsafeMutableBufferPointer<T>) -> UnsafeMutableRawPointer {
        if let base = buffer.baseAddress { return UnsafeMutableRawPointer(base) }
        return UnsafeMutableRawPointer(bitPattern: MemoryLayout<T>.alignment)!
    }

    /// A ring of point-to-point messages (`RingCollective`), not
    /// `MPI_Iallreduce`, whose in-place form Open MPI runs as a binomial tree.
    public func startAllReduce<S: StableStorage>(_ storage: S, range: Range<Int>, op: ReduceOp) throws -> any PendingCollective {
        try checkRange(range, in: storage.count)
        let rings = try ringCollectives()
        let blocks = nearlyEqualBlocks(of: range.count)
        let stride = MemoryLayout<S.Element>.stride
        let ring = RingCollective(rings: rings, kind: .allReduce, datatype: Self.datatype(S.Element.kind), op: Self.op(op),
                                  elementSize: stride, counts: blocks) { body in
            try storage.withBuffer { try body(Self.address($0) + range.lowerBound * stride, nil) }
        }
        try rings.start(ring)
        return ring
    }

    /// A ring of point-to-point messages (`RingCollective`), not
    /// `MPI_Ireduce_scatter`, which Open MPI runs as a reduction to one rank
    /// followed by a scatter from it.
    public func startReduceScatter<S: StableStorage, D: StableStorage>(_ source: S, range: Range<Int>, into destination: D, at into: Range<Int>,
                                                                       counts: [Int], op: ReduceOp) throws -> any PendingCollective
        where S.Element == D.Element {
        try checkRange(range, in: source.count)
        try checkRange(into, in: destination.count)
        try checkBlocks(counts, total: range.count, mine: into.count)
        let rings = try ringCollectives()
        let stride = MemoryLayout<S.Element>.stride
        let ring = RingCollective(rings: rings, kind: .reduceScatter(destinationOffset: into.lowerBound), datatype: Self.datatype(S.Element.kind),
                                  op: Self.op(op), elementSize: stride, counts: counts) { body in
            try source.withBuffer { s in
                try destination.withBuffer { d in
                    try body(Self.address(s) + range.lowerBound * stride, Self.address(d))
                }
            }
        }
        try rings.start(ring)
        return ring
    }

    public func reduceScatter<T: CollectiveElement>(_ source: UnsafeBufferPointer<T>, into destination: UnsafeMutableBufferPointer<T>,
                                                    counts: [Int], op: ReduceOp) throws {
        try checkBlocks(counts, total: source.count, mine: destination.count)
        let counts32 = try Self.int32Counts(counts)
        try checked("MPI_Reduce_scatter") {
            MPI_Reduce_scatter(source.baseAddress, destination.baseAddress, counts32, Self.datatype(T.kind), Self.op(op), handle)
        }
    }

    public func allGatherInPlace<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, counts: [Int]) throws {
        try checkBlocks(counts, total: buffer.count, mine: nil)
        let counts32 = try Self.int32Counts(counts)
        // In place: each rank's block is read from its own place in `buffer`.
        try checked("MPI_Allgatherv") {
            MPI_Allgatherv(dapt_mpi_in_place(), 0, Self.datatype(T.kind), buffer.baseAddress, counts32,
                           Self.displacements(counts32), Self.datatype(T.kind), handle)
        }
    }

    public func gather<T: CollectiveElement>(_ block: UnsafeBufferPointer<T>, into whole: UnsafeMutableBufferPointer<T>?,
                                             counts: [Int], root: Int) throws {
        try checkPeer(root)
        try checkBlocks(counts, total: whole?.count ?? counts.reduce(0, +), mine: block.count)
        let counts32 = try Self.int32Counts(counts)
        let displacements = Self.displacements(counts32)
        if rank == root {
            guard let whole else { throw CommunicatorError.sizeMismatch(expected: counts.reduce(0, +), got: 0) }
            // In place at the root: its own block is copied where it belongs first.
            let mine = Int(displacements[rank])..<(Int(displacements[rank]) + block.count)
            _ = UnsafeMutableBufferPointer(rebasing: whole[mine]).update(fromContentsOf: block)
            try checked("MPI_Gatherv") {
                MPI_Gatherv(dapt_mpi_in_place(), 0, Self.datatype(T.kind), whole.baseAddress, counts32, displacements,
                            Self.datatype(T.kind), Int32(root), handle)
            }
        } else {
            try checked("MPI_Gatherv") {
                MPI_Gatherv(block.baseAddress, Int32(block.count), Self.datatype(T.kind), nil, nil, nil,
                            Self.datatype(T.kind), Int32(root), handle)
            }
        }
    }

    public func allGatherV<T: CollectiveElement>(_ values: [T]) throws -> [[T]] {
        let counts = try countsOfAll(values.count)
        let displacements = Self.displacements(counts)
        let total = Int(counts.reduce(0, +))
        var all = [T](unsafeUninitializedCapacity: total) { buf, n in
            UnsafeMutableRawBufferPointer(buf).initializeMemory(as: UInt8.self, repeating: 0); n = total
        }
        try values.withUnsafeBufferPointer { send in
            try all.withUnsafeMutableBufferPointer { recv in
                try checked("MPI_Allgatherv") {
                    MPI_Allgatherv(send.baseAddress, Int32(send.count), Self.datatype(T.kind),
                                   recv.baseAddress, counts, displacements, Self.datatype(T.kind), handle)
                }
            }
        }
        return Self.slices(all, counts: counts, displacements: displacements)
    }

    public func gatherV<T: CollectiveElement>(_ values: [T], root: Int) throws -> [[T]]? {
        try checkPeer(root)
        let counts = try countsOfAll(values.count)
        let displacements = Self.displacements(counts)
        let total = rank == root ? Int(counts.reduce(0, +)) : 0
        var all = [T](unsafeUninitializedCapacity: total) { buf, n in
            UnsafeMutableRawBufferPointer(buf).initializeMemory(as: UInt8.self, repeating: 0); n = total
        }
        try values.withUnsafeBufferPointer { send in
            try all.withUnsafeMutableBufferPointer { recv in
                try checked("MPI_Gatherv") {
                    MPI_Gatherv(send.baseAddress, Int32(send.count), Self.datatype(T.kind),
                                recv.baseAddress, counts, displacements, Self.datatype(T.kind), Int32(root), handle)
                }
            }
        }
        return rank == root ? Self.slices(all, counts: counts, displacements: displacements) : nil
    }

    public func send<T: CollectiveElement>(_ values: [T], to peer: Int, tag: Int) throws {
        try checkPeer(peer)
        guard values.count <= Int(Int32.max) else { throw CommunicatorError.sizeMismatch(expected: Int(Int32.max), got: values.count) }
        try values.withUnsafeBufferPointer { buf in
            try checked("MPI_Send") {
                MPI_Send(buf.baseAddress, Int32(buf.count), Self.datatype(T.kind), Int32(peer), Int32(tag), handle)
            }
        }
    }

    public func send<T: CollectiveElement>(_ buffer: UnsafeBufferPointer<T>, to peer: Int, tag: Int) throws {
        try checkPeer(peer)
        guard buffer.count <= Int(Int32.max) else { throw CommunicatorError.sizeMismatch(expected: Int(Int32.max), got: buffer.count) }
        try checked("MPI_Send") {
            MPI_Send(buffer.baseAddress, Int32(buffer.count), Self.datatype(T.kind), Int32(peer), Int32(tag), handle)
        }
    }

    /// Into `buffer` directly; a longer message fails (MPI_ERR_TRUNCATE), a shorter one is a size mismatch.
    public func receive<T: CollectiveElement>(into buffer: UnsafeMutableBufferPointer<T>, from peer: Int, tag: Int) throws {
        try checkPeer(peer)
        guard buffer.count <= Int(Int32.max) else { throw CommunicatorError.sizeMismatch(expected: Int(Int32.max), got: buffer.count) }
        var status = MPI_Status()
        try checked("MPI_Recv") {
            MPI_Recv(buffer.baseAddress, Int32(buffer.count), Self.datatype(T.kind), Int32(peer), Int32(tag), handle, &status)
        }
        var count: Int32 = 0
        try checked("MPI_Get_count") { MPI_Get_count(&status, Self.datatype(T.kind), &count) }
        guard Int(count) == buffer.count else { throw CommunicatorError.sizeMismatch(expected: buffer.count, got: Int(count)) }
    }

    public func receive<T: CollectiveElement>(_ type: T.Type, from peer: Int, tag: Int) throws -> [T] {
        try checkPeer(peer)
        var status = MPI_Status()
        try checked("MPI_Probe") { MPI_Probe(Int32(peer), Int32(tag), handle, &status) }
        var count: Int32 = 0
        try checked("MPI_Get_count") { MPI_Get_count(&status, Self.datatype(T.kind), &count) }
        var values = [T](unsafeUninitializedCapacity: Int(count)) { buf, n in
            UnsafeMutableRawBufferPointer(buf).initializeMemory(as: UInt8.self, repeating: 0); n = Int(count)
        }
        try values.withUnsafeMutableBufferPointer { buf in
            try checked("MPI_Recv") {
                MPI_Recv(buf.baseAddress, count, Self.datatype(T.kind), Int32(peer), Int32(tag), handle, dapt_mpi_status_ignore())
            }
        }
        return values
    }

    public func split(color: Int, key: Int) throws -> any Communicator {
        var newHandle: MPI_Comm? = nil
        try checked("MPI_Comm_split") { MPI_Comm_split(handle, Int32(color), Int32(key), &newHandle) }
        guard let newHandle else { throw MPIError(function: "MPI_Comm_split", code: -1, message: "no communicator returned") }
        try checked("MPI_Comm_set_errhandler") { MPI_Comm_set_errhandler(newHandle, dapt_mpi_errors_return()) }
        return try MPICommunicator(handle: newHandle, owned: true)
    }

    // MARK: helpers

    private func countsOfAll(_ count: Int) throws -> [Int32] {
        guard count <= Int(Int32.max) else { throw CommunicatorError.sizeMismatch(expected: Int(Int32.max), got: count) }
        var mine = Int32(count)
        var counts = [Int32](repeating: 0, count: size)
        try counts.withUnsafeMutableBufferPointer { buf in
            try checked("MPI_Allgather") {
                MPI_Allgather(&mine, 1, dapt_mpi_int32(), buf.baseAddress, 1, dapt_mpi_int32(), handle)
            }
        }
        let total = counts.reduce(0) { $0 + Int($1) }
        guard total <= Int(Int32.max) else { throw CommunicatorError.sizeMismatch(expected: Int(Int32.max), got: total) }
        return counts
    }

    /// MPI counts and displacements are Int32: the whole must fit.
    private static func int32Counts(_ counts: [Int]) throws -> [Int32] {
        let total = counts.reduce(0, +)
        guard total <= Int(Int32.max) else { throw CommunicatorError.sizeMismatch(expected: Int(Int32.max), got: total) }
        return counts.map { Int32($0) }
    }

    private static func displacements(_ counts: [Int32]) -> [Int32] {
        var out = [Int32](); out.reserveCapacity(counts.count)
        var running: Int32 = 0
        for c in counts { out.append(running); running += c }
        return out
    }

    private static func slices<T>(_ all: [T], counts: [Int32], displacements: [Int32]) -> [[T]] {
        zip(counts, displacements).map { c, d in Array(all[Int(d)..<Int(d + c)]) }
    }

    private func forEachChunk(_ count: Int, _ body: (Int, Int) throws -> Void) throws {
        let chunk = 1 << 30
        var offset = 0
        if count == 0 { return }
        while offset < count {
            let n = min(chunk, count - offset)
            try body(offset, n)
            offset += n
        }
    }
}
