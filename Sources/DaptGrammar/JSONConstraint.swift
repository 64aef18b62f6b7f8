import DaptCore
import Foundation

/// Why a token was refused.
public enum GrammarError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The token's bytes cannot come next (or it is excluded, or an end token before the value is complete).
    case tokenNotAllowed(Int)
    /// The id is outside the vocabulary.
    case unknownToken(Int)
    /// A token after the end token.
    case afterEnd(Int)

    public var description: String {
        switch self {
        case .tokenNotAllowed(let t): return "token \(t) is not allowed by the grammar here"
        case .unknownToken(let t): return "token \(t) is not in the vocabulary"
        case .afterEnd(let t): return "token \(t) after the end of the output"
        }
    }
}

/// A grammar over one vocabulary, with the token masks of the states met so
/// far: compile once per (grammar, vocabulary), then make one
/// `JSONConstraint` per sequence (`constraint()`); they share the caches.
///
/// Two caches. Whole masks per state (a state = the whole stack). And per
/// top frame (an adaptive token mask cache): a walk of the vocabulary trie
/// with the frames below replaced by a `Frame.boundary` sorts the tokens
/// into those the top frame accepts alone (kept as a mask) and prefixes
/// whose next byte needs the frames below — closing the top value and
/// going on in its parent, or a free object's key closing (uniqueness). A
/// new state then costs the top frame's mask plus walks of those few
/// subtrees from the real stack, not a walk of the whole vocabulary.
/// The top-frame masks of every top frame reachable in the grammar are
/// computed by `init` (up to `precomputeLimit` frames), so the first
/// sequence meets few or no walks (docs/constrained-decoding.md).
public final class GrammarMasks: @unchecked Sendable {
    public let grammar: JSONGrammar
    public let vocabulary: TokenVocabulary
    /// Masks kept at most (each cache); past that a cache starts again (a
    /// schema meets few states; free text in long strings with length limits meets more).
    public let cacheLimit: Int

    /// The part of a state's mask its top frame decides.
    struct TopFrameMask {
        /// Tokens accepted whatever lies below the top frame.
        var accepted: TokenMask
        /// Trie nodes (and the bytes leading to them) where a byte needed the
        /// frames below: their tokens and subtrees are checked against the full stack.
        var deferred: [(node: Int32, prefix: [UInt8])] = []
    }

    private var cache = WordKeyTable<TokenMask>()
    private var topCache = WordKeyTable<TopFrameMask>()
    /// Top-frame masks computed by `init` (never changed after it, so read without the lock).
    private var precomputed = WordKeyTable<TopFrameMask>()
    /// How top frames with equal masks share a key.
    let folding: TopKeyFolding
    private let lock = NSLock()
    private var hits = 0, misses = 0, topHits = 0, topMisses = 0, precomputedHits = 0

    /// What `init` computed before the first token.
    public struct Precomputation: Sendable, Equatable {
        /// Top frames whose masks were computed.
        public var topFrames = 0
        /// False when `precomputeLimit` cut the search (the rest is computed when met).
        public var complete = true
        /// Time spent finding the top frames, and in all (finding them and walking the trie from each).
        public var searchSeconds = 0.0
        public var seconds = 0.0
    }
    public private(set) var precomputation = Precomputation()

    /// The default `precomputeLimit`: far above what the supported schemas
    /// reach (hundreds to a few thousand top frames), a bound for the rest.
    public static let defaultPrecomputeLimit = 20_000

    /// `precomputeLimit`: the masks of up to that many top frames reachable
    /// in the grammar are computed now (0: each when first met), so the
    /// first sequence runs about as fast as later ones.
    public init(grammar: JSONGrammar, vocabulary: TokenVocabulary, cacheLimit: Int = 20_000, precomputeLimit: Int = GrammarMasks.defaultPrecomputeLimit) {
        self.grammar = grammar
        self.vocabulary = vocabulary
        self.cacheLimit = cacheLimit
        folding = TopKeyFolding(grammar, vocabulary)
        // Precomputed masks are made far from the nesting limit; a longest
        // token reaching it from the shallowest stacks would key every stack by depth.
        if precomputeLimit > 0 && 2 + Int(folding.characters) < JSON.maxDepth {
            let start = monotonicSeconds()
            let (frames, complete) = grammar.reachableTopFrames(folding: folding, limit: precomputeLimit)
            let searched = monotonicSeconds()
            var masks = WordKeyTable<TopFrameMask>(minimumCapacity: frames.count)
            // A string's frames that differ only in their count (or their
            // string: the walk lifts the bounds) share one walk, found by
            // phase and partial character (`b`).
            var byCharacters = WordKeyTable<CharacterSortedMasks>()
            // One run and prefix for every walk (each walk leaves them as it found them).
            var scratch = TopWalkScratch()
            let nodes = grammar.nodes
            for frame in frames {
                let key = grammar.topCacheKey(frame, nearLimitDepth: 0, folding: folding)
                guard frame.node >= 0, nodes[Int(frame.node)].kind == .string else {
                    masks.set(key, walkTopFrame(frame, hiddenDepth: 0, &scratch))
                    continue
                }
                let countKey = [UInt32(frame.phase), UInt32(bitPattern: frame.b)]
                let sorted: CharacterSortedMasks
                if let known = byCharacters[countKey] { sorted = known } else { sorted = sortByCharacters(frame); byCharacters.set(countKey, sorted) }
                masks.set(key, sorted.mask(for: frame, nodes[Int(frame.node)], vocabulary))
            }
            precomputed = masks
            precomputation = Precomputation(topFrames: frames.count, complete: complete, searchSeconds: searched - start, seconds: monotonicSeconds() - start)
        }
    }

    /// The precomputed top frames and their masks (for tests).
    var precomputedTopFrames: WordKeyTable<TopFrameMask> { precomputed }

    /// A fresh constraint at the start of the output.
    public func constraint() -> JSONConstraint { JSONConstraint(masks: self) }

    /// (cache hits, misses) of whole-state masks so far.
    public var cacheCounts: (hits: Int, misses: Int) { lock.lock(); defer { lock.unlock() }; return (hits, misses) }

    /// (cache hits, misses) of top-frame masks so far (looked up on each
    /// whole-state miss); a precomputed mask counts as a hit.
    public var topFrameCacheCounts: (hits: Int, misses: Int) { lock.lock(); defer { lock.unlock() }; return (topHits + precomputedHits, topMisses) }

    /// The tokens (end tokens aside) whose bytes keep `stack` alive.
    func mask(for stack: [Frame]) -> TokenMask {
        let key = grammar.cacheKey(stack, horizon: folding.characters)
        lock.lock()
        if let m = cache[key] { hits += 1; lock.unlock(); return m }
        misses += 1
        lock.unlock()
        let (top, wasPrecomputed) = topFrameMask(for: stack)
        var mask = top.accepted
        // Each deferred prefix is fed to the real stack and undone (no copy),
        // unless an anyOf forks on it.
        var run = Run(stack: stack, logging: true)
        for (node, prefix) in top.deferred {
            let undoMark = run.log.count
            var forks: [[Frame]] = []
            var alive = true
            for b in prefix {
                alive = grammar.feed(b, &run, &forks)
                if !alive || !forks.isEmpty { break }
            }
            if forks.isEmpty {
                if alive {
                    mark(tokensOf: node, &mask)
                    walk(node, &run, &mask)
                }
                run.undo(to: undoMark)
                continue
            }
            run.undo(to: undoMark)
            for state in grammar.advance([stack], by: prefix) {
                mark(tokensOf: node, &mask)
                var forked = Run(stack: state, logging: true)
                walk(node, &forked, &mask)
            }
        }
        lock.lock()
        if wasPrecomputed { precomputedHits += 1 }
        if cache.count >= cacheLimit { cache.removeAll() }
        cache.set(key, mask)
        lock.unlock()
        return mask
    }

    /// The top frame's part of the mask of `stack`, from the precomputed
    /// masks (read without the lock: they never change after `init`; the
    /// caller counts the hit), the cache or a walk.
    func topFrameMask(for stack: [Frame]) -> (mask: TopFrameMask, precomputed: Bool) {
        let key = grammar.topCacheKey(stack, folding: folding)
        if let m = precomputed[key] { return (m, true) }
        lock.lock()
        if let m = topCache[key] { topHits += 1; lock.unlock(); return (m, false) }
        topMisses += 1
        lock.unlock()
        let top = walkTopFrame(stack[stack.count - 1], hiddenDepth: stack.count - 2)
        lock.lock()
        if topCache.count >= cacheLimit { topCache.removeAll() }
        topCache.set(key, top)
        lock.unlock()
        return (top, false)
    }

    /// The top-frame mask of `frame` with `hiddenDepth` frames below it
    /// (the stack's depth minus 2), by a walk of the whole trie.
    func walkTopFrame(_ frame: Frame, hiddenDepth: Int) -> TopFrameMask {
        var scratch = TopWalkScratch()
        return walkTopFrame(frame, hiddenDepth: hiddenDepth, &scratch)
    }

    /// A run on a boundary and a byte prefix, reused by the walks of many top frames.
    struct TopWalkScratch {
        var run = Run(stack: [Frame(node: Frame.boundary), Frame(node: Frame.boundary)], logging: true)
        var prefix: [UInt8] = []
        init() { prefix.reserveCapacity(64) }
    }

    func walkTopFrame(_ frame: Frame, hiddenDepth: Int, _ scratch: inout TopWalkScratch) -> TopFrameMask {
        scratch.run.stack[1] = frame
        scratch.run.hiddenDepth = hiddenDepth
        var deferred: [(node: Int32, prefix: [UInt8])] = []
        // In a string, plain text stays inside: the tokens that fit are
        // allowed at once, and the walk skips the subtrees that hold nothing else.
        let room = grammar.plainTextRoom(top: frame)
        var sink = AcceptedTokens(mask: room.map { vocabulary.plainText(upTo: $0) } ?? TokenMask(count: vocabulary.count))
        walkTop(0, &scratch.run, &deferred, &scratch.prefix, skipPlain: room != nil, characters: 0, &sink, firstBytes: grammar.onlyFirstBytes(frame))
        return TopFrameMask(accepted: sink.mask, deferred: deferred)
    }

    /// Where a top-frame walk puts the tokens it accepts.
    protocol TopWalkSink {
        mutating func accept(tokensOf node: Int32, open: Bool, characters: Int32, _ vocabulary: TokenVocabulary)
    }

    /// One mask of every token accepted.
    struct AcceptedTokens: TopWalkSink {
        var mask: TokenMask
        mutating func accept(tokensOf node: Int32, open: Bool, characters: Int32, _ vocabulary: TokenVocabulary) {
            vocabulary.mark(tokensOf: node, &mask)
        }
    }

    /// The tokens a string frame (phase and `b` as given; any string node)
    /// takes alone when it has no length bounds, by the characters each
    /// adds, apart for those that end with the string's closing quote; and
    /// the trie nodes whose byte needs the frames below. A bounded frame's
    /// mask follows from its count: the characters it may still add and
    /// those it still needs.
    struct CharacterSortedMasks: TopWalkSink {
        /// inside[c]: tokens staying inside the string that add c characters
        /// (after `formUnions`: at most c).
        var inside: [TokenMask]
        /// closing[c]: tokens adding c characters, then the closing quote.
        var closing: [TokenMask]
        /// After `formUnions`: closingUpTo[c], the tokens of closing[0...c]
        /// (a frame that needs no more characters takes every count up to its room).
        var closingUpTo: [TokenMask] = []
        var deferred: [(node: Int32, prefix: [UInt8])]

        mutating func formUnions() {
            closingUpTo = closing
            for c in inside.indices.dropFirst() {
                inside[c].formUnion(inside[c - 1])
                closingUpTo[c].formUnion(closingUpTo[c - 1])
            }
        }

        mutating func accept(tokensOf node: Int32, open: Bool, characters: Int32, _ vocabulary: TokenVocabulary) {
            if open { vocabulary.mark(tokensOf: node, &inside[Int(characters)]) } else { vocabulary.mark(tokensOf: node, &closing[Int(characters)]) }
        }

        func mask(for frame: Frame, _ node: JSONGrammar.Node, _ vocabulary: TokenVocabulary) -> TopFrameMask {
            let room = node.maxCount >= 0 ? Int(node.maxCount - frame.a) : Int.max
            let needed = Int(max(node.minCount - frame.a, 0))
            var accepted = frame.phase == 0 ? vocabulary.plainText(upTo: Int32(min(room, Int(Int32.max)))) : TokenMask(count: inside[0].count)
            let slots = min(inside.count, room == Int.max ? inside.count : room + 1)
            if slots > 0 {
                accepted.formUnion(inside[slots - 1])
                if needed == 0 {
                    accepted.formUnion(closingUpTo[slots - 1])
                } else if needed < slots {
                    for c in needed..<slots { accepted.formUnion(closing[c]) }
                }
            }
            // Deferred nodes past the bounds are refused when fed to the real stack.
            return TopFrameMask(accepted: accepted, deferred: deferred)
        }
    }

    /// `CharacterSortedMasks` of a string frame, by one walk of the trie.
    func sortByCharacters(_ frame: Frame) -> CharacterSortedMasks {
        let empty = TokenMask(count: vocabulary.count)
        let slots = Int(vocabulary.maxTokenLength) + 1
        var sorted = CharacterSortedMasks(inside: [TokenMask](repeating: empty, count: slots), closing: [TokenMask](repeating: empty, count: slots), deferred: [])
        var start = frame
        start.a = 0
        var run = Run(stack: [Frame(node: Frame.boundary), start], logging: true)
        run.countingCharacters = true
        var prefix: [UInt8] = []
        var deferred: [(node: Int32, prefix: [UInt8])] = []
        walkTop(0, &run, &deferred, &prefix, skipPlain: frame.phase == 0, characters: 0, &sorted)
        sorted.deferred = deferred
        sorted.formUnions()
        return sorted
    }

    /// Feeds each child byte of trie node `node` to `run` (a stack on a
    /// boundary), hands each child it accepts to `accept` (with whether the
    /// top frame is still open and, in a walk counting characters, the
    /// characters added so far), descends, and notes the children whose
    /// byte reached the boundary in `deferred`.
    private func walkTop(_ node: Int32, _ run: inout Run, _ deferred: inout [(node: Int32, prefix: [UInt8])], _ prefix: inout [UInt8],
                         skipPlain: Bool, characters: Int32, _ sink: inout some TopWalkSink, firstBytes: ByteSet? = nil) {
        let v = vocabulary
        // Inside a literal or a declared key the top frame refuses every
        // byte but its trie's next ones outright: look those children up
        // instead of feeding every child.
        if let (t, trieNode) = grammar.trieToFollow(run.stack[run.stack.count - 1]) {
            for edge in grammar.tries[t].children[Int(trieNode)] {
                guard let e = v.edge(node, edge.byte), !(skipPlain && v.onlyPlainBelow[Int(v.childNode[e])]) else { continue }
                walkTopEdge(e, &run, &deferred, &prefix, skipPlain: skipPlain, characters: characters, &sink)
            }
            return
        }
        for e in Int(v.childStart[Int(node)])..<Int(v.childStart[Int(node) + 1]) {
            if skipPlain && v.onlyPlainBelow[Int(v.childNode[e])] { continue }
            // Bytes the frame refuses outright (no boundary, no fork) are not fed.
            if let firstBytes, !firstBytes.contains(v.childByte[e]) { continue }
            walkTopEdge(e, &run, &deferred, &prefix, skipPlain: skipPlain, characters: characters, &sink)
        }
    }

    /// `walkTop`'s step along trie edge `e`: feeds its byte, hands the child
    /// to the sink or notes it deferred, descends, undoes the byte.
    private func walkTopEdge(_ e: Int, _ run: inout Run, _ deferred: inout [(node: Int32, prefix: [UInt8])], _ prefix: inout [UInt8],
                             skipPlain: Bool, characters: Int32, _ sink: inout some TopWalkSink) {
        let v = vocabulary
        let child = v.childNode[e]
        prefix.append(v.childByte[e])
        let undoMark = run.log.count
        var forks: [[Frame]] = []
        run.hitBoundary = false
        let accepted = grammar.feed(v.childByte[e], &run, &forks)
        if run.hitBoundary { deferred.append((child, prefix)) }
        if accepted {
            let open = run.stack.count >= 2
            // A string's count once its closing quote has popped it: the characters before the quote.
            let count = run.countingCharacters && open ? run.stack[1].a : characters
            sink.accept(tokensOf: child, open: open, characters: count, v)
            if v.childStart[Int(child)] < v.childStart[Int(child) + 1] { walkTop(child, &run, &deferred, &prefix, skipPlain: skipPlain, characters: count, &sink) }
        }
        run.undo(to: undoMark)
        for fork in forks {
            var forked = Run(stack: fork, logging: true)
            forked.hiddenDepth = run.hiddenDepth
            sink.accept(tokensOf: child, open: true, characters: characters, v)
            walkTop(child, &forked, &deferred, &prefix, skipPlain: false, characters: characters, &sink)
        }
        prefix.removeLast()
    }

    /// Feeds each child byte of trie node `node` to `run` (a whole stack),
    /// marks the tokens ending at the children it accepts, and descends;
    /// then undoes the byte.
    private func walk(_ node: Int32, _ run: inout Run, _ mask: inout TokenMask) {
        let v = vocabulary
        for e in Int(v.childStart[Int(node)])..<Int(v.childStart[Int(node) + 1]) {
            let child = v.childNode[e]
            let undoMark = run.log.count
            var forks: [[Frame]] = []
            if grammar.feed(v.childByte[e], &run, &forks) {
                mark(tokensOf: child, &mask)
                if v.childStart[Int(child)] < v.childStart[Int(child) + 1] { walk(child, &run, &mask) }
            }
            run.undo(to: undoMark)
            for fork in forks {
                var forked = Run(stack: fork, logging: true)
                mark(tokensOf: child, &mask)
                walk(child, &forked, &mask)
            }
        }
    }

    @inline(__always) private func mark(tokensOf node: Int32, _ mask: inout TokenMask) { vocabulary.mark(tokensOf: node, &mask) }
}

/// Grammar-constrained decoding of one sequence: the automaton's state (a
/// set of stacks, usually one) and the masks from its `GrammarMasks`.
public struct JSONConstraint: TokenConstraint {
    public let masks: GrammarMasks
    private var stacks: [[Frame]]
    /// An end token was accepted.
    public private(set) var ended = false
    /// The bytes accepted so far.
    public private(set) var output: [UInt8] = []

    public init(masks: GrammarMasks) {
        self.masks = masks
        stacks = [masks.grammar.initialStack]
    }

    public var isComplete: Bool { ended || stacks.contains { masks.grammar.isComplete($0) } }

    public mutating func fillMask(_ mask: inout TokenMask) {
        precondition(mask.count == masks.vocabulary.count, "mask over \(mask.count) tokens, vocabulary has \(masks.vocabulary.count)")
        mask.setAll(false)
        if ended { return }
        for (k, stack) in stacks.enumerated() {
            let m = masks.mask(for: stack)
            if k == 0 { mask = m } else { mask.formUnion(m) }
        }
        if stacks.contains(where: { masks.grammar.isComplete($0) }) {
            for t in masks.vocabulary.endTokens where t < mask.count { mask[t] = true }
        }
    }

    public mutating func accept(_ token: Int) throws {
        let v = masks.vocabulary
        guard token >= 0 && token < v.count else { throw GrammarError.unknownToken(token) }
        if ended { throw GrammarError.afterEnd(token) }
        if v.endTokens.contains(token) {
            guard isComplete else { throw GrammarError.tokenNotAllowed(token) }
            ended = true
            return
        }
        let bytes = v.tokens[token]
        guard !bytes.isEmpty, !v.excludedTokens.contains(token) else { throw GrammarError.tokenNotAllowed(token) }
        let next = masks.grammar.advance(stacks, by: bytes)
        guard !next.isEmpty else { throw GrammarError.tokenNotAllowed(token) }
        stacks = next
        output += bytes
    }

    /// The fewest tokens spelling a short completion (the end token not
    /// included); [] when already complete or ended; nil if the vocabulary
    /// cannot spell one.
    public func closingTokens() -> [Int]? {
        if isComplete { return [] }
        var best: [Int]?
        for stack in stacks {
            guard let bytes = masks.grammar.closingBytes(stack), let tokens = masks.vocabulary.tokenize(bytes) else { continue }
            if best == nil || tokens.count < best!.count { best = tokens }
        }
        return best
    }
}
