import DaptCluster
import DaptModel
import DaptTestSupport
@testable import DaptTrain
import XCTest

/// Stages of one model on threads of this process, exchanging activations
/// and gradients by the 1F1B schedule, against the whole model.
final class PipelineStageRunnerTests: XCTestCase {
    static func config(tied: Bool) -> LlamaConfig {
        LlamaConfig(vocabSize: 16, hiddenSize: 16, intermediateSize: 20, numHiddenLayers: 4, numAttentionHeads: 4,
                    numKeyValueHeads: 2, maxPositionEmbeddings: 16, rmsNormEps: 1e-5, ropeTheta: 100, tieWordEmbeddings: tied)
    }

    /// Five micro-batches on three stages: the whole model's summed loss and
    /// gradients (tensor by tensor; a tied matrix's two copies summed), the
    /// forward-only loss, and at most P − stage micro-batch contexts alive on each stage.
    func testThreeStagesEqualTheWholeModel() throws {
        for tied in [false, true] {
            let c = Self.config(tied: tied)
            let batches = try (0..<5).map { i in
                var b = try TokenBatch.synthetic(vocab: 16, batchSize: 1, seqLen: 6 + i, documentLength: 4)
                b.tokens = b.tokens.map { ($0 + Int32(i)) % 16 }
                return try TokenBatch(batchSize: 1, seqLen: b.seqLen, tokens: b.tokens, targets: b.targets, documentIds: b.documentIds)
            }
            let normalizer = Double(batches.reduce(0) { $0 + $1.targets.filter { $0 != ignoreIndex }.count })
            let whole = try LlamaModel(config: c)
            whole.initializeRandom(seed: 3, std: 0.3)
            var expectedLoss = 0.0
            for b in batches { expectedLoss += try whole.forwardBackward(b, lossScale: 2, normalizer: normalizer).sum }

            let stages = try PipelineStage.partition(c, stages: 3, stageLayers: [1, 2, 1])
            let results = try InProcessGroup(size: 3).run { rank -> (loss: LossResult, evalLoss: LossResult, peak: Int, model: LlamaModel) in
                let model = try LlamaModel(config: c, stage: stages[rank.rank])
                model.initializeRandom(seed: 3, std: 0.3)
                let runner = PipelineStageRunner(model: model, group: rank)
                let loss = try runner.forwardBackward(batches, lossScale: 2, normalizer: normalizer)
                let peak = runner.peakLiveActivations
                return (loss, try runner.loss(batches), peak, model)
            }
            XCTAssertEqual(results.map(\.peak), [3, 2, 1], "stage p holds at most P − p micro-batches")
            XCTAssertEqual(results[0].loss, LossResult(sum: 0, count: 0), "the loss is on the last stage")
            XCTAssertEqual(results[2].loss.sum, expectedLoss, accuracy: 1e-9 * abs(expectedLoss))
            XCTAssertEqual(results[2].evalLoss.sum, expectedLoss, accuracy: 1e-9 * abs(expectedLoss))
            XCTAssertEqual(results[2].evalLoss.count, Int(normalizer))
            let models = results.map(\.model)
            for s in whole.layout.slices {
                let holders = models.filter { $0.layout.slice(named: s.name) != nil }
                XCTAssertEqual(holders.count, tied && s.name == "model.embed_tokens.weight" ? 2 : 1, s.name)
                var got = [Float](repeating: 0, count: s.count)
                for m in holders { got = zip(got, m.gradients.values(named: s.name)!).map { $0 + $1 } }
                let want = whole.gradients.values(s)
                let scale = want.map(abs).max()!
                // Untied, each stage adds its micro-batches in the single-rank order: the same bits.
                if !tied { XCTAssertEqual(got, want, s.name) }
                for (x, y) in zip(got, want) { XCTAssertEqual(x, y, accuracy: 1e-5 * scale, "\(s.name) tied \(tied)") }
            }
        }
    }

    /// The reducer's hook under the 1F1B schedule: called once per offset,
    /// in the last micro-batch's passes only (after the head on the last
    /// stage, after each layer's backward, then 0), and whenever it is
    /// called every gradient from that offset on already holds its final value.
    func testGradientsFinalIsReportedInTheLastMicroBatch() throws {
        let c = Self.config(tied: false)
        let batches = try (0..<4).map { try TokenBatch.synthetic(vocab: 16, batchSize: 1, seqLen: 6 + $0, documentLength: 4) }
        let stages = try PipelineStage.partition(c, stages: 3, stageLayers: [1, 2, 1])
        let results = try InProcessGroup(size: 3).run { rank -> (reports: [(offset: Int, values: [Float])], model: LlamaModel) in
            let model = try LlamaModel(config: c, stage: stages[rank.rank])
            model.initializeRandom(seed: 3, std: 0.3)
            var reports: [(offset: Int, values: [Float])] = []
            _ = try PipelineStageRunner(model: model, group: rank).forwardBackward(batches, lossScale: 1, normalizer: 20) { offset in
                reports.append((offset, model.gradients.withBuffer { Array($0[offset...]) }))
            }
            return (reports, model)
        }
        for (stage, r) in results.enumerated() {
            let layout = r.model.layout
            let layers = layout.stage.layers.reversed().map { layout.layer($0).range.lowerBound }
            XCTAssertEqual(r.reports.map(\.offset), (layout.finalNorm.map { [$0.offset] } ?? []) + layers + [0], "stage \(stage)")
            let final = r.model.gradients.withBuffer { Array($0) }
            for report in r.reports {
                XCTAssertEqual(report.values, Array(final[report.offset...]), "stage \(stage): final from \(report.offset)")
            }
        }
    }

    /// Two stages of two tensor ranks each (threads of one process): the
    /// whole model's loss, while each tensor rank sends only its half of
    /// every hidden state and hidden-state gradient to the other stage.
    func testTensorRanksSendTheirShareOfTheHiddenState() throws {
        let c = Self.config(tied: false)
        let batches = try (0..<3).map { try TokenBatch.synthetic(vocab: 16, batchSize: 1, seqLen: 6 + $0, documentLength: 4) }
        let normalizer = Double(batches.reduce(0) { $0 + $1.targets.filter { $0 != ignoreIndex }.count })
        let whole = try LlamaModel(config: c)
        whole.initializeRandom(seed: 3, std: 0.3)
        var expected = 0.0
        for b in batches { expected += try whole.forwardBackward(b, lossScale: 1, normalizer: normalizer).sum }
        let stages = try PipelineStage.partition(c, stages: 2)
        let tensorGroups = [InProcessGroup(size: 2), InProcessGroup(size: 2)], pipelineGroups = [InProcessGroup(size: 2), InProcessGroup(size: 2)]
        let results = try InProcessGroup(size: 4).run { world -> (loss: Double, sent: Int, model: LlamaModel, held: Int) in
            let (t, p) = (world.rank % 2, world.rank / 2)
            let model = try LlamaModel(config: c, tensorGroup: InProcessRank(group: tensorGroups[p], rank: t), stage: stages[p])
            model.initializeRandom(seed: 3, std: 0.3)
            let pipeline = CountingCommunicator(InProcessRank(group: pipelineGroups[t], rank: p))
            let runner = PipelineStageRunner(model: model, group: pipeline)
            let loss = try runner.forwardBackward(batches, lossScale: 1, normalizer: normalizer)
            return (loss.sum, pipeline.sentFloats, model, runner.outgoing.count)
        }
        for r in results[2...] { XCTAssertEqual(r.loss, expected, accuracy: 1e-5 * abs(expected), "the last stage's loss") }
        // The gradients that came back through the shared hidden-state gradient: every
        // tensor a rank holds whole (the norm gains), on both stages, as the whole model's.
        var compared = 0
        for (rank, r) in results.enumerated() {
            for s in r.model.layout.slices where s.split == nil {
                let want = try XCTUnwrap(whole.gradients.values(named: s.name), s.name)
                let got = try XCTUnwrap(r.model.gradients.values(named: s.name), s.name)
                let scale = want.map(abs).max()!
                for (x, y) in zip(got, want) { XCTAssertEqual(x, y, accuracy: 1e-5 * scale, "rank \(rank): \(s.name)") }
                compared += 1
            }
        }
        XCTAssertGreaterThan(compared, 4, "each rank holds some whole tensors")
        // Every micro-batch's hidden state goes forward once and its gradient back once: n·h floats each, half per tensor rank.
        let hiddenFloats = batches.reduce(0) { $0 + $1.batchSize * $1.seqLen * c.hiddenSize }
        XCTAssertEqual(results.map(\.sent), [hiddenFloats / 2, hiddenFloats / 2, hiddenFloats / 2, hiddenFloats / 2])
        // The second stage keeps only the half it sends of the last micro-batch's input gradient; the first sends none.
        let lastHidden = batches.last!.batchSize * batches.last!.seqLen * c.hiddenSize
        XCTAssertEqual(results.map(\.held), [0, 0, lastHidden / 2, lastHidden / 2])
    }
}

/// A group that counts the floats this rank sends point-to-point.
final class CountingCommunicator: Communicator {
    let inner: any Communicator
    var sentFloats = 0
    init(_ inner: any Communicator) { self.inner = inner }
    var rank: Int { inner.rank }
    var size: Int { inner.size }
    var hostName: String { inner.hostName }
    func barrier() throws { try inner.barrier() }
    func broadcast<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int) throws { try inner.broadcast(buffer, root: root) }
    func allReduce<T: CollectiveElement>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws { try inner.allReduce(buffer, op: op) }
    func allGatherV<T: CollectiveElement>(_ values: [T]) throws -> [[T]] { try inner.allGatherV(values) }
    func gatherV<T: CollectiveElement>(_ values: [T], root: Int) throws -> [[T]]? { try inner.gatherV(values, root: root) }
    func send<T: CollectiveElement>(_ values: [T], to peer: Int, tag: Int) throws {
        if T.self == Float.self { sentFloats += values.count }
        try inner.send(values, to: peer, tag: tag)
    }
    func receive<T: CollectiveElement>(_ type: T.Type, from peer: Int, tag: Int) throws -> [T] { try inner.receive(type, from: peer, tag: tag) }
    func split(color: Int, key: Int) throws -> any Communicator { try inner.split(color: color, key: key) }
}
