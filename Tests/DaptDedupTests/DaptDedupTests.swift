import DaptCluster
import DaptCore
@testable import DaptDedup
import Foundation
import XCTest

final class NormalizationTests: XCTestCase {
    func normalized(_ s: String) -> String {
        var out: [UInt32] = []
        TextNormalizer.normalize(TextNormalizer.nfc(s), into: &out)
        return String(String.UnicodeScalarView(out.map { Unicode.Scalar($0)! }))
    }

    func testLatinCaseWhitespaceAndPunctuationCollapse() {
        XCTAssertEqual(normalized("  Hello,  World!\n\tStep 1: A-B "), "hello world step 1 a b")
        XCTAssertEqual(normalized("x+y=z"), "x+y=z", "symbols are content, not punctuation")
    }

    func testCJKKeepsIdeographsAndFoldsFullWidthPunctuation() {
        XCTAssertEqual(normalized("步骤S101：将原料，加入。"), "步骤s101 将原料 加入")
        XCTAssertEqual(normalized("ＡＢＣ"), "ａｂｃ", "full-width letters are lower-cased")
    }

    func testNFCBeforeNormalisation() {
        XCTAssertFalse(TextNormalizer.isQuickNFC("Cafe\u{301}"))
        XCTAssertTrue(TextNormalizer.isQuickNFC("步骤S101：“引号”"))
        XCTAssertEqual(TextNormalizer.nfc("Cafe\u{301}").unicodeScalars.map(\.value), "Café".unicodeScalars.map(\.value))
        XCTAssertEqual(normalized("CAFE\u{301}"), "café")
        // One pass refuses non-NFC text so the caller can convert it first.
        var out: [UInt32] = []
        XCTAssertNil(TextNormalizer.normalize("e\u{301}", into: &out, requireQuickNFC: true))
        XCTAssertEqual(TextNormalizer.normalize("步骤ab", into: &out, requireQuickNFC: true), 4)
    }

    func testShingleCountsForCJKAndLatin() {
        var scalars: [UInt32] = [], hashes: [UInt64] = []
        TextNormalizer.normalize("一二三四五六七", into: &scalars)
        Shingler.hashes(scalars, size: 5, seed: 1, into: &hashes)
        XCTAssertEqual(hashes.count, 3)
        XCTAssertEqual(Set(hashes).count, 3)
        TextNormalizer.normalize("abc", into: &scalars)
        Shingler.hashes(scalars, size: 5, seed: 1, into: &hashes)
        XCTAssertEqual(hashes.count, 1, "text shorter than a shingle is one shingle")
        TextNormalizer.normalize("。，！", into: &scalars)
        Shingler.hashes(scalars, size: 5, seed: 1, into: &hashes)
        XCTAssertEqual(hashes.count, 0, "punctuation only: no shingles")
        // "abab ab": repeated shingles hash alike, and the set removes them.
        TextNormalizer.normalize("ababab", into: &scalars)
        Shingler.hashes(scalars, size: 2, seed: 9, into: &hashes)
        XCTAssertEqual(hashes.count, 5)
        XCTAssertEqual(Shingler.set(hashes).count, 2)
        // Seeded: another seed, other hashes; same seed, same hashes.
        var again: [UInt64] = []
        Shingler.hashes(scalars, size: 2, seed: 9, into: &again)
        XCTAssertEqual(hashes, again)
        Shingler.hashes(scalars, size: 2, seed: 10, into: &again)
        XCTAssertNotEqual(hashes, again)
    }

    func testExactJaccard() {
        XCTAssertEqual(Shingler.jaccard([1, 2, 3, 4], [3, 4, 5, 6]), 2.0 / 6.0, accuracy: 1e-12)
        XCTAssertEqual(Shingler.jaccard([], []), 0)
        XCTAssertEqual(Shingler.jaccard([7], [7]), 1)
    }
}

final class MinHashTests: XCTestCase {
    /// Two random sets with exactly `common` shared elements of `size` each.
    func pair(size: Int, common: Int, rng: inout SplitMix64) -> ([UInt64], [UInt64], Double) {
        let shared = (0..<common).map { _ in rng.next() }
        let a = shared + (0..<(size - common)).map { _ in rng.next() }
        let b = shared + (0..<(size - common)).map { _ in rng.next() }
        return (a, b, Double(common) / Double(2 * size - common))
    }

    func testEstimateMatchesExactJaccardWithinTheBinomialBound() {
        let hasher = MinHasher(numPerm: 128, seed: 42)
        var rng = SplitMix64(seed: 7)
        var squaredZ = 0.0
        var trials = 0
        for common in stride(from: 0, through: 400, by: 25) {
            for _ in 0..<12 {
                let (a, b, j) = pair(size: 400, common: common, rng: &rng)
                let est = MinHasher.estimatedJaccard(hasher.signature(of: a), hasher.signature(of: b))
                let sigma = max((j * (1 - j) / 128).squareRoot(), 1.0 / 128)
                XCTAssertLessThan(abs(est - j), 4.5 * sigma + 1e-9, "J=\(j) estimated \(est)")
                squaredZ += (est - j) * (est - j) / (sigma * sigma)
                trials += 1
            }
        }
        // The mean squared standardised error is ~1 for independent permutations.
        let meanSquared = squaredZ / Double(trials)
        XCTAssertLessThan(meanSquared, 1.5, "permutations are correlated: mean z² = \(meanSquared)")
        XCTAssertGreaterThan(meanSquared, 0.4, "suspiciously exact: mean z² = \(meanSquared)")
    }

    func testSignatureIsOrderFreeAndSeeded() {
        let hasher = MinHasher(numPerm: 64, seed: 3)
        let set: [UInt64] = (0..<100).map { StableHash.mix64(UInt64($0)) }
        XCTAssertEqual(hasher.signature(of: set), hasher.signature(of: set.reversed() + set))
        XCTAssertNotEqual(hasher.signature(of: set), MinHasher(numPerm: 64, seed: 4).signature(of: set))
        XCTAssertEqual(hasher.signature(of: []), [UInt32](repeating: .max, count: 64))
        // The kernel agrees with the formula, lane by lane (tail vectors included).
        let odd = MinHasher(numPerm: 40, seed: 11)
        let sig = odd.signature(of: set)
        let a = odd.multipliers.flatMap { v in (0..<8).map { v[$0] } }, b = odd.offsets.flatMap { v in (0..<8).map { v[$0] } }
        for i in 0..<40 {
            XCTAssertEqual(sig[i], set.map { a[i] &* UInt32(truncatingIfNeeded: $0 >> 32) &+ b[i] }.min()!)
        }
    }

    func testBandKeysDifferByBand() {
        let keys = BandKeys(bands: 4, rows: 2, seed: 1)
        let sig: [UInt32] = [5, 5, 5, 5, 5, 5, 5, 5]
        let all = sig.withUnsafeBufferPointer { s in (0..<4).map { keys.key(s, band: $0) } }
        XCTAssertEqual(Set(all).count, 4, "equal rows in different bands must not collide")
    }
}

final class BandingTests: XCTestCase {
    func testSCurve() {
        XCTAssertEqual(LSHBanding.probability(similarity: 0.9, bands: 5, rows: 25), 0.311, accuracy: 0.001)
        XCTAssertEqual(LSHBanding.probability(similarity: 0.5, bands: 1, rows: 1), 0.5, accuracy: 1e-12)
        XCTAssertEqual(LSHBanding.probability(similarity: 0.5, bands: 2, rows: 1), 0.75, accuracy: 1e-12)
        XCTAssertEqual(LSHBanding.probability(similarity: 0, bands: 16, rows: 8), 0)
        XCTAssertEqual(LSHBanding.probability(similarity: 1, bands: 16, rows: 8), 1)
    }

    func testChoiceMeetsTheRecallTargetWithFewestFalsePositives() {
        for t in [0.7, 0.8, 0.85, 0.9, 0.95] {
            let c = LSHBanding.choose(threshold: t, numPerm: 128, targetRecall: 0.99)
            XCTAssertLessThanOrEqual(c.bands * c.rows, 128)
            XCTAssertGreaterThanOrEqual(c.recallAtThreshold, 0.99, "t=\(t) \(c)")
            // No other feasible choice has less false-positive mass.
            for r in 1...128 { for b in 1...(128 / r) {
                let o = LSHBanding.Choice(bands: b, rows: r, threshold: t)
                if o.recallAtThreshold >= 0.99 { XCTAssertGreaterThanOrEqual(o.falsePositiveMass, c.falsePositiveMass - 1e-12) }
            } }
        }
        let c = LSHBanding.choose(threshold: 0.9, numPerm: 128, targetRecall: 0.99)
        XCTAssertGreaterThan(c.recallAtThreshold, 3 * LSHBanding.probability(similarity: 0.9, bands: 5, rows: 25))
    }

    func testConfigBandingAndValidation() throws {
        var config = DedupConfig()
        XCTAssertEqual(config.effectiveThreshold, 0.85)
        config.preset = "web"
        XCTAssertEqual(config.effectiveThreshold, 0.8)
        config.threshold = 0.9
        XCTAssertEqual(config.effectiveThreshold, 0.9)
        config.bands = 4; config.rows = 32
        XCTAssertEqual(config.banding.bands, 4)
        XCTAssertNoThrow(try config.validate())
        config.rows = 33
        XCTAssertThrowsError(try config.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "bands") }
        XCTAssertThrowsError(try ConfigLoader.decode(DedupConfig.self, yaml: "treshold: 0.8")) {
            XCTAssertEqual(($0 as? ConfigError)?.field, "treshold")
        }
        let decoded = try ConfigLoader.decode(DedupConfig.self, yaml: "preset: code\nnum_perm: 64\nverify: exact\n")
        XCTAssertEqual(decoded.numPerm, 64)
        XCTAssertEqual(decoded.verify, "exact")
        XCTAssertThrowsError(try ConfigLoader.decode(DedupConfig.self, yaml: "num_perm: 100").validate())
    }
}

final class ClusterTests: XCTestCase {
    func testUnionFind() {
        var uf = UnionFind(count: 6)
        XCTAssertTrue(uf.union(0, 1))
        XCTAssertTrue(uf.union(2, 3))
        XCTAssertTrue(uf.union(1, 3))
        XCTAssertFalse(uf.union(0, 2))
        XCTAssertEqual(uf.find(0), uf.find(3))
        XCTAssertNotEqual(uf.find(0), uf.find(4))
        XCTAssertNotEqual(uf.find(4), uf.find(5))
    }

    func testRepresentativeIsLongestThenEarliest() {
        func p(_ a: Int64, _ b: Int64, _ la: Int32, _ lb: Int32) -> VerifiedPair {
            VerifiedPair(a: a, b: b, lengthA: la, lengthB: lb, similarity: 0.9, exact: false)
        }
        let graph = ClusterGraph(pairs: [p(5, 9, 100, 120), p(1, 5, 120, 100), p(20, 30, 50, 50), p(40, 41, 7, 8)])
        XCTAssertEqual(graph.components.map(\.representative), [1, 20, 41])
        XCTAssertEqual(graph.components[0].members, [1, 5, 9])
        XCTAssertEqual(graph.nodes, [1, 5, 9, 20, 30, 40, 41])
        XCTAssertTrue(graph.contains(30))
        XCTAssertFalse(graph.contains(31))
        let pair = p(3, 4, 10, 11)
        XCTAssertEqual(VerifiedPair(encoded: pair.encoded), pair)
    }

    func testWilsonInterval() {
        let zero = WilsonInterval.bounds(successes: 0, trials: 1000, confidence: 0.95)
        XCTAssertEqual(zero.lower, 0, accuracy: 1e-12)
        XCTAssertEqual(zero.upper, 0.00383, accuracy: 0.00002)
        let half = WilsonInterval.bounds(successes: 50, trials: 100, confidence: 0.95)
        XCTAssertEqual(half.lower, 0.4038, accuracy: 0.0002)
        XCTAssertEqual(half.upper, 0.5962, accuracy: 0.0002)
        XCTAssertEqual(WilsonInterval.normalQuantile(0.975), 1.959964, accuracy: 1e-5)
    }
}

final class JSONLineTests: XCTestCase {
    func scan(_ s: String) throws -> ScannedRecord {
        var scanner = JSONLineScanner()
        return try Array(s.utf8).withUnsafeBufferPointer { b throws(RecordProblem) in try scanner.scan(b) }
    }

    func problem(_ s: String) -> RecordProblem? {
        do { _ = try scan(s); return nil } catch { return error as? RecordProblem }
    }

    func testFieldsEscapesAndTokens() throws {
        let line = #"{"meta":{"a":[1,2,{"b":null}]},"id":"CN1-step1-1-1","text":"a\"b\\c\u00e9\ud83d\ude00\n","hash":"sha1:x","n":-1.5e3}"#
        let r = try scan(line)
        XCTAssertEqual(String(decoding: Array(line.utf8)[r.idToken], as: UTF8.self), "\"CN1-step1-1-1\"")
        XCTAssertEqual(r.text, "a\"b\\cé😀\n")
        XCTAssertEqual(r.hash, "sha1:x")
        XCTAssertEqual(r.closingBrace, line.utf8.count - 1)
        let numeric = try scan(#"{"id":17,"text":"t"}  "#)
        XCTAssertEqual(numeric.idToken, 6..<8)
    }

    func testProblemsNameTheField() {
        XCTAssertEqual(problem(#"{"id":"a"}"#), RecordProblem(field: "text", reason: "missing"))
        XCTAssertEqual(problem(#"{"text":"a"}"#), RecordProblem(field: "id", reason: "missing"))
        XCTAssertEqual(problem(#"{"id":"a","text":null}"#), RecordProblem(field: "text", reason: "is null"))
        XCTAssertEqual(problem(#"{"id":[1],"text":"a"}"#)?.field, "id")
        XCTAssertEqual(problem(#"{"id":"a","text":"x\ud800"}"#)?.reason.contains("surrogate"), true)
        XCTAssertNil(problem(#"{"id":"a","text":"b"}"#))
        XCTAssertNotNil(problem(#"{"id":"a","text":"b"} x"#))
        XCTAssertNotNil(problem(#"{"id":"a","text":"b""#))
        XCTAssertNotNil(problem("[1,2]"))
        var bytes = Array(#"{"id":"a","text":"xx"}"#.utf8)
        bytes[18] = 0xFF
        var scanner = JSONLineScanner()
        XCTAssertThrowsError(try bytes.withUnsafeBufferPointer { b throws(RecordProblem) in try scanner.scan(b) }) {
            XCTAssertEqual(($0 as? RecordProblem)?.field, "text")
            XCTAssertEqual(($0 as? RecordProblem)?.syntax, JSONSyntaxError(offset: 18, reason: .invalidUTF8))
        }
    }

    /// Numbers follow the JSON grammar (a run of digits, signs, dots and
    /// exponents used to pass), in the id and in fields dedup skips.
    func testNumbersFollowTheGrammar() {
        XCTAssertNil(problem(#"{"id":-12.5e+3,"text":"a","n":0}"#))
        for bad in [#"{"id":1-2,"text":"a"}"#, #"{"id":01,"text":"a"}"#, #"{"id":1.,"text":"a"}"#, #"{"id":"a","text":"b","n":1e+-5}"#,
                    #"{"id":"a","text":"b","n":+1}"#, #"{"id":"a","text":"b","n":.5}"#, #"{"id":"a","text":"b","n":--1}"#] {
            XCTAssertNotNil(problem(bad)?.syntax, bad)
        }
        XCTAssertEqual(problem(#"{"id":01,"text":"a"}"#)?.field, "id")
    }
}
