import DaptCore

/// This rank's valid records in input order, one entry per record in each
/// column (columns, not an array of structs: the signatures and hashes are
/// scanned in bulk and sent as raw bytes).
struct LocalRecords {
    let numPerm: Int
    /// Global input position (line ordinal over all inputs); a local line
    /// ordinal until line accounting makes it global.
    var position: [Int64] = []
    var fileIndex: [Int32] = []
    /// Byte offset and length of the record's line in its file.
    var offset: [Int64] = []
    var lineLength: [Int32] = []
    /// Offset of the record's closing `}` within its line.
    var closingBrace: [Int32] = []
    /// NFC text length in Unicode scalars (representatives are the longest).
    var textLength: [Int32] = []
    /// The `id` value's JSON token, in `idArena`.
    var idStart: [Int] = []
    var idLength: [Int32] = []
    var idArena: [UInt8] = []
    /// SHA-1 of the NFC text, 20 bytes per record.
    var sha1: [UInt8] = []
    /// MinHash signatures, numPerm values per record.
    var signatures: [UInt32] = []
    /// No shingle at all (text too short): never a band candidate.
    var emptyShingles: [Bool] = []

    init(numPerm: Int) { self.numPerm = numPerm }

    var count: Int { position.count }

    func signature(_ i: Int) -> ArraySlice<UInt32> { signatures[(i * numPerm)..<((i + 1) * numPerm)] }
    func hash(_ i: Int) -> ArraySlice<UInt8> { sha1[(i * 20)..<(i * 20 + 20)] }
    func id(_ i: Int) -> ArraySlice<UInt8> { idArena[idStart[i]..<(idStart[i] + Int(idLength[i]))] }

    /// Index of global position `g` among this rank's records.
    func localIndex(_ g: Int64) -> Int {
        var lo = 0, hi = position.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if position[mid] < g { lo = mid + 1 } else { hi = mid }
        }
        precondition(lo < position.count && position[lo] == g, "record \(g) is not held here")
        return lo
    }

    /// Estimated Jaccard of local record j and a remote signature.
    func estimate(local j: Int, signature remote: UnsafeRawBufferPointer) -> Double {
        signatures.withUnsafeBufferPointer { all in
            MinHasher.estimatedJaccard(remote.bindMemory(to: UInt32.self),
                                       UnsafeBufferPointer(rebasing: all[(j * numPerm)..<((j + 1) * numPerm)]))
        }
    }
}

/// Which rank holds which records: rank r holds the global positions
/// [lineBase[r], lineBase[r + 1]).
struct RankLayout {
    /// Per rank, plus the total at the end.
    let lineBase: [Int64]
    /// This rank's first line number per file (0-based).
    let fileLineBase: [Int]

    /// The rank holding global record position `g`.
    func holder(_ g: Int64) -> Int {
        var lo = 0, hi = lineBase.count - 2
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineBase[mid] <= g { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }
}

/// Sorted pairs without repeats.
func uniqued(_ sorted: [(Int64, Int64)]) -> [(Int64, Int64)] {
    var out: [(Int64, Int64)] = []
    out.reserveCapacity(sorted.count)
    for p in sorted where out.last.map({ $0 != p }) ?? true { out.append(p) }
    return out
}
