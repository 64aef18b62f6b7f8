import DaptCluster
import DaptModel

/// The whole tensors of a split model's training state, gathered on tensor
/// rank 0 of the first data and pipeline group (world rank 0) for a checkpoint.
struct WholeTrainingTensors {
    let weights: ParameterBuffer
    let firstMoment: ParameterBuffer
    let secondMoment: ParameterBuffer
}

extension Trainer {
    /// `value` summed over every rank of the job: the ranks of one tensor
    /// group hold different gradients, so an overflow anywhere is summed over all.
    func sumOverWorld<T: CollectiveElement & AdditiveArithmetic>(_ value: T) throws -> T {
        groups.world.size > 1 ? try groups.world.allReduce(value, op: .sum) : value
    }

    /// The global gradient norm, clipping `g` to `optimizer.max_grad_norm`
    /// when set. Split among tensor ranks, each rank adds the squares of its
    /// parts and tensor rank 0 alone those of the whole (replicated) norm
    /// gains, so every parameter counts once; the sum is reduced over the
    /// tensor group (the data group already holds equal gradients).
    func globalGradientNorm(clipping g: UnsafeMutableBufferPointer<Float>) throws -> Float {
        let maxNorm = config.optimizer.maxGradNorm
        guard model.layout.isSplit else {
            return maxNorm > 0 ? clipGlobalNorm(g, maxNorm: maxNorm) : Float(sumOfSquares(UnsafeBufferPointer(g)).squareRoot())
        }
        var squares = 0.0
        for s in model.layout.slices where s.split != nil || groups.tensor.rank == 0 {
            squares += sumOfSquares(UnsafeBufferPointer(rebasing: g[s.range]))
        }
        let norm = Float(try groups.tensor.allReduce(squares, op: .sum).squareRoot())
        guard norm.isFinite, maxNorm > 0 else { return norm }
        let coefficient = maxNorm / (norm + 1e-6)
        if coefficient < 1 { scaleInPlace(g, by: coefficient) }
        return norm
    }

    /// A split model's weights and moments as whole tensors on world rank 0
    /// (the ranks of its tensor group send their parts tensor by tensor); nil
    /// on every other rank and when the model is whole.
    func gatherWholeTensors() throws -> WholeTrainingTensors? {
        guard model.layout.isSplit, groups.coordinates.data == 0, groups.coordinates.pipeline == 0 else { return nil }
        let whole = ParameterLayout(config: model.config)
        func gather(_ values: UnsafeBufferPointer<Float>) throws -> [Float]? {
            try model.layout.gatherWhole(values, into: whole, group: groups.tensor)
        }
        let weights = try master.withBuffer { try gather(UnsafeBufferPointer($0)) }
        let m = try gather(UnsafeBufferPointer(optimizer.firstMoment))
        let v = try gather(UnsafeBufferPointer(optimizer.secondMoment))
        guard let weights, let m, let v else { return nil }
        func buffer(_ values: [Float]) -> ParameterBuffer {
            let b = ParameterBuffer(layout: whole)
            b.withBuffer { _ = $0.update(fromContentsOf: values) }
            return b
        }
        return WholeTrainingTensors(weights: buffer(weights), firstMoment: buffer(m), secondMoment: buffer(v))
    }
}
