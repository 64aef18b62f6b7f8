import DaptCore
import DaptTrain
import Foundation
import XCTest

final class OptimizerTests: XCTestCase {
    struct Fixture: Decodable {
        struct Step: Decodable { var lr: Double; var loss: Double; var grad_norm: Double; var weight: [Float]; var norm: [Float] }
        var batch: Int; var `in`: Int; var out: Int
        var peak_lr: Double; var floor_ratio: Double; var warmup_ratio: Double; var max_norm: Float
        var beta1: Float; var beta2: Float; var eps: Float; var weight_decay: Float
        var x: [Float]; var y: [Float]; var `init`: [String: [Float]]; var steps: [Step]
    }

    static func fixture(_ name: String) throws -> URL {
        try XCTUnwrap(Bundle.module.url(forResource: "Fixtures/" + name, withExtension: nil))
    }

    func relativeError(_ a: Double, _ b: Double) -> Double { abs(a - b) / max(abs(b), 1e-6) }

    /// The whole recipe (loss → grads → clip → AdamW with warmup+cosine) against
    /// torch.optim.AdamW, with learning rates from transformers' scheduler.
    func testAdamWMatchesTorch() throws {
        let f = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: Self.fixture("adamw.json")))
        let B = f.batch, I = f.in, O = f.out
        let wCount = O * I
        var params = f.`init`["weight"]! + f.`init`["norm"]!
        var grads = [Float](repeating: 0, count: params.count)
        let optimizer = AdamW(count: params.count,
                              segments: [DecaySegment(range: 0..<wCount, decay: true), DecaySegment(range: wCount..<(wCount + I), decay: false)],
                              hyper: AdamWHyperparameters(beta1: f.beta1, beta2: f.beta2, epsilon: f.eps, weightDecay: f.weight_decay))
        let schedule = LearningRateSchedule(peak: f.peak_lr, floorRatio: f.floor_ratio, warmupRatio: f.warmup_ratio, totalSteps: f.steps.count)
        for (step, expected) in f.steps.enumerated() {
            // loss = mean((x ⊙ n) Wᵀ - y)², gradients by hand.
            var loss = 0.0
            var dW = [Float](repeating: 0, count: wCount), dN = [Float](repeating: 0, count: I)
            for b in 0..<B {
                var h = [Float](repeating: 0, count: I)
                for i in 0..<I { h[i] = f.x[b * I + i] * params[wCount + i] }
                for o in 0..<O {
                    var out: Float = 0
                    for i in 0..<I { out += h[i] * params[o * I + i] }
                    let r = out - f.y[b * O + o]
                    loss += Double(r * r)
                    let dOut = 2 * r / Float(B * O)
                    for i in 0..<I {
                        dW[o * I + i] += dOut * h[i]
                        dN[i] += dOut * params[o * I + i] * f.x[b * I + i]
                    }
                }
            }
            loss /= Double(B * O)
            grads = dW + dN
            XCTAssertLessThan(relativeError(loss, expected.loss), 1e-5, "loss at step \(step)")
            XCTAssertLessThan(relativeError(schedule.rate(at: step), expected.lr), 1e-12, "lr at step \(step)")
            let norm = grads.withUnsafeMutableBufferPointer { clipGlobalNorm($0, maxNorm: f.max_norm) }
            XCTAssertLessThan(relativeError(Double(norm), expected.grad_norm), 1e-5, "grad norm at step \(step)")
            params.withUnsafeMutableBufferPointer { p in
                grads.withUnsafeBufferPointer { g in optimizer.step(parameters: p, gradients: g, learningRate: Float(schedule.rate(at: step))) }
            }
            let expectedParams = expected.weight + expected.norm
            for (i, (a, b)) in zip(params, expectedParams).enumerated() {
                // Relative to at least 1e-3: a weight passing near zero (parameter 10
                // reaches 7e-5 at step 5) differs from torch by float32 rounding only.
                XCTAssertLessThan(abs(Double(a) - Double(b)) / max(abs(Double(b)), 1e-3), 1e-5, "parameter \(i) after step \(step): \(a) vs torch \(b)")
            }
        }
        XCTAssertEqual(optimizer.stepCount, f.steps.count)
    }

    func testNormWeightsAreNotDecayed() {
        // Zero gradients: only decay moves a parameter.
        var params: [Float] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
        let grads = [Float](repeating: 0, count: 10)
        let opt = AdamW(count: 10, segments: [DecaySegment(range: 0..<6, decay: true), DecaySegment(range: 6..<10, decay: false)])
        params.withUnsafeMutableBufferPointer { p in grads.withUnsafeBufferPointer { opt.step(parameters: p, gradients: $0, learningRate: 0.5) } }
        for i in 0..<6 { XCTAssertEqual(params[i], 1 - 0.5 * 0.1, accuracy: 1e-7) }
        for i in 6..<10 { XCTAssertEqual(params[i], 1) }
    }

    func testScheduleValues() {
        // The source recipe: lr 1e-4, warmup ratio 0.01 over 1000 steps → 10 warmup steps.
        let s = LearningRateSchedule(peak: 1e-4, floorRatio: 0.1, warmupRatio: 0.01, totalSteps: 1000)
        XCTAssertEqual(s.warmupSteps, 10)
        // Warmup from 0 (as transformers): the peak is reached at step 10.
        XCTAssertEqual(s.rate(at: 0), 0)
        XCTAssertEqual(s.rate(at: 4), 4e-5, accuracy: 1e-15)
        XCTAssertEqual(s.rate(at: 9), 9e-5, accuracy: 1e-15)
        XCTAssertEqual(s.rate(at: 10), 1e-4, accuracy: 1e-15)
        // Half-way through the decay: (peak + floor) / 2.
        XCTAssertEqual(s.rate(at: 505), 0.55e-4, accuracy: 1e-12)
        XCTAssertEqual(s.rate(at: 1000), 1e-5, accuracy: 1e-15)
        XCTAssertEqual(s.rate(at: 5000), 1e-5, accuracy: 1e-15)
        // Monotone after warmup.
        for step in 10..<999 { XCTAssertGreaterThanOrEqual(s.rate(at: step), s.rate(at: step + 1)) }
        // warmup ratio not a whole number of steps rounds up.
        XCTAssertEqual(LearningRateSchedule(peak: 1, floorRatio: 0, warmupRatio: 0.01, totalSteps: 150).warmupSteps, 2)
    }

    func testClipping() {
        var g: [Float] = [3, 4] + [Float](repeating: 0, count: 13)
        let norm = g.withUnsafeMutableBufferPointer { clipGlobalNorm($0, maxNorm: 1) }
        XCTAssertEqual(norm, 5, accuracy: 1e-6)
        XCTAssertEqual(g[0], 0.6, accuracy: 1e-6)
        XCTAssertEqual(g[1], 0.8, accuracy: 1e-6)
        var small: [Float] = [0.3, 0.4]
        _ = small.withUnsafeMutableBufferPointer { clipGlobalNorm($0, maxNorm: 1) }
        XCTAssertEqual(small, [0.3, 0.4])
        var bad: [Float] = [1, .infinity, 2]
        let badNorm = bad.withUnsafeMutableBufferPointer { clipGlobalNorm($0, maxNorm: 1) }
        XCTAssertFalse(badNorm.isFinite)
    }

    /// The clipping coefficient applied as AdamW reads the gradients steps
    /// every element exactly as scaling the buffer first (the trainer's path
    /// against `clipGlobalNorm`'s), vector body and scalar tail alike.
    func testGradientScaleEqualsClippingTheBufferFirst() {
        let segments = [DecaySegment(range: 0..<21, decay: true), DecaySegment(range: 21..<27, decay: false)]
        var rng = SplitMix64(seed: 5)
        func values(_ n: Int) -> [Float] { (0..<n).map { _ in Float(Double(rng.next() % 2001) / 100 - 10) } }
        let start = values(27)
        var clipped = start, scaled = start
        let first = AdamW(count: 27, segments: segments), second = AdamW(count: 27, segments: segments)
        for _ in 0..<3 {
            var g = values(27)
            let raw = g
            let norm = g.withUnsafeMutableBufferPointer { clipGlobalNorm($0, maxNorm: 1) }
            let coefficient = clippingCoefficient(norm: norm, maxNorm: 1)
            XCTAssertLessThan(coefficient, 1, "these gradients are clipped")
            XCTAssertNotEqual(g, raw)
            clipped.withUnsafeMutableBufferPointer { p in g.withUnsafeBufferPointer { first.step(parameters: p, gradients: $0, learningRate: 0.01) } }
            scaled.withUnsafeMutableBufferPointer { p in
                raw.withUnsafeBufferPointer { second.step(parameters: p, gradients: $0, learningRate: 0.01, gradientScale: coefficient) }
            }
        }
        XCTAssertEqual(scaled, clipped)
        XCTAssertEqual(Array(second.firstMoment), Array(first.firstMoment))
        XCTAssertEqual(Array(second.secondMoment), Array(first.secondMoment))
        XCTAssertNotEqual(scaled, start)
        // No clipping below the limit, for a non-finite norm, or with maxNorm 0.
        XCTAssertEqual(clippingCoefficient(norm: 0.5, maxNorm: 1), 1)
        XCTAssertEqual(clippingCoefficient(norm: .infinity, maxNorm: 1), 1)
        XCTAssertEqual(clippingCoefficient(norm: 5, maxNorm: 0), 1)
        XCTAssertEqual(clippingCoefficient(norm: 5, maxNorm: 1), 1 / (5 + 1e-6))
    }

    /// ZeRO-1's slices: AdamW over each data rank's slice (decay segments
    /// cut at the slice edges) steps every element exactly as AdamW over the
    /// whole buffer, for slice edges inside and between segments.
    func testAdamWOverSlicesEqualsTheWhole() {
        let segments = [DecaySegment(range: 0..<37, decay: true), DecaySegment(range: 37..<41, decay: false), DecaySegment(range: 41..<100, decay: true)]
        let hyper = AdamWHyperparameters(beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1)
        var rng = SplitMix64(seed: 3)
        func values(_ n: Int) -> [Float] { (0..<n).map { _ in Float(Double(rng.next() % 2001) / 1000 - 1) } }
        let start = values(100)
        let gradients = (0..<3).map { _ in values(100) }
        var whole = start
        let reference = AdamW(count: 100, segments: segments, hyper: hyper)
        for g in gradients {
            whole.withUnsafeMutableBufferPointer { p in g.withUnsafeBufferPointer { reference.step(parameters: p, gradients: $0, learningRate: 0.01) } }
        }
        for ranks in [2, 3, 4, 7] {
            var sharded = start
            for rank in 0..<ranks {
                let owned = dataShare(globalBatch: 100, rank: rank, of: ranks)
                let optimizer = AdamW(range: owned, segments: segments, hyper: hyper)
                XCTAssertEqual(optimizer.count, owned.count)
                for g in gradients {
                    sharded[owned].withUnsafeMutableBufferPointer { p in
                        g[owned].withUnsafeBufferPointer { optimizer.step(parameters: p, gradients: $0, learningRate: 0.01) }
                    }
                }
            }
            XCTAssertEqual(sharded.map(\.bitPattern), whole.map(\.bitPattern), "\(ranks) slices")
        }
        XCTAssertEqual(ZeroSharding.counts(total: 10, ranks: 4), [2, 3, 2, 3])
    }

    /// parallel.zero takes 0 or 1, also with tensor and pipeline
    /// parallelism; parallel.bucket_mb is not negative.
    func testZeroSettingIsChecked() throws {
        var c = PretrainConfig()
        c.parallel.zero = 1
        XCTAssertNoThrow(try c.validate())
        c.parallel.zero = 2
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("parallel.zero: must be in 0...1, got 2"), "\($0)") }
        c.parallel.zero = 1
        c.parallel.tensor = 2
        XCTAssertNoThrow(try c.validate())
        c.parallel.pipeline = 2
        XCTAssertNoThrow(try c.validate())
        c = PretrainConfig()
        XCTAssertEqual(c.parallel.bucketMB, 4)
        c.parallel.bucketMB = -1
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("parallel.bucket_mb: must be >= 0, got -1"), "\($0)") }
        XCTAssertFalse(PretrainConfig().parallel.recompute)
        XCTAssertTrue(try ConfigLoader.decode(PretrainConfig.self, yaml: "parallel:\n  recompute: true\n").parallel.recompute)
        XCTAssertThrowsError(try ConfigLoader.decode(PretrainConfig.self, yaml: "parallel:\n  recompute: 2\n")) {
            XCTAssertTrue("\($0)".contains("parallel.recompute"), "\($0)")
        }
        // Some layers: the first N of each stage, only with recompute: true.
        c = try ConfigLoader.decode(PretrainConfig.self, yaml: "parallel:\n  recompute: true\n  recompute_layers: 3\n")
        XCTAssertEqual(c.parallel.recomputeLayers, 3)
        XCTAssertEqual(c.parallel.recomputedLayers(of: 8), 3)
        XCTAssertEqual(c.parallel.recomputedLayers(of: 2), 2)
        XCTAssertNoThrow(try c.validate())
        c.parallel.recomputeLayers = nil
        XCTAssertEqual(c.parallel.recomputedLayers(of: 8), 8, "unset: all")
        c.parallel.recompute = false
        XCTAssertEqual(c.parallel.recomputedLayers(of: 8), 0)
        c.parallel.recomputeLayers = 2
        XCTAssertThrowsError(try c.validate()) {
            XCTAssertTrue("\($0)".contains("parallel.recompute_layers: 2 given without parallel.recompute: true"), "\($0)")
        }
        c.parallel.recompute = true
        c.parallel.recomputeLayers = 0
        XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains("parallel.recompute_layers"), "\($0)") }
        // What they recompute: whole layers (the default) or their [gate | up] rows.
        XCTAssertEqual(PretrainConfig().parallel.recomputeGranularity, .layer)
        c = try ConfigLoader.decode(PretrainConfig.self, yaml: "parallel:\n  recompute: true\n  recompute_granularity: mlp\n")
        XCTAssertEqual(c.parallel.recomputeGranularity, .mlp)
        XCTAssertNoThrow(try c.validate())
        XCTAssertThrowsError(try ConfigLoader.decode(PretrainConfig.self, yaml: "parallel:\n  recompute: true\n  recompute_granularity: attention\n")) {
            XCTAssertTrue("\($0)".contains("recompute_granularity"), "\($0)")
        }
        c.parallel.recompute = false
        XCTAssertThrowsError(try c.validate()) {
            XCTAssertTrue("\($0)".contains("parallel.recompute_granularity: mlp given without parallel.recompute: true"), "\($0)")
        }
    }
}
