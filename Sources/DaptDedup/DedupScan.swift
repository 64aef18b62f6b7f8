import DaptCore
import Foundation

/// A line that is not a usable record, by file and line ordinal on this rank.
struct PendingReject {
    var file: Int
    var fileLine: Int
    var problem: RecordProblem
    var line: [UInt8]
}

/// A record whose stored `hash` differs from its recomputed one.
struct PendingMismatch {
    var file: Int
    var fileLine: Int
    var stored: String
    var computed: String
}

/// What the scan of this rank's byte range found.
struct ScanResult {
    var records: LocalRecords
    /// Lines read, in all and per input file.
    var lines = 0
    var linesPerFile: [Int]
    var blankLines = 0
    var rejects: [PendingReject] = []
    var mismatches: [PendingMismatch] = []
}

extension DedupContext {
    /// Reads this rank's lines: checks each record, recomputes its hash and
    /// computes its MinHash signature.
    func scan(_ plan: InputPlan) throws -> ScanResult {
        var result = ScanResult(records: LocalRecords(numPerm: numPerm),
                                linesPerFile: Array(repeating: 0, count: plan.paths.count))
        var scanner = JSONLineScanner()
        var scalars: [UInt32] = []
        var shingles: [UInt64] = []
        let checkHash = config.checkHash
        var nextProgress = 20_000
        for piece in plan.pieces(rank: rank, size: size) {
            try forEachLine(path: plan.paths[piece.file], start: piece.start, end: piece.end) { lineOffset, line in
                let fileLine = result.linesPerFile[piece.file]
                result.linesPerFile[piece.file] += 1
                let ordinal = result.lines
                result.lines += 1
                if RecordProblem.isBlank(line) { result.blankLines += 1; return }
                let record: ScannedRecord
                do throws(RecordProblem) {
                    record = try scanner.scan(line)
                } catch {
                    result.rejects.append(PendingReject(file: piece.file, fileLine: fileLine, problem: error, line: Array(line)))
                    return
                }
                // One pass normalises text that is already NFC (nearly all);
                // the rest is converted first and normalised again.
                var nfc = record.text
                var scalarCount = TextNormalizer.normalize(nfc, into: &scalars, requireQuickNFC: true)
                if scalarCount == nil {
                    nfc = nfc.precomposedStringWithCanonicalMapping
                    scalarCount = TextNormalizer.normalize(nfc, into: &scalars)
                }
                var digest = SHA1()
                digest.update(nfc)
                let hashBytes = digest.finalize()
                if checkHash, let stored = record.hash {
                    let computed = "sha1:" + Hex.encode(hashBytes)
                    if stored != computed {
                        result.mismatches.append(PendingMismatch(file: piece.file, fileLine: fileLine, stored: stored, computed: computed))
                    }
                }
                result.records.append(position: Int64(ordinal), file: piece.file, offset: lineOffset, line: line,
                                      record: record, textLength: scalarCount!, hash: hashBytes)
                Shingler.hashes(scalars, size: config.shingleSize, seed: seed, into: &shingles)
                result.records.appendSignature(of: shingles, hasher: hasher)
                if result.records.count >= nextProgress {
                    nextProgress += 20_000
                    sink.report(.progress(stage: "dedup", done: result.records.count, total: nil, unit: "records (rank 0)"))
                }
            }
        }
        return result
    }
}

extension LocalRecords {
    mutating func append(position: Int64, file: Int, offset lineOffset: Int, line: UnsafeBufferPointer<UInt8>,
                         record: ScannedRecord, textLength length: Int, hash: [UInt8]) {
        self.position.append(position)
        fileIndex.append(Int32(file))
        offset.append(Int64(lineOffset))
        lineLength.append(Int32(line.count))
        closingBrace.append(Int32(record.closingBrace))
        textLength.append(Int32(length))
        idStart.append(idArena.count)
        idLength.append(Int32(record.idToken.count))
        idArena.append(contentsOf: UnsafeBufferPointer(rebasing: line[record.idToken]))
        sha1.append(contentsOf: hash)
    }

    mutating func appendSignature(of shingles: [UInt64], hasher: MinHasher) {
        emptyShingles.append(shingles.isEmpty)
        let base = signatures.count
        let numPerm = self.numPerm
        signatures.append(contentsOf: repeatElement(0, count: numPerm))
        signatures.withUnsafeMutableBufferPointer { all in
            shingles.withUnsafeBufferPointer { s in
                hasher.signature(of: s, into: UnsafeMutableBufferPointer(rebasing: all[base..<(base + numPerm)]))
            }
        }
    }
}
