import DaptModel
import DaptTestSupport
@testable import DaptTrain
import XCTest

/// The description of who holds which slice of every checkpoint tensor:
/// the saved pieces are each element once, every rank's pieces are exactly
/// its buffer (or its ZeRO-1 share), and the pieces put together are the
/// whole tensors — read back from a file, each rank's slices of them.
final class CheckpointShardsTests: XCTestCase {
    static func config(tied: Bool) -> LlamaConfig {
        LlamaConfig(vocabSize: 24, hiddenSize: 8, intermediateSize: 12, numHiddenLayers: 2, numAttentionHeads: 4,
                    numKeyValueHeads: 2, maxPositionEmbeddings: 16, tieWordEmbeddings: tied)
    }

    /// (tensor, data, zero) layouts, including ZeRO shares that cut tensors
    /// part-way through rows of a column split.
    static let layouts: [(t: Int, d: Int, zero: Bool)] = [(1, 1, false), (2, 1, false), (2, 2, false), (1, 2, true), (1, 3, true), (2, 3, true), (4, 1, false)]

    func layout(_ t: Int, _ d: Int) throws -> ParallelLayout {
        var parallel = PretrainConfig.Parallel()
        parallel.tensor = t
        return try ParallelLayout(world: t * d, parallel: parallel)
    }

    func testSavedPiecesCoverEveryElementOnceAndEachRankHoldsItsBuffer() throws {
        for tied in [false, true] {
            let config = Self.config(tied: tied)
            for (t, d, zero) in Self.layouts {
                let label = "T=\(t) D=\(d) zero=\(zero) tied=\(tied)"
                let map = CheckpointShardMap(model: config, layout: try layout(t, d), zero: zero)
                XCTAssertEqual(map.tensors.map(\.name), ParameterLayout(config: config).slices.map(\.name), label)
                for tensor in map.tensors {
                    var covered = [Int](repeating: 0, count: tensor.count)
                    for p in tensor.pieces where p.saved {
                        let part = p.part
                        var whole = [Float](repeating: 0, count: tensor.count)
                        let ones = [Float](repeating: 1, count: p.elements.count)
                        whole.withUnsafeMutableBufferPointer { w in
                            ones.withUnsafeBufferPointer { o in
                                if let part { part.insert(o, elements: p.elements, into: w) } else { _ = UnsafeMutableBufferPointer(rebasing: w[p.elements]).update(fromContentsOf: o) }
                            }
                        }
                        for i in whole.indices where whole[i] == 1 { covered[i] += 1 }
                    }
                    XCTAssertEqual(Set(covered), [1], "\(label) \(tensor.name): every element saved once")
                }
                for rank in 0..<(t * d) {
                    let c = map.layout.coordinates(rank: rank)
                    let local = ParameterLayout(config: config, tensorRank: c.tensor, tensorParallel: t)
                    let expected = zero ? dataShare(globalBatch: local.totalCount, rank: c.data, of: d) : 0..<local.totalCount
                    let held = map.pieces(onRank: rank).map { $0.piece.offset..<($0.piece.offset + $0.piece.elements.count) }.sorted { $0.lowerBound < $1.lowerBound }
                    XCTAssertEqual(held.first?.lowerBound, expected.lowerBound, "\(label) rank \(rank)")
                    XCTAssertEqual(held.last?.upperBound, expected.upperBound, "\(label) rank \(rank)")
                    XCTAssertTrue(zip(held, held.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound }, "\(label) rank \(rank): contiguous, no overlap")
                }
            }
        }
    }

    /// Every rank's buffer cut from a whole model of distinct values: its
    /// saved pieces, placed as the streamer places them, give the whole
    /// tensors back; and each rank's pieces read from the saved file are
    /// its buffer's values (the loading path).
    func testPiecesReassembleTheWholeAndReadBackFromTheFile() throws {
        let dir = try temporaryDirectory(self)
        for tied in [false, true] {
            let config = Self.config(tied: tied)
            let whole = ParameterBuffer(layout: ParameterLayout(config: config))
            whole.withBuffer { for i in $0.indices { $0[i] = Float(i) * 0.5 + 1 } }
            let path = dir + "/model-\(tied).safetensors"
            try whole.saveSafeTensors(path: path)
            let file = try SafeTensorsFile(path: path)
            for (t, d, zero) in Self.layouts {
                let label = "T=\(t) D=\(d) zero=\(zero) tied=\(tied)"
                let map = CheckpointShardMap(model: config, layout: try layout(t, d), zero: zero)
                let parts = (0..<t).map { r -> ParameterBuffer in
                    let b = ParameterBuffer(layout: ParameterLayout(config: config, tensorRank: r, tensorParallel: t))
                    b.copyParts(of: whole)
                    return b
                }
                var rebuilt = [Float](repeating: -1, count: whole.count)
                for (tensor, ws) in zip(map.tensors, whole.layout.slices) {
                    for p in tensor.pieces where p.saved {
                        let values = parts[p.coordinates.tensor].withBuffer { Array($0[p.offset..<(p.offset + p.elements.count)]) }
                        rebuilt.withUnsafeMutableBufferPointer { r in
                            let target = UnsafeMutableBufferPointer(rebasing: r[ws.range])
                            values.withUnsafeBufferPointer { v in
                                if let part = p.part { part.insert(v, elements: p.elements, into: target) } else { _ = UnsafeMutableBufferPointer(rebasing: target[p.elements]).update(fromContentsOf: v) }
                            }
                        }
                    }
                    for p in tensor.pieces {
                        var read = [Float](repeating: -1, count: p.elements.count)
                        try read.withUnsafeMutableBufferPointer { try file.read(tensor.name, shape: tensor.shape, part: p.part, elements: p.elements, into: $0) }
                        let held = parts[p.coordinates.tensor].withBuffer { Array($0[p.offset..<(p.offset + p.elements.count)]) }
                        XCTAssertEqual(read, held, "\(label) \(tensor.name) rank \(p.rank): read from the file")
                    }
                }
                XCTAssertEqual(rebuilt, whole.withBuffer { Array($0) }, label)
            }
        }
    }

    /// Pipeline stages: a rank holds its stage's tensors; a tied embedding is
    /// held by the first and the last stage and saved from the first; every
    /// element is still saved once and reassembles the whole.
    func testPipelineStagesHoldTheirTensorsAndATiedEmbeddingIsSavedOnce() throws {
        let config = Self.config(tied: true)
        var parallel = PretrainConfig.Parallel()
        (parallel.tensor, parallel.pipeline) = (2, 2)
        let layout = try ParallelLayout(world: 4, parallel: parallel)
        let stages = try PipelineStage.partition(config, stages: 2, stageLayers: [1, 1])
        let map = CheckpointShardMap(model: config, layout: layout, zero: false, stages: stages)
        XCTAssertEqual(map.tensors.map(\.name), ParameterLayout(config: config).slices.map(\.name))
        let embedding = try XCTUnwrap(map.tensors.first { $0.name == "model.embed_tokens.weight" })
        XCTAssertEqual(embedding.pieces.map(\.rank), [0, 1, 2, 3])
        XCTAssertEqual(embedding.pieces.filter(\.saved).map(\.rank), [0, 1])
        let norm = try XCTUnwrap(map.tensors.first { $0.name == "model.norm.weight" })
        XCTAssertEqual(norm.pieces.map(\.rank), [2, 3], "stage 1 is ranks 2 and 3")
        XCTAssertEqual(norm.pieces.filter(\.saved).map(\.rank), [2], "a replicated tensor is saved from tensor rank 0")
        XCTAssertEqual(try XCTUnwrap(map.tensors.first { $0.name == "model.layers.0.mlp.down_proj.weight" }).pieces.map(\.rank), [0, 1])
        for rank in 0..<4 {
            let c = layout.coordinates(rank: rank)
            let local = ParameterLayout(config: config, tensorRank: c.tensor, tensorParallel: 2, stage: stages[c.pipeline])
            let held = map.pieces(onRank: rank).map(\.piece.elements.count).reduce(0, +)
            XCTAssertEqual(held, local.totalCount, "rank \(rank) holds its stage's buffer")
        }
    }
}
