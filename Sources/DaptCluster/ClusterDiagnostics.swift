import DaptCore

/// The checks behind `dapt cluster check`: every collective against its
/// closed-form answer, an all-to-all exchange whose every record is verified,
/// and bandwidth figures. Results are values; the command line prints them.
public enum ClusterDiagnostics {
    public struct CollectiveResults: Sendable, Equatable, Codable {
        public var size = 0
        public var allReduceSumInt64: Int64 = 0
        public var allReduceMaxDouble: Double = 0
        public var allReduceMinFloat: Float = 0
        public var allReduceSumFloatVector: [Float] = []
        public var nonBlockingAllReduceSum: [Float] = []
        /// This rank's block of a non-blocking reduce-scatter (rank r receives r elements).
        public var nonBlockingReduceScatter: [Float] = []
        /// Elements of the larger non-blocking reductions (several in flight,
        /// waited for in a different order on odd and even ranks) found right.
        public var nonBlockingElementsChecked = 0
        public var allGatherTotal = 0
        public var gatherRoot: [Int64] = []
        public var broadcastValue: Int64 = 0
        public var ringReceived: Int64 = 0
        public var splitSize = 0
        public var splitRank = 0
        public var splitSum: Int64 = 0
        public var failures: [String] = []
        public init() {}
    }

    /// Runs every collective and checks it; failures are listed, not thrown,
    /// so one report shows them all.
    public static func checkCollectives(_ comm: any Communicator) throws -> CollectiveResults {
        var r = CollectiveResults()
        let n = comm.size, me = comm.rank
        r.size = n
        func expect(_ ok: Bool, _ what: String) { if !ok { r.failures.append(what) } }

        r.allReduceSumInt64 = try comm.allReduce(Int64(me + 1), op: .sum)
        expect(r.allReduceSumInt64 == Int64(n * (n + 1) / 2), "all-reduce sum Int64: \(r.allReduceSumInt64)")
        r.allReduceMaxDouble = try comm.allReduce(Double(me) * 1.5, op: .max)
        expect(r.allReduceMaxDouble == Double(n - 1) * 1.5, "all-reduce max Double: \(r.allReduceMaxDouble)")
        r.allReduceMinFloat = try comm.allReduce(Float(me) - 0.5, op: .min)
        expect(r.allReduceMinFloat == -0.5, "all-reduce min Float: \(r.allReduceMinFloat)")
        var vector = (0..<5).map { Float($0 * (me + 1)) }
        try comm.allReduce(&vector, op: .sum)
        r.allReduceSumFloatVector = vector
        let triangle = Float(n * (n + 1) / 2)
        expect(vector == (0..<5).map { Float($0) * triangle }, "all-reduce sum [Float]: \(vector)")

        // Non-blocking: two disjoint ranges of one buffer in flight at once.
        let pendingBuffer = CollectiveBuffer((0..<10).map { Float($0 * (me + 1)) })
        let second = try comm.startAllReduce(pendingBuffer, range: 5..<10, op: .sum)
        let first = try comm.startAllReduce(pendingBuffer, range: 0..<5, op: .sum)
        while try !first.test() {}
        try second.wait()
        r.nonBlockingAllReduceSum = pendingBuffer.values
        expect(r.nonBlockingAllReduceSum == (0..<10).map { Float($0) * triangle }, "non-blocking all-reduce sum: \(r.nonBlockingAllReduceSum)")

        // Non-blocking reduce-scatter of a range inside a buffer into a range inside another:
        // rank r's block holds r elements (rank 0's is empty).
        let blocks = (0..<n).map { $0 }, total = n * (n - 1) / 2, mine = me * (me - 1) / 2
        let scatterSource = CollectiveBuffer((0..<(total + 2)).map { Float($0 * (me + 1)) })
        let scatterDestination = CollectiveBuffer(repeating: Float(-1), count: me + 2, hugePages: false)
        try comm.startReduceScatter(scatterSource, range: 1..<(total + 1), into: scatterDestination, at: 1..<(me + 1), counts: blocks, op: .sum).wait()
        r.nonBlockingReduceScatter = Array(scatterDestination.values[1..<(me + 1)])
        expect(r.nonBlockingReduceScatter == (0..<me).map { Float(1 + mine + $0) * triangle }
               && scatterDestination.values.first == -1 && scatterDestination.values.last == -1,
               "non-blocking reduce-scatter: \(scatterDestination.values)")

        // Larger ones, several in flight: a ring's blocks of unequal length (1001 elements over any
        // number of ranks), sums and maxima, Float and Double, and a reduce-scatter with an empty
        // block. Odd ranks wait in the opposite order to even ones: no rank may need another to
        // finish a collective it is not waiting on. Values are small integers, so every summation
        // order gives the same exact answer.
        let length = 1001
        let sums = CollectiveBuffer((0..<(2 * length)).map { Float(($0 % 97) * (me + 1)) })
        let maxima = CollectiveBuffer((0..<length).map { Double(($0 * 7 + me * 13) % 101) })
        // Rank 1's block is empty, ranks from 2 on hold length ÷ n, rank 0 the rest.
        var spread = (0..<n).map { $0 < 2 ? 0 : length / n }
        spread[0] = length - spread.reduce(0, +)
        let spreadMine = spread[me], spreadFirst = spread[..<me].reduce(0, +)
        let scattered = CollectiveBuffer(repeating: Float(-1), count: spreadMine, hugePages: false)
        // And twelve more of 50 elements each: more than run at once, so some wait their turn.
        let many = CollectiveBuffer((0..<600).map { Float(($0 % 89) * (me + 1)) })
        var inFlight = [try comm.startAllReduce(sums, range: 0..<length, op: .sum),
                        try comm.startAllReduce(maxima, range: 0..<length, op: .max),
                        try comm.startReduceScatter(sums, range: length..<(length + spread.reduce(0, +)), into: scattered,
                                                    at: 0..<spreadMine, counts: spread, op: .sum)]
        for i in 0..<12 { inFlight.append(try comm.startAllReduce(many, range: (i * 50)..<(i * 50 + 50), op: .sum)) }
        if me % 2 == 1 { inFlight.reverse() }
        for c in inFlight { try c.wait() }
        let summed = sums.values, maxed = maxima.values, mineScattered = scattered.values
        for (i, v) in many.values.enumerated() where v == Float((i % 89) * n * (n + 1) / 2) { r.nonBlockingElementsChecked += 1 }
        for i in 0..<length {
            if summed[i] == Float((i % 97) * n * (n + 1) / 2) { r.nonBlockingElementsChecked += 1 }
            if maxed[i] == (0..<n).map({ Double((i * 7 + $0 * 13) % 101) }).max()! { r.nonBlockingElementsChecked += 1 }
        }
        for (j, v) in mineScattered.enumerated() where v == Float(((length + spreadFirst + j) % 97) * n * (n + 1) / 2) {
            r.nonBlockingElementsChecked += 1
        }
        expect(r.nonBlockingElementsChecked == 2 * length + 600 + spreadMine,
               "larger non-blocking reductions: \(2 * length + 600 + spreadMine - r.nonBlockingElementsChecked) elements wrong")

        // Rank r contributes r+1 copies of r: variable-length all-gather.
        let gathered = try comm.allGatherV([Int64](repeating: Int64(me), count: me + 1))
        r.allGatherTotal = gathered.reduce(0) { $0 + $1.count }
        expect(gathered.count == n && gathered.enumerated().allSatisfy { i, v in v == [Int64](repeating: Int64(i), count: i + 1) },
               "all-gather(v) contents")

        if let atRoot = try comm.gatherV([Int64(me * me)], root: 0) { r.gatherRoot = atRoot.flatMap { $0 } }
        if me == 0 { expect(r.gatherRoot == (0..<n).map { Int64($0 * $0) }, "gather(v) at root: \(r.gatherRoot)") }

        var value: [Int64] = [me == n - 1 ? 4242 : -1]
        try comm.broadcast(&value, root: n - 1)
        r.broadcastValue = value[0]
        expect(value == [4242], "broadcast from last rank: \(value)")

        // A ring: send to the next rank, receive from the previous one.
        if n > 1 {
            let next = (me + 1) % n, prev = (me + n - 1) % n
            if me % 2 == 0 {
                try comm.send([Int64(me * 10)], to: next, tag: 7)
                r.ringReceived = try comm.receive(Int64.self, from: prev, tag: 7)[0]
            } else {
                r.ringReceived = try comm.receive(Int64.self, from: prev, tag: 7)[0]
                try comm.send([Int64(me * 10)], to: next, tag: 7)
            }
            expect(r.ringReceived == Int64(prev * 10), "ring send/receive: \(r.ringReceived)")
        }

        // Even and odd ranks form two groups, ordered by descending old rank.
        let sub = try comm.split(color: me % 2, key: -me)
        r.splitSize = sub.size
        r.splitRank = sub.rank
        r.splitSum = try sub.allReduce(Int64(me), op: .sum)
        let members = (0..<n).filter { $0 % 2 == me % 2 }
        expect(sub.size == members.count, "split size \(sub.size)")
        expect(sub.rank == members.reversed().firstIndex(of: me)!, "split rank \(sub.rank)")
        expect(r.splitSum == Int64(members.reduce(0, +)), "split all-reduce \(r.splitSum)")
        try comm.barrier()
        return r
    }

    public struct ExchangeResults: Sendable, Equatable, Codable {
        public var recordsSent = 0
        public var recordsReceived = 0
        public var bytesSent = 0
        public var bytesReceived = 0
        public var seconds = 0.0
        public var failures: [String] = []
        public init() {}
    }

    /// Every rank sends about `bytesPerRank` bytes, spread over every rank
    /// (itself included), as records whose content is derived from
    /// (sender, receiver, index); receivers rebuild and compare each one.
    /// `onStart` runs once the round begins (the crash tests use it).
    public static func checkExchange(_ exchange: RecordExchange, bytesPerRank: Int, rounds: Int = 1,
                                     onStart: () -> Void = {}) throws -> ExchangeResults {
        var r = ExchangeResults()
        let n = exchange.size, me = exchange.rank
        let incoming = (0..<n).map { recordPlan(sender: $0, receiver: me, size: n, bytesPerRank: bytesPerRank) }
        let outgoing = (0..<n).map { recordPlan(sender: me, receiver: $0, size: n, bytesPerRank: bytesPerRank) }
        let started = monotonicSeconds()
        onStart()
        for _ in 0..<rounds {
            var receivedFrom = [Int](repeating: 0, count: n)
            let stats = try exchange.round(produce: { outbox in
                for peer in 0..<n {
                    for (index, length) in outgoing[peer].enumerated() {
                        try outbox.append(recordBytes(sender: me, receiver: peer, index: index, length: length), to: peer)
                    }
                }
            }, consume: { sender, record in
                let index = receivedFrom[sender]
                receivedFrom[sender] += 1
                let expected = recordBytes(sender: sender, receiver: me, index: index,
                                           length: index < incoming[sender].count ? incoming[sender][index] : 0)
                if !expected.elementsEqual(record) && r.failures.count < 10 {
                    r.failures.append("record \(index) from rank \(sender) differs")
                }
            })
            for sender in 0..<n where receivedFrom[sender] != incoming[sender].count {
                r.failures.append("from rank \(sender): \(receivedFrom[sender]) records, expected \(incoming[sender].count)")
            }
            r.recordsSent += stats.recordsSent
            r.recordsReceived += stats.recordsReceived
            r.bytesSent += stats.bytesSent
            r.bytesReceived += stats.bytesReceived
        }
        r.seconds = monotonicSeconds() - started
        return r
    }

    /// Record lengths from `sender` to `receiver`: 16 bytes to 8 KiB, derived
    /// from a seeded hash so both ends agree without talking.
    static func recordPlan(sender: Int, receiver: Int, size: Int, bytesPerRank: Int) -> [Int] {
        let budget = bytesPerRank / size
        var lengths: [Int] = []
        var total = 0, i: UInt64 = 0
        while total < budget {
            let h = StableHash.mix64(UInt64(sender) << 40 ^ UInt64(receiver) << 20 ^ i)
            let length = 16 + Int(h % 8177)
            lengths.append(length); total += length; i += 1
        }
        return lengths
    }

    static func recordBytes(sender: Int, receiver: Int, index: Int, length: Int) -> [UInt8] {
        var rng = SplitMix64(seed: StableHash.mix64(UInt64(sender) << 48 ^ UInt64(receiver) << 32 ^ UInt64(index)))
        var out = [UInt8](); out.reserveCapacity(length)
        while out.count < length {
            let v = rng.next()
            withUnsafeBytes(of: v) { out.append(contentsOf: $0.prefix(length - out.count)) }
        }
        return out
    }

    /// Raw exchange throughput: every rank streams `bytesPerRank` bytes, in
    /// records of `recordBytes`, spread evenly over the other ranks; the
    /// receiver only counts. Returns (bytes this rank received, seconds).
    public static func exchangeThroughput(_ exchange: RecordExchange, bytesPerRank: Int, recordBytes: Int) throws -> (bytes: Int, seconds: Double) {
        let n = exchange.size, me = exchange.rank
        let record = [UInt8](repeating: 0xA5, count: recordBytes)
        let peers = n > 1 ? (0..<n).filter { $0 != me } : [me]
        let perPeer = bytesPerRank / peers.count / recordBytes
        var received = 0
        try exchange.communicator.barrier()
        let started = monotonicSeconds()
        try exchange.round(produce: { outbox in
            try record.withUnsafeBytes { raw in
                for i in 0..<perPeer { for peer in peers { try outbox.append(raw, to: peer) } }
            }
        }, consume: { _, bytes in received += bytes.count })
        return (received, monotonicSeconds() - started)
    }

    /// All-reduce of `elements` floats, `iterations` times. Returns seconds
    /// per call (slowest rank) after one warm-up call. `hugePages`: the
    /// buffer is allocated as gradients are (`LargeAllocation`); false: on
    /// small pages, as a Swift array is.
    public static func allReduceSeconds(_ comm: any Communicator, elements: Int, iterations: Int, hugePages: Bool = true) throws -> Double {
        let buffer = CollectiveBuffer(repeating: Float(1), count: elements, hugePages: hugePages)
        try buffer.withBuffer { try comm.allReduce($0, op: .sum) }
        try comm.barrier()
        let started = monotonicSeconds()
        for _ in 0..<iterations { try buffer.withBuffer { try comm.allReduce($0, op: .sum) } }
        let elapsed = (monotonicSeconds() - started) / Double(iterations)
        return try comm.allReduce(elapsed, op: .max)
    }

    /// The same all-reduce as the gradient reducer runs it: `elements`
    /// floats in buckets of `bucketElements`, every bucket started before
    /// the first is waited for. Seconds per call (slowest rank) after one warm-up.
    /// `scatter`: a reduce-scatter per bucket instead (as under ZeRO-1), each
    /// bucket's block r (k nearly equal blocks) landing on rank r.
    public static func bucketedAllReduceSeconds(_ comm: any Communicator, elements: Int, bucketElements: Int, iterations: Int,
                                                scatter: Bool = false) throws -> Double {
        let buffer = CollectiveBuffer(repeating: Float(1), count: elements)
        let bucket = max(1, bucketElements)
        let received = CollectiveBuffer(repeating: Float(0), count: scatter ? elements : 0)
        func reduce() throws {
            let pending = try stride(from: 0, to: elements, by: bucket).map { start in
                let range = start..<min(start + bucket, elements)
                guard scatter else { return try comm.startAllReduce(buffer, range: range, op: .sum) }
                let blocks = comm.nearlyEqualBlocks(of: range.count)
                let mine = start..<(start + blocks[comm.rank])  // each bucket's block in its own place
                return try comm.startReduceScatter(buffer, range: range, into: received, at: mine, counts: blocks, op: .sum)
            }
            for p in pending { try p.wait() }
        }
        try reduce()
        try comm.barrier()
        let started = monotonicSeconds()
        for _ in 0..<iterations { try reduce() }
        let elapsed = (monotonicSeconds() - started) / Double(iterations)
        return try comm.allReduce(elapsed, op: .max)
    }
}
