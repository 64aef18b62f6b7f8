import DaptCore
@testable import DaptModel
import Foundation
import XCTest

/// Seeded normal(0, std) values.
func randomValues(_ count: Int, seed: UInt64, std: Float = 1) -> [Float] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in
        let u1 = max(Double(rng.next() >> 11) * 0x1.0p-53, 1e-300), u2 = Double(rng.next() >> 11) * 0x1.0p-53
        return Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)) * std
    }
}

/// Central-difference check of ∂(Σ r·f(x))/∂x[i] against `analytic` at
/// sampled indices. `f` writes outputs for the current inputs.
func finiteDifferenceCheck(name: String, inputs: inout [Float], analytic: [Float], sample: Int = 24, seed: UInt64 = 7,
                           eps: Float = 1e-2, tolerance: Double = 2e-3, loss: ([Float]) -> Double,
                           file: StaticString = #filePath, line: UInt = #line) {
    var rng = SplitMix64(seed: seed)
    let indices = inputs.count <= sample ? Array(0..<inputs.count) : (0..<sample).map { _ in Int(rng.next() % UInt64(inputs.count)) }
    var nonzero = 0
    for i in indices {
        let saved = inputs[i]
        inputs[i] = saved + eps
        let plus = loss(inputs)
        inputs[i] = saved - eps
        let minus = loss(inputs)
        inputs[i] = saved
        let numeric = (plus - minus) / Double(2 * eps)
        let a = Double(analytic[i])
        if a != 0 { nonzero += 1 }
        XCTAssertLessThanOrEqual(abs(numeric - a), tolerance * max(1, abs(a)),
                                 "\(name)[\(i)]: finite difference \(numeric) vs analytic \(a)", file: file, line: line)
    }
    XCTAssertGreaterThan(nonzero, 0, "\(name): all sampled gradients are zero", file: file, line: line)
}

func weightedSum(_ y: [Float], _ r: [Float]) -> Double {
    var s = 0.0
    for i in 0..<y.count { s += Double(y[i]) * Double(r[i]) }
    return s
}

final class KernelTests: XCTestCase {
    /// The four-chain maximum equals a plain scan for every length (the
    /// 32-wide body, the 8-wide loop and the tail), wherever the largest
    /// value sits, masked (−inf) entries included; an empty range is −inf.
    func testMaximumMatchesAPlainScan() {
        for count in [0, 1, 7, 8, 9, 31, 32, 33, 40, 63, 64, 100, 4099] {
            var row = randomValues(count, seed: UInt64(count + 11))
            for i in stride(from: 0, to: count, by: 5) { row[i] = -.infinity }
            for position in Set([0, count / 2, count - 1]) where count > 0 {
                var r = row
                r[position] = 50
                let plain = r.reduce(-Float.infinity) { max($0, $1) }
                XCTAssertEqual(r.withUnsafeBufferPointer { maximum($0.baseAddress!, 0..<count) }, plain, "count \(count), largest at \(position)")
                if count > 3 {
                    XCTAssertEqual(r.withUnsafeBufferPointer { maximum($0.baseAddress!, 2..<count - 1) }, r[2..<count - 1].max()!,
                                   "count \(count), range 2..<\(count - 1)")
                }
            }
        }
        XCTAssertEqual([Float(1)].withUnsafeBufferPointer { maximum($0.baseAddress!, 0..<0) }, -.infinity)
    }

    /// RMSNorm's sum of squares (four chains) is the row's Σx² to float
    /// accuracy, and the optional copy is the input row for row.
    func testRMSNormScalesAndCopiesEveryRow() {
        for dim in [19, 32, 72, 256] {
            let rows = 3, x = randomValues(rows * dim, seed: UInt64(dim))
            let w = randomValues(dim, seed: 2).map { 1 + 0.3 * $0 }
            var y = [Float](repeating: 0, count: rows * dim), rstd = [Float](repeating: 0, count: rows), copy = y
            rmsNormForward(x: x, weight: w, rows: rows, dim: dim, eps: 1e-5, out: &y, rstd: &rstd, copy: &copy)
            XCTAssertEqual(copy.map(\.bitPattern), x.map(\.bitPattern), "dim \(dim)")
            for r in 0..<rows {
                let ms = (0..<dim).map { Double(x[r * dim + $0]) * Double(x[r * dim + $0]) }.reduce(0, +) / Double(dim)
                XCTAssertEqual(Double(rstd[r]), 1 / (ms + 1e-5).squareRoot(), accuracy: 1e-6 / ms.squareRoot(), "dim \(dim) row \(r)")
                for i in 0..<dim { XCTAssertEqual(y[r * dim + i], w[i] * (x[r * dim + i] * rstd[r]), "dim \(dim) row \(r) col \(i)") }
            }
        }
    }

    func testRMSNormGradients() {
        let rows = 3, dim = 19
        var x = randomValues(rows * dim, seed: 1)
        var w = randomValues(dim, seed: 2).map { 1 + 0.3 * $0 }
        let r = randomValues(rows * dim, seed: 3)
        func forward(_ x: [Float], _ w: [Float]) -> [Float] {
            var y = [Float](repeating: 0, count: rows * dim), rstd = [Float](repeating: 0, count: rows)
            rmsNormForward(x: x, weight: w, rows: rows, dim: dim, eps: 1e-5, out: &y, rstd: &rstd)
            return y
        }
        var rstd = [Float](repeating: 0, count: rows), y = [Float](repeating: 0, count: rows * dim)
        rmsNormForward(x: x, weight: w, rows: rows, dim: dim, eps: 1e-5, out: &y, rstd: &rstd)
        // The output is normalised: mean((y/w)²) = 1 per row.
        let meanSquare = (0..<dim).map { Double(y[$0] / w[$0]) * Double(y[$0] / w[$0]) }.reduce(0, +) / Double(dim)
        XCTAssertEqual(meanSquare, 1, accuracy: 1e-3)
        var dx = [Float](repeating: 0.5, count: rows * dim), dw = [Float](repeating: 0.25, count: dim)
        rmsNormBackward(dOut: r, x: x, weight: w, rstd: rstd, rows: rows, dim: dim, dX: &dx, dWeight: &dw)
        // Backward accumulates onto what was there.
        let dxOnly = dx.map { $0 - 0.5 }, dwOnly = dw.map { $0 - 0.25 }
        let wCopy = w, xCopy = x
        finiteDifferenceCheck(name: "rmsnorm dx", inputs: &x, analytic: dxOnly) { weightedSum(forward($0, wCopy), r) }
        finiteDifferenceCheck(name: "rmsnorm dw", inputs: &w, analytic: dwOnly) { weightedSum(forward(xCopy, $0), r) }
    }

    func testSwiGLUGradients() {
        let n = 37
        var g = randomValues(n, seed: 4, std: 2), u = randomValues(n, seed: 5)
        let r = randomValues(n, seed: 6)
        func forward(_ g: [Float], _ u: [Float]) -> [Float] {
            var y = [Float](repeating: 0, count: n)
            swigluForward(gate: g, up: u, count: n, out: &y)
            return y
        }
        let y = forward(g, u)
        for i in 0..<n { XCTAssertEqual(y[i], g[i] / (1 + exp(-g[i])) * u[i], accuracy: 1e-5 * max(1, abs(y[i]))) }
        var dg = [Float](repeating: 0, count: n), du = [Float](repeating: 0, count: n)
        swigluBackward(gate: g, up: u, dOut: r, count: n, dGate: &dg, dUp: &du)
        let uc = u, gc = g
        finiteDifferenceCheck(name: "swiglu dgate", inputs: &g, analytic: dg, sample: n) { weightedSum(forward($0, uc), r) }
        finiteDifferenceCheck(name: "swiglu dup", inputs: &u, analytic: du, sample: n) { weightedSum(forward(gc, $0), r) }
    }

    /// The fused recompute-and-backward kernel gives swigluForward's output
    /// and swigluBackward's gradients bit for bit (vector body and tail).
    func testSwiGLURecomputeBackwardMatchesForwardThenBackward() {
        let n = 45
        let g = randomValues(n, seed: 7, std: 3), u = randomValues(n, seed: 8), d = randomValues(n, seed: 9)
        var y = [Float](repeating: 0, count: n), dg = y, du = y
        swigluForward(gate: g, up: u, count: n, out: &y)
        swigluBackward(gate: g, up: u, dOut: d, count: n, dGate: &dg, dUp: &du)
        var fy = [Float](repeating: .nan, count: n), fdg = fy, fdu = fy
        swigluRecomputeBackward(gate: g, up: u, dOut: d, count: n, out: &fy, dGate: &fdg, dUp: &fdu)
        XCTAssertEqual(fy.map(\.bitPattern), y.map(\.bitPattern))
        XCTAssertEqual(fdg.map(\.bitPattern), dg.map(\.bitPattern))
        XCTAssertEqual(fdu.map(\.bitPattern), du.map(\.bitPattern))
        XCTAssertTrue(fdg.contains { $0 != 0 })
    }

    func testRopeBackwardIsTheTransposeForEachScaling() throws {
        let scalings: [RopeScaling?] = [nil, RopeScaling(type: .linear, factor: 3),
                                        RopeScaling(type: .dynamic, factor: 2),
                                        RopeScaling(type: .yarn, factor: 4, originalMaxPositionEmbeddings: 8)]
        for scaling in scalings {
            var config = LlamaConfig(vocabSize: 8, hiddenSize: 24, intermediateSize: 8, numHiddenLayers: 1,
                                     numAttentionHeads: 2, maxPositionEmbeddings: 8, ropeScaling: scaling)
            config.ropeTheta = 1000
            try config.validate()
            let rows = 5, heads = 2, D = 12
            let positions: [Int32] = [0, 3, 9, 14, 2]
            let freqs = RopeFrequencies(config: config, sequenceLength: 15)
            let (c, s) = freqs.tables(positions: positions)
            var x = randomValues(rows * heads * D, seed: 8)
            let r = randomValues(rows * heads * D, seed: 9)
            func forward(_ x: [Float]) -> [Float] { var y = x; ropeForward(x: &y, rows: rows, heads: heads, headDim: D, cos: c, sin: s); return y }
            var dx = r
            ropeBackward(dX: &dx, rows: rows, heads: heads, headDim: D, cos: c, sin: s)
            finiteDifferenceCheck(name: "rope \(String(describing: scaling?.type))", inputs: &x, analytic: dx) { weightedSum(forward($0), r) }
            // Rotation preserves the norm (scaled by YaRN's attention factor).
            let y = forward(x)
            let k = Double(freqs.attentionScaling)
            XCTAssertEqual(weightedSum(y, y), k * k * weightedSum(x, x), accuracy: 1e-3 * weightedSum(x, x))
        }
    }

    /// RoPE on heads that are the first columns of wider rows (`stride`, as
    /// in the fused [q | k | v] rows): those columns equal the dense result,
    /// the rest of each row is untouched, forward and backward.
    func testRopeWithARowStrideRotatesOnlyItsColumns() {
        let config = LlamaConfig(vocabSize: 8, hiddenSize: 24, intermediateSize: 8, numHiddenLayers: 1,
                                 numAttentionHeads: 2, maxPositionEmbeddings: 16)
        let rows = 6, heads = 2, D = 12, width = heads * D, stride = width + 17
        let (c, s) = RopeFrequencies(config: config, sequenceLength: 16).tables(positions: [0, 1, 5, 9, 2, 15])
        let dense = randomValues(rows * width, seed: 21)
        var wide = randomValues(rows * stride, seed: 22)
        for r in 0..<rows { for i in 0..<width { wide[r * stride + i] = dense[r * width + i] } }
        for backward in [false, true] {
            var d = dense, w = wide
            if backward {
                ropeBackward(dX: &d, rows: rows, heads: heads, headDim: D, cos: c, sin: s)
                ropeBackward(dX: &w, rows: rows, heads: heads, headDim: D, stride: stride, cos: c, sin: s)
            } else {
                ropeForward(x: &d, rows: rows, heads: heads, headDim: D, cos: c, sin: s)
                ropeForward(x: &w, rows: rows, heads: heads, headDim: D, stride: stride, cos: c, sin: s)
            }
            XCTAssertNotEqual(d, dense, "rotated")
            func columns(_ m: [Float], _ from: Int, _ to: Int) -> [Float] {
                var values: [Float] = []
                for r in 0..<rows { values += m[(r * stride + from)..<(r * stride + to)] }
                return values
            }
            XCTAssertEqual(columns(w, 0, width), d, "backward \(backward)")
            XCTAssertEqual(columns(w, width, stride), columns(wide, width, stride), "backward \(backward): spare columns")
        }
    }

    func testRopeFrequenciesFollowTransformersFormulas() {
        var c = LlamaConfig(vocabSize: 8, hiddenSize: 64, intermediateSize: 8, numHiddenLayers: 1, numAttentionHeads: 4,
                            maxPositionEmbeddings: 16)
        let base = RopeFrequencies(config: c, sequenceLength: 8).inverseFrequencies
        XCTAssertEqual(base.count, 8)
        XCTAssertEqual(base[0], 1)
        XCTAssertEqual(base[1], 1 / powf(10000, 2 / 16), accuracy: 1e-7)
        c.ropeScaling = RopeScaling(type: .linear, factor: 4)
        XCTAssertEqual(RopeFrequencies(config: c, sequenceLength: 8).inverseFrequencies, base.map { $0 / 4 })
        c.ropeScaling = RopeScaling(type: .dynamic, factor: 2)
        XCTAssertEqual(RopeFrequencies(config: c, sequenceLength: 16).inverseFrequencies, base, "no change within max positions")
        let dyn = RopeFrequencies(config: c, sequenceLength: 32).inverseFrequencies
        let newBase = 10000 * pow(2.0 * 32 / 16 - 1, 16.0 / 14.0)
        XCTAssertEqual(dyn[1], 1 / powf(Float(newBase), 2 / 16), accuracy: 1e-7)
        c.ropeScaling = RopeScaling(type: .yarn, factor: 4, originalMaxPositionEmbeddings: 16)
        let yarn = RopeFrequencies(config: c, sequenceLength: 8)
        XCTAssertEqual(yarn.attentionScaling, Float(0.1 * log(4.0) + 1), accuracy: 1e-7)
        XCTAssertEqual(yarn.inverseFrequencies[0], base[0], "high frequencies extrapolate")
        XCTAssertEqual(yarn.inverseFrequencies[7], base[7] / 4, accuracy: 1e-9, "low frequencies interpolate")
    }

    func testCrossEntropyGradientAndIgnoreIndex() {
        let rows = 4, vocab = 11
        var logits = randomValues(rows * vocab, seed: 10, std: 2)
        let targets: [Int32] = [3, ignoreIndex, 10, 0]
        func loss(_ l: [Float]) -> Double {
            var copy = l
            return crossEntropy(logits: &copy, targets: targets, rows: rows, vocab: vocab, gradientScale: nil).sum
        }
        var grad = logits
        let r = crossEntropy(logits: &grad, targets: targets, rows: rows, vocab: vocab, gradientScale: 1)
        XCTAssertEqual(r.count, 3)
        // Row 0 by hand.
        let m = logits[0..<vocab].max()!
        let lse = Double(m) + log(logits[0..<vocab].map { exp(Double($0 - m)) }.reduce(0, +))
        var row0 = logits
        let first = crossEntropy(logits: &row0, targets: [3, ignoreIndex, ignoreIndex, ignoreIndex], rows: rows, vocab: vocab, gradientScale: nil)
        XCTAssertEqual(first.sum, lse - Double(logits[3]), accuracy: 1e-5)
        XCTAssertTrue(grad[vocab..<(2 * vocab)].allSatisfy { $0 == 0 }, "ignored row has zero gradient")
        finiteDifferenceCheck(name: "cross-entropy", inputs: &logits, analytic: grad, sample: 30, loss: loss)
    }

    func testEmbeddingBackwardScatterAdds() {
        let vocab = 5, dim = 3
        let table = randomValues(vocab * dim, seed: 11)
        let tokens: [Int32] = [2, 4, 2]
        var out = [Float](repeating: 0, count: 3 * dim)
        embeddingForward(tokens: tokens, count: 3, table: table, vocab: vocab, dim: dim, out: &out)
        XCTAssertEqual(Array(out[3..<6]), Array(table[12..<15]))
        let dOut = randomValues(3 * dim, seed: 12)
        var dTable = [Float](repeating: 0, count: vocab * dim)
        embeddingBackward(tokens: tokens, count: 3, dOut: dOut, dim: dim, dTable: &dTable)
        for d in 0..<dim {
            XCTAssertEqual(dTable[2 * dim + d], dOut[d] + dOut[2 * dim + d])
            XCTAssertEqual(dTable[4 * dim + d], dOut[dim + d])
            XCTAssertEqual(dTable[d], 0)
        }
    }
}
