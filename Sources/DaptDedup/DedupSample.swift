import DaptCore

extension DedupContext {
    /// The sampled remaining-duplicate estimate: samples `sampleSize` kept
    /// records (smallest seeded hash of their position, so the sample does
    /// not depend on the ranks) and compares each with every kept record.
    func sampleRemaining(_ records: LocalRecords, _ layout: RankLayout, _ removals: Removals) throws -> DedupReport.Remaining {
        let k = config.sampleSize
        let sampleSeed = StableHash.mix64(seed ^ 0x7361_6D70_6C65)
        func eligible(_ i: Int) -> Bool { removals.isKept(i) && !records.emptyShingles[i] }
        let positions = records.position
        var keys: [(UInt64, Int64)] = []
        for i in 0..<records.count where eligible(i) { keys.append((StableHash.mix64(sampleSeed ^ UInt64(positions[i])), positions[i])) }
        keys.sort { $0 < $1 }
        let offered = keys.prefix(k).flatMap { [Int64(bitPattern: $0.0), $0.1] }
        let all = try comm.allGatherV(Array(offered)).flatMap { $0 }
        var pool: [(UInt64, Int64)] = []
        var p = 0
        while p < all.count { pool.append((UInt64(bitPattern: all[p]), all[p + 1])); p += 2 }
        pool.sort { $0 < $1 }
        let sample = pool.prefix(k).map(\.1).sorted()
        // Signatures of the sample, from their holders, in sample order.
        var mySigs: [UInt8] = []
        for g in sample where layout.holder(g) == rank { records.signature(records.localIndex(g)).withUnsafeBytes { mySigs.append(contentsOf: $0) } }
        let sigBytes = try comm.allGatherV(mySigs).flatMap { $0 }
        let sigs = [UInt32](unsafeUninitializedCapacity: sigBytes.count / 4) { buf, n in
            sigBytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(buf).copyMemory(from: $0) }
            n = sigBytes.count / 4
        }
        let candidates = (0..<records.count).filter(eligible)
        var hits = [Int64](repeating: 0, count: sample.count)
        let numPerm = self.numPerm
        if rule.needsText {
            // Signatures preselect (the lowest estimate the rule could still
            // accept) and the rule decides, with the exact Jaccard of the texts
            // where it asks for it, as it did for the pairs.
            var mine: [UInt8] = []
            for g in sample where layout.holder(g) == rank {  // ascending: one sequential pass
                let text = Array(try nfcText(records, records.localIndex(g)).utf8)
                mine.put(UInt32(text.count)); mine += text
            }
            var sampleTexts: [String] = []
            let gathered = try comm.allGatherV(mine).flatMap { $0 }
            gathered.withUnsafeBytes { raw in
                var c = ByteCursor(raw)
                while !c.atEnd { let n = Int(c.get(UInt32.self)); sampleTexts.append(String(decoding: c.take(n), as: UTF8.self)) }
            }
            var sampleSets: [Int: [UInt64]] = [:], localSets: [Int: [UInt64]] = [:]
            let loose = numPerm - Int((rule.lowestCandidateEstimate * Double(numPerm)).rounded(.up))
            try sigs.withUnsafeBufferPointer { s in
                try records.signatures.withUnsafeBufferPointer { all in
                    try markSamplesWithDuplicate(samples: s, sampleIds: sample, records: all, recordIds: positions, candidates: candidates,
                                                 numPerm: numPerm, maxMismatches: loose, hits: &hits) { n, i in
                        let est = MinHasher.estimatedJaccard(UnsafeBufferPointer(rebasing: s[(n * numPerm)..<((n + 1) * numPerm)]),
                                                             UnsafeBufferPointer(rebasing: all[(i * numPerm)..<((i + 1) * numPerm)]))
                        switch rule.decide(estimate: est) {
                        case .accept: return true
                        case .reject: return false
                        case .exact: break
                        }
                        if sampleSets[n] == nil { sampleSets[n] = shingleSet(sampleTexts[n]) }
                        if localSets[i] == nil {
                            if localSets.count >= 4096 { localSets.removeAll(keepingCapacity: true) }
                            // Scattered records: read just the line (the input stays open).
                            localSets[i] = shingleSet(try nfcText(records, i, readAhead: false))
                        }
                        return Shingler.jaccard(sampleSets[n]!, localSets[i]!) >= threshold
                    }
                }
            }
        } else {
            let maxMismatches = numPerm - Int((threshold * Double(numPerm)).rounded(.up))
            try sigs.withUnsafeBufferPointer { s in
                try records.signatures.withUnsafeBufferPointer { all in
                    try markSamplesWithDuplicate(samples: s, sampleIds: sample, records: all, recordIds: positions, candidates: candidates,
                                                 numPerm: numPerm, maxMismatches: maxMismatches, hits: &hits)
                }
            }
        }
        try comm.allReduce(&hits, op: .max)
        let withDuplicate = Int(hits.reduce(0, +))
        let ci = WilsonInterval.bounds(successes: withDuplicate, trials: sample.count, confidence: config.confidence)
        return DedupReport.Remaining(sampled: sample.count, withDuplicate: withDuplicate,
                                     rate: sample.isEmpty ? 0 : Double(withDuplicate) / Double(sample.count),
                                     lower: ci.lower, upper: ci.upper, confidence: config.confidence)
    }
}

/// For every sample signature, sets hits[n] = 1 if some candidate record
/// (other than the sample itself) differs from it in at most `maxMismatches`
/// positions, i.e. has estimated Jaccard ≥ threshold. Compares 32 values at a
/// time and gives up on a pair as soon as it has too many mismatches, which
/// is exact (not a heuristic) and quick for the dissimilar majority.
/// With `confirm`, a signature match only counts if `confirm(sample, record)` agrees.
func markSamplesWithDuplicate(samples: UnsafeBufferPointer<UInt32>, sampleIds: [Int64], records: UnsafeBufferPointer<UInt32>,
                              recordIds: [Int64], candidates: [Int], numPerm: Int, maxMismatches: Int, hits: inout [Int64],
                              confirm: ((Int, Int) throws -> Bool)? = nil) throws {
    let sampleCount = sampleIds.count
    guard sampleCount > 0, !candidates.isEmpty else { return }
    let ps = UnsafeRawPointer(samples.baseAddress!), pr = UnsafeRawPointer(records.baseAddress!)
    let bytes = numPerm * 4
    let one = SIMD8<UInt32>(repeating: 1), zero = SIMD8<UInt32>()
    for i in candidates {
        let rec = pr + i * bytes
        let id = recordIds[i]
        for n in 0..<sampleCount where hits[n] == 0 && sampleIds[n] != id {
            let smp = ps + n * bytes
            var mismatches = 0
            var v = 0
            while v < numPerm {
                var acc = SIMD8<UInt32>()
                let end = min(v + 32, numPerm)
                while v < end {
                    let a = rec.loadUnaligned(fromByteOffset: v * 4, as: SIMD8<UInt32>.self)
                    let b = smp.loadUnaligned(fromByteOffset: v * 4, as: SIMD8<UInt32>.self)
                    acc &+= one.replacing(with: zero, where: a .== b)
                    v += 8
                }
                mismatches += Int(acc.wrappedSum())
                if mismatches > maxMismatches { break }
            }
            if mismatches <= maxMismatches {
                if let confirm { if try confirm(n, i) { hits[n] = 1 } } else { hits[n] = 1 }
            }
        }
    }
}
