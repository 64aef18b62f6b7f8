import DaptBLAS
import Foundation

// The output head and its loss run over chunks of rows: a chunk's logits
// product, its cross-entropy (and gradient, written over the logits while
// they are still in cache), then the head's weight gradient (beta 1) and the
// chunk's input-gradient rows, before the next chunk. The logits of the whole
// batch (batch·seqLen × vocab, the largest activation) never exist at once,
// except under a vocabulary split: there the head takes all rows in one chunk
// (of its 1/T of the vocabulary), as chunks would each reduce over the group.

/// The head pass's reused buffers (its passes run one after another): one
/// chunk of logits, each row's loss and, under a vocabulary split, the
/// cross-entropy's per-row statistics reduced over the tensor group; grown
/// on demand.
final class HeadScratch {
    let logits = GrowableFloats(), rowLoss = GrowableFloats(), statistics = GrowableFloats()

    /// Makes room for `logits` logits, `rows` row losses and `statistics`
    /// floats of `vocabParallelCrossEntropy`'s reductions.
    func reserve(logits count: Int, rows: Int, statistics: Int = 0) {
        logits.reserve(count); rowLoss.reserve(rows); self.statistics.reserve(statistics)
    }

    /// Floats held (the layout planner counts them on the last stage).
    var allocatedFloats: Int { logits.capacity + rowLoss.capacity + statistics.capacity }
}

/// How many rows the output head computes at once.
public enum HeadChunking {
    /// Rows per chunk when the head weight and its gradient stay cached
    /// from chunk to chunk. Each chunk's products pack the head weight
    /// (vocab × hidden) again and read and write its whole gradient: cheap
    /// while both fit in `cachedWeightBytes`, a stream from memory per chunk
    /// when they do not. On this machine (one thread, under load) 512-row
    /// chunks made the small benchmark's step 2–3% faster (vocab 4096,
    /// hidden 256: 8 MiB of weight and gradient) and the medium one's 3%
    /// slower (vocab 8192, hidden 512: 32 MiB), and at vocab 32000 (hidden
    /// 256) the head took 2–3% longer in 512-row chunks, 10% in 128-row
    /// ones, 20% in 64-row ones than in one 2048-row product.
    public static let cachedRows = 512
    /// Head weight and gradient bytes that stay cached between chunks: half
    /// the 32 MiB L3 of the machine the figures above come from.
    public static let cachedWeightBytes = 16 << 20
    /// Otherwise chunks hold at most this many bytes of logits (at least
    /// `cachedRows` rows): memory bounded, few chunks.
    public static let largeLogitBytes = 64 << 20

    /// Rows per chunk for a head of `vocab` × `hidden` (this rank's part
    /// when split): `rows` if set.
    public static func rows(vocab: Int, hidden: Int, setting rows: Int? = nil) -> Int {
        if let rows { return max(rows, 1) }
        let floatBytes = MemoryLayout<Float>.size
        if 2 * vocab * hidden * floatBytes <= cachedWeightBytes { return cachedRows }
        return max(cachedRows, largeLogitBytes / (floatBytes * max(vocab, 1)))
    }
}

extension LlamaModel {
    /// Floats the head's scratch holds (one chunk of logits, a loss per row,
    /// and under a vocabulary split three reduced values per row).
    public var headScratchFloats: Int { headScratch.allocatedFloats }

    /// Rows the head computes at once over `rows` rows: all of them under a
    /// vocabulary split, so the cross-entropy's two all-reduces run once per
    /// pass rather than once per chunk (`headChunkRows` is not consulted).
    func headChunkRows(_ rows: Int) -> Int {
        guard tensorGroup == nil else { return max(rows, 1) }
        return min(max(rows, 1), HeadChunking.rows(vocab: dimensions.vocab, hidden: dimensions.hidden, setting: headChunkRows))
    }

    /// The LM head over `rows` normed rows `x` ([rows, hidden]) against
    /// `targets`, chunk by chunk: logits, then their loss (each row's into
    /// `rowLoss`, or the scratch's when nil; 0 when ignored). Given
    /// `backward`, also the loss's gradient (times its `scale`) written over
    /// the chunk's logits, the head weight's gradient accumulated (when
    /// trainable), and its `dx` = ∂/∂x for the chunk's rows (this rank's part
    /// when the vocabulary is split; the caller sums it over the tensor group
    /// and rounds it). The total is summed in row order; at a given chunk size
    /// it is the same bits for any thread count (another chunk size may
    /// change a row's products in the last bits).
    func headChunks(x: UnsafePointer<Float>, targets: UnsafePointer<Int32>, rows: Int,
                    backward: (scale: Float, dx: UnsafeMutablePointer<Float>)?,
                    rowLoss out: UnsafeMutablePointer<Float>? = nil) throws -> (sum: Double, count: Int) {
        let H = dimensions.hidden, V = dimensions.vocab, settings = self.settings, head = self.head!
        let w = UnsafePointer(parameters.storage.baseAddress!)
        let g = backward == nil ? nil : gradientPointer
        let scale = backward?.scale
        let chunk = headChunkRows(rows)
        headScratch.reserve(logits: chunk * V, rows: out == nil ? rows : 0,
                            statistics: tensorGroup == nil ? 0 : VocabParallelStatistics.floats(rows: chunk))
        let logits = headScratch.logits.pointer, rowLoss = out ?? headScratch.rowLoss.pointer
        var r0 = 0
        while r0 < rows {
            let m = min(chunk, rows - r0)
            head.projection.forward(x: x + r0 * H, rows: m, weights: w, y: logits)
            settings.round(logits, m * V)
            if let group = tensorGroup {
                _ = try vocabParallelCrossEntropy(logits: logits, targets: targets + r0, rows: m, vocab: V, firstToken: head.firstToken,
                                                  gradientScale: scale, group: group, rowLoss: rowLoss + r0,
                                                  statistics: headScratch.statistics.pointer)
            } else {
                let ptrs = Unchecked((logits, targets + r0, rowLoss + r0))
                settings.forEachRowChunk(m) { part in
                    let (logits, targets, rowLoss) = ptrs.value
                    let p0 = part.lowerBound
                    _ = crossEntropy(logits: logits + p0 * V, targets: targets + p0, rows: part.count, vocab: V,
                                     gradientScale: scale, rowLoss: rowLoss + p0)
                }
            }
            if let dx = backward?.dx {
                settings.round(logits, m * V)
                head.projection.backward(x: x + r0 * H, dy: logits, rows: m, weights: w, gradients: g, dx: dx + r0 * H)
            }
            r0 += m
        }
        var total = 0.0, counted = 0
        for r in 0..<rows where targets[r] != ignoreIndex { total += Double(rowLoss[r]); counted += 1 }
        return (total, counted)
    }
}
