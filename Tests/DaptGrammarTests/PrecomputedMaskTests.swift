import DaptCore
@testable import DaptGrammar
import XCTest

/// Top-frame masks computed with the grammar, before the first token.
extension JSONConstraintTests {
    /// The small vocabularies the precomputation is checked on.
    func precomputationVocabularies() throws -> [TokenVocabulary] {
        var rng = SplitMix64(seed: 41)
        return [Self.crossingVocabulary(), randomVocabulary(&rng, size: 160), try Fixtures.tokenizerVocabulary()]
    }

    /// Every precomputed top frame's mask against the walk made when a
    /// frame is first met, and against trying each token on that frame alone (on a `Frame.boundary`, anyOf forks followed): a
    /// token is in `accepted` exactly when the frame takes all its bytes
    /// without the frames below, and a token that needs them (closing the
    /// frame, or a free-object key's closing quote) lies under a deferred
    /// trie node whose prefix it starts with.
    func testEveryPrecomputedTopFrameMaskEqualsTryingEachToken() throws {
        var frames = 0, deferredTokens = 0
        for vocabulary in try precomputationVocabularies() {
            for (grammar, _) in try grammars() {
                let masks = GrammarMasks(grammar: grammar, vocabulary: vocabulary)
                let (reachable, complete) = grammar.reachableTopFrames(folding: masks.folding, limit: GrammarMasks.defaultPrecomputeLimit)
                XCTAssertTrue(complete)
                XCTAssertEqual(masks.precomputedTopFrames.count, reachable.count, "one mask per reachable top frame, no two frames under one key")
                for frame in reachable {
                    let key = grammar.topCacheKey(frame, nearLimitDepth: 0, folding: masks.folding)
                    let top = try XCTUnwrap(masks.precomputedTopFrames[key])
                    // A bounded string's precomputed mask is derived from one walk shared by
                    // its counts: the same tokens as the walk made when the frame is first met,
                    // and each node that walk defers deferred too. (Other frames' precomputed
                    // masks are that walk itself; the token-by-token check below covers them.)
                    if frame.node >= 0, grammar.nodes[Int(frame.node)].kind == .string {
                        let walked = masks.walkTopFrame(frame, hiddenDepth: 0)
                        XCTAssertEqual(top.accepted, walked.accepted, "frame \(frame)")
                        let deferredPrefixes = Set(top.deferred.map(\.prefix))
                        for (_, prefix) in walked.deferred { XCTAssertTrue(deferredPrefixes.contains(prefix), "frame \(frame): \(prefix) not deferred") }
                    }
                    // Each deferred node is the trie node its prefix spells.
                    for (node, prefix) in top.deferred {
                        var spelled: Int32? = 0
                        for b in prefix { spelled = spelled.flatMap { vocabulary.child($0, b) } }
                        XCTAssertEqual(spelled, node)
                    }
                    for t in 0..<vocabulary.count {
                        let bytes = vocabulary.tokens[t]
                        guard !bytes.isEmpty, !vocabulary.endTokens.contains(t), !vocabulary.excludedTokens.contains(t) else {
                            XCTAssertFalse(top.accepted[t]); continue
                        }
                        let (alone, needsBelow) = Self.tryOnTopFrame(grammar, frame, bytes)
                        XCTAssertEqual(top.accepted[t], alone, "frame \(frame), token \(String(decoding: bytes, as: UTF8.self).debugDescription)")
                        if needsBelow && !alone {
                            deferredTokens += 1
                            XCTAssertTrue(top.deferred.contains { bytes.starts(with: $0.prefix) },
                                          "frame \(frame): token \(String(decoding: bytes, as: UTF8.self).debugDescription) needs the frames below but is under no deferred node")
                        }
                    }
                    frames += 1
                }
            }
        }
        XCTAssertGreaterThan(frames, 1000)
        XCTAssertGreaterThan(deferredTokens, 1000, "tokens crossing the top frame's end were checked")
    }

    /// Feeds `bytes` one at a time to `frame` on a boundary: whether some
    /// stack takes them all without the frames below, and whether some
    /// byte needed the frames below.
    static func tryOnTopFrame(_ grammar: JSONGrammar, _ frame: Frame, _ bytes: [UInt8]) -> (alone: Bool, needsBelow: Bool) {
        var stacks = [[Frame(node: Frame.boundary), frame]]
        var needsBelow = false
        for b in bytes {
            var next: [[Frame]] = []
            for stack in stacks {
                var run = Run(stack: stack, logging: false)
                var forks: [[Frame]] = []
                if grammar.feed(b, &run, &forks) { next.append(run.stack) }
                if run.hitBoundary { needsBelow = true }
                next += forks
            }
            stacks = next
            if stacks.isEmpty { return (false, needsBelow) }
        }
        return (true, needsBelow)
    }

    /// The same sequences with precomputed masks, without them (each top
    /// frame's mask computed when met) and with a limit that cuts the
    /// precomputation: at every step the three masks equal each other and
    /// trying every token; with the full precomputation and texts without
    /// `\u` escapes, no top frame is computed on the way.
    func testPrecomputedLazyAndCutMasksAgreeWithBruteForce() throws {
        var rng = SplitMix64(seed: 29)
        var checked = 0
        for vocabulary in try precomputationVocabularies() {
            let byteToken = Dictionary((0..<vocabulary.count).compactMap { t in vocabulary.tokens[t].count == 1 ? (vocabulary.tokens[t][0], t) : nil }, uniquingKeysWith: { a, _ in a })
            for (grammar, _) in try grammars() {
                let precomputed = GrammarMasks(grammar: grammar, vocabulary: vocabulary)
                let lazy = GrammarMasks(grammar: grammar, vocabulary: vocabulary, precomputeLimit: 0)
                let cut = GrammarMasks(grammar: grammar, vocabulary: vocabulary, precomputeLimit: 7)
                XCTAssertTrue(precomputed.precomputation.complete)
                XCTAssertGreaterThan(precomputed.precomputation.topFrames, 7)
                XCTAssertEqual(lazy.precomputation.topFrames, 0)
                XCTAssertEqual(cut.precomputation, GrammarMasks.Precomputation(topFrames: 7, complete: false, searchSeconds: cut.precomputation.searchSeconds, seconds: cut.precomputation.seconds))
                var sequences: [[Int]] = Self.crossingTexts.filter { grammar.accepts(Array($0.utf8)) && $0.utf8.allSatisfy { byteToken[$0] != nil } }
                    .map { $0.utf8.map { byteToken[$0]! } }
                // Random walks, preferring long tokens (they cross frames).
                for _ in 0..<4 {
                    var c = precomputed.constraint()
                    var walk: [Int] = []
                    var mask = TokenMask(count: vocabulary.count)
                    for _ in 0..<24 {
                        c.fillMask(&mask)
                        let allowed = mask.allowedTokens.filter { !vocabulary.endTokens.contains($0) }
                        let long = allowed.filter { vocabulary.tokens[$0].count > 1 }
                        guard let t = (long.isEmpty || Int.random(in: 0..<3, using: &rng) == 0 ? allowed : long).randomElement(using: &rng) else { break }
                        try c.accept(t)
                        walk.append(t)
                    }
                    sequences.append(walk)
                }
                for sequence in sequences {
                    var runs = [precomputed.constraint(), lazy.constraint(), cut.constraint()]
                    for t in sequence + [-1] {
                        var filled: [TokenMask] = []
                        for k in runs.indices {
                            var mask = TokenMask(count: vocabulary.count)
                            runs[k].fillMask(&mask)
                            filled.append(mask)
                        }
                        let brute = bruteForceMask(runs[1])
                        let text = String(decoding: runs[0].output, as: UTF8.self).debugDescription
                        XCTAssertEqual(filled[0], brute, "precomputed, after \(text)")
                        XCTAssertEqual(filled[1], brute, "lazy, after \(text)")
                        XCTAssertEqual(filled[2], brute, "cut, after \(text)")
                        checked += 1
                        if t < 0 { break }
                        for k in runs.indices { try runs[k].accept(t) }
                    }
                }
                let escapes = sequences.contains { $0.contains { vocabulary.tokens[$0].contains(UInt8(ascii: "\\")) } }
                if !escapes { XCTAssertEqual(precomputed.topFrameCacheCounts.misses, 0, "every top frame met was precomputed") }
                XCTAssertGreaterThan(lazy.topFrameCacheCounts.misses, 0)
            }
        }
        XCTAssertGreaterThan(checked, 500)
    }
}

extension JSONConstraintTests {
    /// The search feeds one byte per class: every byte must act, on every
    /// frame found, exactly as one of the bytes fed (same stacks after it,
    /// same boundary use), or frames reachable through it could be missed.
    /// A string's frames are fed fewer bytes (`searchBytes`): each frame is
    /// checked against its own; a byte it refuses adds nothing, nor does one
    /// leading only to frames the search leaves lazy (`leftLazy`), so only
    /// the other bytes it accepts (or forks on) need a match.
    func testEveryByteActsLikeOneOfTheBytesTheSearchFeeds() throws {
        var narrowed = 0
        for (grammar, _) in try grammars() {
            let representatives = grammar.byteClassRepresentatives()
            XCTAssertLessThan(representatives.count, 200)
            let frames = grammar.reachableTopFrames(folding: .uniform(6), limit: GrammarMasks.defaultPrecomputeLimit).frames
            func outcome(_ frame: Frame, _ b: UInt8) -> [UInt32]? {
                var run = Run(stack: [Frame(node: Frame.boundary), frame], logging: false)
                var forks: [[Frame]] = []
                let ok = grammar.feed(b, &run, &forks)
                guard ok || !forks.isEmpty else { return nil }
                // Nothing for the search to add (a \u escape's first hex digit): as good as refused.
                let reached = (ok ? Array(run.stack.dropFirst()) : []) + forks.flatMap { $0.dropFirst() }
                if !run.hitBoundary && reached.allSatisfy(grammar.leftLazy) { return nil }
                var key: [UInt32] = [ok ? 1 : 0, run.hitBoundary ? 1 : 0]
                if ok { key += JSONGrammar.exactKey(run.stack) }
                for fork in forks { key += [0xFFFF_FFFF] + JSONGrammar.exactKey(fork) }
                return key
            }
            for frame in frames {
                let fedBytes = grammar.searchBytes(frame, all: representatives)
                if fedBytes.count < representatives.count { narrowed += 1 }
                let fed = fedBytes.compactMap { outcome(frame, $0) }
                for b in 0...255 {
                    guard let o = outcome(frame, UInt8(b)) else { continue }
                    XCTAssertTrue(fed.contains(o), "byte \(b) acts, on frame \(frame.node) phase \(frame.phase) b \(frame.b), like none of the bytes fed")
                }
            }
        }
        XCTAssertGreaterThan(narrowed, 0, "no frame was fed fewer bytes")
    }

    /// A top-frame walk feeds a frame with `onlyFirstBytes` nothing else at
    /// the root of the trie: every other byte must be refused there, without
    /// reaching the boundary or forking (else tokens or deferred nodes are lost).
    func testBytesOutsideAFramesOnlyFirstBytesAreRefusedOutright() throws {
        var filtered = 0
        for (grammar, _) in try grammars() {
            for frame in grammar.reachableTopFrames(folding: .uniform(6), limit: GrammarMasks.defaultPrecomputeLimit).frames {
                guard let only = grammar.onlyFirstBytes(frame) else { continue }
                filtered += 1
                for b in 0...255 where !only.contains(UInt8(b)) {
                    var run = Run(stack: [Frame(node: Frame.boundary), frame], logging: false)
                    var forks: [[Frame]] = []
                    let ok = grammar.feed(UInt8(b), &run, &forks)
                    XCTAssertFalse(ok || run.hitBoundary || !forks.isEmpty, "byte \(b) is taken by frame \(frame.node) phase \(frame.phase) a \(frame.a) b \(frame.b) but not in its first bytes")
                }
            }
        }
        XCTAssertGreaterThan(filtered, 0, "no frame has first bytes to filter by")
    }
}

extension JSONConstraintTests {
    /// Top frames fold onto one key where their masks must be equal (counts
    /// far from the bounds, whitespace counts no token can exhaust): every
    /// top frame text can reach, with its real counts and whitespace, finds
    /// its key among the precomputed masks, and that mask equals trying each
    /// token on the frame itself. The bounds here are far past the fold
    /// distances, so many frames share a key. The walk feeds all 256 bytes,
    /// not the search's byte classes, so that it finds the real frames
    /// without trusting the classes it checks the search against
    /// (`testEveryByteActsLikeOneOfTheBytesTheSearchFeeds` checks those).
    func testEveryReachableTopFrameFindsAPrecomputedMaskEqualToTryingEachToken() throws {
        let vocabulary = Self.crossingVocabulary()
        let schema = #"{"type":"object","properties":{"s":{"type":"string","minLength":2,"maxLength":40},"l":{"type":"array","items":{"anyOf":[{"type":"integer"},{"type":"array","items":{"type":"string","maxLength":30},"maxItems":25}]},"minItems":1,"maxItems":30}},"required":["s"]}"#
        let grammar = try JSONGrammar.schema(JSONValue.parse(schema))
        let masks = GrammarMasks(grammar: grammar, vocabulary: vocabulary)
        XCTAssertTrue(masks.precomputation.complete)
        XCTAssertEqual(masks.folding.whitespaceFloor, 3, "the vocabulary's tokens start with at most one whitespace byte")
        XCTAssertLessThan(masks.folding.items, 10)
        XCTAssertLessThan(masks.folding.characters, 30)
        // Every real top frame: fed every byte on a boundary from the document frame.
        var seen = Set<[UInt32]>(), queue = [Frame(node: Frame.document)]
        seen.insert(JSONGrammar.exactKey(queue))
        var keys = Set<[UInt32]>()
        var k = 0
        while k < queue.count {
            let frame = queue[k]
            k += 1
            for b in 0...255 {
                var run = Run(stack: [Frame(node: Frame.boundary), frame], logging: false)
                var forks: [[Frame]] = []
                var reached: [Frame] = []
                if grammar.feed(UInt8(b), &run, &forks) { reached += run.stack.dropFirst() }
                for fork in forks { reached += fork.dropFirst() }
                for f in reached {
                    // (What the search leaves lazy: a \u escape past its first hex digit.)
                    if grammar.leftLazy(f) { continue }
                    if seen.insert(JSONGrammar.exactKey([f])).inserted { queue.append(f) }
                }
            }
        }
        XCTAssertGreaterThan(queue.count, 2 * masks.precomputation.topFrames, "many real frames share a key")
        for frame in queue {
            let key = grammar.topCacheKey(frame, nearLimitDepth: 0, folding: masks.folding)
            keys.insert(key)
            guard let top = masks.precomputedTopFrames[key] else {
                XCTFail("frame node \(frame.node) phase \(frame.phase) ws \(frame.ws) a \(frame.a) b \(frame.b): no precomputed mask"); continue
            }
            for t in 0..<vocabulary.count where !vocabulary.tokens[t].isEmpty && !vocabulary.endTokens.contains(t) {
                XCTAssertEqual(top.accepted[t], Self.tryOnTopFrame(grammar, frame, vocabulary.tokens[t]).alone,
                               "frame node \(frame.node) phase \(frame.phase) ws \(frame.ws) a \(frame.a) b \(frame.b), token \(String(decoding: vocabulary.tokens[t], as: UTF8.self).debugDescription)")
            }
        }
        XCTAssertEqual(keys.count, masks.precomputation.topFrames, "no precomputed mask that no frame uses")
    }
}
