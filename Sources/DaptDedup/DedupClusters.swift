import DaptCore

/// What happens to each of this rank's records: kept, or removed as a
/// duplicate of its cluster's representative.
struct Removals {
    struct Entry {
        /// The representative's `id` JSON token.
        var representativeId: [UInt8]
        var similarity: Double
        /// Identical NFC text to the representative's.
        var identical: Bool
    }

    /// Per local record: index into `entries`, or -1 when the record is kept.
    var index: [Int32]
    var entries: [Entry] = []
    /// Removed records with text identical to their representative's, over all ranks.
    var identicalTotal = 0

    init(count: Int) { index = Array(repeating: -1, count: count) }

    func isKept(_ i: Int) -> Bool { index[i] < 0 }
    func entry(_ i: Int) -> Entry? { index[i] < 0 ? nil : entries[Int(index[i])] }
}

extension DedupContext {
    /// Every rank gathers every verified pair (exact ones included) and
    /// builds the same graph of clusters.
    func clusterPairs(_ pairs: [VerifiedPair]) throws -> ClusterGraph {
        let local = pairs.flatMap { $0.encoded }
        let all = try comm.allGatherV(local).flatMap { $0 }
        var gathered: [VerifiedPair] = []
        gathered.reserveCapacity(all.count / 4)
        var k = 0
        while k < all.count { gathered.append(VerifiedPair(encoded: all[k..<(k + 4)])); k += 4 }
        return ClusterGraph(pairs: gathered)
    }

    /// Representatives tell their members' holders who they are; the holders
    /// note `duplicate_of` and the similarity.
    func representativeRound(_ graph: ClusterGraph, _ records: LocalRecords, _ layout: RankLayout) throws -> Removals {
        var removals = Removals(count: records.count)
        // Components come in ascending representative order: one sequential pass.
        var queue = ExactQueue()
        try exchange.round(produce: { outbox in
            for component in graph.components where layout.holder(component.representative) == rank {
                let r = records.localIndex(component.representative)
                let payload = try comparisonPayload(records, r)
                let members = component.members.filter { $0 != component.representative }  // sorted
                var k = 0
                while k < members.count {
                    let dest = layout.holder(members[k])
                    var m = k
                    while m < members.count && layout.holder(members[m]) == dest { m += 1 }
                    var rec: [UInt8] = []
                    rec.put(component.representative)
                    rec.append(contentsOf: records.hash(r))
                    rec.put(records.idLength[r]); rec.append(contentsOf: records.id(r))
                    rec.put(Int32(m - k))
                    for x in k..<m { rec.put(members[x]) }
                    rec.append(contentsOf: payload)
                    try outbox.append(rec, to: dest)
                    k = m
                }
            }
        }, consume: { _, record in
            var c = ByteCursor(record)
            _ = c.get(Int64.self)
            let repHash = Array(c.take(20))
            let idCount = Int(c.get(Int32.self))
            let repId = Array(c.take(idCount))
            let count = Int(c.get(Int32.self))
            let members = (0..<count).map { _ in c.get(Int64.self) }
            let sig = c.take(numPerm * 4)
            let text = c.take(record.count - c.offset)
            queue.newMessage()
            for g in members {
                let j = records.localIndex(g)
                let identical = records.hash(j).elementsEqual(repHash)
                var sim = 1.0
                if !identical {
                    // The similarity reported is the one verification would use:
                    // exact when the rule asks for it, else the estimate.
                    sim = records.estimate(local: j, signature: sig)
                    if rule.decide(estimate: sim) == .exact { queue.add(local: j, text: text, tag: removals.entries.count) }
                }
                removals.index[j] = Int32(removals.entries.count)
                removals.entries.append(Removals.Entry(representativeId: repId, similarity: sim, identical: identical))
            }
        })
        try resolve(queue, records) { tag, sim in removals.entries[tag].similarity = sim }
        let identical = removals.entries.filter(\.identical).count
        removals.identicalTotal = Int(try comm.allReduce(Int64(identical), op: .sum))
        return removals
    }
}
