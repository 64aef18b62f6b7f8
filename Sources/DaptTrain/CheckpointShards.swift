import DaptCluster
import DaptCore
import DaptModel

/// Who holds which slice of every tensor of a checkpoint, under any layout:
/// the one description that saving (which rank sends what to rank 0, in
/// which order) and loading (which elements each rank reads) both follow.
///
/// A checkpoint's tensors are the whole model's, under Hugging Face names,
/// in `ParameterLayout` order (the order of `model.safetensors`; the
/// optimizer file holds `exp_avg.<name>` and `exp_avg_sq.<name>` of each in
/// the same order). Every rank holds, of each tensor it has, a `Piece`:
/// - **tensor parallelism**: its part (`TensorSplit`: axis and part index),
///   or the whole tensor when replicated (norm gains); a replicated tensor is
///   saved from tensor rank 0.
/// - **pipeline parallelism**: `stages` (`PipelineStage.partition`) say
///   which stage holds each tensor: its layers, the embedding on the first,
///   the final norm and head on the last; a tied embedding is on the first
///   and the last stage and saved from the first. A rank's flat buffer is
///   its stage's `ParameterLayout` (only that stage's tensors).
/// - **data parallelism**: without ZeRO every data rank holds the same
///   values and data rank 0's are saved; under ZeRO-1 data rank d holds the
///   elements of its `dataShare` of the flat buffer (`ZeroSharding`), so a
///   tensor crossing a slice boundary comes from two data ranks.
/// World ranks follow `ParallelLayout` (tensor fastest, then pipeline, then data).
public struct CheckpointShardMap: Sendable {
    /// One rank's slice of one tensor.
    public struct Piece: Equatable, Sendable {
        /// World rank holding it.
        public var rank: Int
        public var coordinates: ParallelLayout.Coordinates
        /// The tensor-parallel part it belongs to (nil: the whole tensor).
        public var part: TensorSplit?
        /// Elements of the part (row-major within the part) that the rank holds.
        public var elements: Range<Int>
        /// Index of `elements.lowerBound` in the rank's flat buffer.
        public var offset: Int
        /// True for the one copy of each element that is saved.
        public var saved: Bool
    }

    public struct Tensor: Sendable {
        /// Hugging Face name.
        public var name: String
        /// The whole tensor's shape (the saved one).
        public var shape: [Int]
        public var pieces: [Piece]
        public var count: Int { shape.reduce(1, *) }
    }

    public let layout: ParallelLayout
    /// In file order.
    public let tensors: [Tensor]
    /// Elements of the largest tensor: rank 0's buffer for assembling one.
    public var largestCount: Int { tensors.map(\.count).max() ?? 0 }

    /// `zero`: the flat buffers are sharded over the data group (ZeRO-1;
    /// moments, and master weights in mixed precision). Without it, weights
    /// and moments are each rank's whole part.
    public init(model config: LlamaConfig, layout: ParallelLayout, zero: Bool, stages: [PipelineStage]? = nil) {
        self.layout = layout
        let (T, P, D) = (layout.tensor, layout.pipeline, layout.data)
        let stages = stages ?? [.whole(layers: config.numHiddenLayers)]
        precondition(stages.count == P, "\(stages.count) stages for a pipeline of \(P)")
        // Every (tensor rank, stage) buffer, and which stages hold each tensor (the saving one first).
        let locals = (0..<P).map { s in (0..<T).map { ParameterLayout(config: config, tensorRank: $0, tensorParallel: T, stage: stages[s]) } }
        var holders: [String: [Int]] = [:]
        for s in 0..<P { for slice in locals[s][0].slices { holders[slice.name, default: []].append(s) } }
        tensors = ParameterLayout(config: config).slices.map { whole in
            var pieces: [Piece] = []
            for (stageIndex, s) in (holders[whole.name] ?? []).enumerated() {
                for t in 0..<T {
                    let buffer = locals[s][t]
                    guard let slice = buffer.slice(named: whole.name) else {
                        preconditionFailure("\(whole.name) is not in the buffer of tensor rank \(t), stage \(s)")
                    }
                    for d in 0..<D {
                        let held = zero ? slice.range.clamped(to: dataShare(globalBatch: buffer.totalCount, rank: d, of: D)) : slice.range
                        guard !held.isEmpty else { continue }
                        let saved = stageIndex == 0 && (slice.split != nil || t == 0) && (zero || d == 0)
                        pieces.append(Piece(rank: t + T * (s + P * d), coordinates: .init(tensor: t, pipeline: s, data: d), part: slice.split,
                                            elements: (held.lowerBound - slice.offset)..<(held.upperBound - slice.offset),
                                            offset: held.lowerBound, saved: saved))
                    }
                }
            }
            return Tensor(name: whole.name, shape: whole.shape, pieces: pieces)
        }
    }

    /// The pieces world rank `rank` holds, with their tensors' indices.
    public func pieces(onRank rank: Int) -> [(tensor: Int, piece: Piece)] {
        tensors.indices.flatMap { i in tensors[i].pieces.filter { $0.rank == rank }.map { (i, $0) } }
    }
}

/// One of a rank's flat buffers as a checkpoint reads and writes it: its
/// values and the flat index of its first element (a ZeRO-1 slice starts
/// at its owned range; a whole part at 0).
struct CheckpointSource {
    var values: UnsafeMutableBufferPointer<Float>
    var base: Int

    func piece(_ p: CheckpointShardMap.Piece) -> UnsafeMutableBufferPointer<Float> {
        let start = p.offset - base
        return UnsafeMutableBufferPointer(rebasing: values[start..<(start + p.elements.count)])
    }
}

/// Streams a checkpoint's tensors to world rank 0 in file order: for each
/// tensor the ranks holding its saved pieces send them (point-to-point, in
/// the same order on every rank), rank 0 places them into one buffer the
/// size of the largest tensor (and as much again for a column-split piece
/// on its way) and hands the whole tensor on. Rank 0 thus holds its own
/// state plus two tensors, never a second copy of the model.
struct CheckpointStreamer {
    static let tag = 0x636B
    let map: CheckpointShardMap
    let world: any Communicator

    /// On rank 0: calls `write` with every whole tensor of `source`, in file
    /// order. Elsewhere: sends this rank's saved pieces of `source`. A
    /// failing `write` stops writing but not receiving, so no sender is
    /// left blocked; its first error is rethrown at the end.
    func stream(_ source: CheckpointSource, assembly: UnsafeMutableBufferPointer<Float>?,
                write: (_ tensor: CheckpointShardMap.Tensor, _ values: UnsafeBufferPointer<Float>) throws -> Void) throws {
        let me = world.rank
        var failure: (any Error)?
        for tensor in map.tensors {
            let saved = tensor.pieces.filter(\.saved)
            guard me == 0 else {
                for p in saved where p.rank == me { try world.send(UnsafeBufferPointer(source.piece(p)), to: 0, tag: Self.tag) }
                continue
            }
            // One piece on rank 0 covering the whole tensor: written from where it is.
            if saved.count == 1, saved[0].rank == 0, saved[0].part == nil, saved[0].elements.count == tensor.count {
                if failure == nil { do { try write(tensor, UnsafeBufferPointer(source.piece(saved[0]))) } catch { failure = error } }
                continue
            }
            guard let assembly else { preconditionFailure("rank 0 streams without an assembly buffer") }
            let whole = UnsafeMutableBufferPointer(rebasing: assembly[0..<tensor.count])
            // Where a received piece that is not one run of the tensor waits to be placed.
            let staging = UnsafeMutableBufferPointer(rebasing: assembly[map.largestCount...])
            for p in saved {
                func place(_ values: UnsafeBufferPointer<Float>) {
                    if let part = p.part {
                        part.insert(values, elements: p.elements, into: whole)
                    } else {
                        _ = UnsafeMutableBufferPointer(rebasing: whole[p.elements]).update(fromContentsOf: values)
                    }
                }
                if p.rank == 0 {
                    place(UnsafeBufferPointer(source.piece(p)))
                } else if p.part == nil || p.part?.axis == 0 {
                    // A block of rows: received where it belongs.
                    let start = (p.part.map { $0.part * tensor.count / $0.parts } ?? 0) + p.elements.lowerBound
                    try world.receive(into: UnsafeMutableBufferPointer(rebasing: whole[start..<(start + p.elements.count)]), from: p.rank, tag: Self.tag)
                } else {
                    let values = UnsafeMutableBufferPointer(rebasing: staging[0..<p.elements.count])
                    try world.receive(into: values, from: p.rank, tag: Self.tag)
                    place(UnsafeBufferPointer(values))
                }
            }
            if failure == nil { do { try write(tensor, UnsafeBufferPointer(whole)) } catch { failure = error } }
        }
        if let failure { throw failure }
    }
}

extension Trainer {
    /// Who holds what of this run's checkpoint tensors.
    var checkpointShards: CheckpointShardMap {
        // The stages PretrainRun split the model into: the same partition from the same settings.
        var stages: [PipelineStage]?
        if model.layout.stage.isPartial {
            do {
                stages = try PipelineStage.partition(model.config, stages: groups.layout.pipeline, stageLayers: config.parallel.stageLayers,
                                                     recomputedLayers: config.parallel.recomputedLayers(of: model.config.numHiddenLayers),
                                                     granularity: config.parallel.recomputeGranularity)
            } catch {
                preconditionFailure("the pipeline partition was checked before the model was built: \(error)")
            }
            precondition(stages?[groups.coordinates.pipeline] == model.layout.stage, "this rank's stage is not the partition's")
        }
        return CheckpointShardMap(model: model.config, layout: groups.layout, zero: zero != nil, stages: stages)
    }

    /// This rank's weights, first and second moments as checkpoints see them.
    func withCheckpointSources<R>(_ body: (_ weights: CheckpointSource, _ firstMoment: CheckpointSource, _ secondMoment: CheckpointSource) throws -> R) rethrows -> R {
        let base = zero?.owned.lowerBound ?? 0
        let m = CheckpointSource(values: optimizer.firstMoment, base: base)
        let v = CheckpointSource(values: optimizer.secondMoment, base: base)
        // Under ZeRO-1 in mixed precision the fp32 master weights are this rank's slice.
        if let slice = zero?.master { return try body(CheckpointSource(values: slice, base: base), m, v) }
        return try master.withBuffer { try body(CheckpointSource(values: $0, base: 0), m, v) }
    }

    /// Streams `model.safetensors` and `optimizer.safetensors` to rank 0,
    /// which writes them into `directory` (nil on every other rank, which
    /// sends). Every rank of the job calls this.
    func streamCheckpointTensors(into directory: String?) throws {
        let map = checkpointShards
        let streamer = CheckpointStreamer(map: map, world: groups.world)
        let root = groups.world.rank == 0
        precondition(root == (directory != nil), "rank 0 alone writes the checkpoint")
        // Rank 0 assembles one tensor at a time; alone it writes every tensor from where it is.
        let assembly: UnsafeMutableBufferPointer<Float>? = root && groups.world.size > 1 ? .allocate(capacity: 2 * map.largestCount) : nil
        defer { assembly?.deallocate() }
        try withCheckpointSources { weights, m, v in
            var failure: (any Error)?
            func attempt(_ body: () throws -> Void) { if failure == nil { do { try body() } catch { failure = error } } }
            var modelWriter: SafeTensorsWriter?, optimizerWriter: SafeTensorsWriter?
            if let directory {
                attempt { modelWriter = try SafeTensorsWriter(path: directory + "/" + Self.modelFile, tensors: map.tensors.map { ($0.name, $0.shape) }) }
                attempt {
                    optimizerWriter = try SafeTensorsWriter(path: directory + "/" + Self.optimizerFile,
                                                            tensors: map.tensors.flatMap { [("exp_avg." + $0.name, $0.shape), ("exp_avg_sq." + $0.name, $0.shape)] })
                }
            }
            // A failed open still receives every piece (the senders must not block), writing nothing.
            try streamer.stream(weights, assembly: assembly) { _, values in attempt { try modelWriter?.append(values) } }
            attempt { try modelWriter?.commit() }
            modelWriter = nil
            // The optimizer file interleaves the moments tensor by tensor.
            for tensor in map.tensors {
                let one = CheckpointStreamer(map: CheckpointShardMap(layout: map.layout, tensors: [tensor]), world: groups.world)
                try one.stream(m, assembly: assembly) { _, values in attempt { try optimizerWriter?.append(values) } }
                try one.stream(v, assembly: assembly) { _, values in attempt { try optimizerWriter?.append(values) } }
            }
            attempt { try optimizerWriter?.commit() }
            if let failure { throw failure }
        }
    }
}

extension CheckpointShardMap {
    /// A map of some of `tensors` (streaming them alone, in their order).
    init(layout: ParallelLayout, tensors: [Tensor]) {
        self.layout = layout
        self.tensors = tensors
    }
}
