import DaptCore

/// Line and record counts over all ranks (firstHashMismatches on rank 0 only).
struct LineCounts {
    var ranks = 0
    var lines = 0
    var blankLines = 0
    var rejected = 0
    var hashMismatches = 0
    var records = 0
    var firstHashMismatches: [String] = []
}

/// The records with their global positions, where every rank's records lie,
/// and the counts.
struct LineAccounting {
    var records: LocalRecords
    var layout: RankLayout
    var counts: LineCounts
}

extension DedupContext {
    /// Global line numbers: ranks learn each other's line counts. Rejects and
    /// hash mismatches, with their line numbers, go to rank 0, which writes
    /// the rejects file and, with `strict`, stops at the first problem in
    /// input order.
    func settleLines(_ plan: InputPlan, _ scan: consuming ScanResult) throws -> LineAccounting {
        let counts = try comm.allGatherV([Int64(scan.lines)] + scan.linesPerFile.map { Int64($0) })
        var lineBase: [Int64] = [0]
        for r in 0..<size { lineBase.append(lineBase[r] + counts[r][0]) }
        let fileLineBase = (0..<plan.paths.count).map { f in (0..<rank).reduce(0) { $0 + Int(counts[$1][1 + f]) } }
        let layout = RankLayout(lineBase: lineBase, fileLineBase: fileLineBase)
        var records = scan.records
        let base = lineBase[rank]
        for i in 0..<records.count { records.position[i] += base }
        func lineNumber(_ file: Int, _ fileLine: Int) -> Int { fileLineBase[file] + fileLine + 1 }

        var rejectLines: [UInt8] = []
        for r in scan.rejects {
            let line = lineNumber(r.file, r.fileLine)
            let error = r.problem.located(file: plan.paths[r.file], line: line)
            rejectLines += Array(#"{"file":"#.utf8); JSONWriter.appendString(plan.paths[r.file], to: &rejectLines)
            rejectLines += Array(#","line":"#.utf8); JSONWriter.appendInt(line, to: &rejectLines)
            if let f = r.problem.field { rejectLines += Array(#","field":"#.utf8); JSONWriter.appendString(f, to: &rejectLines) }
            rejectLines += Array(#","reason":"#.utf8); JSONWriter.appendString(r.problem.reason, to: &rejectLines)
            rejectLines += Array(#","error":"#.utf8); JSONWriter.appendString(error.description, to: &rejectLines)
            // The record as read (invalid UTF-8 shown as U+FFFD).
            rejectLines += Array(#","record":"#.utf8); JSONWriter.appendString(String(decoding: r.line, as: UTF8.self), to: &rejectLines)
            rejectLines += Array("}\n".utf8)
        }
        var mismatchLines: [UInt8] = []
        for m in scan.mismatches {
            let e = InputError(file: plan.paths[m.file], line: lineNumber(m.file, m.fileLine), field: "hash",
                               reason: "stored \(m.stored) but the NFC text hashes to \(m.computed)")
            mismatchLines += Array((e.description + "\n").utf8)
        }
        var totals = LineCounts()
        totals.ranks = size
        totals.lines = Int(lineBase[size])
        totals.rejected = Int(try comm.allReduce(Int64(scan.rejects.count), op: .sum))
        totals.hashMismatches = Int(try comm.allReduce(Int64(scan.mismatches.count), op: .sum))
        totals.blankLines = Int(try comm.allReduce(Int64(scan.blankLines), op: .sum))
        totals.records = Int(try comm.allReduce(Int64(records.count), op: .sum))
        let allRejects = try comm.gatherV(rejectLines, root: 0)
        let allMismatches = try comm.gatherV(mismatchLines, root: 0)
        // This rank's first problem in input order (a reject or a hash
        // mismatch); rank 0 takes the first rank's, for --strict.
        var firstProblem = ""
        let firstR = scan.rejects.first.map { ($0.file, $0.fileLine) }
        let firstM = scan.mismatches.first.map { ($0.file, $0.fileLine) }
        if let r = firstR, firstM == nil || r < firstM! {
            let x = scan.rejects[0]
            firstProblem = InputError(file: plan.paths[x.file], line: lineNumber(x.file, x.fileLine),
                                      field: x.problem.field, reason: x.problem.reason).description
        } else if firstM != nil {
            firstProblem = String(decoding: mismatchLines.prefix { $0 != 0x0A }, as: UTF8.self)
        }
        let firstProblems = try comm.gatherV(Array(firstProblem.utf8), root: 0)
        // And its first reject, for the notice.
        let firstReject = scan.rejects.first.map { r in r.problem.located(file: plan.paths[r.file], line: lineNumber(r.file, r.fileLine)).description }
        let firstRejects = try comm.gatherV(Array((firstReject ?? "").utf8), root: 0)
        if rank == 0 {
            let w = try FileWriter(path: "\(writeDirectory)/\(DedupJob.outputNames.rejects)")
            for part in allRejects! { try w.write(part) }
            try w.commit()
            let mismatches = allMismatches!.flatMap { $0 }.split(separator: 0x0A).map { String(decoding: $0, as: UTF8.self) }
            totals.firstHashMismatches = Array(mismatches.prefix(20))
            for m in mismatches.prefix(20) { sink.report(.notice(stage: "dedup", message: m)) }
            if totals.rejected > 0, let first = firstRejects!.first(where: { !$0.isEmpty }) {
                sink.report(.notice(stage: "dedup", message: "\(totals.rejected) rejected line(s), first: \(String(decoding: first, as: UTF8.self))"))
            }
            if config.strict, let first = firstProblems!.first(where: { !$0.isEmpty }) {
                throw DedupError.strict(String(decoding: first, as: UTF8.self))
            }
        }
        if config.strict && (totals.rejected > 0 || totals.hashMismatches > 0) {
            // Rank 0 has thrown and ends the job; wait for that.
            try comm.barrier()
            throw DedupError.strict("input errors (see rank 0)")
        }
        return LineAccounting(records: records, layout: layout, counts: totals)
    }
}
