import DaptCore
import DaptGrammar
import XCTest

/// Token masks over vocabularies, constrained generation with random
/// choices, and closing when the budget runs out.
final class JSONConstraintTests: XCTestCase {
    static let schemas: [String] = [
        JSONGrammarTests.intentSchema,
        #"{"type":"array","items":{"anyOf":[{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string","maxLength":3}},"required":["a"]},{"type":"object","properties":{"a":{"type":"number"},"c":{"type":"boolean"}},"required":["a","c"]}]},"maxItems":4}"#,
        #"{"type":"object","properties":{"name":{"type":"string","minLength":3},"kind":{"const":{"x":[1,2]}},"any":{}},"required":["name","kind","any"]}"#,
        #"{"type":"object"}"#,
        #"{"type":"array","items":{"type":"string","minLength":2,"maxLength":6},"minItems":1,"maxItems":3}"#,
    ]

    func grammars() throws -> [(JSONGrammar, JSONValue?)] {
        var out: [(JSONGrammar, JSONValue?)] = [(JSONGrammar.anyValue(), nil), (JSONGrammar.anyObject(), .object([("type", .string("object"))]))]
        for s in Self.schemas { out.append((try JSONGrammar.schema(JSONValue.parse(s)), try JSONValue.parse(s))) }
        return out
    }

    /// A random vocabulary over the bytes JSON needs (and some it refuses):
    /// every single byte of the alphabet, then random strings of 2-5 bytes.
    func randomVocabulary(_ rng: inout SplitMix64, size: Int) -> TokenVocabulary {
        let alphabet: [UInt8] = Array(#"{}[],:"\ u0aDdcC1-.eE+tfnrulsbqy"#.utf8) + [0x0A, 0x09, 0x00, 0x1F, 0xC3, 0xA9, 0xE4, 0xB8, 0xAD, 0xED, 0xA0, 0xF0, 0x9F, 0x98, 0x80, 0xFF]
        var tokens: [[UInt8]] = alphabet.map { [$0] }
        var seen = Set(tokens)
        while tokens.count < size {
            let t = (0..<Int.random(in: 2...5, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            if seen.insert(t).inserted { tokens.append(t) }
        }
        tokens.append(Array("<eos>".utf8))
        tokens.append(Array("<pad>".utf8))
        return TokenVocabulary(tokens: tokens, endTokens: [tokens.count - 2], excludedTokens: [tokens.count - 1])
    }

    /// Along random constrained walks, the mask equals trying every token
    /// one by one (the end token exactly when complete; the excluded never).
    func testMasksEqualBruteForce() throws {
        var rng = SplitMix64(seed: 11)
        let vocabularies = [randomVocabulary(&rng, size: 300), randomVocabulary(&rng, size: 120), try Fixtures.tokenizerVocabulary()]
        var checked = 0
        for vocabulary in vocabularies {
            for (grammar, _) in try grammars() {
                let masks = GrammarMasks(grammar: grammar, vocabulary: vocabulary)
                for _ in 0..<4 {
                    var c = masks.constraint()
                    for _ in 0..<20 {
                        var mask = TokenMask(count: vocabulary.count)
                        c.fillMask(&mask)
                        XCTAssertEqual(mask, bruteForceMask(c), "after \(String(decoding: c.output, as: UTF8.self).debugDescription)")
                        checked += 1
                        let allowed = mask.allowedTokens.filter { !vocabulary.endTokens.contains($0) }
                        guard let t = allowed.randomElement(using: &rng) else { break }
                        try c.accept(t)
                    }
                }
            }
        }
        XCTAssertGreaterThan(checked, 300)
    }

    /// 1,000 generations choosing among allowed tokens at random, cut at a
    /// random budget and closed with `closingTokens`: every output parses
    /// (DaptCore's scanner) and satisfies its schema (the test's validator).
    func testRandomGenerationsAreValid() throws {
        var rng = SplitMix64(seed: 3)
        let vocabulary = try Fixtures.tokenizerVocabulary()
        let eos = vocabulary.endTokens.first!
        let grammars = try grammars()
        // One mask cache per grammar, shared by its runs as a batch would share it.
        let shared = grammars.map { GrammarMasks(grammar: $0.0, vocabulary: vocabulary) }
        var closed = 0, ended = 0, usedSchemas = Set<Int>()
        for run in 0..<1000 {
            let which = run % grammars.count
            let schema = grammars[which].1
            var c = shared[which].constraint()
            let budget = Int.random(in: 1...48, using: &rng)
            var mask = TokenMask(count: vocabulary.count)
            var stopped = false
            for _ in 0..<budget {
                c.fillMask(&mask)
                XCTAssertGreaterThan(mask.allowedCount, 0)
                if mask[eos] && Int.random(in: 0..<4, using: &rng) == 0 { try c.accept(eos); stopped = true; break }
                // Random logits: the best allowed token under i.i.d. random scores is a uniform pick among them.
                let allowed = mask.allowedTokens.filter { $0 != eos }
                guard let pick = allowed.randomElement(using: &rng) else { try c.accept(eos); stopped = true; break }
                try c.accept(pick)
            }
            if stopped { ended += 1 } else {
                let closing = try XCTUnwrap(c.closingTokens(), String(decoding: c.output, as: UTF8.self))
                if !closing.isEmpty { closed += 1 }
                for t in closing { try c.accept(t) }
                XCTAssertTrue(c.isComplete, String(decoding: c.output, as: UTF8.self))
            }
            let text = String(decoding: c.output, as: UTF8.self)
            let value: JSONValue
            do { value = try JSONValue.parse(c.output) } catch { XCTFail("\(error): \(text.debugDescription)"); continue }
            if let schema { XCTAssertNil(schemaViolation(value, schema), text); usedSchemas.insert(which) }
        }
        XCTAssertGreaterThan(closed, 300, "most runs are cut and closed")
        XCTAssertGreaterThan(ended, 50, "some end by themselves")
        XCTAssertEqual(usedSchemas.count, grammars.count - 1)
    }

    func testClosingAfterEveryPrefixOfAValidText() throws {
        let vocabulary = try Fixtures.tokenizerVocabulary()
        let schema = try JSONValue.parse(JSONGrammarTests.intentSchema)
        let masks = GrammarMasks(grammar: try JSONGrammar.schema(schema), vocabulary: vocabulary)
        let text = Array(#"{"intent": "compare", "query": "a\u00e9\ud83d\ude00", "tags": ["x", "yz"], "filter": {"field": "claims", "value": "v"}, "note": 12}"#.utf8)
        // Byte tokens: the vocabulary has every byte, so any cut point is reachable.
        let byteToken = Dictionary(uniqueKeysWithValues: (0..<vocabulary.count).compactMap { t in vocabulary.tokens[t].count == 1 ? (vocabulary.tokens[t][0], t) : nil })
        var c = masks.constraint()
        for (k, b) in text.enumerated() {
            let closing = try XCTUnwrap(c.closingTokens(), "cut at \(k)")
            var closed = c
            for t in closing { try closed.accept(t) }
            XCTAssertTrue(closed.isComplete)
            let value = try JSONValue.parse(closed.output)
            XCTAssertNil(schemaViolation(value, schema), String(decoding: closed.output, as: UTF8.self))
            try c.accept(byteToken[b]!)
        }
        XCTAssertTrue(c.isComplete)
        XCTAssertEqual(c.closingTokens(), [])
    }

    func testRefusedTokensThrowAndLeaveTheStateAlone() throws {
        let vocabulary = TokenVocabulary(tokens: [Array("{".utf8), Array("}".utf8), Array("\"a\"".utf8), Array(":1".utf8), [], Array("<s>".utf8)],
                                         endTokens: [4], excludedTokens: [5])
        let masks = GrammarMasks(grammar: JSONGrammar.anyObject(), vocabulary: vocabulary)
        var c = masks.constraint()
        XCTAssertThrowsError(try c.accept(1)) { XCTAssertEqual($0 as? GrammarError, .tokenNotAllowed(1)) }
        XCTAssertThrowsError(try c.accept(4)) { XCTAssertEqual($0 as? GrammarError, .tokenNotAllowed(4)) }
        XCTAssertThrowsError(try c.accept(9)) { XCTAssertEqual($0 as? GrammarError, .unknownToken(9)) }
        try c.accept(0)
        try c.accept(2)
        try c.accept(3)
        var mask = TokenMask(count: 6)
        c.fillMask(&mask)
        XCTAssertEqual(mask.allowedTokens, [1])
        try c.accept(1)
        c.fillMask(&mask)
        XCTAssertEqual(mask.allowedTokens, [4])
        try c.accept(4)
        XCTAssertThrowsError(try c.accept(1)) { XCTAssertEqual($0 as? GrammarError, .afterEnd(1)) }
        XCTAssertEqual(String(decoding: c.output, as: UTF8.self), #"{"a":1}"#)
        // A vocabulary that cannot spell a closing text gives nil (the caller marks the record truncated).
        var open = GrammarMasks(grammar: JSONGrammar.anyValue(), vocabulary: vocabulary).constraint()
        try open.accept(0)
        try open.accept(2)
        XCTAssertNil(open.closingTokens())
    }

    /// The tokens `c` accepts, each tried on a copy.
    func bruteForceMask(_ c: JSONConstraint) -> TokenMask {
        var brute = TokenMask(count: c.masks.vocabulary.count)
        for t in 0..<brute.count {
            var copy = c
            brute[t] = (try? copy.accept(t)) != nil
        }
        return brute
    }

    /// Fills the mask at every step of `texts` (fed a byte token at a time)
    /// and of random walks, and compares it with trying every token.
    func assertMasksEqualBruteForce(_ masks: GrammarMasks, texts: [String], randomWalks: Int, rng: inout SplitMix64, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let vocabulary = masks.vocabulary
        let byteToken = Dictionary((0..<vocabulary.count).compactMap { t in vocabulary.tokens[t].count == 1 ? (vocabulary.tokens[t][0], t) : nil }, uniquingKeysWith: { a, _ in a })
        var checked = 0
        func check(_ c: inout JSONConstraint) -> TokenMask {
            var mask = TokenMask(count: vocabulary.count)
            c.fillMask(&mask)
            let brute = bruteForceMask(c)
            XCTAssertEqual(mask, brute, "after \(String(decoding: c.output, as: UTF8.self).debugDescription): mask-only \(Set(mask.allowedTokens).subtracting(brute.allowedTokens).map { String(decoding: vocabulary.tokens[$0], as: UTF8.self) }), brute-only \(Set(brute.allowedTokens).subtracting(mask.allowedTokens).map { String(decoding: vocabulary.tokens[$0], as: UTF8.self) })", file: file, line: line)
            checked += 1
            return mask
        }
        for text in texts {
            var c = masks.constraint()
            for b in text.utf8 {
                _ = check(&c)
                guard let t = byteToken[b] else { XCTFail("no byte token for \(b)", file: file, line: line); break }
                try c.accept(t)
            }
            _ = check(&c)
        }
        for _ in 0..<randomWalks {
            var c = masks.constraint()
            for _ in 0..<30 {
                let mask = check(&c)
                let allowed = mask.allowedTokens.filter { !vocabulary.endTokens.contains($0) }
                // Prefer the longer tokens: they are the ones crossing frames.
                let long = allowed.filter { vocabulary.tokens[$0].count > 1 }
                guard let t = (long.isEmpty || Int.random(in: 0..<3, using: &rng) == 0 ? allowed : long).randomElement(using: &rng) else { break }
                try c.accept(t)
            }
        }
        return checked
    }

    /// Tokens that close a value and go on in its parent (`"},{"`, `"]]`,
    /// `":` then digits, a number ended by `,` or `}`), across object and
    /// array frames, with free-object keys (unique keys decided at the
    /// closing quote) and anyOf forks: masks equal the brute-force check.
    func testMasksEqualBruteForceWhereTokensCrossFrames() throws {
        var rng = SplitMix64(seed: 23)
        let vocabulary = Self.crossingVocabulary(), texts = Self.crossingTexts
        var checked = 0
        for (grammar, _) in try grammars() {
            let masks = GrammarMasks(grammar: grammar, vocabulary: vocabulary)
            let fitting = texts.filter { grammar.accepts(Array($0.utf8)) }
            checked += try assertMasksEqualBruteForce(masks, texts: fitting, randomWalks: 6, rng: &rng)
        }
        XCTAssertGreaterThan(checked, 400)
        // Each text fits some grammar (else the case would test nothing).
        let all = try grammars().map(\.0)
        for text in texts { XCTAssertTrue(all.contains { $0.accepts(Array(text.utf8)) }, text) }
    }

    /// Single bytes and tokens that cross frames, and an end token.
    static func crossingVocabulary() -> TokenVocabulary {
        let crossing = [#""},{""#, #""]]"#, #"":1"#, #"":12,""#, #"":"#, #"","#, #""}"#, #""]"#, #"}]"#, #"]]"#, #"]}"#, #"}}"#, #"},"#, #"],["#,
                        "1,", "1]", "1}", "0}]", "2,\"", "3 ", "\",\"a\":", #"a":"#, #"a"}"#, #"b":["#, #"e":"x"#, " }", ",\n", "e5,", "-1]",
                        "true}", "true,", "null]", "false}", "ab", "abc", "abcdefg", "é", "中文", "中文\"", #""x"]"#, #"ab""#, #"a",""#, #"1,"b":"#, #"c":true}"#, #""a":[1,"#]
        let singles = Array(#"{}[],:"\ abcdefghijklmnopqrstuvwxyz0123456789-.E+AD"#.utf8).map { [$0] } + [[0x0A]]
        var tokens = singles + crossing.map { Array($0.utf8) }
        tokens.append(Array("<eos>".utf8))
        return TokenVocabulary(tokens: tokens, endTokens: [tokens.count - 1])
    }

    /// Texts that fit one of `grammars()` each.
    static let crossingTexts = [#"[{"a":1},{"b":[2,3]},{"c":"x"}]"#, #"{"a":{"b":{"c":[[1],[2.5e3]]}},"b":"x","c":true}"#, #"[[["a"]],[[1,2]],[],{}]"#,
                     #"{"intent":"search","query":"ab","tags":["x","y"],"filter":{"field":"claims","value":"v"},"note":null,"limit":12}"#,
                     #"[{"a":12,"b":"ab"},{"a":1.5,"c":false}]"#, #"{"name":"abc","kind":{"x":[1,2]},"any":{"a":[1,{"b":null}]}}"#]

    /// Near the nesting limit a token may open more containers than are
    /// left: the top frame's mask depends on the depth there.
    func testMasksEqualBruteForceAtTheNestingLimit() throws {
        var rng = SplitMix64(seed: 5)
        let tokens = [[UInt8(ascii: "[")], [UInt8(ascii: "]")], [UInt8(ascii: "1")], [UInt8(ascii: ",")], Array("[[[".utf8), Array("[[".utf8), Array("]]".utf8), Array("[1]".utf8), Array("<eos>".utf8)]
        let vocabulary = TokenVocabulary(tokens: tokens, endTokens: [tokens.count - 1])
        let masks = GrammarMasks(grammar: JSONGrammar.anyValue(), vocabulary: vocabulary)
        let depth = JSON.maxDepth
        let text = String(repeating: "[", count: depth) + "1" + String(repeating: "]", count: depth)
        let checked = try assertMasksEqualBruteForce(masks, texts: [text], randomWalks: 0, rng: &rng)
        XCTAssertEqual(checked, text.utf8.count + 1)
        // At depth - 1 "[[" is refused but "[" allowed; at depth, "[" too.
        var c = masks.constraint()
        for _ in 0..<(depth - 1) { try c.accept(0) }
        var mask = TokenMask(count: vocabulary.count)
        c.fillMask(&mask)
        XCTAssertTrue(mask[0])
        XCTAssertFalse(mask[5])
        try c.accept(0)
        c.fillMask(&mask)
        XCTAssertFalse(mask[0])
    }

    /// A new state whose top frame was met before reuses that frame's mask
    /// (computed when first met, without precomputation): the elements of
    /// an array of objects meet the same top frames at each level.
    func testTopFrameMasksAreReusedAcrossStates() throws {
        let vocabulary = try Fixtures.tokenizerVocabulary()
        let masks = GrammarMasks(grammar: JSONGrammar.anyValue(), vocabulary: vocabulary, precomputeLimit: 0)
        var c = masks.constraint()
        var mask = TokenMask(count: vocabulary.count)
        for b in #"[{"a":[1]},{"b":[2]},{"c":[3]}]"#.utf8 {
            c.fillMask(&mask)
            try c.accept(try XCTUnwrap(vocabulary.tokenize([b])?.first))
        }
        let top = masks.topFrameCacheCounts, whole = masks.cacheCounts
        XCTAssertEqual(top.hits + top.misses, whole.misses, "each whole-state miss looks up its top frame")
        XCTAssertGreaterThan(top.hits, top.misses, "most top frames were met before")
    }
}
