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
/// `JSONConstraint` per sequence (`constraint()`); they share the cache.
public final class GrammarMasks: @unchecked Sendable {
    public let grammar: JSONGrammar
    public let vocabulary: TokenVocabulary
    /// Masks kept at most; past that the cache starts again (a schema
    /// meets few states; free text in long strings with length limits meets more).
    public let cacheLimit: Int

    private var cache: [[UInt32]: TokenMask] = [:]
    private let lock = NSLock()
    private var hits = 0, misses = 0

    public init(grammar: JSONGrammar, vocabulary: TokenVocabulary, cacheLimit: Int = 20_000) {
        self.grammar = grammar
        self.vocabulary = vocabulary
        self.cacheLimit = cacheLimit
    }

    /// A fresh constraint at the start of the output.
    public func constraint() -> JSONConstraint { JSONConstraint(masks: self) }

    /// (cache hits, misses) so far.
    public var cacheCounts: (hits: Int, misses: Int) { lock.lock(); defer { lock.unlock() }; return (hits, misses) }

    /// The tokens (end tokens aside) whose bytes keep `stack` alive.
    func mask(for stack: [Frame]) -> TokenMask {
        let key = grammar.cacheKey(stack, horizon: vocabulary.maxTokenLength + 1)
        lock.lock()
        if let m = cache[key] { hits += 1; lock.unlock(); return m }
        misses += 1
        lock.unlock()
        var mask = TokenMask(count: vocabulary.count)
        var run = Run(stack: stack, logging: true)
        if grammar.isInsideUnboundedString(stack) {
            // Plain text leaves the state as it is: all of it is allowed, and
            // the walk skips the subtrees that hold nothing else.
            mask = vocabulary.plainText
            walk(0, &run, &mask, skipPlain: true)
        } else {
            walk(0, &run, &mask, skipPlain: false)
        }
        lock.lock()
        if cache.count >= cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[key] = mask
        lock.unlock()
        return mask
    }

    /// Feeds each child byte of trie node `node` to `run`, marks the tokens
    /// ending at the children it accepts, and descends; then undoes the byte.
    private func walk(_ node: Int32, _ run: inout Run, _ mask: inout TokenMask, skipPlain: Bool) {
        let v = vocabulary
        for e in Int(v.childStart[Int(node)])..<Int(v.childStart[Int(node) + 1]) {
            let child = v.childNode[e]
            if skipPlain && v.onlyPlainBelow[Int(child)] { continue }
            let undoMark = run.log.count
            var forks: [[Frame]] = []
            if grammar.feed(v.childByte[e], &run, &forks) {
                mark(tokensOf: child, &mask)
                if v.childStart[Int(child)] < v.childStart[Int(child) + 1] { walk(child, &run, &mask, skipPlain: skipPlain) }
            }
            run.undo(to: undoMark)
            for fork in forks {
                var forked = Run(stack: fork, logging: true)
                mark(tokensOf: child, &mask)
                walk(child, &forked, &mask, skipPlain: false)
            }
        }
    }

    @inline(__always) private func mark(tokensOf node: Int32, _ mask: inout TokenMask) {
        let v = vocabulary
        for k in Int(v.tokenStart[Int(node)])..<Int(v.tokenStart[Int(node) + 1]) { mask[Int(v.tokenIds[k])] = true }
    }
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
