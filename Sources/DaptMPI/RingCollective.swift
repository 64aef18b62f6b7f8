import CMPI
import DaptCluster
import DaptCore

/// Non-blocking all-reduce and reduce-scatter as rings of point-to-point
/// messages, advanced by `test()` and `wait()`.
///
/// Why not `MPI_Iallreduce` / `MPI_Ireduce_scatter`: Open MPI runs them in
/// its libnbc component, which reduces an in-place all-reduce up a binomial
/// tree to one rank and broadcasts it back (every hop moves the whole
/// buffer: 2·log₂k times it, against a ring's 2(k−1)/k), and every
/// reduce-scatter the same way before scattering from that rank. A ring moves
/// each byte the fewest times on any number of ranks, with no rank carrying
/// more than the others, and sums each element in a fixed order (so a rerun
/// gives the same bits).
///
/// Each collective is a sequence of steps, each one message to the next rank
/// and one from the previous; a step starts once the one before it has
/// finished. Reduce-scatter of k blocks takes k − 1 steps (after step s,
/// rank r holds the partial sum of block r − s − 2 over ranks r − s − 1 … r,
/// in place of its own values of that block: the source range is left
/// holding partial sums); all-reduce splits its range into k blocks,
/// reduce-scatters them in place and passes the reduced blocks once round the
/// ring (k − 1 more steps). With two ranks every element is a + b, as in the
/// blocking collectives.
///
/// At most `maxRunning` collectives run at once; later ones queue and begin,
/// in the order they were started, as earlier ones finish. That bounds the
/// scratch for received blocks to `maxRunning` blocks, whatever the number of
/// buckets, and cannot deadlock: every rank begins the same collectives in the
/// same order, so the rank that has begun fewest has begun none the others
/// have not, and each collective running there can finish.
final class RingCollectives {
    /// A duplicate of the communicator: ring messages never meet the
    /// caller's point-to-point messages, whatever their tags.
    let comm: MPI_Comm
    let rank: Int
    let size: Int
    /// Every rank starts collectives in the same order, so the n-th
    /// collective has the same tag everywhere and its messages never
    /// match another's, however the ranks interleave their steps.
    private var nextTag: Int32 = 0
    /// Started and not yet finished. Each `test` or `wait` advances all of
    /// them: ranks may wait on their collectives in different orders, and one
    /// rank's step waits on another rank's progress through another collective.
    private var running: [RingCollective] = []
    private var queued: [RingCollective] = []
    /// Enough rings to keep the links busy; each holds at most one block of scratch.
    static var maxRunning: Int { NonBlockingReductions.running }
    /// Scratch for received blocks, kept from one collective to the next: the
    /// reducer's buckets come in the same sizes every step, so after the first
    /// step no collective allocates (or faults in) memory. At most
    /// `maxRunning` blocks: 1/k of a bucket each for all-reduces, up to a
    /// whole bucket for a reduce-scatter whose bucket lies in one rank's block.
    private var spare: [UnsafeMutableBufferPointer<UInt8>] = []

    init(duplicating handle: MPI_Comm, rank: Int, size: Int) throws {
        var copy: MPI_Comm? = nil
        try checked("MPI_Comm_dup") { MPI_Comm_dup(handle, &copy) }
        guard let copy else { throw MPIError(function: "MPI_Comm_dup", code: -1, message: "no communicator returned") }
        try checked("MPI_Comm_set_errhandler") { MPI_Comm_set_errhandler(copy, dapt_mpi_errors_return()) }
        comm = copy
        self.rank = rank
        self.size = size
    }

    deinit {
        spare.forEach { LargeAllocation.deallocate($0) }
        // The world communicator (and so its rings) may outlive MPI_Finalize, after which no call is allowed.
        var finalized: Int32 = 0
        _ = MPI_Finalized(&finalized)
        guard finalized == 0 else { return }
        var h: MPI_Comm? = comm
        _ = MPI_Comm_free(&h)
    }

    func tag() -> Int32 {
        defer { nextTag = (nextTag + 1) % 32_767 }  // MPI guarantees tags up to 32767
        return nextTag
    }

    /// At least `bytes` of scratch, 64-byte aligned; give it back with `returnScratch`.
    func borrowScratch(bytes: Int) -> UnsafeMutableBufferPointer<UInt8> {
        // The smallest spare that fits, so small collectives leave large buffers for large ones.
        if let i = spare.indices.filter({ spare[$0].count >= bytes }).min(by: { spare[$0].count < spare[$1].count }) {
            return spare.remove(at: i)
        }
        return LargeAllocation.allocate(UInt8.self, count: max(bytes, 64))
    }

    func returnScratch(_ buffer: UnsafeMutableBufferPointer<UInt8>) { spare.append(buffer) }

    func start(_ collective: RingCollective) throws {
        queued.append(collective)
        try beginQueued()
    }

    private func beginQueued() throws {
        while running.count < Self.maxRunning, !queued.isEmpty {
            let next = queued.removeFirst()
            try next.begin()
            if !next.finished { running.append(next) }
        }
    }

    /// Advances every running collective as far as its messages allow, and
    /// begins queued ones in the places of those that finished.
    func progress() throws {
        for c in running { try c.advance() }
        running.removeAll { $0.finished }
        try beginQueued()
    }
}

/// One ring all-reduce or reduce-scatter in flight (see `RingCollectives`).
final class RingCollective: PendingCollective {
    enum Kind {
        /// `storage[range]` reduced in place on every rank.
        case allReduce
        /// `source[range]` reduced; block `rank` of it into `destination[into]`.
        case reduceScatter(destinationOffset: Int)
    }

    private let rings: RingCollectives
    private let kind: Kind
    private let datatype: MPI_Datatype
    private let op: MPI_Op
    private let elementSize: Int
    private let tag: Int32
    /// Calls its argument with the address of the range's first element
    /// and of the destination's (reduce-scatter); it holds the storages,
    /// which keep one address while they live, until the collective ends.
    typealias Addresses = ((_ base: UnsafeMutableRawPointer, _ destination: UnsafeMutableRawPointer?) throws -> Void) throws -> Void
    private var withAddresses: Addresses?
    /// Block b of the range: `offsets[b]..<offsets[b] + counts[b]` elements from `base`.
    private let counts: [Int]
    private let offsets: [Int]
    /// The block being received, before this rank's values are added (borrowed while running).
    private var scratch: UnsafeMutableBufferPointer<UInt8>?
    private var step = 0
    private var requests: [MPI_Request?] = []
    /// Set once the current step's messages have arrived and its reduction is done.
    private(set) var finished = false

    /// Messages are at most 2³⁰ elements (MPI counts are Int32).
    private static let messageElements = 1 << 30

    init(rings: RingCollectives, kind: Kind, datatype: MPI_Datatype, op: MPI_Op, elementSize: Int,
         counts: [Int], withAddresses: @escaping Addresses) {
        self.rings = rings
        self.kind = kind
        self.datatype = datatype
        self.op = op
        self.elementSize = elementSize
        self.tag = rings.tag()
        self.withAddresses = withAddresses
        self.counts = counts
        var running = 0, offsets: [Int] = []
        for c in counts { offsets.append(running); running += c }
        self.offsets = offsets
    }

    /// Never unfinished here: from its start to its end `RingCollectives`
    /// holds it, so its messages are never abandoned.
    deinit { if let scratch { rings.returnScratch(scratch) } }

    private var k: Int { rings.size }
    private var stepCount: Int {
        if case .allReduce = kind { return 2 * (k - 1) }
        return k - 1
    }
    private func block(_ b: Int) -> Int { ((b % k) + k) % k }
    /// Runs `body` with the storages' addresses (see `Addresses`).
    private func addressed(_ body: (_ base: UnsafeMutableRawPointer, _ destination: UnsafeMutableRawPointer?) throws -> Void) throws {
        guard let withAddresses else { return }
        try withAddresses(body)
    }

    /// What step `s` sends and where what it receives lands, and that block's number.
    private func plan(_ s: Int, base: UnsafeMutableRawPointer, destination: UnsafeMutableRawPointer?)
        -> (send: UnsafeMutableRawPointer, sendCount: Int, receive: UnsafeMutableRawPointer, receiveBlock: Int) {
        let r = rings.rank
        func address(_ b: Int) -> UnsafeMutableRawPointer { base + offsets[b] * elementSize }
        switch kind {
        case .allReduce where s < k - 1:
            // Reduce-scatter in place: send the partial sum of block r−s−1, receive block r−s−2's aside.
            let out = block(r - s - 1), into = block(r - s - 2)
            return (address(out), counts[out], UnsafeMutableRawPointer(scratch!.baseAddress!), into)
        case .allReduce:
            // Pass the reduced blocks on: send block r−t, receive block r−t−1 into its place.
            let t = s - (k - 1)
            let out = block(r - t), into = block(r - t - 1)
            return (address(out), counts[out], address(into), into)
        case .reduceScatter(let offset):
            // Step 0 sends this rank's own values; later steps the partial sum made in place the step before.
            let out = block(r - s - 1), into = block(r - s - 2)
            // The last step receives block r: the result goes straight to the destination.
            let receive = s == k - 2 ? destination! + offset * elementSize : UnsafeMutableRawPointer(scratch!.baseAddress!)
            return (address(out), counts[out], receive, into)
        }
    }

    /// MPI keeps the addresses until the messages have gone: the storages
    /// stay held (and at one address) until then.
    private func post(_ s: Int) throws {
        try addressed { base, destination in try post(plan(s, base: base, destination: destination)) }
    }

    private func post(_ p: (send: UnsafeMutableRawPointer, sendCount: Int, receive: UnsafeMutableRawPointer, receiveBlock: Int)) throws {
        let right = Int32((rings.rank + 1) % k), left = Int32((rings.rank + k - 1) % k)
        requests.removeAll(keepingCapacity: true)
        // Both directions in pieces of at most 2³⁰ elements; a zero-length block still sends one empty message.
        for (pointer, count, isSend) in [(p.receive, counts[p.receiveBlock], false), (p.send, p.sendCount, true)] {
            var offset = 0
            repeat {
                let n = min(Self.messageElements, count - offset)
                var request = dapt_mpi_request_null()
                let at = pointer + offset * elementSize
                if isSend {
                    try checked("MPI_Isend") { MPI_Isend(at, Int32(n), datatype, right, tag, rings.comm, &request) }
                } else {
                    try checked("MPI_Irecv") { MPI_Irecv(at, Int32(n), datatype, left, tag, rings.comm, &request) }
                }
                requests.append(request)
                offset += n
            } while offset < count
        }
    }

    /// Adds this rank's own values into what step `s` received.
    private func reduce(_ s: Int) throws {
        try addressed { base, destination in
            let p = plan(s, base: base, destination: destination)
            try reduce(p.receive, into: p.receiveBlock, own: base + offsets[p.receiveBlock] * elementSize)
        }
    }

    private func reduce(_ received: UnsafeMutableRawPointer, into block: Int, own: UnsafeMutableRawPointer) throws {
        let count = counts[block]
        var offset = 0
        while offset < count {
            let n = min(Self.messageElements, count - offset)
            let received = received + offset * elementSize, mine = own + offset * elementSize
            if case .reduceScatter = kind, step == k - 2 {
                // The result, in the destination: received + own.
                try checked("MPI_Reduce_local") { MPI_Reduce_local(mine, received, Int32(n), datatype, op) }
            } else {
                // In place: this rank's block becomes received + own, sent on next step.
                try checked("MPI_Reduce_local") { MPI_Reduce_local(received, mine, Int32(n), datatype, op) }
            }
            offset += n
        }
    }

    /// Borrows scratch and begins the first step (or finishes at once on one rank).
    func begin() throws {
        // Blocks received before this rank's values are added need scratch: in an all-reduce's
        // first k − 1 steps, and in a reduce-scatter's all but its last (none with two ranks).
        let receivesAside: Bool
        if case .allReduce = kind { receivesAside = k > 1 } else { receivesAside = k > 2 }
        if receivesAside { scratch = rings.borrowScratch(bytes: (counts.max() ?? 0) * elementSize) }
        if k == 1 {
            if case .reduceScatter(let offset) = kind, counts[0] > 0 {
                try addressed { base, destination in
                    (destination! + offset * elementSize).copyMemory(from: base, byteCount: counts[0] * elementSize)
                }
            }
            finish()
        } else {
            try post(0)
        }
    }

    /// Moves through every step whose messages have arrived.
    func advance() throws {
        while !finished {
            var done: Int32 = 0
            try checked("MPI_Testall") { MPI_Testall(Int32(requests.count), &requests, &done, dapt_mpi_statuses_ignore()) }
            guard done != 0 else { return }
            try complete()
        }
    }

    /// The current step's messages have arrived: reduce, then post the next step.
    private func complete() throws {
        let reduces: Bool
        if case .allReduce = kind { reduces = step < k - 1 } else { reduces = true }
        if reduces { try reduce(step) }
        step += 1
        if step == stepCount { finish() } else { try post(step) }
    }

    private func finish() {
        finished = true
        requests.removeAll()
        withAddresses = nil  // lets the storages go
        if let scratch { rings.returnScratch(scratch) }
        scratch = nil
    }

    func test() throws -> Bool {
        try rings.progress()
        return finished
    }

    /// Spins through every running collective, not just this one: blocking
    /// on this one's messages could wait for a rank that is itself waiting
    /// on another collective this rank has yet to move on.
    func wait() throws {
        while !finished { try rings.progress() }
    }
}
