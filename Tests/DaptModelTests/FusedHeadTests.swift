import DaptCore
import DaptModel
import DaptTestSupport
import Foundation
import XCTest

/// The output head and its loss computed over chunks of rows against one
/// chunk of all rows (the unchunked head). Each row's logits, loss and input
/// gradient are the same sums whatever the chunk, but sgemm may order a
/// row's products differently for another number of rows (OpenBLAS's Haswell
/// kernels do for a few rows; its AVX-512 ones gave the same bits here), and
/// the head weight's gradient adds the rows' products chunk by chunk: so
/// losses are compared within fp32 rounding (relative 1e-6; seen: up to
/// 1.5e-8) and gradients likewise (relative 2e-6 of the largest; seen: up to
/// 3.4e-7). What runs the same products in the same order — training and
/// evaluation, one thread and two — is compared bit for bit.
final class FusedHeadTests: XCTestCase {
    static func config(tied: Bool) -> LlamaConfig {
        LlamaConfig(vocabSize: 40, hiddenSize: 16, intermediateSize: 20, numHiddenLayers: 2, numAttentionHeads: 4,
                    numKeyValueHeads: 2, maxPositionEmbeddings: 16, tieWordEmbeddings: tied)
    }

    /// 3 × 10 rows; targets ignored at `ignored` (first row, row ends, a run in the middle).
    static func batch(ignored: Set<Int> = [0, 9, 13, 14, 29]) throws -> TokenBatch {
        let n = 30
        let tokens: [Int32] = (0..<n).map { (i: Int) -> Int32 in Int32((i * 17 + 5) % 40) }
        let targets: [Int32] = (0..<n).map { (i: Int) -> Int32 in ignored.contains(i) ? ignoreIndex : Int32((i * 23 + 11) % 40) }
        return try TokenBatch(batchSize: 3, seqLen: 10, tokens: tokens, targets: targets)
    }

    func model(tied: Bool, precision: Precision = .fp32) throws -> LlamaModel {
        let model = try LlamaModel(config: Self.config(tied: tied))
        model.initializeRandom(seed: 11, std: 0.4)
        model.activationPrecision = precision
        return model
    }

    struct Pass: Equatable {
        var loss: LossResult
        var eval: LossResult
        var tokenLosses: [Float]
        var gradients: [Float]
    }

    func pass(_ model: LlamaModel, _ batch: TokenBatch, chunk: Int?) throws -> Pass {
        model.headChunkRows = chunk
        model.gradients.zero()
        let loss = try model.forwardBackward(batch)
        return Pass(loss: loss, eval: try model.loss(batch), tokenLosses: try model.tokenLosses(batch),
                    gradients: model.gradients.withBuffer { Array($0) })
    }

    /// Chunks that divide the 30 rows and chunks that do not, one row, and
    /// more than all rows, tied and untied, fp32 and bf16.
    func testChunkedHeadEqualsOneChunk() throws {
        let batch = try Self.batch()
        for tied in [false, true] {
            for precision in [Precision.fp32, .bf16] {
                let model = try model(tied: tied, precision: precision)
                let whole = try pass(model, batch, chunk: nil)
                XCTAssertEqual(model.headScratchFloats, 30 * 40 + 30, "the default chunk holds all 30 rows")
                XCTAssertEqual(whole.loss.count, 25)
                XCTAssertEqual(whole.eval, whole.loss, "evaluation and training compute the same loss")
                for chunk in [1, 6, 7, 29, 64] {
                    let label = "tied \(tied) \(precision) chunk \(chunk)"
                    let chunked = try pass(model, batch, chunk: chunk)
                    XCTAssertEqual(chunked.loss.count, whole.loss.count, label)
                    XCTAssertEqual(chunked.loss.sum, whole.loss.sum, accuracy: 1e-6 * whole.loss.sum, label)
                    XCTAssertEqual(chunked.eval, chunked.loss, "\(label): evaluation and training run the same chunks")
                    XCTAssertLessThanOrEqual(ModelFixtures.relativeError(chunked.tokenLosses, whole.tokenLosses), 1e-6, label)
                    XCTAssertEqual(chunked.tokenLosses.enumerated().filter { $0.element == 0 }.map(\.offset), [0, 9, 13, 14, 29], label)
                    XCTAssertLessThanOrEqual(ModelFixtures.relativeError(chunked.gradients, whole.gradients), 2e-6, label)
                    for s in model.layout.slices {
                        XCTAssertLessThanOrEqual(ModelFixtures.relativeError(Array(chunked.gradients[s.range]), Array(whole.gradients[s.range])),
                                                 2e-6, "\(label): \(s.name)")
                    }
                }
            }
        }
    }

    /// The logits buffer holds one chunk, not the batch's rows.
    func testScratchHoldsOneChunkOfLogits() throws {
        let model = try model(tied: false)
        model.headChunkRows = 7
        try model.forwardBackward(try Self.batch())
        XCTAssertEqual(model.headScratchFloats, 7 * 40 + 30)
        // Small heads: 512 rows; larger ones: 64 MiB of logits, at least 512 rows.
        XCTAssertEqual(HeadChunking.rows(vocab: 4096, hidden: 256), 512)
        XCTAssertEqual(HeadChunking.rows(vocab: 8192, hidden: 512), 2048)
        XCTAssertEqual(HeadChunking.rows(vocab: 32000, hidden: 4096), 524)
        XCTAssertEqual(HeadChunking.rows(vocab: 128256, hidden: 4096), 512)
        XCTAssertEqual(HeadChunking.rows(vocab: 32000, hidden: 4096, setting: 300), 300)
    }

    /// A frozen head over the rows with a target only (fine-tuning): chunked
    /// as the whole head is, with the same loss and gradients.
    func testFrozenGatheredHeadChunked() throws {
        // 10 of 30 rows keep a target, so the head runs on those alone.
        let batch = try Self.batch(ignored: Set((0..<30).filter { $0 % 3 != 1 }))
        let model = try model(tied: false)
        model.head!.projection.trainable = false
        let whole = try pass(model, batch, chunk: nil)
        XCTAssertEqual(whole.loss.count, 10)
        for chunk in [1, 3, 4, 10] {
            let chunked = try pass(model, batch, chunk: chunk)
            XCTAssertEqual(chunked.loss.count, whole.loss.count)
            XCTAssertEqual(chunked.loss.sum, whole.loss.sum, accuracy: 1e-6 * whole.loss.sum, "chunk \(chunk)")
            XCTAssertLessThanOrEqual(ModelFixtures.relativeError(chunked.gradients, whole.gradients), 2e-6, "chunk \(chunk)")
        }
        XCTAssertEqual(model.layout.slice(named: "lm_head.weight").map { model.gradients.values($0).allSatisfy { $0 == 0 } }, true)
    }

    /// The vocabulary split between two tensor ranks: the head takes all
    /// rows at once whatever `headChunkRows` says, so its cross-entropy
    /// reduces over the group twice per pass (and its input gradient once),
    /// and the scratch holds all rows' logits of the rank's half of the
    /// vocabulary, each row's loss and the three reduced values per row.
    func testVocabularyParallelHeadRunsOneChunk() throws {
        let batch = try Self.batch()
        for tied in [false, true] {
            let config = Self.config(tied: tied)
            let results = try InProcessGroup(size: 2).run { rank -> [SplitPass] in
                let part = try LlamaModel(config: config, tensorGroup: rank)
                part.initializeRandom(seed: 11, std: 0.4)
                return try ([nil, 7] as [Int?]).map { chunk in
                    part.headChunkRows = chunk
                    part.gradients.zero()
                    let a = try part.makeActivations(batch)
                    try part.embedForward(a)
                    try part.forwardLayers(0..<config.numHiddenLayers, a)
                    var counts = [rank.group.collectives]
                    let eval = try part.headForward(a)
                    counts.append(rank.group.collectives)
                    let loss = try part.headForwardBackward(a)
                    counts.append(rank.group.collectives)
                    return SplitPass(eval: eval, loss: loss, collectives: zip(counts.dropFirst(), counts).map { $0 - $1 },
                                     scratch: part.headScratchFloats, gradients: part.gradients.withBuffer { Array($0) })
                }
            }
            for (r, passes) in results.enumerated() {
                for (pass, setting) in zip(passes, ["nil", "7"]) {
                    let label = "tied \(tied) rank \(r) headChunkRows \(setting)"
                    XCTAssertEqual(pass.collectives, [2, 3], "\(label): evaluation, then training")
                    XCTAssertEqual(pass.scratch, 30 * 20 + 30 + 3 * 30, label)
                    XCTAssertEqual(pass.eval, pass.loss, label)
                    XCTAssertEqual(pass.loss.count, 25, label)
                    XCTAssertEqual(pass.loss, results[0][0].loss, "\(label): every rank has the same loss")
                }
                XCTAssertEqual(passes[1].gradients, passes[0].gradients, "tied \(tied) rank \(r)")
            }
        }
    }

    struct SplitPass: Equatable {
        var eval: LossResult
        var loss: LossResult
        var collectives: [Int]
        var scratch: Int
        var gradients: [Float]
    }

    /// The cross-entropy of each chunk shared among threads, over 600 rows:
    /// three MLP blocks and, in 256-row head chunks, two chunks shared
    /// between the threads and an 88-row rest on one. The loss and gradients
    /// of one thread, bit for bit.
    func testChunksOnThreadsMatchOneThread() throws {
        let rows = 60, seqLen = 10, n = rows * seqLen
        let tokens: [Int32] = (0..<n).map { (i: Int) -> Int32 in Int32((i * 7 + i / 5) % 40) }
        let targets: [Int32] = (0..<n).map { (i: Int) -> Int32 in i % 11 == 0 ? ignoreIndex : Int32((i * 5 + 3) % 40) }
        let batch = try TokenBatch(batchSize: rows, seqLen: seqLen, tokens: tokens, targets: targets)
        let model = try model(tied: false)
        model.headChunkRows = 256
        model.gradients.zero()
        let one = try model.forwardBackward(batch)
        let gradients = model.gradients.withBuffer { Array($0) }
        model.threads = 2
        model.gradients.zero()
        XCTAssertEqual(try model.forwardBackward(batch), one)
        XCTAssertEqual(model.gradients.withBuffer { Array($0) }, gradients)
    }
}
