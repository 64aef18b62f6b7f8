import DaptCluster
import DaptModel

/// Runs one rank's pipeline stage over a step's micro-batches: the 1F1B
/// schedule (`oneForwardOneBackward`) for training, one pass per
/// micro-batch for evaluation. Activations and their gradients go to the
/// neighbouring stages by point-to-point messages over the pipeline group
/// (whose rank is the stage). Every stage reads the same micro-batches from
/// the data (the first needs the tokens, the last the targets, every stage
/// the positions and documents); only the hidden states travel.
public final class PipelineStageRunner {
    public let model: LlamaModel
    public let group: any Communicator
    /// The most micro-batch contexts alive at once in the last step (bounded by the number of stages).
    public private(set) var peakLiveActivations = 0
    /// Contexts of finished micro-batches, reused for the next of the same shape.
    private var spare: [Activations] = []
    /// This tensor rank's share of a finished micro-batch's input gradient
    /// until it is sent back (its context is free by then); each backward's
    /// send comes before the next backward.
    private(set) var outgoing: [Float] = []
    /// The tensor shares of a hidden state by its size in floats (one size
    /// per batch shape, so a run makes one or a few).
    private var shares: [Int: HiddenShares] = [:]

    public init(model: LlamaModel, group: any Communicator) {
        precondition(group.size == model.layout.stage.count && group.rank == model.layout.stage.index,
                     "pipeline group of \(group.size) ranks (rank \(group.rank)) for stage \(model.layout.stage.index) of \(model.layout.stage.count)")
        self.model = model
        self.group = group
    }

    var stage: PipelineStage { model.layout.stage }

    // Message tags: the micro-batch and the direction, so a mismatch fails loudly.
    private func tag(_ m: Int, gradient: Bool) -> Int { (m % 8192) * 2 + (gradient ? 1 : 0) }

    private func context(_ batch: TokenBatch) throws -> Activations {
        if let i = spare.firstIndex(where: { $0.batchSize == batch.batchSize && $0.seqLen == batch.seqLen }) {
            let a = spare.remove(at: i)
            try model.prepare(batch, in: a)
            return a
        }
        return try model.makeActivations(batch)
    }

    /// How a hidden state (or its gradient) is cut among the tensor ranks.
    /// The residual stream is the same on every tensor rank of a stage, so
    /// each sends its 1/T share (`part`) to the same tensor rank of the
    /// neighbouring stage, whose tensor group all-gathers the rest (blocks
    /// of `counts`): T times fewer bytes between stages, the same values.
    struct HiddenShares {
        /// Every tensor rank's block, in rank order.
        let counts: [Int]
        /// This tensor rank's block (its share to send), cut from `counts`
        /// so that the send and the all-gather cannot cut apart.
        let part: Range<Int>

        init(counts: [Int], rank: Int) {
            self.counts = counts
            let start = counts[..<rank].reduce(0, +)
            part = start..<(start + counts[rank])
        }
    }

    /// The shares of a hidden state of `count` floats, made on first use.
    private func hiddenShares(_ count: Int) -> HiddenShares {
        if let known = shares[count] { return known }
        let made: HiddenShares
        if let tensor = model.tensorGroup {
            made = HiddenShares(counts: ZeroSharding.counts(total: count, ranks: tensor.size), rank: tensor.rank)
        } else {
            made = HiddenShares(counts: [count], rank: 0)
        }
        shares[count] = made
        return made
    }

    private func sendHidden(_ buffer: UnsafeBufferPointer<Float>, to peer: Int, tag: Int) throws {
        try group.send(UnsafeBufferPointer(rebasing: buffer[hiddenShares(buffer.count).part]), to: peer, tag: tag)
    }

    private func receiveHidden(into buffer: UnsafeMutableBufferPointer<Float>, from peer: Int, tag: Int) throws {
        let shares = hiddenShares(buffer.count)
        try group.receive(into: UnsafeMutableBufferPointer(rebasing: buffer[shares.part]), from: peer, tag: tag)
        if let tensor = model.tensorGroup {
            try tensor.allGatherInPlace(buffer, counts: shares.counts)
        }
    }

    // Hidden states and their gradients go straight from and into the contexts' buffers.
    private func sendActivation(_ a: Activations, _ m: Int) throws {
        try model.withHidden(boundary: stage.layers.upperBound, a) { try sendHidden(UnsafeBufferPointer($0), to: stage.index + 1, tag: tag(m, gradient: false)) }
    }

    private func receiveActivation(into a: Activations, _ m: Int) throws {
        try model.withHidden(boundary: stage.layers.lowerBound, a) { try receiveHidden(into: $0, from: stage.index - 1, tag: tag(m, gradient: false)) }
    }

    private func receiveGradient(into a: Activations, _ m: Int) throws {
        try model.withHiddenGradient(a) { try receiveHidden(into: $0, from: stage.index + 1, tag: tag(m, gradient: true)) }
    }

    /// Forward and backward of `batches` on this stage by the 1F1B
    /// schedule, gradients accumulated as `LlamaModel.forwardBackward` does
    /// (scaled by `lossScale / normalizer`). Returns the summed loss on the
    /// last stage, zero elsewhere. The stage's gradients become final in the
    /// last micro-batch's passes (1F1B runs the backwards in micro-batch
    /// order): `gradientsFinal(offset)` is called there as in
    /// `LlamaModel.forwardBackward` — after the head's backward on the last
    /// stage, after each layer's, and with 0 at the end — so buckets can be
    /// reduced while the rest of that backward runs.
    public func forwardBackward(_ batches: [TokenBatch], lossScale: Float, normalizer: Double,
                                gradientsFinal: ((_ offset: Int) throws -> Void)? = nil) throws -> LossResult {
        let lastMicroBatch = batches.count - 1
        func finalHook(_ m: Int) -> ((_ offset: Int) throws -> Void)? { m == lastMicroBatch ? gradientsFinal : nil }
        var live: [Int: Activations] = [:]
        // The micro-batch whose input gradient waits in `outgoing`.
        var pending: Int?
        var loss = LossResult(sum: 0, count: 0)
        peakLiveActivations = 0
        func open(_ m: Int) throws -> Activations {
            if let a = live[m] { return a }
            let a = try context(batches[m])
            live[m] = a
            peakLiveActivations = max(peakLiveActivations, live.count)
            return a
        }
        func sendGradient(_ m: Int) throws {
            precondition(pending == m, "sending micro-batch \(m)'s gradient, holding \(pending.map(String.init) ?? "none")")
            // `outgoing` holds this rank's share already.
            try outgoing.withUnsafeBufferPointer { try group.send($0, to: stage.index - 1, tag: tag(m, gradient: true)) }
            pending = nil
        }
        // Paired exchanges: the even stage of a pair sends first, the odd one
        // receives first, so blocking messages between neighbours always meet.
        let sendsFirst = stage.index % 2 == 0
        for action in oneForwardOneBackward(stage: stage.index, stages: stage.count, microBatches: batches.count) {
            switch action {
            case .receiveActivation(let m):
                try receiveActivation(into: try open(m), m)
            case .forward(let m):
                let a = try open(m)
                if stage.isFirst { try model.embedForward(a) }
                try model.forwardLayers(stage.layers, a)
                if stage.isLast {
                    let r = try model.headForwardBackward(a, lossScale: lossScale, normalizer: normalizer)
                    loss.sum += r.sum; loss.count += r.count
                    if let finalNorm = model.layout.finalNorm { try finalHook(m)?(finalNorm.offset) }
                }
            case .sendActivation(let m):
                try sendActivation(live[m]!, m)
            case .receiveGradient(let m):
                try receiveGradient(into: live[m]!, m)
            case .backward(let m):
                let a = live.removeValue(forKey: m)!
                try model.backwardLayers(stage.layers, a, gradientsFinal: finalHook(m))
                if stage.isFirst { try model.embedBackward(a) }
                try finalHook(m)?(0)
                if !stage.isFirst {
                    precondition(pending == nil, "micro-batch \(pending!)'s gradient not sent before the next backward")
                    // Only the share this rank sends is kept.
                    model.withHiddenGradient(a) { g in
                        let part = hiddenShares(g.count).part
                        if outgoing.count != part.count { outgoing = [Float](repeating: 0, count: part.count) }
                        outgoing.withUnsafeMutableBufferPointer { _ = $0.update(fromContentsOf: g[part]) }
                    }
                    pending = m
                }
                spare.append(a)
            case .sendGradient(let m):
                try sendGradient(m)
            case let .sendActivationReceiveGradient(send, receive):
                if sendsFirst {
                    try sendActivation(live[send]!, send)
                    try receiveGradient(into: live[receive]!, receive)
                } else {
                    try receiveGradient(into: live[receive]!, receive)
                    try sendActivation(live[send]!, send)
                }
            case let .sendGradientReceiveActivation(send, receive):
                if sendsFirst {
                    try sendGradient(send)
                    try receiveActivation(into: try open(receive), receive)
                } else {
                    try receiveActivation(into: try open(receive), receive)
                    try sendGradient(send)
                }
            }
        }
        precondition(live.isEmpty && pending == nil, "micro-batches left unfinished on stage \(stage.index)")
        return loss
    }

    /// The summed loss of `batches` (forward only), on the last stage; zero elsewhere.
    public func loss(_ batches: [TokenBatch]) throws -> LossResult {
        var total = LossResult(sum: 0, count: 0)
        for (m, batch) in batches.enumerated() {
            let a = try context(batch)
            defer { spare.append(a) }
            if stage.isFirst { try model.embedForward(a) } else { try receiveActivation(into: a, m) }
            try model.forwardLayers(stage.layers, a)
            if stage.isLast {
                let r = try model.headForward(a)
                total.sum += r.sum; total.count += r.count
            } else {
                try sendActivation(a, m)
            }
        }
        return total
    }
}

extension Trainer {
    /// The gradient reducer's hook for the pipeline schedule's last
    /// micro-batch. A tied embedding split among the end stages gets the
    /// other stage's gradient only after the schedule
    /// (`sumTiedEmbeddingGradients`), so its bucket must wait for `finish()`:
    /// on the first stage (the embedding leads the buffer) offsets inside it
    /// are not passed on; on the last stage (the head ends the buffer) every
    /// bucket holds it or lies before it, so nothing is.
    var pipelineReductionHook: ((_ offset: Int) throws -> Void)? {
        guard let reducer else { return nil }
        let stage = model.layout.stage
        guard model.config.tieWordEmbeddings, stage.isPartial, stage.isFirst || stage.isLast else { return { try reducer.gradientsFinal(from: $0) } }
        guard stage.isFirst, let embedding = model.layout.embedding else { return nil }
        return { offset in if offset >= embedding.range.upperBound { try reducer.gradientsFinal(from: offset) } }
    }

    /// `value` summed over the pipeline group (the last stage's loss to every stage).
    func sumOverPipeline<T: CollectiveElement & AdditiveArithmetic>(_ value: T) throws -> T {
        groups.pipeline.size > 1 ? try groups.pipeline.allReduce(value, op: .sum) : value
    }

    /// Tied embeddings split among pipeline stages: the first stage's
    /// embedding and the last stage's head are one matrix held twice, so
    /// each adds the other's gradient (Megatron-LM's embedding group). Both
    /// compute a + b from the same two values: the copies stay identical.
    func sumTiedEmbeddingGradients() throws {
        let stage = model.layout.stage
        guard stage.isPartial, model.config.tieWordEmbeddings, stage.isFirst || stage.isLast else { return }
        let slice = stage.isFirst ? model.layout.embedding! : model.layout.lmHead!
        let peer = stage.isFirst ? stage.count - 1 : 0
        try model.gradients.withSlice(slice) { g in
            let mine = Array(g)
            let theirs: [Float]
            if stage.isFirst {
                try groups.pipeline.send(mine, to: peer, tag: 1 << 14)
                theirs = try groups.pipeline.receive(Float.self, from: peer, tag: 1 << 14)
            } else {
                theirs = try groups.pipeline.receive(Float.self, from: peer, tag: 1 << 14)
                try groups.pipeline.send(mine, to: peer, tag: 1 << 14)
            }
            guard theirs.count == g.count else { throw CommunicatorError.sizeMismatch(expected: g.count, got: theirs.count) }
            for i in 0..<g.count { g[i] = stage.isFirst ? mine[i] + theirs[i] : theirs[i] + mine[i] }
        }
    }
}
