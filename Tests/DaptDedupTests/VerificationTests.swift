import DaptCluster
import DaptCore
@testable import DaptDedup
import Foundation
import XCTest
import DaptTestSupport

/// The hybrid verification rule and the single-pass re-reading of lines.
final class VerificationTests: XCTestCase {
    func temporaryDirectory() throws -> String { try DaptTestSupport.temporaryDirectory(self, prefix: "dedup-verify") }

    struct Run { var report: DedupReport; var removed: [[String: Any]] }

    func run(_ inputs: [String], _ config: DedupConfig, out: String) throws -> Run {
        let comm = SingleRankCommunicator()
        let job = DedupJob(config: config, inputs: inputs, outputDirectory: out, communicator: comm,
                           exchange: RecordExchange(transport: SelfOnlyTransport(), communicator: comm))
        let report = try job.run()
        let text = try String(contentsOfFile: "\(out)/removed.jsonl", encoding: .utf8)
        let removed = text.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        return Run(report: report, removed: removed)
    }

    func testHybridRuleBands() {
        let rule = VerificationRule(mode: "hybrid", threshold: 0.85, numPerm: 128, sigmas: 3)
        XCTAssertEqual(rule.margin, 3 * (0.85 * 0.15 / 128).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(rule.margin, 0.0947, accuracy: 1e-4)
        XCTAssertEqual(rule.decide(estimate: 1.0), .accept)
        XCTAssertEqual(rule.decide(estimate: 0.95), .accept)
        XCTAssertEqual(rule.decide(estimate: 0.94), .exact)
        XCTAssertEqual(rule.decide(estimate: 0.85), .exact)
        XCTAssertEqual(rule.decide(estimate: 0.76), .exact)
        XCTAssertEqual(rule.decide(estimate: 0.75), .reject)
        XCTAssertEqual(rule.decide(estimate: 0.2), .reject)
        // More sigmas widen the band; zero sigmas is the estimated rule.
        let wide = VerificationRule(mode: "hybrid", threshold: 0.85, numPerm: 128, sigmas: 5)
        XCTAssertEqual(wide.decide(estimate: 0.95), .exact)
        let none = VerificationRule(mode: "hybrid", threshold: 0.85, numPerm: 128, sigmas: 0)
        XCTAssertEqual(none.decide(estimate: 0.85), .accept)
        XCTAssertEqual(none.decide(estimate: 0.8499), .reject)
        let estimated = VerificationRule(mode: "estimated", threshold: 0.85, numPerm: 128, sigmas: 3)
        XCTAssertEqual(estimated.decide(estimate: 0.86), .accept)
        XCTAssertEqual(estimated.decide(estimate: 0.84), .reject)
        XCTAssertFalse(estimated.needsText)
        let exact = VerificationRule(mode: "exact", threshold: 0.85, numPerm: 128, sigmas: 3)
        XCTAssertEqual(exact.decide(estimate: 1.0), .exact)
        XCTAssertEqual(exact.decide(estimate: 0.0), .exact)
        XCTAssertEqual(DedupConfig().verify, "hybrid")
        XCTAssertEqual(try ConfigLoader.decode(DedupConfig.self, yaml: "hybrid_sigmas: 2.5\n").hybridSigmas, 2.5)
        var bad = DedupConfig()
        bad.verify = "guess"
        XCTAssertThrowsError(try bad.validate())
    }

    /// Text from a seeded PRNG over 2000 common ideographs.
    static func randomText(_ rng: inout SplitMix64, length: Int) -> [Unicode.Scalar] {
        (0..<length).map { _ in Unicode.Scalar(0x4E00 + UInt32(rng.next() % 2000))! }
    }

    struct Measured { var text: String; var exact: Double; var estimate: Double }

    /// Variants of `base` with a few substituted characters, with their exact
    /// and estimated Jaccard to it (dapt's shingles and MinHash, seed 42).
    static func firstVariant(of base: [Unicode.Scalar], where accept: (Measured) -> Bool) -> Measured? {
        let config = DedupConfig()
        let hasher = MinHasher(numPerm: config.numPerm, seed: 42)
        func shingles(_ s: String) -> [UInt64] {
            var scalars: [UInt32] = [], h: [UInt64] = []
            TextNormalizer.normalize(TextNormalizer.nfc(s), into: &scalars)
            Shingler.hashes(scalars, size: config.shingleSize, seed: 42, into: &h)
            return Shingler.set(h)
        }
        let baseText = String(String.UnicodeScalarView(base))
        let baseSet = shingles(baseText)
        let baseSig = hasher.signature(of: baseSet)
        var rng = SplitMix64(seed: 7)
        for _ in 0..<5000 {
            var v = base
            let edits = 5 + Int(rng.next() % 6)
            for _ in 0..<edits { v[Int(rng.next() % UInt64(v.count))] = Unicode.Scalar(0x4E00 + UInt32(rng.next() % 2000))! }
            let text = String(String.UnicodeScalarView(v))
            let set = shingles(text)
            let m = Measured(text: text, exact: Shingler.jaccard(baseSet, set),
                             estimate: MinHasher.estimatedJaccard(baseSig, hasher.signature(of: set)))
            if accept(m) { return m }
        }
        return nil
    }

    /// A pair just below the threshold whose estimate is above it is rejected
    /// by the hybrid rule (the exact Jaccard decides); a pair just above it
    /// whose estimate is below it is kept. The estimated rule gets both wrong.
    func testHybridDecidesNearThresholdByExactJaccard() throws {
        let t = 0.85
        let margin = VerificationRule(mode: "hybrid", threshold: t, numPerm: 128, sigmas: 3).margin
        var rng = SplitMix64(seed: 1)
        let baseA = Self.randomText(&rng, length: 400), baseB = Self.randomText(&rng, length: 400)
        let below = try XCTUnwrap(Self.firstVariant(of: baseA) { $0.exact < t && $0.exact > t - 0.04 && $0.estimate >= t && $0.estimate < t + margin })
        let above = try XCTUnwrap(Self.firstVariant(of: baseB) { $0.exact >= t && $0.exact < t + 0.04 && $0.estimate < t && $0.estimate >= t - margin })
        let dir = try temporaryDirectory()
        let input = "\(dir)/in.jsonl"
        let lines = [DedupJobTests.record("a", String(String.UnicodeScalarView(baseA))), DedupJobTests.record("a2", below.text),
                     DedupJobTests.record("b", String(String.UnicodeScalarView(baseB))), DedupJobTests.record("b2", above.text)]
        try (lines.joined(separator: "\n") + "\n").write(toFile: input, atomically: true, encoding: .utf8)

        func removed(_ verify: String) throws -> (ids: [String: Double], report: DedupReport) {
            var config = DedupConfig()
            config.verify = verify
            config.bands = 128; config.rows = 1  // every pair sharing one minimum is a candidate
            config.sampleSize = 0
            let out = try run([input], config, out: "\(dir)/out-\(verify)")
            var ids: [String: Double] = [:]
            for r in out.removed { ids[r["id"] as! String] = r["similarity"] as? Double }
            return (ids, out.report)
        }
        let hybrid = try removed("hybrid")
        XCTAssertNil(hybrid.ids["a2"], "J = \(below.exact) < \(t), estimate \(below.estimate): must be kept")
        XCTAssertEqual(try XCTUnwrap(hybrid.ids["b2"]), above.exact, accuracy: 5e-5, "J = \(above.exact) ≥ \(t): removed, exact similarity")
        XCTAssertEqual(hybrid.report.exactComparisons, 2, "only the two near-threshold pairs are checked exactly")
        let estimated = try removed("estimated")
        XCTAssertEqual(try XCTUnwrap(estimated.ids["a2"]), below.estimate, accuracy: 5e-5)
        XCTAssertNil(estimated.ids["b2"])
        XCTAssertEqual(estimated.report.exactComparisons, 0)
        let exact = try removed("exact")
        XCTAssertEqual(Set(exact.ids.keys), ["b2"])
    }

    /// Far from the threshold the hybrid rule does not touch the texts.
    func testHybridFarFromThresholdUsesSignatureOnly() throws {
        var rng = SplitMix64(seed: 3)
        let base = Self.randomText(&rng, length: 400)
        let near = try XCTUnwrap(Self.firstVariant(of: base) { $0.estimate >= 0.95 && $0.exact >= 0.85 })
        let dir = try temporaryDirectory()
        let input = "\(dir)/in.jsonl"
        try ([DedupJobTests.record("x", String(String.UnicodeScalarView(base))), DedupJobTests.record("y", near.text)]
             .joined(separator: "\n") + "\n").write(toFile: input, atomically: true, encoding: .utf8)
        var config = DedupConfig()
        config.sampleSize = 0
        let out = try run([input], config, out: "\(dir)/out")
        XCTAssertEqual(out.report.exactComparisons, 0)
        XCTAssertEqual(out.removed.count, 1)
        XCTAssertEqual(out.removed.first?["similarity"] as? Double ?? 0, near.estimate, accuracy: 5e-5)
    }

    func testLineFetcherReadsAscendingLinesInOnePass() throws {
        let dir = try temporaryDirectory()
        let path = "\(dir)/lines.txt"
        var content = "", offsets: [(Int, Int)] = []
        for k in 0..<3000 {
            let line = "line \(k) " + String(repeating: "x", count: k % 37)
            offsets.append((content.utf8.count, line.utf8.count))
            content += line + "\n"
        }
        try content.write(toFile: path, atomically: true, encoding: .utf8)
        let fetcher = LineFetcher(paths: [path], windowBytes: 8192)
        var wanted = 0
        for k in stride(from: 0, to: 3000, by: 3) {
            let text = try fetcher.withLine(file: 0, offset: offsets[k].0, length: offsets[k].1) { String(decoding: $0, as: UTF8.self) }
            XCTAssertTrue(text.hasPrefix("line \(k) "), text)
            wanted += 1
        }
        XCTAssertEqual(fetcher.opens, 1)
        XCTAssertEqual(fetcher.lines, wanted)
        // One read per window of the file, not one per line.
        XCTAssertLessThanOrEqual(fetcher.reads, content.utf8.count / 8192 + 2, "reads \(fetcher.reads) for \(wanted) lines")
        // A line longer than the window is still read whole.
        let long = LineFetcher(paths: [path], windowBytes: 16)
        XCTAssertEqual(try long.withLine(file: 0, offset: offsets[2999].0, length: offsets[2999].1) { $0.count }, offsets[2999].1)
        let missing = LineFetcher(paths: ["\(dir)/none"])
        XCTAssertThrowsError(try missing.withLine(file: 0, offset: 0, length: 1) { $0.count })
    }

    /// Exact verification re-reads the input through one open descriptor and
    /// a few large reads, whatever the number of records it compares.
    func testExactVerificationRereadsInputSequentially() throws {
        let dir = try temporaryDirectory()
        let fixture = try XCTUnwrap(Bundle.module.path(forResource: "labelled", ofType: "jsonl", inDirectory: "Fixtures"))
        var config = DedupConfig()
        config.verify = "exact"
        config.sampleSize = 0
        let comm = SingleRankCommunicator()
        let job = DedupJob(config: config, inputs: [fixture], outputDirectory: dir, communicator: comm,
                           exchange: RecordExchange(transport: SelfOnlyTransport(), communicator: comm))
        let report = try job.run()
        XCTAssertGreaterThan(report.exactComparisons, 50)
        XCTAssertEqual(job.fetcher.opens, 1)
        XCTAssertGreaterThan(job.fetcher.lines, 100)
        // The fixture (360 KB) fits one 1 MiB window: each pass over it
        // (verification: senders, then receivers; representatives: the same)
        // costs a read or two, not one per line.
        XCTAssertLessThanOrEqual(job.fetcher.reads, 16, "\(job.fetcher.reads) reads for \(job.fetcher.lines) lines")
        XCTAssertGreaterThanOrEqual(job.fetcher.lines, 5 * job.fetcher.reads)
    }
}
