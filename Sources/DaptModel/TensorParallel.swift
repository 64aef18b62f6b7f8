import DaptCluster
import Foundation

// Tensor parallelism (Megatron-LM): the ranks of a tensor group each hold a
// part of every matrix. Column-parallel products (q/k/v, gate/up, the LM
// head) need their input gradient summed over the group; row-parallel ones
// (o_proj, down_proj) their output. The embedding and the cross-entropy are
// split by vocabulary: full logits are never gathered.

extension PassSettings {
    /// x summed over the tensor group (unsplit: unchanged).
    func sumOverTensorGroup(_ x: UnsafeMutablePointer<Float>, _ count: Int) throws {
        guard let group = tensorGroup else { return }
        try group.allReduce(UnsafeMutableBufferPointer(start: x, count: count), op: .sum)
    }
}

extension Linear {
    /// out += x·Wᵀ summed over the tensor group: a row-parallel product, each
    /// rank holding some input columns. Unsplit, one product onto `out`.
    func addRowParallel(x: UnsafePointer<Float>, rows: Int, weights: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                        scratch: UnsafeMutablePointer<Float>, settings: PassSettings) throws {
        guard settings.tensorGroup != nil else { return forward(x: x, rows: rows, weights: weights, y: out, accumulate: true) }
        forward(x: x, rows: rows, weights: weights, y: scratch)
        try settings.sumOverTensorGroup(scratch, rows * outFeatures)
        addInPlace(out, scratch, count: rows * outFeatures)
    }
}

/// Floats of `vocabParallelCrossEntropy`'s per-row statistics.
public enum VocabParallelStatistics {
    /// Over `rows` rows: each row's maximum, sum of exponentials and target logit.
    public static func floats(rows: Int) -> Int { 3 * rows }
}

/// Softmax cross-entropy over a vocabulary split among the tensor group:
/// each rank holds the logits of tokens `firstToken ..< firstToken + vocab`.
/// The row maxima, the sums of exponentials and the target logits are
/// reduced over the group (two all-reduces); each rank's gradient (when
/// `gradientScale` is given, written over its logits as in `crossEntropy`)
/// covers its columns. Returns the summed loss and counted rows, the same on
/// every rank; `rowLoss`, when given, receives each row's loss (0 for
/// ignored rows). `statistics` (`VocabParallelStatistics.floats(rows:)`
/// floats) holds the reduced values; nil: allocated for the call.
public func vocabParallelCrossEntropy(logits: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>, rows: Int, vocab: Int,
                                      firstToken: Int, gradientScale: Float?, group: any Communicator,
                                      rowLoss: UnsafeMutablePointer<Float>? = nil,
                                      statistics: UnsafeMutablePointer<Float>? = nil) throws -> (sum: Double, count: Int) {
    guard let statistics else {
        return try withUnsafeTemporaryAllocation(of: Float.self, capacity: max(VocabParallelStatistics.floats(rows: rows), 1)) {
            try vocabParallelCrossEntropy(logits: logits, targets: targets, rows: rows, vocab: vocab, firstToken: firstToken,
                                          gradientScale: gradientScale, group: group, rowLoss: rowLoss, statistics: $0.baseAddress!)
        }
    }
    func local(_ r: Int) -> Int? {
        let t = Int(targets[r]) - firstToken
        return t >= 0 && t < vocab ? t : nil
    }
    // [maximum | Σ e^(x−m) | target logit] per row; the last two summed over the group together.
    let maxima = statistics, sums = statistics + rows, targetLogits = statistics + 2 * rows
    statistics.update(repeating: 0, count: VocabParallelStatistics.floats(rows: rows))
    for r in 0..<rows where targets[r] != ignoreIndex { maxima[r] = maximum(logits + r * vocab, 0..<vocab) }
    try group.allReduce(UnsafeMutableBufferPointer(start: maxima, count: rows), op: .max)
    for r in 0..<rows where targets[r] != ignoreIndex {
        let row = logits + r * vocab, m = maxima[r]
        if let t = local(r) { targetLogits[r] = row[t] }
        // With a gradient, keep e^(x−m) in the row so each logit takes one exp.
        sums[r] = gradientScale == nil ? exponentialSum(row, vocab, minus: m) : exponentiate(row, 0..<vocab, minus: m)
    }
    try group.allReduce(UnsafeMutableBufferPointer(start: sums, count: 2 * rows), op: .sum)
    var total = 0.0, counted = 0
    for r in 0..<rows {
        let row = logits + r * vocab
        guard targets[r] != ignoreIndex else {
            rowLoss?[r] = 0
            if gradientScale != nil { row.update(repeating: 0, count: vocab) }
            continue
        }
        let loss = Foundation.log(sums[r]) + maxima[r] - targetLogits[r]
        rowLoss?[r] = loss
        total += Double(loss)
        counted += 1
        if let g = gradientScale {
            scale(row, by: g / sums[r], count: vocab, into: row)
            if let t = local(r) { row[t] -= g }
        }
    }
    return (total, counted)
}

extension LlamaConfig {
    /// Why the model cannot be split among `t` tensor ranks (empty when it can):
    /// heads, kv heads, intermediate size and vocabulary must each divide by `t`.
    public func tensorParallelProblems(_ t: Int) -> [String] {
        guard t > 1 else { return [] }
        return [("num_attention_heads", numAttentionHeads), ("num_key_value_heads", numKeyValueHeads),
                ("intermediate_size", intermediateSize), ("vocab_size", vocabSize)]
            .filter { $0.1 % t != 0 }
            .map { "\(t) tensor ranks do not divide model.\($0.0) (\($0.1)): each rank must hold an equal part" }
    }
}

extension ParameterBuffer {
    /// Fills a part (of a tensor rank, a pipeline stage, or both) from the
    /// whole model's buffer, tensor by tensor by name.
    public func copyParts(of whole: ParameterBuffer) {
        whole.withBuffer { w in
            for s in layout.slices {
                guard let ws = whole.layout.slice(named: s.name) else { preconditionFailure("\(s.name) is not in the whole model") }
                let source = UnsafeBufferPointer(rebasing: w[ws.range])
                withSlice(s) { part in
                    if let split = s.split { split.extract(from: source, into: part) } else { _ = part.update(fromContentsOf: source) }
                }
            }
        }
    }
}

extension ParameterLayout {
    /// The whole tensors of `values` (laid out by this part's layout, a part
    /// on every rank of `group`) in the layout of the whole model `whole`,
    /// on rank 0 of `group`; nil on the other ranks. Tensor by tensor, so
    /// no rank sends more than one tensor at a time.
    public func gatherWhole(_ values: UnsafeBufferPointer<Float>, into whole: ParameterLayout, group: any Communicator) throws -> [Float]? {
        precondition(whole.slices.map(\.name) == slices.map(\.name), "parts of another model")
        var out = group.rank == 0 ? [Float](repeating: 0, count: whole.totalCount) : nil
        for (s, ws) in zip(slices, whole.slices) {
            let mine = UnsafeBufferPointer(rebasing: values[s.range])
            guard let split = s.split else {
                out?.withUnsafeMutableBufferPointer { _ = UnsafeMutableBufferPointer(rebasing: $0[ws.range]).update(fromContentsOf: mine) }
                continue
            }
            let parts = try group.gatherV(Array(mine), root: 0)
            guard let parts else { continue }
            out!.withUnsafeMutableBufferPointer { o in
                let target = UnsafeMutableBufferPointer(rebasing: o[ws.range])
                for (r, p) in parts.enumerated() {
                    var rankSplit = split
                    rankSplit.part = r
                    p.withUnsafeBufferPointer { rankSplit.insert($0, into: target) }
                }
            }
        }
        return out
    }
}
