import DaptCluster
import DaptCore
import DaptFilter
import DaptModel
import DaptTestSupport
import DaptTokenizer
import DaptTrain
import Foundation
import XCTest

/// The small dapt checkpoint of the training interop fixture (tokenizer.json beside it).
let referenceModel = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("DaptTrainTests/Fixtures/interop/dapt").path

final class CutTests: XCTestCase {
    func testQuantilesInterpolateBetweenOrderStatistics() {
        XCTAssertEqual(Quantile.of(sorted: [1, 2, 3, 4], 0.5), 2.5)
        XCTAssertEqual(Quantile.of(sorted: [1, 2, 3, 4], 0), 1)
        XCTAssertEqual(Quantile.of(sorted: [1, 2, 3, 4], 1), 4)
        XCTAssertEqual(Quantile.of(sorted: [10, 20], 0.25), 12.5)
        XCTAssertEqual(Quantile.of(sorted: [7], 0.9), 7)
    }

    func testBucketEdgesFromCorpusQuantiles() {
        let buckets = LengthBuckets(quantilesOf: Array(1...100), buckets: 4)
        // 0.25 → 25.75, 0.5 → 50.5, 0.75 → 75.25, each rounded up.
        XCTAssertEqual(buckets.edges, [26, 51, 76])
        XCTAssertEqual(buckets.count, 4)
        XCTAssertEqual([1, 25, 26, 50, 51, 75, 76, 1000].map(buckets.bucket(of:)), [0, 0, 1, 1, 2, 2, 3, 3])
        XCTAssertEqual(buckets.range(of: 0).lower, 0)
        XCTAssertEqual(buckets.range(of: 1).lower, 26)
        XCTAssertEqual(buckets.range(of: 1).upper, 51)
        XCTAssertNil(buckets.range(of: 3).upper)
        // Equal lengths: one bucket, not empty ones.
        XCTAssertEqual(LengthBuckets(quantilesOf: Array(repeating: 40, count: 10), buckets: 4).count, 1)
        // Two lengths: the edge separates them.
        XCTAssertEqual(LengthBuckets(quantilesOf: [5, 5, 5, 9, 9, 9], buckets: 2).edges, [7])
    }

    func testConfiguredEdgesWin() {
        var config = FilterConfig()
        config.bucketEdges = [10, 100]
        let records = [5, 10, 99, 100, 5000].map { ScoredRecord(tokens: $0, nll: 0, lang: "") }
        XCTAssertEqual(FilterDecisions(records: records, config: config).bucketOf, [0, 1, 1, 2, 2])
    }

    /// One bucket of perplexities 1…100: the top and bottom tails go.
    func testQuantileCutsOnHandMadeScores() {
        var config = FilterConfig()
        config.bucketEdges = [1000]
        config.cut = FilterCut(highQuantile: 0.9, lowQuantile: 0.1)
        var generator = SeededGenerator(seed: 7)
        let ppl = (1...100).map(Double.init).shuffled(using: &generator)
        let records = ppl.map { ScoredRecord(tokens: 50, nll: Foundation.log($0) * 50, lang: "") }
        let d = FilterDecisions(records: records, config: config)
        // Thresholds: 1 + 0.9·99 = 90.1 and 1 + 0.1·99 = 10.9.
        XCTAssertEqual(d.groups.count, 1)
        XCTAssertEqual(d.groups[0].thresholds.high!, 90.1, accuracy: 1e-9)
        XCTAssertEqual(d.groups[0].thresholds.low!, 10.9, accuracy: 1e-9)
        for (i, p) in ppl.enumerated() {
            let expected: RemovalReason? = p > 90.5 ? .high : p < 10.5 ? .low : nil
            XCTAssertEqual(d.reasons[i], expected, "ppl \(p)")
        }
        XCTAssertEqual(d.reasons.filter { $0 == .high }.count, 10)
        XCTAssertEqual(d.reasons.filter { $0 == .low }.count, 10)
    }

    /// Cuts per bucket and per language: quantiles within each group, rules override.
    func testCutsPerBucketAndLanguage() throws {
        var config = FilterConfig()
        config.bucketEdges = [100]
        config.cut = FilterCut(highQuantile: 0.8, lowQuantile: 0)
        config.rules = [FilterRule(bucket: 1, cut: FilterCut(highQuantile: 1, maxPerplexity: 30.5)),
                        FilterRule(lang: "zh", cut: FilterCut(highQuantile: 1))]
        try config.validate()
        var records: [ScoredRecord] = []
        // Bucket 0: en ppl 1…10 and zh ppl 101…110; bucket 1: en ppl 21…40.
        for p in 1...10 { records.append(ScoredRecord(tokens: 10, nll: Foundation.log(Double(p)) * 10, lang: "en")) }
        for p in 101...110 { records.append(ScoredRecord(tokens: 10, nll: Foundation.log(Double(p)) * 10, lang: "zh")) }
        for p in 21...40 { records.append(ScoredRecord(tokens: 200, nll: Foundation.log(Double(p)) * 200, lang: "en")) }
        let d = FilterDecisions(records: records, config: config)
        XCTAssertEqual(d.groups.map(\.bucket), [0, 0, 1])
        XCTAssertEqual(d.groups.map(\.lang), ["en", "zh", "en"])
        // en bucket 0: above the 0.8 quantile (8.2): 9 and 10.
        XCTAssertEqual(d.reasons[0..<10].map { $0 == .high }, (1...10).map { $0 > 8 })
        // zh: the rule keeps every record despite its high perplexities.
        XCTAssertTrue(d.reasons[10..<20].allSatisfy { $0 == nil })
        // Bucket 1: an absolute cut at 30, not a quantile.
        XCTAssertEqual(d.reasons[20..<40].map { $0 == .high }, (21...40).map { $0 > 30 })
        // Without per-language groups, the quantile is over both languages.
        config.byLang = false
        config.rules = []
        let pooled = FilterDecisions(records: records, config: config)
        XCTAssertEqual(pooled.groups.count, 2)
        XCTAssertTrue(pooled.reasons[0..<10].allSatisfy { $0 == nil })
        XCTAssertEqual(pooled.reasons[10..<20].filter { $0 == .high }.count, 4)
    }

    func testConfigValidationNamesTheField() throws {
        var c = FilterConfig()
        c.cut.highQuantile = 1.5
        XCTAssertThrowsError(try c.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "high_quantile") }
        c = FilterConfig()
        c.bucketEdges = [10, 5]
        XCTAssertThrowsError(try c.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "bucket_edges[1]") }
        c = FilterConfig()
        c.rules = [FilterRule(bucket: 9, cut: FilterCut())]
        XCTAssertThrowsError(try c.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "rules[0].bucket") }
        c = FilterConfig()
        c.byLang = false
        c.rules = [FilterRule(lang: "en", cut: FilterCut(maxPerplexity: 9))]
        XCTAssertThrowsError(try c.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "rules[0].lang") }
        c = FilterConfig()
        c.window = 64; c.overlap = 64
        XCTAssertThrowsError(try c.validate()) { XCTAssertEqual(($0 as? ConfigError)?.field, "overlap") }
        let yaml = "window: 64\noverlap: 8\nhigh_quantile: 0.9\nrules:\n  - lang: en\n    max_perplexity: 50\n"
        let decoded = try ConfigLoader.decode(FilterConfig.self, yaml: yaml)
        XCTAssertEqual(decoded.window, 64)
        XCTAssertEqual(decoded.overlap, 8)
        XCTAssertEqual(decoded.cut.highQuantile, 0.9)
        XCTAssertEqual(decoded.cut.lowQuantile, FilterConfig().cut.lowQuantile)
        XCTAssertEqual(decoded.rules, [FilterRule(lang: "en", cut: FilterCut(maxPerplexity: 50))])
        XCTAssertThrowsError(try ConfigLoader.decode(FilterConfig.self, yaml: "high_quantil: 0.9\n")) {
            XCTAssertEqual(($0 as? ConfigError)?.field, "high_quantil")
        }
        XCTAssertThrowsError(try ConfigLoader.decode(FilterConfig.self, yaml: "rules:\n  - lang: en\n    max_perplexit: 5\n")) {
            XCTAssertEqual(($0 as? ConfigError)?.field, "rules[0].max_perplexit")
        }
        // The cut's keys sit inline in the section and in each rule, both ways.
        var config = decoded
        config.cut.minPerplexity = 2
        config.rules.append(FilterRule(bucket: 1, cut: FilterCut(lowQuantile: 0.1)))
        let json = try JSONEncoder().encode(config)
        XCTAssertEqual(try JSONDecoder().decode(FilterConfig.self, from: json), config)
    }
}

struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

final class ScoringTests: XCTestCase {
    static let model: LlamaModel = try! FilterJob.loadReference(referenceModel).model

    func randomSequence(_ n: Int, seed: UInt64) -> [Int32] {
        var g = SeededGenerator(seed: seed)
        return (0..<n).map { _ in Int32(g.next() % 300) }
    }

    /// Per-position losses of `tokens` as one unpacked sequence.
    func lossesAlone(_ tokens: [Int32]) throws -> [Float] {
        var targets = Array(tokens.dropFirst()); targets.append(ignoreIndex)
        return try Self.model.tokenLosses(TokenBatch(batchSize: 1, seqLen: tokens.count, tokens: tokens, targets: targets))
    }

    func testPiecesCoverEveryTokenOnce() {
        let plan = ScoringPlan(lengths: [100, 30, 2, 1, 41], window: 40, overlap: 10, batchSize: 2)
        // 100 tokens in windows starting 0, 30, 60: scored from 1, 10, 10.
        XCTAssertEqual(plan.piecesOfRecord[0].map { plan.pieces[$0].start }, [0, 30, 60])
        XCTAssertEqual(plan.piecesOfRecord[0].map { plan.pieces[$0].length }, [40, 40, 40])
        XCTAssertEqual(plan.piecesOfRecord[4].map { plan.pieces[$0].start }, [0, 30])
        for (r, n) in [100, 30, 2, 1, 41].enumerated() {
            XCTAssertEqual(plan.piecesOfRecord[r].reduce(0) { $0 + plan.pieces[$1].predicted }, max(n - 1, 0), "record \(r)")
            // Every predicted token index once.
            var covered: [Int] = []
            for p in plan.piecesOfRecord[r] {
                let piece = plan.pieces[p]
                covered += (piece.start + piece.scoredFrom)..<(piece.start + piece.length)
            }
            XCTAssertEqual(covered, n > 1 ? Array(1..<n) : [])
        }
        // Rows hold at most a window; short pieces share rows.
        let pieces = plan.pieces
        for row in plan.rows { XCTAssertLessThanOrEqual(row.reduce(0) { $0 + pieces[$1].length }, 40) }
        XCTAssertTrue(plan.rows.contains { $0.count > 1 })
    }

    /// A long record in windows: the first window's tokens are scored as in
    /// the unwindowed pass (same context), each later window's new tokens
    /// as that window alone; a record that fits the window is one pass.
    func testWindowedScoringEqualsUnwindowedWhereItFits() throws {
        let tokens = randomSequence(100, seed: 1)
        let full = try lossesAlone(tokens)
        let windowed = SequenceScorer(model: Self.model, window: 40, overlap: 10, batchSize: 4)
        let plan = ScoringPlan(lengths: [tokens.count], window: 40, overlap: 10, batchSize: 4)
        let sums = try windowed.pieceSums(plan, sequences: [tokens])
        XCTAssertEqual(sums[0], full[0..<39].reduce(0.0) { $0 + Double($1) }, accuracy: 1e-4)
        for p in plan.piecesOfRecord[0].dropFirst() {
            let piece = plan.pieces[p]
            let alone = try lossesAlone(Array(tokens[piece.start..<(piece.start + piece.length)]))
            XCTAssertEqual(sums[p], alone[(piece.scoredFrom - 1)..<(piece.length - 1)].reduce(0.0) { $0 + Double($1) }, accuracy: 1e-4)
        }
        let record = try windowed.score([tokens])[0]
        XCTAssertEqual(record.count, 99)
        XCTAssertEqual(record.nll, sums.reduce(0, +), accuracy: 1e-9)
        // Context matters: the windowed sum is not the full-context one.
        XCTAssertNotEqual(record.nll, full.reduce(0.0) { $0 + Double($1) }, accuracy: 1e-3)
        // A record within the window: the same as the unwindowed pass.
        let short = Array(tokens[0..<35])
        let fits = try windowed.score([short])[0]
        XCTAssertEqual(fits.count, 34)
        XCTAssertEqual(fits.nll, try lossesAlone(short).reduce(0.0) { $0 + Double($1) }, accuracy: 1e-4)
    }

    /// Document masks and restarting positions: a record's score does not
    /// depend on what it is packed with.
    func testPackedScoresEqualOneRecordAtATime() throws {
        let lengths = [3, 7, 12, 20, 33, 5, 64, 2, 90, 17, 40, 9]
        let sequences = lengths.enumerated().map { randomSequence($1, seed: UInt64($0 + 10)) }
        let scorer = SequenceScorer(model: Self.model, window: 64, overlap: 16, batchSize: 3)
        let plan = ScoringPlan(lengths: lengths, window: 64, overlap: 16, batchSize: 3)
        XCTAssertLessThan(plan.rows.count, plan.pieces.count, "records were packed")
        let packed = try scorer.score(sequences)
        for (i, s) in sequences.enumerated() {
            let alone = try scorer.score([s])[0]
            XCTAssertEqual(packed[i].count, alone.count)
            XCTAssertEqual(packed[i].nll, alone.nll, accuracy: 1e-5 * max(1, abs(alone.nll)), "record \(i)")
        }
        // The same records in another order and batch size: the same scores.
        let other = try SequenceScorer(model: Self.model, window: 64, overlap: 16, batchSize: 1).score(Array(sequences.reversed()))
        for (i, s) in other.reversed().enumerated() {
            XCTAssertEqual(s.nll, packed[i].nll, accuracy: 1e-5 * max(1, abs(s.nll)))
        }
    }

    /// Perplexity of fixture texts equal to transformers' (scripts/fixtures/filter_perplexity.py).
    func testPerplexityMatchesTransformers() throws {
        let url = Bundle.module.url(forResource: "Fixtures/perplexity", withExtension: "json")!
        let fixture = try JSONValue.parse(Array(try Data(contentsOf: url)))
        let tokenizer = try BPETokenizer.load(path: referenceModel + "/tokenizer.json")
        let records = fixture["records"]!.array!
        XCTAssertEqual(records.count, 5)
        var sequences: [[Int32]] = []
        for r in records {
            let ids = tokenizer.encode(r["text"]!.string!).map { Int32($0) }
            XCTAssertEqual(ids, r["ids"]!.array!.map { Int32($0.double!) })
            sequences.append(ids)
        }
        let scores = try SequenceScorer(model: Self.model, window: 128, overlap: 32, batchSize: 2).score(sequences)
        for (r, s) in zip(records, scores) {
            XCTAssertEqual(s.count, Int(r["predicted"]!.double!))
            let ppl = ScoredRecord(tokens: s.count, nll: s.nll, lang: "").perplexity
            let expected = r["ppl"]!.double!
            XCTAssertEqual(ppl, expected, accuracy: 1e-4 * expected, "\(r["text"]!.string!)")
            XCTAssertEqual(s.nll / Double(s.count), r["nll_sum"]!.double! / Double(s.count), accuracy: 1e-4)
        }
    }

    func testTokenizerThatIsNotTheModelsIsAnError() throws {
        let dir = try temporaryDirectory(self)
        var config = Self.model.config
        config.vocabSize = 64
        try LlamaModel(config: config).save(directory: dir)
        try FileManager.default.copyItem(atPath: referenceModel + "/tokenizer.json", toPath: dir + "/tokenizer.json")
        XCTAssertThrowsError(try FilterJob.loadReference(dir)) {
            XCTAssertEqual($0 as? FilterError, .tokenizerVocabulary(model: dir, tokenizerSize: 300, modelSize: 64))
        }
        try FileManager.default.removeItem(atPath: dir + "/tokenizer.json")
        XCTAssertThrowsError(try FilterJob.loadReference(dir)) { XCTAssertEqual($0 as? FilterError, .noTokenizer(model: dir)) }
    }
}
