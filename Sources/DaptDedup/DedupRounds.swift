import DaptCluster
import DaptCore

/// Identical texts: the pairs (first occurrence, later one), which of this
/// rank's records are later occurrences, and how many there are in all.
struct ExactRound {
    var pairs: [VerifiedPair]
    var isDuplicate: [Bool]
    var duplicates: Int
}

extension DedupContext {
    struct ExactEntry { var k0: UInt64; var k1: UInt64; var k2: UInt32; var g: Int64; var length: Int32 }

    /// (sha1, record) entries go to the owner of the hash, which pairs each
    /// later occurrence with the first; one more round tells the holders.
    func exactRound(_ records: LocalRecords, _ layout: RankLayout) throws -> ExactRound {
        var received: [UInt8] = []
        try exchange.round(produce: { outbox in
            let packed = PackedOutbox(outbox, peers: size)
            for i in 0..<records.count {
                let h = records.hash(i)
                let k0 = h.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
                try packed.add(to: Int(UInt64(littleEndian: k0) % UInt64(size))) { b in
                    b.append(contentsOf: h); b.put(records.position[i]); b.put(records.textLength[i])
                }
            }
            try packed.flushAll()
        }, consume: { _, record in received.append(contentsOf: record) })

        var entries: [ExactEntry] = []
        entries.reserveCapacity(received.count / 32)
        received.withUnsafeBytes { raw in
            var c = ByteCursor(raw)
            while !c.atEnd {
                // The hash is compared as big-endian words so sorting is by digest bytes.
                let k0 = UInt64(bigEndian: c.get(UInt64.self).littleEndian)
                let k1 = UInt64(bigEndian: c.get(UInt64.self).littleEndian)
                let k2 = UInt32(bigEndian: c.get(UInt32.self).littleEndian)
                entries.append(ExactEntry(k0: k0, k1: k1, k2: k2, g: c.get(Int64.self), length: c.get(Int32.self)))
            }
        }
        received = []
        entries.sort { ($0.k0, $0.k1, $0.k2, $0.g) < ($1.k0, $1.k1, $1.k2, $1.g) }
        var pairs: [VerifiedPair] = []
        var duplicates: [Int64] = []
        var start = 0
        while start < entries.count {
            var end = start + 1
            while end < entries.count && entries[end].k0 == entries[start].k0 && entries[end].k1 == entries[start].k1
                    && entries[end].k2 == entries[start].k2 { end += 1 }
            for k in (start + 1)..<max(end, start + 1) {
                pairs.append(VerifiedPair(a: entries[start].g, b: entries[k].g, lengthA: entries[start].length,
                                          lengthB: entries[k].length, similarity: 1, exact: true))
                duplicates.append(entries[k].g)
            }
            start = end
        }
        let total = Int(try comm.allReduce(Int64(duplicates.count), op: .sum))
        // Tell the holders which of their records are exact duplicates.
        var isDuplicate = Array(repeating: false, count: records.count)
        try exchange.round(produce: { outbox in
            let packed = PackedOutbox(outbox, peers: size)
            for g in duplicates { try packed.add(to: layout.holder(g)) { $0.put(g) } }
            try packed.flushAll()
        }, consume: { _, record in
            var c = ByteCursor(record)
            while !c.atEnd { isDuplicate[records.localIndex(c.get(Int64.self))] = true }
        })
        return ExactRound(pairs: pairs, isDuplicate: isDuplicate, duplicates: total)
    }

    struct BandEntry { var key: UInt64; var g: Int64 }

    /// (band key, record) entries go to the owner of the key (mix64(key) mod
    /// N), which pairs records sharing a key. Returns the candidate pairs
    /// (a < b) from this rank's buckets, sorted and distinct. Exact
    /// duplicates and records without shingles take no part.
    func bandRound(_ records: LocalRecords, skipping isDuplicate: [Bool]) throws -> [(Int64, Int64)] {
        var received: [UInt8] = []
        let n = UInt64(size)
        try exchange.round(produce: { outbox in
            let packed = PackedOutbox(outbox, peers: size)
            try records.signatures.withUnsafeBufferPointer { all in
                for i in 0..<records.count where !isDuplicate[i] && !records.emptyShingles[i] {
                    let sig = UnsafeBufferPointer(rebasing: all[(i * numPerm)..<((i + 1) * numPerm)])
                    for band in 0..<bandKeys.bands {
                        let key = bandKeys.key(sig, band: band)
                        try packed.add(to: Int(StableHash.mix64(key) % n)) { b in b.put(key); b.put(records.position[i]) }
                    }
                }
            }
            try packed.flushAll()
        }, consume: { _, record in received.append(contentsOf: record) })
        var entries: [BandEntry] = []
        entries.reserveCapacity(received.count / 16)
        received.withUnsafeBytes { raw in
            var c = ByteCursor(raw)
            while !c.atEnd { entries.append(BandEntry(key: c.get(UInt64.self), g: c.get(Int64.self))) }
        }
        received = []
        entries.sort { ($0.key, $0.g) < ($1.key, $1.g) }
        var pairs: [(Int64, Int64)] = []
        let window = config.bucketWindow
        var start = 0
        while start < entries.count {
            var end = start + 1
            while end < entries.count && entries[end].key == entries[start].key { end += 1 }
            if end - start > 1 {
                for x in start..<end {
                    var y = x + 1
                    while y < end && y <= x + window { pairs.append((entries[x].g, entries[y].g)); y += 1 }
                }
            }
            start = end
        }
        entries = []
        pairs.sort { $0 < $1 }
        return uniqued(pairs)
    }
}
