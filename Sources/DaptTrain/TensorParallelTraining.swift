import DaptCluster
import DaptModel

extension Trainer {
    /// `value` summed over every rank of the job: the ranks of one tensor
    /// group hold different gradients, so an overflow anywhere is summed over all.
    func sumOverWorld<T: CollectiveElement & AdditiveArithmetic>(_ value: T) throws -> T {
        groups.world.size > 1 ? try groups.world.allReduce(value, op: .sum) : value
    }

    /// The global gradient norm of `g` and the coefficient clipping to
    /// `optimizer.max_grad_norm` scales it by (1: none; the optimizer applies
    /// it as it reads the gradients). Split among tensor ranks, each rank adds
    /// the squares of its parts and tensor rank 0 alone those of the whole
    /// (replicated) norm gains, so every parameter counts once; split among
    /// pipeline stages, each stage adds its own tensors (a tied embedding's
    /// copy on the last stage is left out). The sum is reduced over the tensor
    /// and pipeline groups (the data group already holds equal gradients).
    /// Under ZeRO-1 `g` is this rank's slice `zero.owned` of the buffer: the
    /// squares of the slices are summed over the data group first.
    func globalGradientNorm(_ g: UnsafeBufferPointer<Float>) throws -> (norm: Float, clipping: Float) {
        let owned = zero?.owned ?? 0..<model.layout.totalCount
        var squares = 0.0
        if model.layout.isSplit || model.layout.stage.isPartial {
            for s in model.layout.slices where (s.split != nil || groups.tensor.rank == 0) && !model.layout.isTiedCopy(s) {
                let r = s.range.clamped(to: owned)
                guard !r.isEmpty else { continue }
                squares += sumOfSquares(UnsafeBufferPointer(rebasing: g[(r.lowerBound - owned.lowerBound)..<(r.upperBound - owned.lowerBound)]))
            }
            if zero != nil { squares = try sumOverData(squares) }
            if groups.tensor.size > 1 { squares = try groups.tensor.allReduce(squares, op: .sum) }
        } else {
            // The whole model on this rank: its own squares, or under ZeRO-1 its slice's summed over the data group.
            squares = sumOfSquares(g)
            if zero != nil { squares = try sumOverData(squares) }
        }
        let norm = Float(try sumOverPipeline(squares).squareRoot())
        return (norm, clippingCoefficient(norm: norm, maxNorm: config.optimizer.maxGradNorm))
    }
}
