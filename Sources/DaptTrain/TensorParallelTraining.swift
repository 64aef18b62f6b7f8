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
    /// gains, so every parameter counts once; split among pipeline stages,
    /// each stage adds its own tensors (a tied embedding's copy on the last
    /// stage is left out). The sum is reduced over the tensor and pipeline
    /// groups (the data group already holds equal gradients).
    func globalGradientNorm(clipping g: UnsafeMutableBufferPointer<Float>) throws -> Float {
        let maxNorm = config.optimizer.maxGradNorm
        guard model.layout.isSplit || model.layout.stage.isPartial else {
            return maxNorm > 0 ? clipGlobalNorm(g, maxNorm: maxNorm) : Float(sumOfSquares(UnsafeBufferPointer(g)).squareRoot())
        }
        var squares = 0.0
        for s in model.layout.slices where (s.split != nil || groups.tensor.rank == 0) && !model.layout.isTiedCopy(s) {
            squares += sumOfSquares(UnsafeBufferPointer(rebasing: g[s.range]))
        }
        if groups.tensor.size > 1 { squares = try groups.tensor.allReduce(squares, op: .sum) }
        let norm = Float(try sumOverPipeline(squares).squareRoot())
        guard norm.isFinite, maxNorm > 0 else { return norm }
        let coefficient = maxNorm / (norm + 1e-6)
        if coefficient < 1 { scaleInPlace(g, by: coefficient) }
        return norm
    }

    /// A split model's weights and moments as whole tensors on world rank 0
    /// (the ranks of its tensor group send their parts tensor by tensor, then
    /// each pipeline stage its whole tensors); nil on every other rank and
    /// when the model is whole.
    func gatherWholeTensors() throws -> WholeTrainingTensors? {
        guard model.layout.isSplit || model.layout.stage.isPartial, groups.coordinates.data == 0 else { return nil }
        let stageWhole = ParameterLayout(config: model.config, stage: model.layout.stage)
        let whole = ParameterLayout(config: model.config)
        func gather(_ values: UnsafeBufferPointer<Float>) throws -> [Float]? {
            let stageValues = model.layout.isSplit ? try model.layout.gatherWhole(values, into: stageWhole, group: groups.tensor) : Array(values)
            return try gatherStages(stageValues, stageLayout: stageWhole, into: whole)
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

extension Trainer {
    /// Each pipeline stage's whole tensors (`stageValues` on tensor rank 0,
    /// laid out by `stageLayout`) assembled in the whole model's layout on
    /// stage 0; nil elsewhere. Unstaged, the values as they are.
    func gatherStages(_ stageValues: [Float]?, stageLayout: ParameterLayout, into whole: ParameterLayout) throws -> [Float]? {
        guard model.layout.stage.isPartial else { return stageValues }
        guard groups.coordinates.tensor == 0, let stageValues else { return nil }
        let stage = model.layout.stage
        guard stage.isFirst else {
            try groups.pipeline.send(stageValues, to: 0, tag: 1 << 13)
            try groups.pipeline.send([Int64(stage.layers.lowerBound), Int64(stage.layers.upperBound)], to: 0, tag: (1 << 13) + 1)
            return nil
        }
        var out = [Float](repeating: 0, count: whole.totalCount)
        out.withUnsafeMutableBufferPointer { o in
            for s in stageLayout.slices {
                let w = whole.slice(named: s.name)!
                stageValues.withUnsafeBufferPointer { _ = UnsafeMutableBufferPointer(rebasing: o[w.range]).update(fromContentsOf: $0[s.range]) }
            }
        }
        for other in 1..<stage.count {
            let values = try groups.pipeline.receive(Float.self, from: other, tag: 1 << 13)
            // The other stage's layout, as it laid its values out.
            let layers = try groups.pipeline.receive(Int64.self, from: other, tag: (1 << 13) + 1)
            let layout = ParameterLayout(config: model.config, stage: PipelineStage(index: other, count: stage.count, layers: Int(layers[0])..<Int(layers[1])))
            guard values.count == layout.totalCount else { throw CommunicatorError.sizeMismatch(expected: layout.totalCount, got: values.count) }
            out.withUnsafeMutableBufferPointer { o in
                // A tied embedding's copy on the last stage is the first stage's matrix: written once.
                for s in layout.slices where !layout.isTiedCopy(s) {
                    let w = whole.slice(named: s.name)!
                    values.withUnsafeBufferPointer { _ = UnsafeMutableBufferPointer(rebasing: o[w.range]).update(fromContentsOf: $0[s.range]) }
                }
            }
        }
        return out
    }
}
