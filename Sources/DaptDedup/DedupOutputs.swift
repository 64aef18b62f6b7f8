import DaptCore

extension DedupContext {
    static func formatSimilarity(_ s: Double) -> String {
        let v = Int((s * 10000).rounded())
        let frac = String(v % 10000)
        return "\(v / 10000)." + String(repeating: "0", count: 4 - frac.count) + frac
    }

    /// What follows a removed record's fields: `duplicate_of`, `similarity`, `reason`.
    static func removedSuffix(_ r: Removals.Entry) -> [UInt8] {
        var s: [UInt8] = Array(",\"duplicate_of\":".utf8) + r.representativeId
        s += Array(",\"similarity\":\(formatSimilarity(r.similarity)),\"reason\":\"\(r.identical ? "exact" : "near")\"}\n".utf8)
        return s
    }

    /// Every rank writes its kept and removed records into its region of the
    /// shared output files, in input order; rank 0 writes the clusters (and
    /// pairs). All of them go to the staging folder, published as a unit.
    func writeOutputs(_ plan: InputPlan, _ records: LocalRecords, _ removals: Removals, _ graph: ClusterGraph,
                      expected: (records: Int, kept: Int, removed: Int)) throws {
        // Sizes of this rank's regions, then everyone's offsets.
        var keptBytes = 0, removedBytes = 0, keptCount = 0, removedCount = 0
        for i in 0..<records.count {
            if let r = removals.entry(i) {
                removedBytes += Int(records.closingBrace[i]) + Self.removedSuffix(r).count; removedCount += 1
            } else {
                keptBytes += Int(records.lineLength[i]) + 1; keptCount += 1
            }
        }
        let totals = try comm.allGatherV([Int64(keptBytes), Int64(removedBytes), Int64(keptCount), Int64(removedCount)])
        let keptAll = totals.reduce(0) { $0 + Int($1[2]) }, removedAll = totals.reduce(0) { $0 + Int($1[3]) }
        guard keptAll + removedAll == expected.records, keptAll == expected.kept, removedAll == expected.removed else {
            throw DedupError.countMismatch(records: expected.records, kept: keptAll, removed: removedAll)
        }
        let keptOffset = totals.prefix(rank).reduce(0) { $0 + Int($1[0]) }
        let removedOffset = totals.prefix(rank).reduce(0) { $0 + Int($1[1]) }
        let keptPath = "\(writeDirectory)/\(DedupJob.outputNames.kept)", removedPath = "\(writeDirectory)/\(DedupJob.outputNames.removed)"
        if rank == 0 {
            try createSized(keptPath, size: totals.reduce(0) { $0 + Int($1[0]) })
            try createSized(removedPath, size: totals.reduce(0) { $0 + Int($1[1]) })
        }
        try comm.barrier()
        let kept = try RegionWriter(path: keptPath, offset: keptOffset, length: keptBytes)
        let removed = try RegionWriter(path: removedPath, offset: removedOffset, length: removedBytes)
        var next = 0  // records are in line order, so one sequential re-read serves them all
        for piece in plan.pieces(rank: rank, size: size) {
            try forEachLine(path: plan.paths[piece.file], start: piece.start, end: piece.end) { lineOffset, line in
                guard next < records.count, Int(records.fileIndex[next]) == piece.file, Int(records.offset[next]) == lineOffset else { return }
                let i = next
                next += 1
                if let r = removals.entry(i) {
                    try removed.write(UnsafeBufferPointer(rebasing: line[0..<Int(records.closingBrace[i])]))
                    try removed.write(Self.removedSuffix(r))
                } else {
                    try kept.write(line)
                    try kept.write([0x0A])
                }
            }
        }
        precondition(next == records.count, "re-read found \(next) of \(records.count) records")
        try kept.close()
        try removed.close()

        // Cluster membership with ids, gathered on rank 0 for clusters.jsonl.
        var info: [UInt8] = []
        for i in 0..<records.count where graph.contains(records.position[i]) {
            let r = removals.entry(i)
            info.put(records.position[i])
            info.put(Int64(bitPattern: (r?.similarity ?? -1.0).bitPattern))
            info.put(UInt8(r?.identical == true ? 1 : 0))
            info.put(records.idLength[i]); info.append(contentsOf: records.id(i))
        }
        let gathered = try comm.gatherV(info, root: 0)
        if rank == 0 { try writeClusters(graph, gathered!.flatMap { $0 }) }
    }

    func writeClusters(_ graph: ClusterGraph, _ info: [UInt8]) throws {
        var members: [Int64: (id: [UInt8], similarity: Double, identical: Bool)] = [:]
        info.withUnsafeBytes { raw in
            var c = ByteCursor(raw)
            while !c.atEnd {
                let g = c.get(Int64.self)
                let sim = Double(bitPattern: UInt64(bitPattern: c.get(Int64.self)))
                let identical = c.get(UInt8.self) == 1
                let n = Int(c.get(Int32.self))
                members[g] = (Array(c.take(n)), sim, identical)
            }
        }
        let w = try FileWriter(path: "\(writeDirectory)/\(DedupJob.outputNames.clusters)")
        for (k, component) in graph.components.enumerated() {
            let rep = members[component.representative]!
            var line = "{\"cluster\":\(k),\"representative\":\(String(decoding: rep.id, as: UTF8.self)),\"size\":\(component.members.count),\"members\":["
            var first = true
            for g in component.members where g != component.representative {
                let m = members[g]!
                line += (first ? "" : ",") + "{\"id\":\(String(decoding: m.id, as: UTF8.self)),\"similarity\":\(Self.formatSimilarity(m.similarity)),\"reason\":\"\(m.identical ? "exact" : "near")\"}"
                first = false
            }
            try w.write(line + "]}\n")
        }
        try w.commit()
        if config.writePairs {
            let pw = try FileWriter(path: "\(writeDirectory)/\(DedupJob.outputNames.pairs)")
            for p in graph.pairs {
                try pw.write("{\"a\":\(String(decoding: members[p.a]!.id, as: UTF8.self)),\"b\":\(String(decoding: members[p.b]!.id, as: UTF8.self)),\"similarity\":\(Self.formatSimilarity(Double(p.similarity))),\"kind\":\"\(p.exact ? "exact" : "near")\"}\n")
            }
            try pw.commit()
        }
    }
}
