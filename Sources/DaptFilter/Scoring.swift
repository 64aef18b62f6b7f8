import DaptModel

/// One scored stretch of a record: tokens [start, start + length) of its
/// sequence, of which those from `start + scoredFrom` on are predicted.
/// A record that fits the window is one piece; a longer one is cut into
/// windows sharing `overlap` tokens, each predicting only its tokens past
/// the overlap, so every token after the first is predicted exactly once.
public struct ScoringPiece: Equatable, Sendable {
    public var record: Int
    public var start: Int
    public var length: Int
    public var scoredFrom: Int
    public var predicted: Int { length - scoredFrom }
}

/// Which records go together: pieces packed into rows of `window` tokens,
/// longest first, each row then filled up with the shortest pieces left;
/// rows grouped `batchSize` at a time. The plan depends only on the
/// sequence lengths and settings, so every rank derives the same one, and a
/// record is scored in the same batch whatever the number of ranks.
public struct ScoringPlan: Sendable {
    public let window: Int
    public let batchSize: Int
    public let pieces: [ScoringPiece]
    /// Piece indices per row, in row order.
    public let rows: [[Int]]
    /// Each record's pieces, in order.
    public let piecesOfRecord: [[Int]]

    public init(lengths: [Int], window: Int, overlap: Int, batchSize: Int) {
        precondition(window >= 2 && overlap >= 0 && overlap < window && batchSize >= 1)
        self.window = window; self.batchSize = batchSize
        var pieces: [ScoringPiece] = []
        var ofRecord: [[Int]] = Array(repeating: [], count: lengths.count)
        let stride = window - overlap
        for (r, n) in lengths.enumerated() where n >= 2 {
            var start = 0
            while true {
                let length = min(window, n - start)
                ofRecord[r].append(pieces.count)
                pieces.append(ScoringPiece(record: r, start: start, length: length, scoredFrom: start == 0 ? 1 : overlap))
                if start + length >= n { break }
                start += stride
            }
        }
        self.pieces = pieces
        piecesOfRecord = ofRecord
        let order = pieces.indices.sorted { a, b in
            pieces[a].length != pieces[b].length ? pieces[a].length > pieces[b].length : a < b
        }
        var rows: [[Int]] = []
        var lo = 0, hi = order.count - 1
        while lo <= hi {
            var row = [order[lo]]
            var used = pieces[order[lo]].length
            lo += 1
            while lo <= hi && used + pieces[order[hi]].length <= window {
                row.append(order[hi]); used += pieces[order[hi]].length; hi -= 1
            }
            rows.append(row)
        }
        self.rows = rows
    }

    public var batchCount: Int { (rows.count + batchSize - 1) / batchSize }

    /// Batch b's token batch: rows of `window` tokens, one document per
    /// piece (positions restart at each), the rest padding without targets.
    public func batch(_ b: Int, sequences: [[Int32]]) throws -> TokenBatch {
        let rowRange = (b * batchSize)..<min((b + 1) * batchSize, rows.count)
        let n = rowRange.count * window
        var tokens = [Int32](repeating: 0, count: n)
        var targets = [Int32](repeating: ignoreIndex, count: n)
        var documents = [Int32](repeating: 0, count: n)
        for (r, row) in rows[rowRange].enumerated() {
            var t = r * window
            var document: Int32 = 0
            for p in row {
                let piece = pieces[p]
                let seq = sequences[piece.record]
                for j in 0..<piece.length {
                    tokens[t + j] = seq[piece.start + j]
                    documents[t + j] = document
                    if j + 1 < piece.length && j + 1 >= piece.scoredFrom { targets[t + j] = seq[piece.start + j + 1] }
                }
                t += piece.length
                document += 1
            }
            for j in t..<((r + 1) * window) { documents[j] = document }
        }
        return try TokenBatch(batchSize: rowRange.count, seqLen: window, tokens: tokens, targets: targets, documentIds: documents)
    }

    /// Each piece's summed loss from batch b's per-position losses, in token order.
    public func pieceLosses(_ b: Int, losses: [Float]) -> [(piece: Int, nll: Double)] {
        var out: [(Int, Double)] = []
        for (r, row) in rows[(b * batchSize)..<min((b + 1) * batchSize, rows.count)].enumerated() {
            var t = r * window
            for p in row {
                let piece = pieces[p]
                var sum = 0.0
                for j in (piece.scoredFrom - 1)..<(piece.length - 1) { sum += Double(losses[t + j]) }
                out.append((p, sum))
                t += piece.length
            }
        }
        return out
    }
}

/// Scores token sequences with a model: the summed negative log-likelihood
/// of every token after the first, and how many that is.
public struct SequenceScorer {
    public let model: LlamaModel
    public let window: Int
    public let overlap: Int
    public let batchSize: Int

    public init(model: LlamaModel, window: Int, overlap: Int, batchSize: Int) {
        self.model = model; self.window = window; self.overlap = overlap; self.batchSize = batchSize
    }

    /// Scores the batches of `plan` that `take` selects; the other pieces'
    /// sums stay 0. Returns the sum per piece.
    public func pieceSums(_ plan: ScoringPlan, sequences: [[Int32]], take: (Int) -> Bool = { _ in true },
                          progress: (Int) -> Void = { _ in }) throws -> [Double] {
        var sums = [Double](repeating: 0, count: plan.pieces.count)
        for b in 0..<plan.batchCount where take(b) {
            let losses = try model.tokenLosses(try plan.batch(b, sequences: sequences))
            for (p, nll) in plan.pieceLosses(b, losses: losses) { sums[p] = nll }
            progress(b)
        }
        return sums
    }

    /// Each record's summed loss and predicted-token count, from piece sums.
    public static func recordSums(_ plan: ScoringPlan, pieceSums: [Double]) -> [(nll: Double, count: Int)] {
        plan.piecesOfRecord.map { ps in
            ps.reduce((0.0, 0)) { ($0.0 + pieceSums[$1], $0.1 + plan.pieces[$1].predicted) }
        }
    }

    /// Scores `sequences` on one process.
    public func score(_ sequences: [[Int32]]) throws -> [(nll: Double, count: Int)] {
        let plan = ScoringPlan(lengths: sequences.map(\.count), window: window, overlap: overlap, batchSize: batchSize)
        return Self.recordSums(plan, pieceSums: try pieceSums(plan, sequences: sequences))
    }
}
