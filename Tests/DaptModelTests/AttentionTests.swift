import DaptCore
import DaptModel
import Foundation
import XCTest

final class AttentionTests: XCTestCase {
    struct Case {
        var shape: AttentionShape
        var documentIds: [Int32]?
    }

    /// Documents of the given lengths packed into each row.
    static func packedIds(_ rows: [[Int]]) -> [Int32] {
        rows.flatMap { lengths in lengths.enumerated().flatMap { d, n in [Int32](repeating: Int32(d), count: n) } }
    }

    static let cases: [Case] = [
        Case(shape: AttentionShape(batch: 1, seqLen: 13, heads: 2, kvHeads: 2, headDim: 8), documentIds: nil),
        Case(shape: AttentionShape(batch: 2, seqLen: 21, heads: 4, kvHeads: 2, headDim: 12),
             documentIds: packedIds([[5, 9, 7], [1, 20]])),
        Case(shape: AttentionShape(batch: 1, seqLen: 40, heads: 3, kvHeads: 1, headDim: 16),
             documentIds: packedIds([[3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4]])),
    ]

    func run(_ c: Case, tiles: AttentionTiles?, q: [Float], k: [Float], v: [Float], dOut: [Float])
        -> (out: [Float], lse: [Float], dq: [Float], dk: [Float], dv: [Float]) {
        let s = c.shape, n = s.batch * s.seqLen
        let starts = documentStarts(documentIds: c.documentIds, batch: s.batch, seqLen: s.seqLen)
        var out = [Float](repeating: 0, count: n * s.qStride), lse = [Float](repeating: 0, count: n * s.heads)
        var dq = [Float](repeating: 0, count: n * s.qStride), dk = [Float](repeating: 0, count: n * s.kvStride), dv = dk
        if let tiles {
            attentionForward(q: q, k: k, v: v, shape: s, documentStarts: starts, tiles: tiles, out: &out, lse: &lse)
            attentionBackward(q: q, k: k, v: v, out: out, lse: lse, dOut: dOut, shape: s, documentStarts: starts,
                              tiles: tiles, dq: &dq, dk: &dk, dv: &dv)
        } else {
            attentionReferenceForward(q: q, k: k, v: v, shape: s, documentStarts: starts, out: &out, lse: &lse)
            attentionReferenceBackward(q: q, k: k, v: v, dOut: dOut, shape: s, documentStarts: starts, dq: &dq, dk: &dk, dv: &dv)
        }
        return (out, lse, dq, dk, dv)
    }

    func inputs(_ c: Case, seed: UInt64) -> (q: [Float], k: [Float], v: [Float], dOut: [Float]) {
        let s = c.shape, n = s.batch * s.seqLen
        return (randomValues(n * s.qStride, seed: seed, std: 1.5), randomValues(n * s.kvStride, seed: seed + 1, std: 1.5),
                randomValues(n * s.kvStride, seed: seed + 2), randomValues(n * s.qStride, seed: seed + 3))
    }

    /// q, k and v as column blocks of the fused [q | k | v] rows (row
    /// strides wider than the heads): the same outputs and gradients, bit for
    /// bit, as from dense buffers, for the tiled kernels and the reference;
    /// the columns around them are left alone.
    func testFusedRowsGiveTheDenseResults() {
        for (ci, c) in Self.cases.enumerated() {
            // Three spare columns per row, as a wider fused product would leave.
            let s = c.shape, n = s.batch * s.seqLen, qD = s.qStride, kvD = s.kvStride, width = qD + 2 * kvD + 3
            let x = inputs(c, seed: UInt64(300 + ci))
            let fused = AttentionShape(batch: s.batch, seqLen: s.seqLen, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
                                       qStride: width, kvStride: width)
            XCTAssertEqual(fused.outStride, qD)
            var qkv = [Float](repeating: 0, count: n * width)
            for r in 0..<n {
                for i in 0..<qD { qkv[r * width + i] = x.q[r * qD + i] }
                for i in 0..<kvD { qkv[r * width + qD + i] = x.k[r * kvD + i]; qkv[r * width + qD + kvD + i] = x.v[r * kvD + i] }
            }
            let starts = documentStarts(documentIds: c.documentIds, batch: s.batch, seqLen: s.seqLen)
            for tiles in [nil, AttentionTiles(query: 5, key: 3), AttentionTiles(query: 64, key: 128)] as [AttentionTiles?] {
                let dense = run(c, tiles: tiles, q: x.q, k: x.k, v: x.v, dOut: x.dOut)
                var out = [Float](repeating: 0, count: n * qD), lse = [Float](repeating: 0, count: n * s.heads)
                var dqkv = [Float](repeating: 0.25, count: n * width)
                for r in 0..<n { for i in 0..<(qD + 2 * kvD) { dqkv[r * width + i] = 0 } }
                qkv.withUnsafeBufferPointer { p in
                    dqkv.withUnsafeMutableBufferPointer { d in
                        let q = p.baseAddress!, k = q + qD, v = k + kvD
                        let dq = d.baseAddress!, dk = dq + qD, dv = dk + kvD
                        if let tiles {
                            attentionForward(q: q, k: k, v: v, shape: fused, documentStarts: starts, tiles: tiles, out: &out, lse: &lse)
                            attentionBackward(q: q, k: k, v: v, out: out, lse: lse, dOut: x.dOut, shape: fused, documentStarts: starts,
                                              tiles: tiles, dq: dq, dk: dk, dv: dv)
                        } else {
                            attentionReferenceForward(q: q, k: k, v: v, shape: fused, documentStarts: starts, out: &out, lse: &lse)
                            attentionReferenceBackward(q: q, k: k, v: v, dOut: x.dOut, shape: fused, documentStarts: starts, dq: dq, dk: dk, dv: dv)
                        }
                    }
                }
                let label = "case \(ci) tiles \(String(describing: tiles))"
                XCTAssertEqual(out, dense.out, "\(label): out")
                XCTAssertEqual(lse, dense.lse, "\(label): lse")
                /// Columns `from ..< to` of every row of the fused gradient.
                func columns(_ from: Int, _ to: Int) -> [Float] {
                    var values: [Float] = []
                    for r in 0..<n { values += dqkv[(r * width + from)..<(r * width + to)] }
                    return values
                }
                XCTAssertEqual(columns(0, qD), dense.dq, "\(label): dq")
                XCTAssertEqual(columns(qD, qD + kvD), dense.dk, "\(label): dk")
                XCTAssertEqual(columns(qD + kvD, qD + 2 * kvD), dense.dv, "\(label): dv")
                XCTAssertNotEqual(dense.dk, [Float](repeating: 0, count: dense.dk.count), "\(label): gradients flow")
                XCTAssertEqual(columns(qD + 2 * kvD, width), [Float](repeating: 0.25, count: n * 3), "\(label): spare columns untouched")
            }
        }
    }

    /// The tiled backward writes dq, dk and dv whatever the buffers held
    /// (no zeroing pass before it), also when run on kv-head groups apart.
    func testTiledBackwardWritesTheGradientsOverAnyContents() {
        for (ci, c) in Self.cases.enumerated() {
            let s = c.shape, n = s.batch * s.seqLen
            let x = inputs(c, seed: UInt64(500 + ci))
            let starts = documentStarts(documentIds: c.documentIds, batch: s.batch, seqLen: s.seqLen)
            for tiles in [AttentionTiles(query: 5, key: 3), AttentionTiles()] {
                let zeroed = run(c, tiles: tiles, q: x.q, k: x.k, v: x.v, dOut: x.dOut)
                // One call over all heads, then one call per kv-head group.
                for groups in [[0..<s.heads], (0..<s.kvHeads).map { ($0 * s.group)..<(($0 + 1) * s.group) }] {
                    var dq = [Float](repeating: .nan, count: n * s.qStride), dk = [Float](repeating: .nan, count: n * s.kvStride), dv = dk
                    for heads in groups {
                        attentionBackward(q: x.q, k: x.k, v: x.v, out: zeroed.out, lse: zeroed.lse, dOut: x.dOut, shape: s,
                                          documentStarts: starts, headRange: heads, tiles: tiles, dq: &dq, dk: &dk, dv: &dv)
                    }
                    let label = "case \(ci) tiles \(tiles.query)x\(tiles.key) in \(groups.count) call(s)"
                    XCTAssertEqual(dq, zeroed.dq, "\(label): dq")
                    XCTAssertEqual(dk, zeroed.dk, "\(label): dk")
                    XCTAssertEqual(dv, zeroed.dv, "\(label): dv")
                }
            }
        }
    }

    /// Given RoPE's tables, the tiled backward takes RoPE back off dq and dk
    /// head by head: bit for bit its plain gradients followed by `ropeBackward`
    /// over all rows, also when run on kv-head groups apart; dv is untouched by RoPE.
    func testTiledBackwardAppliesRopeBackwardPerHead() {
        for (ci, c) in Self.cases.enumerated() {
            let s = c.shape, n = s.batch * s.seqLen, half = s.headDim / 2
            let x = inputs(c, seed: UInt64(600 + ci))
            let starts = documentStarts(documentIds: c.documentIds, batch: s.batch, seqLen: s.seqLen)
            let cos = randomValues(n * half, seed: 700), sin = randomValues(n * half, seed: 701)
            let tiles = AttentionTiles(query: 5, key: 3)
            var plain = run(c, tiles: tiles, q: x.q, k: x.k, v: x.v, dOut: x.dOut)
            ropeBackward(dX: &plain.dq, rows: n, heads: s.heads, headDim: s.headDim, stride: s.qStride, cos: cos, sin: sin)
            ropeBackward(dX: &plain.dk, rows: n, heads: s.kvHeads, headDim: s.headDim, stride: s.kvStride, cos: cos, sin: sin)
            for groups in [[0..<s.heads], (0..<s.kvHeads).map { ($0 * s.group)..<(($0 + 1) * s.group) }] {
                var dq = [Float](repeating: .nan, count: n * s.qStride), dk = [Float](repeating: .nan, count: n * s.kvStride), dv = dk
                cos.withUnsafeBufferPointer { cosT in
                    sin.withUnsafeBufferPointer { sinT in
                        for heads in groups {
                            attentionBackward(q: x.q, k: x.k, v: x.v, out: plain.out, lse: plain.lse, dOut: x.dOut, shape: s,
                                              documentStarts: starts, headRange: heads, tiles: tiles,
                                              rope: RopeTables(cos: cosT.baseAddress!, sin: sinT.baseAddress!), dq: &dq, dk: &dk, dv: &dv)
                        }
                    }
                }
                let label = "case \(ci) in \(groups.count) call(s)"
                XCTAssertEqual(dq.map(\.bitPattern), plain.dq.map(\.bitPattern), "\(label): dq")
                XCTAssertEqual(dk.map(\.bitPattern), plain.dk.map(\.bitPattern), "\(label): dk")
                XCTAssertEqual(dv.map(\.bitPattern), plain.dv.map(\.bitPattern), "\(label): dv")
            }
        }
    }

    func testTiledEqualsReferenceForwardAndBackward() {
        for (ci, c) in Self.cases.enumerated() {
            let x = inputs(c, seed: UInt64(100 + ci))
            let ref = run(c, tiles: nil, q: x.q, k: x.k, v: x.v, dOut: x.dOut)
            for tiles in [AttentionTiles(query: 4, key: 4), AttentionTiles(query: 5, key: 3), AttentionTiles(query: 64, key: 128),
                          AttentionTiles(query: 16, key: 8)] {
                let t = run(c, tiles: tiles, q: x.q, k: x.k, v: x.v, dOut: x.dOut)
                let label = "case \(ci) tiles \(tiles.query)x\(tiles.key)"
                XCTAssertLessThanOrEqual(ModelFixtures.relativeError(t.out, ref.out), 1e-5, "\(label): out")
                XCTAssertLessThanOrEqual(ModelFixtures.relativeError(t.lse, ref.lse), 1e-5, "\(label): lse")
                XCTAssertLessThanOrEqual(ModelFixtures.relativeError(t.dq, ref.dq), 1e-5, "\(label): dq")
                XCTAssertLessThanOrEqual(ModelFixtures.relativeError(t.dk, ref.dk), 1e-5, "\(label): dk")
                XCTAssertLessThanOrEqual(ModelFixtures.relativeError(t.dv, ref.dv), 1e-5, "\(label): dv")
            }
        }
    }

    /// Sequences longer than a tile: several query tiles meet 256-key tiles
    /// (the default) that hold all their visible keys, or two of them, with
    /// document boundaries inside and across tiles.
    func testLargeTilesEqualReferenceOnLongerSequences() {
        let cases = [
            Case(shape: AttentionShape(batch: 1, seqLen: 256, heads: 2, kvHeads: 1, headDim: 8), documentIds: nil),
            Case(shape: AttentionShape(batch: 2, seqLen: 330, heads: 2, kvHeads: 2, headDim: 8),
                 documentIds: Self.packedIds([[100, 150, 80], [1, 300, 29]])),
        ]
        XCTAssertEqual(AttentionTiles(), AttentionTiles(query: 64, key: 256))
        for (ci, c) in cases.enumerated() {
            let x = inputs(c, seed: UInt64(400 + ci))
            let ref = run(c, tiles: nil, q: x.q, k: x.k, v: x.v, dOut: x.dOut)
            for tiles in [AttentionTiles(), AttentionTiles(query: 128, key: 256), AttentionTiles(query: 128, key: 128),
                          AttentionTiles(query: 256, key: 512)] {
                let t = run(c, tiles: tiles, q: x.q, k: x.k, v: x.v, dOut: x.dOut)
                let label = "long case \(ci) tiles \(tiles.query)x\(tiles.key)"
                XCTAssertLessThanOrEqual(ModelFixtures.relativeError(t.out, ref.out), 1e-5, "\(label): out")
                XCTAssertLessThanOrEqual(ModelFixtures.relativeError(t.lse, ref.lse), 1e-5, "\(label): lse")
                XCTAssertLessThanOrEqual(ModelFixtures.relativeError(t.dq, ref.dq), 1e-5, "\(label): dq")
                XCTAssertLessThanOrEqual(ModelFixtures.relativeError(t.dk, ref.dk), 1e-5, "\(label): dk")
                XCTAssertLessThanOrEqual(ModelFixtures.relativeError(t.dv, ref.dv), 1e-5, "\(label): dv")
            }
        }
    }

    func testTiledAttentionGradientsByFiniteDifferences() {
        for (ci, c) in Self.cases.enumerated() {
            var x = inputs(c, seed: UInt64(200 + ci))
            let tiles = AttentionTiles(query: 4, key: 6)
            let r = x.dOut
            let g = run(c, tiles: tiles, q: x.q, k: x.k, v: x.v, dOut: r)
            let (q0, k0, v0) = (x.q, x.k, x.v)
            finiteDifferenceCheck(name: "case \(ci) dq", inputs: &x.q, analytic: g.dq, eps: 3e-3) {
                weightedSum(self.run(c, tiles: tiles, q: $0, k: k0, v: v0, dOut: r).out, r)
            }
            finiteDifferenceCheck(name: "case \(ci) dk", inputs: &x.k, analytic: g.dk, eps: 3e-3) {
                weightedSum(self.run(c, tiles: tiles, q: q0, k: $0, v: v0, dOut: r).out, r)
            }
            finiteDifferenceCheck(name: "case \(ci) dv", inputs: &x.v, analytic: g.dv, eps: 3e-3) {
                weightedSum(self.run(c, tiles: tiles, q: q0, k: k0, v: $0, dOut: r).out, r)
            }
        }
    }

    /// Output of a token depends only on its own document's earlier tokens.
    func testDocumentMaskSemantics() {
        let c = Self.cases[1]
        let s = c.shape
        let x = inputs(c, seed: 300)
        let base = run(c, tiles: AttentionTiles(query: 4, key: 4), q: x.q, k: x.k, v: x.v, dOut: x.dOut)
        // Perturb k and v of row 0's first document (tokens 0..<5).
        var k2 = x.k, v2 = x.v
        for i in 0..<(5 * s.kvStride) { k2[i] += 1; v2[i] -= 1 }
        let moved = run(c, tiles: AttentionTiles(query: 4, key: 4), q: x.q, k: k2, v: v2, dOut: x.dOut)
        let n = s.batch * s.seqLen
        for t in 0..<n {
            let row = Array(base.out[(t * s.qStride)..<((t + 1) * s.qStride)])
            let row2 = Array(moved.out[(t * s.qStride)..<((t + 1) * s.qStride)])
            if t < 5 { XCTAssertNotEqual(row, row2, "token \(t) sees its own document") } else { XCTAssertEqual(row, row2, "token \(t)") }
        }
        // The first token of every document attends only to itself: out = v.
        for t in [0, 5, 14] {
            for h in 0..<s.heads {
                let kvh = h / s.group
                for d in 0..<s.headDim {
                    XCTAssertEqual(base.out[t * s.qStride + h * s.headDim + d], x.v[t * s.kvStride + kvh * s.headDim + d], accuracy: 1e-5)
                }
            }
        }
    }

    /// Packing short documents skips the tiles between documents: the work
    /// falls well below plain causal attention's, and grows linearly with T.
    func testFullyMaskedTilesAreSkipped() {
        let T = 512, tiles = AttentionTiles(query: 32, key: 32)
        let s = AttentionShape(batch: 1, seqLen: T, heads: 1, kvHeads: 1, headDim: 8)
        let q = randomValues(T * 8, seed: 1), k = randomValues(T * 8, seed: 2), v = randomValues(T * 8, seed: 3)
        var out = [Float](repeating: 0, count: T * 8), lse = [Float](repeating: 0, count: T)
        let causal = attentionForward(q: q, k: k, v: v, shape: s, documentStarts: documentStarts(documentIds: nil, batch: 1, seqLen: T),
                                      tiles: tiles, out: &out, lse: &lse)
        XCTAssertEqual(causal, (T / 32) * (T / 32 + 1) / 2)
        let ids = (0..<T).map { Int32($0 / 64) }  // 8 documents of 64 tokens
        let packed = attentionForward(q: q, k: k, v: v, shape: s, documentStarts: documentStarts(documentIds: ids, batch: 1, seqLen: T),
                                      tiles: tiles, out: &out, lse: &lse)
        XCTAssertEqual(packed, 8 * 3, "each 64-token document is 2 query tiles × (1 + 2) key tiles")
    }
}
