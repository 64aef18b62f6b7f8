import DaptTrain
import XCTest

final class PackedDataTests: XCTestCase {
    func corpus() -> InMemoryDocuments {
        // Document d has length 1 + (d*7 % 13) and tokens 1000·d + position.
        var documents: [[Int32]] = []
        for d in 0..<40 {
            let length: Int = 1 + (d * 7) % 13
            documents.append((0..<length).map { (p: Int) -> Int32 in Int32(1000 * d + p) })
        }
        return InMemoryDocuments(documents: documents)
    }

    func testPackingKeepsDocumentsAndTargets() throws {
        let source = corpus()
        let order = try PackedSequenceOrder(source: source, sequenceLength: 16, seed: 3)
        var seen: [Int32: Int] = [:]
        for g in 0..<order.sequencesPerEpoch {
            let b = try PackedBatch(order: order, firstSequence: g, count: 1)
            for t in 0..<16 {
                seen[b.tokens[t], default: 0] += 1
                let doc = b.tokens[t] / 1000, pos = b.tokens[t] % 1000
                if t > 0, b.documentIds[t] == b.documentIds[t - 1] {
                    XCTAssertEqual(b.tokens[t - 1] + 1, b.tokens[t], "pieces are contiguous runs of one document")
                    XCTAssertEqual(b.positions[t], b.positions[t - 1] + 1)
                } else {
                    XCTAssertEqual(b.positions[t], 0, "positions restart for each document piece")
                    if t > 0 { XCTAssertEqual(b.documentIds[t], b.documentIds[t - 1] + 1) }
                }
                let length = Int32(source.documentLength(Int(doc)))
                if pos + 1 < length { XCTAssertEqual(b.targets[t], b.tokens[t] + 1) } else { XCTAssertEqual(b.targets[t], -100) }
            }
        }
        // One epoch covers every token at most once, and all but the tail.
        XCTAssertTrue(seen.values.allSatisfy { $0 == 1 })
        XCTAssertEqual(seen.count, order.sequencesPerEpoch * 16)
        XCTAssertGreaterThan(seen.count, order.tokensPerEpoch - 16)
    }

    /// data.document_masks: false packs the same tokens and targets, but as
    /// one attention block with positions running through the sequence.
    func testWithoutDocumentMasksOneBlockWithRunningPositions() throws {
        let masked = try PackedSequenceOrder(source: corpus(), sequenceLength: 16, seed: 3)
        let plain = try PackedSequenceOrder(source: corpus(), sequenceLength: 16, seed: 3, documentMasks: false)
        let a = try PackedBatch(order: masked, firstSequence: 0, count: masked.sequencesPerEpoch)
        let b = try PackedBatch(order: plain, firstSequence: 0, count: plain.sequencesPerEpoch)
        XCTAssertEqual(a.tokens, b.tokens)
        XCTAssertEqual(a.targets, b.targets)
        XCTAssertGreaterThan(Set(a.documentIds).count, 1)
        XCTAssertEqual(Set(b.documentIds), [0])
        XCTAssertEqual(b.positions, (0..<plain.sequencesPerEpoch).flatMap { _ in (0..<16).map { Int32($0) } })
        XCTAssertNotEqual(a.positions, b.positions)
    }

    func testOrderIsAFunctionOfSeedAndIndex() throws {
        let a = try PackedSequenceOrder(source: corpus(), sequenceLength: 8, seed: 11)
        let b = try PackedSequenceOrder(source: corpus(), sequenceLength: 8, seed: 11)
        let c = try PackedSequenceOrder(source: corpus(), sequenceLength: 8, seed: 12)
        // Build in different orders (and across epochs): same sequences.
        let indices = [3, 100, 7, a.sequencesPerEpoch + 2, 0]
        for i in indices { _ = try PackedBatch(order: a, firstSequence: i, count: 2) }
        for i in indices.reversed() {
            XCTAssertEqual(try PackedBatch(order: a, firstSequence: i, count: 2), try PackedBatch(order: b, firstSequence: i, count: 2))
        }
        XCTAssertNotEqual(try PackedBatch(order: a, firstSequence: 0, count: 4).tokens, try PackedBatch(order: c, firstSequence: 0, count: 4).tokens)
        // Different epochs use different document orders.
        XCTAssertNotEqual(a.documentOrder(epoch: 0), a.documentOrder(epoch: 1))
        XCTAssertEqual(a.documentOrder(epoch: 1), b.documentOrder(epoch: 1))
    }

    func testHeldOutSplitIsDeterministicAndDisjoint() {
        let (train, held) = splitHeldOut(documentCount: 1000, fraction: 0.1, seed: 5)
        XCTAssertEqual(train.count + held.count, 1000)
        XCTAssertTrue(Set(train).isDisjoint(with: held))
        XCTAssertGreaterThan(held.count, 60); XCTAssertLessThan(held.count, 140)
        XCTAssertEqual(splitHeldOut(documentCount: 1000, fraction: 0.1, seed: 5).heldOut, held)
        XCTAssertNotEqual(splitHeldOut(documentCount: 1000, fraction: 0.1, seed: 6).heldOut, held)
    }

    func testTooLittleDataIsAnError() {
        XCTAssertThrowsError(try PackedSequenceOrder(source: InMemoryDocuments(documents: [[1, 2, 3]]), sequenceLength: 8, seed: 0)) {
            XCTAssertEqual("\($0)", "training data has 3 tokens, fewer than one sequence of 8")
        }
    }
}
