import DaptCore

/// The candidate pairs that reached the threshold, with the counts.
struct VerifiedPairs {
    var pairs: [VerifiedPair]
    /// Distinct candidate pairs, verified pairs and exact Jaccards computed, over all ranks.
    var candidatePairs: Int
    var verifiedPairs: Int
    var exactComparisons: Int
}

/// Comparisons of local records with remote texts that need the exact
/// Jaccard, collected while a round's messages arrive and computed after
/// it, in ascending local record order, so the local lines are re-read in
/// one sequential pass. Each remote text is kept once (UTF-8).
struct ExactQueue {
    var texts: [[UInt8]] = []
    var items: [(local: Int, text: Int, tag: Int)] = []
    private var pendingText = true
    /// Call when a new message starts: its text is stored on first use.
    mutating func newMessage() { pendingText = true }
    mutating func add(local: Int, text: UnsafeRawBufferPointer, tag: Int) {
        if pendingText { texts.append(Array(text)); pendingText = false }
        items.append((local, texts.count - 1, tag))
    }
}

extension DedupContext {
    /// What a record's holder sends for comparisons: its signature, then (when
    /// the rule may need it) its NFC text.
    func comparisonPayload(_ records: LocalRecords, _ i: Int) throws -> [UInt8] {
        var payload = records.signature(i).withUnsafeBytes { Array($0) }
        if rule.needsText { payload += Array(try nfcText(records, i).utf8) }
        return payload
    }

    /// Re-reads record i's line and returns its NFC text. Calls in ascending
    /// record order read the input sequentially (see `LineFetcher`).
    func nfcText(_ records: LocalRecords, _ i: Int, readAhead: Bool = true) throws -> String {
        try fetcher.withLine(file: Int(records.fileIndex[i]), offset: Int(records.offset[i]),
                             length: Int(records.lineLength[i]), readAhead: readAhead) { line in
            var scanner = JSONLineScanner()
            let record = try scanner.scan(line)
            return TextNormalizer.nfc(record.text)
        }
    }

    func shingleSet(_ nfc: String) -> [UInt64] {
        var scalars: [UInt32] = [], hashes: [UInt64] = []
        TextNormalizer.normalize(nfc, into: &scalars)
        Shingler.hashes(scalars, size: config.shingleSize, seed: seed, into: &hashes)
        return Shingler.set(hashes)
    }

    /// Computes the queued exact Jaccards; `body(tag, similarity)`.
    func resolve(_ queue: ExactQueue, _ records: LocalRecords, _ body: (Int, Double) -> Void) throws {
        let order = queue.items.indices.sorted { (queue.items[$0].local, queue.items[$0].text) < (queue.items[$1].local, queue.items[$1].text) }
        var remoteSets: [Int: [UInt64]] = [:]
        var current = -1, localSet: [UInt64] = []
        for k in order {
            let item = queue.items[k]
            if item.local != current { localSet = shingleSet(try nfcText(records, item.local)); current = item.local }
            if remoteSets[item.text] == nil {
                if remoteSets.count >= 4096 { remoteSets.removeAll(keepingCapacity: true) }  // bounded cache
                remoteSets[item.text] = shingleSet(String(decoding: queue.texts[item.text], as: UTF8.self))
            }
            body(item.tag, Shingler.jaccard(remoteSets[item.text]!, localSet))
        }
    }

    /// Each candidate pair goes to the holder of its first record, which
    /// sends that record's payload to the holder of the second, which keeps
    /// the pair if the similarity reaches the threshold.
    func verifyRounds(_ candidates: [(Int64, Int64)], _ records: LocalRecords, _ layout: RankLayout) throws -> VerifiedPairs {
        var received: [UInt8] = []
        try exchange.round(produce: { outbox in
            let packed = PackedOutbox(outbox, peers: size)
            for (a, b) in candidates { try packed.add(to: layout.holder(a)) { $0.put(a); $0.put(b) } }
            try packed.flushAll()
        }, consume: { _, record in received.append(contentsOf: record) })
        var mine: [(Int64, Int64)] = []
        received.withUnsafeBytes { raw in
            var c = ByteCursor(raw)
            while !c.atEnd { mine.append((c.get(Int64.self), c.get(Int64.self))) }
        }
        received = []
        mine.sort { $0 < $1 }
        mine = uniqued(mine)
        // Counted here, after the holder removed pairs found in several bands
        // (by several owners), so the figure does not depend on the ranks.
        let candidatePairs = Int(try comm.allReduce(Int64(mine.count), op: .sum))

        // The first record's payload to the holder of the second; it decides.
        // First records are visited in ascending order, so their lines are
        // re-read in one sequential pass.
        var verified: [VerifiedPair] = []
        var queue = ExactQueue()
        var queued: [(a: Int64, lengthA: Int32, b: Int64)] = []
        let signatureBytes = numPerm * 4
        try exchange.round(produce: { outbox in
            var s = 0
            while s < mine.count {
                var e = s + 1
                while e < mine.count && mine[e].0 == mine[s].0 { e += 1 }
                let i = records.localIndex(mine[s].0)
                let payload = try comparisonPayload(records, i)
                var k = s
                while k < e {  // second records are sorted, so each holder's run is contiguous
                    let dest = layout.holder(mine[k].1)
                    var m = k
                    while m < e && layout.holder(mine[m].1) == dest { m += 1 }
                    var rec: [UInt8] = []
                    rec.reserveCapacity(16 + 8 * (m - k) + payload.count)
                    rec.put(mine[s].0); rec.put(records.textLength[i]); rec.put(Int32(m - k))
                    for x in k..<m { rec.put(mine[x].1) }
                    rec.append(contentsOf: payload)
                    try outbox.append(rec, to: dest)
                    k = m
                }
                s = e
            }
        }, consume: { _, record in
            var c = ByteCursor(record)
            let a = c.get(Int64.self), lengthA = c.get(Int32.self), count = Int(c.get(Int32.self))
            let bs = (0..<count).map { _ in c.get(Int64.self) }
            let sig = c.take(signatureBytes)
            let text = c.take(record.count - c.offset)
            queue.newMessage()
            for b in bs {
                let j = records.localIndex(b)
                let est = records.estimate(local: j, signature: sig)
                switch rule.decide(estimate: est) {
                case .accept:
                    verified.append(VerifiedPair(a: a, b: b, lengthA: lengthA, lengthB: records.textLength[j], similarity: Float(est), exact: false))
                case .reject: break
                case .exact:
                    queue.add(local: j, text: text, tag: queued.count)
                    queued.append((a, lengthA, b))
                }
            }
        })
        try resolve(queue, records) { tag, sim in
            if sim >= threshold {
                let q = queued[tag]
                verified.append(VerifiedPair(a: q.a, b: q.b, lengthA: q.lengthA, lengthB: records.textLength[records.localIndex(q.b)],
                                             similarity: Float(sim), exact: false))
            }
        }
        return VerifiedPairs(pairs: verified, candidatePairs: candidatePairs,
                             verifiedPairs: Int(try comm.allReduce(Int64(verified.count), op: .sum)),
                             exactComparisons: Int(try comm.allReduce(Int64(queue.items.count), op: .sum)))
    }
}
