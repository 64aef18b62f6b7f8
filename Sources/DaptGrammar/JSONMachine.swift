import DaptCore

/// Keys of a free object (decoded, in order), or the raw bytes of the key
/// being read: immutable, so frames copy by reference.
final class FreeKeys: Sendable {
    let keys: [[UInt8]]
    let raw: [UInt8]
    init(keys: [[UInt8]] = [], raw: [UInt8] = []) { self.keys = keys; self.raw = raw }
}

/// One level of the automaton's stack: where the text is inside one value
/// (or the document, for the bottom frame).
struct Frame: Sendable {
    /// The grammar node, or `Frame.document` / `Frame.key` (a free object's key).
    var node: Int32
    var phase: UInt8 = 0
    /// Whitespace bytes read since the phase began.
    var ws: UInt8 = 0
    /// string: characters (saturating); array: items (saturating); object:
    /// the next property index; literal: the trie node.
    var a: Int32 = 0
    /// string: the \u value read so far or a UTF-8 sequence's expectations;
    /// object: the key trie node.
    var b: Int32 = 0
    /// freeObject: its keys; key frame: the raw key bytes.
    var extra: FreeKeys? = nil

    static let document: Int32 = -1
    static let key: Int32 = -2
    /// Stands for the frames below the top one in a walk that computes the
    /// part of a mask the top frame decides alone (`Run.hitBoundary`).
    static let boundary: Int32 = -3
}

/// Bytes fed to a stack, and every change made, so a walk over the
/// vocabulary trie can undo a byte instead of copying the stack.
struct Run {
    var stack: [Frame]
    private(set) var log: [(index: Int32, frame: Frame)] = []
    let logging: Bool
    /// Frames of the real stack not in `stack` (below a `Frame.boundary`),
    /// so the nesting limit counts them.
    var hiddenDepth = 0
    /// A byte needed the frames below the boundary: the walk cannot decide
    /// it alone (set by `feed`, never undone).
    var hitBoundary = false
    /// Strings take any number of characters and `a` counts them without
    /// saturating (a walk that sorts tokens by the characters they add).
    var countingCharacters = false
    /// The stack stands on a `Frame.boundary`: a key's bytes are not kept
    /// (only its closing quote reads them, and that needs the parent anyway).
    var truncated: Bool { stack.first?.node == Frame.boundary }

    init(stack: [Frame], logging: Bool) { self.stack = stack; self.logging = logging }

    @inline(__always) mutating func set(_ i: Int, _ f: Frame) {
        if logging { log.append((Int32(i), stack[i])) }
        stack[i] = f
    }

    @inline(__always) mutating func push(_ f: Frame) {
        if logging { log.append((-1, f)) }
        stack.append(f)
    }

    @inline(__always) mutating func pop() {
        let f = stack.removeLast()
        if logging { log.append((-2, f)) }
    }

    /// Undoes every change after `mark` (a `log.count`).
    mutating func undo(to mark: Int) {
        while log.count > mark {
            let (i, f) = log.removeLast()
            switch i {
            case -1: stack.removeLast()
            case -2: stack.append(f)
            default: stack[Int(i)] = f
            }
        }
    }
}

@inline(__always) func isWhitespace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }

@inline(__always) func hexValue(_ b: UInt8) -> Int32? {
    switch b {
    case 0x30...0x39: return Int32(b - 0x30)
    case 0x41...0x46: return Int32(b - 0x41 + 10)
    case 0x61...0x66: return Int32(b - 0x61 + 10)
    default: return nil
    }
}

private let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\"), comma = UInt8(ascii: ","), colon = UInt8(ascii: ":")
private let openBrace = UInt8(ascii: "{"), closeBrace = UInt8(ascii: "}"), openBracket = UInt8(ascii: "["), closeBracket = UInt8(ascii: "]")

/// The pushdown automaton of a `JSONGrammar`. A state is a stack of frames;
/// `feed` advances one stack by one byte. Where an `anyOf` has several
/// alternatives starting with the same byte the automaton forks: the extra
/// stacks go to `forks` and the state becomes a set of stacks.
extension JSONGrammar {
    /// The stack before any byte.
    var initialStack: [Frame] { [Frame(node: Frame.document)] }

    /// Advances `run` by byte `b`; false if `b` cannot come next (the run is
    /// then left partly changed: undo it or drop it).
    func feed(_ b: UInt8, _ run: inout Run, _ forks: inout [[Frame]]) -> Bool {
        while true {
            let top = run.stack.count - 1
            var f = run.stack[top]
            if f.node == Frame.boundary { run.hitBoundary = true; return false }
            let kind: Kind? = f.node >= 0 ? nodes[Int(f.node)].kind : nil
            if f.node == Frame.document {
                if isWhitespace(b) {
                    guard Int(f.ws) < maxWhitespace else { return false }
                    f.ws += 1
                    run.set(top, f)
                    return true
                }
                guard f.phase == 0 else { return false }
                f.phase = 1; f.ws = 0
                run.set(top, f)
                switch start(root, b, &run, &forks) {
                case .consumed: return true
                case .refeed: continue
                case .rejected: return false
                }
            }
            switch kind {
            case nil, .string?:
                return stringByte(b, f, top, &run)
            case .number?, .integer?:
                switch numberByte(b, f, integer: kind == .integer) {
                case .next(let phase): f.phase = phase; run.set(top, f); return true
                case .end: run.pop(); continue
                case .rejected: return false
                }
            case .literal?:
                let t = Int(nodes[Int(f.node)].trie)
                if let child = trieChild(t, f.a, b) {
                    if tries[t].payload[Int(child)] >= 0 && tries[t].children[Int(child)].isEmpty { run.pop(); return true }
                    f.a = child
                    run.set(top, f)
                    return true
                }
                guard tries[t].payload[Int(f.a)] >= 0 else { return false }
                run.pop()
                continue
            case .object?, .freeObject?, .array?:
                // (Inside a declared key, phase 2 of an object, whitespace is part of the key.)
                if isWhitespace(b) && !(kind == .object && f.phase == 2) {
                    guard Int(f.ws) < maxWhitespace else { return false }
                    f.ws += 1
                    run.set(top, f)
                    return true
                }
                let result = kind == .array ? arrayByte(b, f, top, &run, &forks) : kind == .object ? objectByte(b, f, top, &run, &forks) : freeObjectByte(b, f, top, &run, &forks)
                switch result {
                case .consumed: return true
                case .refeed: continue
                case .rejected: return false
                }
            case .anyOf?:
                preconditionFailure("anyOf frames are never pushed")
            }
        }
    }

    enum StepResult { case consumed, refeed, rejected }

    /// The child of node `node` of trie `t` on `byte`, nil if none. (Here
    /// rather than a method of `ByteTrie`: calling one on `tries[t]` copies
    /// the trie, retaining each of its arrays, on every byte.)
    @inline(__always) func trieChild(_ t: Int, _ node: Int32, _ byte: UInt8) -> Int32? {
        for edge in tries[t].children[Int(node)] where edge.byte == byte { return edge.node }
        return nil
    }

    /// Starts a value of `node` whose first byte is `b` (not consumed when
    /// the new frame reads it itself: `.refeed`).
    func start(_ node: Int32, _ b: UInt8, _ run: inout Run, _ forks: inout [[Frame]]) -> StepResult {
        guard nodes[Int(node)].firstBytes.contains(b) else { return .rejected }
        switch nodes[Int(node)].kind {
        case .anyOf:
            let matching = nodes[Int(node)].alternatives.filter { nodes[Int($0)].firstBytes.contains(b) }
            // Extra alternatives go to copies, each fed `b` to its end.
            for alt in matching.dropFirst() {
                var copy = Run(stack: run.stack, logging: false)
                copy.hiddenDepth = run.hiddenDepth
                var ok: Bool
                switch start(alt, b, &copy, &forks) {
                case .consumed: ok = true
                case .refeed: ok = feed(b, &copy, &forks)
                case .rejected: ok = false
                }
                if copy.hitBoundary { run.hitBoundary = true }
                if ok { forks.append(copy.stack) }
            }
            return start(matching[0], b, &run, &forks)
        case .object, .freeObject, .array:
            guard run.stack.count - 1 + run.hiddenDepth < JSON.maxDepth else { return .rejected }
            run.push(Frame(node: node))
            return .consumed
        case .string:
            run.push(Frame(node: node))
            return .consumed
        case .number, .integer:
            run.push(Frame(node: node))
            return .refeed
        case .literal:
            run.push(Frame(node: node))
            return .refeed
        }
    }

    enum NumberStep { case next(UInt8), end, rejected }

    /// Number phases: 0 start, 1 after '-', 2 after a leading 0, 3 integer
    /// digits, 4 after '.', 5 fraction digits, 6 after 'e', 7 after the
    /// exponent's sign, 8 exponent digits. 2, 3, 5 and 8 may end the number.
    @inline(__always) func numberByte(_ b: UInt8, _ f: Frame, integer: Bool) -> NumberStep {
        let digit = b >= 0x30 && b <= 0x39
        switch f.phase {
        case 0:
            if b == UInt8(ascii: "-") { return .next(1) }
            fallthrough
        case 1:
            if b == 0x30 { return .next(2) }
            return digit ? .next(3) : .rejected
        case 2, 3:
            if digit && f.phase == 3 { return .next(3) }
            if !integer && b == UInt8(ascii: ".") { return .next(4) }
            if !integer && (b == UInt8(ascii: "e") || b == UInt8(ascii: "E")) { return .next(6) }
            return digit ? .rejected : .end
        case 4:
            return digit ? .next(5) : .rejected
        case 5:
            if digit { return .next(5) }
            if b == UInt8(ascii: "e") || b == UInt8(ascii: "E") { return .next(6) }
            return .end
        case 6:
            if b == UInt8(ascii: "+") || b == UInt8(ascii: "-") { return .next(7) }
            return digit ? .next(8) : .rejected
        case 7:
            return digit ? .next(8) : .rejected
        default:
            return digit ? .next(8) : .end
        }
    }

    /// String phases: 0 content, 1 after '\', 2-5 \u with 0-3 hex digits
    /// (b: the value so far), 6-7 expecting the '\' and 'u' of a low
    /// surrogate, 8-11 its hex digits, 12 inside a UTF-8 sequence (b: bytes
    /// left | lowest next byte << 8 | highest << 16). `a` counts characters
    /// (code points) up to the node's cap.
    func stringByte(_ b: UInt8, _ frame: Frame, _ top: Int, _ run: inout Run) -> Bool {
        var f = frame
        let isKey = f.node == Frame.key
        let bounded = !isKey && !run.countingCharacters
        let minCount = bounded ? nodes[Int(f.node)].minCount : 0, maxCount = bounded ? nodes[Int(f.node)].maxCount : -1
        let cap = run.countingCharacters ? Int32.max : maxCount >= 0 ? maxCount : minCount
        @inline(__always) func startCharacter(_ f: inout Frame) -> Bool {
            if maxCount >= 0 && f.a >= maxCount { return false }
            if f.a < cap { f.a += 1 }
            return true
        }
        switch f.phase {
        case 0:
            if b == quote {
                guard f.a >= minCount else { return false }
                if isKey {
                    // Unique keys depend on the parent: a truncated walk leaves it to the full stack.
                    if run.truncated {
                        run.hitBoundary = true
                        return false
                    }
                    var text: [UInt8] = [quote]
                    text += f.extra?.raw ?? []
                    text.append(quote)
                    guard let key = (try? JSONValue.parse(text))?.string.map({ Array($0.utf8) }) else { return false }
                    var parent = run.stack[top - 1]
                    let keys = parent.extra?.keys ?? []
                    guard !keys.contains(key) else { return false }
                    run.pop()
                    parent.extra = FreeKeys(keys: keys + [key])
                    run.set(top - 1, parent)
                    return true
                }
                run.pop()
                return true
            }
            if b == backslash {
                guard startCharacter(&f) else { return false }
                f.phase = 1
            } else if b < 0x20 {
                return false
            } else if b < 0x80 {
                guard startCharacter(&f) else { return false }
            } else {
                let expect: Int32
                switch b {
                case 0xC2...0xDF: expect = 1 | 0x80 << 8 | 0xBF << 16
                case 0xE0: expect = 2 | 0xA0 << 8 | 0xBF << 16
                case 0xE1...0xEC, 0xEE...0xEF: expect = 2 | 0x80 << 8 | 0xBF << 16
                case 0xED: expect = 2 | 0x80 << 8 | 0x9F << 16
                case 0xF0: expect = 3 | 0x90 << 8 | 0xBF << 16
                case 0xF1...0xF3: expect = 3 | 0x80 << 8 | 0xBF << 16
                case 0xF4: expect = 3 | 0x80 << 8 | 0x8F << 16
                default: return false
                }
                guard startCharacter(&f) else { return false }
                f.phase = 12
                f.b = expect
            }
        case 1:
            switch b {
            case quote, backslash, UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                f.phase = 0
            case UInt8(ascii: "u"):
                f.phase = 2
                f.b = 0
            default:
                return false
            }
        case 2...5:
            guard let d = hexValue(b) else { return false }
            // \uDC.. to \uDF.. would be a lone low surrogate: refused at its second digit.
            if f.phase == 3 && f.b == 0xD && d >= 0xC { return false }
            f.b = f.b << 4 | d
            if f.phase == 5 {
                f.phase = f.b >= 0xD800 && f.b < 0xDC00 ? 6 : 0
                f.b = 0
            } else {
                f.phase += 1
            }
        case 6:
            guard b == backslash else { return false }
            f.phase = 7
        case 7:
            guard b == UInt8(ascii: "u") else { return false }
            f.phase = 8
        case 8:
            guard hexValue(b) == 0xD else { return false }
            f.phase = 9
        case 9:
            guard let d = hexValue(b), d >= 0xC else { return false }
            f.phase = 10
        case 10, 11:
            guard hexValue(b) != nil else { return false }
            f.phase = f.phase == 11 ? 0 : 11
        default:
            let left = f.b & 0xFF, low = UInt8((f.b >> 8) & 0xFF), high = UInt8((f.b >> 16) & 0xFF)
            guard b >= low && b <= high else { return false }
            if left == 1 {
                f.phase = 0
                f.b = 0
            } else {
                f.b = (left - 1) | 0x80 << 8 | 0xBF << 16
            }
        }
        if isKey && !run.truncated { f.extra = FreeKeys(raw: (f.extra?.raw ?? []) + [b]) }
        run.set(top, f)
        return true
    }

    /// Object phases: 0 after '{', 1 after ',', 2 inside a key (b: the key
    /// trie node), 3 after a key (a: its property), 4 after ':', 5 after a
    /// value (a: the next property to consider).
    func objectByte(_ b: UInt8, _ frame: Frame, _ top: Int, _ run: inout Run, _ forks: inout [[Frame]]) -> StepResult {
        var f = frame
        let n = Int(f.node)
        switch f.phase {
        case 0, 1, 5:
            if b == closeBrace && f.phase != 1 {
                guard !nodes[n].requiredFrom[Int(f.a)] else { return .rejected }
                run.pop()
                return .consumed
            }
            if b == comma && f.phase == 5 {
                guard !tries[Int(nodes[n].keyTries[Int(f.a)])].isEmpty else { return .rejected }
                f.phase = 1; f.ws = 0
                run.set(top, f)
                return .consumed
            }
            guard b == quote, f.phase != 5 else { return .rejected }
            guard let child = trieChild(Int(nodes[n].keyTries[Int(f.a)]), 0, b) else { return .rejected }
            f.phase = 2; f.ws = 0; f.b = child
        case 2:
            let t = Int(nodes[n].keyTries[Int(f.a)])
            guard let child = trieChild(t, f.b, b) else { return .rejected }
            if tries[t].payload[Int(child)] >= 0 {
                f.a = tries[t].payload[Int(child)]
                f.phase = 3; f.b = 0
            } else {
                f.b = child
            }
        case 3:
            guard b == colon else { return .rejected }
            f.phase = 4; f.ws = 0
        default:
            let value = nodes[n].properties[Int(f.a)].node
            f.phase = 5; f.ws = 0; f.a += 1
            run.set(top, f)
            return start(value, b, &run, &forks)
        }
        run.set(top, f)
        return .consumed
    }

    /// Free object phases: 0 after '{', 1 after ',', 3 after a key, 4 after
    /// ':', 5 after a value; keys are read by a key frame pushed on '"'.
    func freeObjectByte(_ b: UInt8, _ frame: Frame, _ top: Int, _ run: inout Run, _ forks: inout [[Frame]]) -> StepResult {
        var f = frame
        switch f.phase {
        case 0, 1, 5:
            if b == closeBrace && f.phase != 1 { run.pop(); return .consumed }
            if b == comma && f.phase == 5 { f.phase = 1; f.ws = 0; run.set(top, f); return .consumed }
            guard b == quote, f.phase != 5 else { return .rejected }
            f.phase = 3; f.ws = 0
            run.set(top, f)
            run.push(Frame(node: Frame.key))
            return .consumed
        case 3:
            guard b == colon else { return .rejected }
            f.phase = 4; f.ws = 0
            run.set(top, f)
            return .consumed
        default:
            f.phase = 5; f.ws = 0
            run.set(top, f)
            return start(nodes[Int(f.node)].items, b, &run, &forks)
        }
    }

    /// Array phases: 0 after '[', 1 after ',', 2 after an item; `a` counts items.
    func arrayByte(_ b: UInt8, _ frame: Frame, _ top: Int, _ run: inout Run, _ forks: inout [[Frame]]) -> StepResult {
        var f = frame
        let minCount = nodes[Int(f.node)].minCount, maxCount = nodes[Int(f.node)].maxCount
        if f.phase == 2 {
            if b == comma {
                guard maxCount < 0 || f.a < maxCount else { return .rejected }
                f.phase = 1; f.ws = 0
                run.set(top, f)
                return .consumed
            }
            guard b == closeBracket, f.a >= minCount else { return .rejected }
            run.pop()
            return .consumed
        }
        if b == closeBracket && f.phase == 0 {
            guard minCount == 0 else { return .rejected }
            run.pop()
            return .consumed
        }
        if maxCount == 0 { return .rejected }
        if f.a < (maxCount >= 0 ? maxCount : minCount) { f.a += 1 }
        f.phase = 2; f.ws = 0
        run.set(top, f)
        return start(nodes[Int(f.node)].items, b, &run, &forks)
    }

    /// When the top frame is a string between characters (a value string,
    /// or a free object's key in a walk that leaves its closing to the
    /// stack below), the characters a plain-text token may still add
    /// (`Int32.max` without an upper bound): such a token is allowed exactly
    /// when it fits. nil otherwise.
    func plainTextRoom(_ stack: [Frame]) -> Int32? {
        guard let f = stack.last else { return nil }
        return plainTextRoom(top: f)
    }

    /// `plainTextRoom` of a stack whose top frame is `f`.
    func plainTextRoom(top f: Frame) -> Int32? {
        guard f.phase == 0 else { return nil }
        if f.node == Frame.key { return Int32.max }
        guard f.node >= 0, nodes[Int(f.node)].kind == .string else { return nil }
        let maxCount = nodes[Int(f.node)].maxCount
        return maxCount < 0 ? Int32.max : maxCount - f.a
    }

    // MARK: end of text

    /// The text so far is a complete value (only trailing whitespace may follow).
    func isComplete(_ stack: [Frame]) -> Bool {
        var k = stack.count - 1
        while k >= 0 {
            let f = stack[k]
            if f.node == Frame.document { return f.phase == 1 }
            if f.node < 0 { return false }
            let n = nodes[Int(f.node)]
            switch n.kind {
            case .number, .integer:
                guard [2, 3, 5, 8].contains(f.phase) else { return false }
            case .literal:
                guard tries[Int(n.trie)].payload[Int(f.a)] >= 0 else { return false }
            default:
                return false
            }
            k -= 1
        }
        return false
    }

    /// Feeds `bytes` to every stack in `stacks`; the stacks still alive
    /// (duplicates removed), empty if the bytes cannot come next.
    func advance(_ stacks: [[Frame]], by bytes: some Sequence<UInt8>) -> [[Frame]] {
        var current = stacks
        for b in bytes {
            var next: [[Frame]] = []
            for stack in current {
                var run = Run(stack: stack, logging: false)
                var forks: [[Frame]] = []
                if feed(b, &run, &forks) { next.append(run.stack) }
                next += forks
            }
            current = Self.unique(next)
            if current.isEmpty { return [] }
        }
        return current
    }

    static func unique(_ stacks: [[Frame]]) -> [[Frame]] {
        if stacks.count < 2 { return stacks }
        var seen = WordKeyTable<Void>()
        return stacks.filter { seen.insert(exactKey($0), ()) }
    }

    static func exactKey(_ stack: [Frame]) -> [UInt32] { stateKey(stack, nodes: nil, horizon: 0) }

    /// A stable encoding of a stack for the mask cache: stacks with equal
    /// keys allow the same tokens of at most `horizon - 1` bytes. A string's
    /// characters and an array's items are kept only as their distance to the
    /// bounds, capped at `horizon` (a token adds at most one character or
    /// item per byte), so a long string meets a handful of keys, not one per length.
    func cacheKey(_ stack: [Frame], horizon: Int32) -> [UInt32] { Self.stateKey(stack, nodes: nodes, horizon: horizon) }

    /// The cache key of the top frame alone, for the tokens it decides
    /// without the frames below (`GrammarMasks`): its free object keys or
    /// key bytes left out (only a key's closing quote reads them, and a walk
    /// of the top frame leaves that quote to the full stack), counts and
    /// whitespace folded as `folding` says, its depth kept only where a
    /// token could reach the nesting limit.
    func topCacheKey(_ stack: [Frame], folding: TopKeyFolding) -> [UInt32] {
        topCacheKey(stack[stack.count - 1], nearLimitDepth: stack.count + Int(folding.characters) >= JSON.maxDepth ? stack.count : 0, folding: folding)
    }

    /// The top-frame key of `frame` on a stack `nearLimitDepth` deep, or 0
    /// when a token cannot reach the nesting limit from there.
    func topCacheKey(_ frame: Frame, nearLimitDepth: Int, folding: TopKeyFolding) -> [UInt32] {
        var key: [UInt32] = []
        key.reserveCapacity(5)
        var f = frame
        if countsWhitespace(f) { f.ws = max(f.ws, folding.whitespaceFloor) }
        if f.node >= 0, let horizon = folding.horizon(nodes[Int(f.node)].kind) {
            Self.appendFrameWords(f, count: Self.countWord(nodes[Int(f.node)], f.a, horizon: horizon), to: &key)
        } else {
            Self.appendFrameWords(f, count: UInt32(bitPattern: f.a), to: &key)
        }
        key.append(UInt32(nearLimitDepth))
        return key
    }

    /// Appends the four words a key holds for `frame`: its node, its phase
    /// and whitespace count, `count` (its count `a` as the key holds it),
    /// and `b`.
    @inline(__always) static func appendFrameWords(_ frame: Frame, count: UInt32, to key: inout [UInt32]) {
        key.append(UInt32(bitPattern: frame.node))
        key.append(UInt32(frame.phase) | UInt32(frame.ws) << 8)
        key.append(count)
        key.append(UInt32(bitPattern: frame.b))
    }

    /// A string's or array's count `a` as a key holds it: its distances to
    /// the node's bounds, each capped at `horizon`.
    @inline(__always) static func countWord(_ node: Node, _ a: Int32, horizon: Int32) -> UInt32 {
        let toMax = node.maxCount >= 0 ? min(node.maxCount - a, horizon) : -1
        let toMin = min(max(node.minCount - a, 0), horizon)
        return UInt32(bitPattern: toMax) ^ UInt32(bitPattern: toMin) << 16
    }

    /// Whether `frame`'s whitespace count limits the whitespace it takes
    /// (the document, and objects and arrays between their tokens; inside
    /// a declared key whitespace is key text).
    @inline(__always) func countsWhitespace(_ frame: Frame) -> Bool {
        if frame.node == Frame.document { return true }
        guard frame.node >= 0 else { return false }
        switch nodes[Int(frame.node)].kind {
        case .object: return frame.phase != 2
        case .freeObject, .array: return true
        default: return false
        }
    }

    /// Top frames whose masks `GrammarMasks` computes before the first
    /// token: every frame reachable from the document frame by feeding
    /// bytes, each frame fed every byte on a `Frame.boundary` (frames it
    /// pushes are reached too, and the frame below a pushed one is where
    /// the text goes on when that one ends). One frame per top-frame key
    /// (equal keys, equal masks), far from the nesting limit; of a string's
    /// or array's frames with one key, the largest count (a string of
    /// `maxLength` 10,000 meets about `folding.characters` keys, not 10,000
    /// frames), and of the frames whose whitespace counts fold together, the
    /// largest count. Left out (their
    /// masks are computed when met): a `\u` escape after its first hex
    /// digit (the digits read so far make 4,368 frames per string, each
    /// rarely met), and whatever lies past `limit` frames. `complete` is
    /// false when the limit cut the search.
    func reachableTopFrames(folding: TopKeyFolding, limit: Int) -> (frames: [Frame], complete: Bool) {
        // Canonical frames (no `extra`, counts as below) are one per key, so
        // their frame words with the count `a` itself identify them without building keys.
        var seen = WordKeyTable<Void>(minimumCapacity: 2048)
        var id: [UInt32] = []
        id.reserveCapacity(4)
        var frames: [Frame] = []
        frames.reserveCapacity(2048)
        // Frames fed bytes: each frame found, and for a count shared by
        // several counts, that count less one too (below).
        var explore: [Frame] = []
        explore.reserveCapacity(2048)
        var complete = true
        // The search's state passed in, not captured: captured variables
        // live in boxes checked for exclusive access on every use.
        func add(_ frame: Frame, _ seen: inout WordKeyTable<Void>, _ id: inout [UInt32], _ frames: inout [Frame], _ explore: inout [Frame], _ complete: inout Bool) {
            if leftLazy(frame) { return }
            var f = frame
            f.extra = nil
            var shared = false
            // Of the frames with this key, the one whose next character or
            // item reaches the next key. A byte adds at most one, so the
            // keys the others reach are this one's and, when the key holds
            // more than one count, those the count less one reaches (its
            // next count has this key but may have another phase: after a
            // string's lead byte, an array's first item).
            if f.node >= 0, let horizon = folding.horizon(nodes[Int(f.node)].kind) {
                let minCount = nodes[Int(f.node)].minCount, maxCount = nodes[Int(f.node)].maxCount
                let cap = maxCount >= 0 ? maxCount : minCount
                var next = Int32.max
                if f.a < minCount { next = max(f.a + 1, minCount - horizon + 1) }
                if maxCount >= 0 && f.a < maxCount { next = min(next, max(f.a + 1, maxCount - horizon + 1)) }
                f.a = next == Int32.max ? cap : min(cap, next - 1)
                shared = f.a > 0 && Self.countWord(nodes[Int(f.node)], f.a - 1, horizon: horizon) == Self.countWord(nodes[Int(f.node)], f.a, horizon: horizon)
            }
            if countsWhitespace(f) { f.ws = max(f.ws, folding.whitespaceFloor) }
            id.removeAll(keepingCapacity: true)
            Self.appendFrameWords(f, count: UInt32(bitPattern: f.a), to: &id)
            guard seen.insert(id, ()) else { return }
            if frames.count >= limit { complete = false; return }
            frames.append(f)
            explore.append(f)
            if shared {
                f.a -= 1
                explore.append(f)
            }
        }
        add(Frame(node: Frame.document), &seen, &id, &frames, &explore, &complete)
        let bytes = byteClassRepresentatives()
        var k = 0
        var forks: [[Frame]] = []
        // One run for the whole search: each frame set on the boundary, each byte undone (no copies).
        var run = Run(stack: [Frame(node: Frame.boundary), Frame(node: Frame.document)], logging: true)
        while k < explore.count {
            run.stack[1] = explore[k]
            k += 1
            for b in searchBytes(explore[k - 1], all: bytes) {
                forks.removeAll(keepingCapacity: true)
                if feed(b, &run, &forks) {
                    for i in 1..<run.stack.count { add(run.stack[i], &seen, &id, &frames, &explore, &complete) }
                }
                run.undo(to: 0)
                for fork in forks { for f in fork.dropFirst() { add(f, &seen, &id, &frames, &explore, &complete) } }
            }
        }
        return (frames, complete)
    }

    /// The bytes the search feeds `frame`: inside a key or a literal (see
    /// `onlyFirstBytes`), the trie's next bytes; in a number, the bytes that
    /// continue it (any other ends it or is refused); in a string's text, after its
    /// backslash, or inside a UTF-8 character (a free object's key too),
    /// one byte per class that frame tells apart, else `all` (one byte per
    /// class any frame tells apart). Strings are most of a schema's frames.
    func searchBytes(_ frame: Frame, all: [UInt8]) -> [UInt8] {
        // In a key or literal trie, the trie's next bytes (each its own class in `all`).
        if let only = onlyFirstBytes(frame) { return all.filter { only.contains($0) } }
        if frame.node >= 0 {
            switch nodes[Int(frame.node)].kind {
            // A number's other bytes are refused or end it and go to the frame below: nothing to find.
            case .number, .integer: return Self.numberBytes
            // So do a complete literal's bytes but those going on in its trie.
            case .literal:
                let t = Int(nodes[Int(frame.node)].trie)
                return tries[t].children[Int(frame.a)].map(\.byte)
            default: break
            }
        }
        guard frame.node == Frame.key || (frame.node >= 0 && nodes[Int(frame.node)].kind == .string) else { return all }
        switch frame.phase {
        // Closing quote, backslash, any other ASCII text byte, and a lead byte per continuation range it calls for.
        case 0: return Self.textBytes
        // An escape's letters all return to the text but `u`.
        case 1: return [quote, UInt8(ascii: "u")]
        // Continuation bytes by range; all in the frame's range act alike.
        case 12: return [0x80, 0x90, 0xA0]
        // After `\u` every byte taken (a hex digit) leads to a frame left lazy.
        case 2: return []
        default: return all
        }
    }

    /// Whether the search leaves `frame` to be computed when met: a `\u`
    /// escape past its first hex digit (in a string or a free object's key).
    func leftLazy(_ frame: Frame) -> Bool {
        (3...5).contains(frame.phase) && (frame.node == Frame.key || (frame.node >= 0 && nodes[Int(frame.node)].kind == .string))
    }

    /// The bytes a number goes on with (each its own class).
    static let numberBytes: [UInt8] = Array("0123456789+-.eE".utf8)

    static let textBytes: [UInt8] = [quote, backslash, UInt8(ascii: "a"), 0xC2, 0xE0, 0xE1, 0xED, 0xF0, 0xF1, 0xF4]

    /// Whitespace and the punctuation between the tokens of an object or array.
    private static let betweenTokensBytes: ByteSet = {
        var bytes = ByteSet()
        for b in " \n\r\t\",:}]".utf8 { bytes.insert(b) }
        return bytes
    }()

    /// The trie and node whose next bytes are the only ones `frame` takes
    /// (refusing the others outright, without reaching the frames below):
    /// inside a declared key, or inside a literal short of its end. Nil for
    /// other frames.
    @inline(__always) func trieToFollow(_ frame: Frame) -> (trie: Int, node: Int32)? {
        guard frame.node >= 0 else { return nil }
        switch nodes[Int(frame.node)].kind {
        case .object where frame.phase == 2: return (Int(nodes[Int(frame.node)].keyTries[Int(frame.a)]), frame.b)
        case .literal:
            let t = Int(nodes[Int(frame.node)].trie)
            // At a complete literal, another byte ends it and reaches the frame below.
            return tries[t].payload[Int(frame.a)] < 0 ? (t, frame.a) : nil
        default: return nil
        }
    }

    /// Bytes outside which `frame` (on a boundary) refuses every byte
    /// outright, without reaching the boundary: inside a declared key, or
    /// inside a literal short of its end, the trie's next bytes; between
    /// the tokens of a declared object or an array, whitespace, punctuation
    /// and the bytes starting a value there. Nil for other frames.
    func onlyFirstBytes(_ frame: Frame) -> ByteSet? {
        var bytes = ByteSet()
        if let (t, trieNode) = trieToFollow(frame) {
            for edge in tries[t].children[Int(trieNode)] { bytes.insert(edge.byte) }
            return bytes
        }
        guard frame.node >= 0 else { return nil }
        let node = nodes[Int(frame.node)]
        switch node.kind {
        case .object, .array:
            // Between the tokens of an object or array: whitespace, its
            // punctuation, and the bytes that can start a value here (a superset).
            bytes = Self.betweenTokensBytes
            if node.kind == .array { bytes.formUnion(nodes[Int(node.items)].firstBytes) }
            else if frame.phase == 4 { bytes.formUnion(nodes[Int(node.properties[Int(frame.a)].node)].firstBytes) }
            return bytes
        default: return nil
        }
    }

    /// One byte of each class of bytes `feed` treats alike in every frame:
    /// each byte JSON gives a meaning (structure, digits, number and escape
    /// letters, hex digits, whitespace) or that some literal or key trie
    /// holds is its own class; the other control bytes are one class, the
    /// other ASCII bytes one, and the other bytes fall into the ranges UTF-8
    /// validation tells apart (lead bytes by the continuation range they
    /// call for, continuation bytes by those ranges, bytes never valid).
    func byteClassRepresentatives() -> [UInt8] {
        var own = ByteSet()
        for b in Array(#""\/{}[],:-+.eEubfnrt"#.utf8) + Array(0x30...0x39) + Array(0x41...0x46) + Array(0x61...0x66) + [0x20, 0x0A, 0x0D, 0x09] { own.insert(b) }
        for trie in tries { for edges in trie.children { for edge in edges { own.insert(edge.byte) } } }
        let ranges: [ClosedRange<UInt8>] = [0x00...0x1F, 0x20...0x7F, 0x80...0x8F, 0x90...0x9F, 0xA0...0xBF, 0xC0...0xC1, 0xC2...0xDF, 0xE0...0xE0,
                                            0xE1...0xEC, 0xED...0xED, 0xEE...0xEF, 0xF0...0xF0, 0xF1...0xF3, 0xF4...0xF4, 0xF5...0xFF]
        var out: [UInt8] = (0...255).map { UInt8($0) }.filter { own.contains($0) }
        for range in ranges { if let b = range.first(where: { !own.contains($0) }) { out.append(b) } }
        return out
    }

    /// A stable encoding of a stack: equal encodings, equal futures.
    static func stateKey(_ stack: some Collection<Frame>, nodes: [Node]?, horizon: Int32, extraRoom: Int = 0) -> [UInt32] {
        var key: [UInt32] = []
        key.reserveCapacity(stack.count * 4 + extraRoom)
        for f in stack {
            if let nodes, f.node >= 0, nodes[Int(f.node)].kind == .string || nodes[Int(f.node)].kind == .array {
                appendFrameWords(f, count: countWord(nodes[Int(f.node)], f.a, horizon: horizon), to: &key)
            } else {
                appendFrameWords(f, count: UInt32(bitPattern: f.a), to: &key)
            }
            if let extra = f.extra {
                key.append(0xFFFF_FFFF)
                key.append(UInt32(extra.keys.count))
                for k in extra.keys { key.append(UInt32(k.count)); key += k.map { UInt32($0) } }
                key.append(UInt32(extra.raw.count))
                key += extra.raw.map { UInt32($0) }
            }
        }
        return key
    }

    /// Whether `bytes` is a complete value of the grammar.
    public func accepts(_ bytes: some Sequence<UInt8>) -> Bool {
        advance([initialStack], by: bytes).contains { isComplete($0) }
    }

    /// Whether `bytes` can be continued into a value of the grammar.
    public func acceptsPrefix(_ bytes: some Sequence<UInt8>) -> Bool {
        !advance([initialStack], by: bytes).isEmpty
    }

    // MARK: closing

    /// A short text that completes `stack`: at each step the choice that
    /// ends soonest (required properties and minimum counts only, the
    /// shortest alternative, '0' for digits); nil if it does not end.
    func closingBytes(_ stack: [Frame]) -> [UInt8]? {
        var current = stack
        var out: [UInt8] = []
        var steps = 0
        while !isComplete(current) {
            steps += 1
            guard steps < 100_000, let next = nextClosingBytes(current, current.count - 1) else { return nil }
            for b in next {
                var run = Run(stack: current, logging: false)
                var forks: [[Frame]] = []
                if feed(b, &run, &forks) { current = run.stack } else if let fork = forks.first { current = fork } else { return nil }
                out.append(b)
            }
        }
        return out
    }

    /// The next bytes toward closing, decided by frame `k` (the top, or a
    /// frame below a number or literal that may end).
    func nextClosingBytes(_ stack: [Frame], _ k: Int) -> [UInt8]? {
        let f = stack[k]
        if f.node == Frame.document { return f.phase == 0 ? shortest[Int(root)] : nil }
        if f.node == Frame.key {
            if f.phase == 0 {
                let keys = stack[k - 1].extra?.keys ?? []
                var text: [UInt8] = [quote] + (f.extra?.raw ?? []) + [quote]
                if let key = (try? JSONValue.parse(text))?.string.map({ Array($0.utf8) }), !keys.contains(key) { return [quote] }
                text = [UInt8(ascii: "a")]
                return text
            }
            return stringClosing(f, Node(kind: .string))
        }
        let n = nodes[Int(f.node)]
        switch n.kind {
        case .string: return stringClosing(f, n)
        case .number, .integer:
            return [2, 3, 5, 8].contains(f.phase) ? nextClosingBytes(stack, k - 1) : [UInt8(ascii: "0")]
        case .literal:
            let trie = tries[Int(n.trie)]
            if trie.payload[Int(f.a)] >= 0 { return nextClosingBytes(stack, k - 1) }
            return trie.towardTerminal[Int(f.a)].map { [$0] }
        case .array:
            switch f.phase {
            case 0: return n.minCount == 0 ? [closeBracket] : shortest[Int(n.items)]
            case 1: return shortest[Int(n.items)]
            default: return f.a < n.minCount ? [comma] : [closeBracket]
            }
        case .freeObject:
            switch f.phase {
            case 0, 5: return [closeBrace]
            case 1:
                let keys = f.extra?.keys ?? []
                var name: [UInt8] = []
                while keys.contains(name) { name.append(UInt8(ascii: "a")) }
                return [quote] + name + [quote]
            case 3: return [colon]
            default: return shortest[Int(n.items)]
            }
        case .object:
            switch f.phase {
            case 0, 1:
                if f.phase == 0 && !n.requiredFrom[Int(f.a)] { return [closeBrace] }
                // The first required property, or the candidate with the shortest member.
                var pick = -1
                var j = Int(f.a)
                while j < n.properties.count {
                    let p = n.properties[j]
                    if p.required { pick = j; break }
                    if pick < 0 || memberLength(n.properties[pick]) > memberLength(p) { pick = j }
                    j += 1
                }
                guard pick >= 0 else { return nil }
                return Array(JSONWriter.quoted(n.properties[pick].name).utf8)
            case 2:
                return tries[Int(n.keyTries[Int(f.a)])].towardTerminal[Int(f.b)].map { [$0] }
            case 3: return [colon]
            case 4: return shortest[Int(n.properties[Int(f.a)].node)]
            default: return n.requiredFrom[Int(f.a)] ? [comma] : [closeBrace]
            }
        case .anyOf:
            return nil
        }
    }

    func memberLength(_ p: Property) -> Int { JSONWriter.quoted(p.name).utf8.count + shortest[Int(p.node)].count }

    func stringClosing(_ f: Frame, _ n: Node) -> [UInt8]? {
        switch f.phase {
        case 0: return f.a < n.minCount ? [UInt8(ascii: "a")] : [quote]
        case 1: return [UInt8(ascii: "n")]
        case 2...5, 10, 11: return [UInt8(ascii: "0")]
        case 6: return [backslash]
        case 7: return [UInt8(ascii: "u")]
        case 8: return [UInt8(ascii: "D")]
        case 9: return [UInt8(ascii: "C")]
        default: return [UInt8((f.b >> 8) & 0xFF)]
        }
    }
}

/// How top frames whose masks must be equal share one top-frame key, for
/// one (grammar, vocabulary): beyond these distances a frame's counts and
/// whitespace cannot change what one token does.
struct TopKeyFolding: Sendable {
    /// A string's character count enters the key as its distance to the
    /// bounds capped here: a token adds at most one character per byte
    /// (the longest token's length plus one).
    var characters: Int32
    /// An array's item count, likewise: a token starts at most one item
    /// more than it has commas (the most commas in a token plus two).
    var items: Int32
    /// Whitespace counts up to this one act alike: a frame only counts the
    /// whitespace a token starts with (any other byte it takes resets the
    /// count), and no token starts with more than `maxWhitespace - whitespaceFloor`
    /// whitespace bytes.
    var whitespaceFloor: UInt8

    init(characters: Int32, items: Int32, whitespaceFloor: UInt8) {
        self.characters = characters
        self.items = items
        self.whitespaceFloor = whitespaceFloor
    }

    /// The folding for `grammar` over `vocabulary`.
    init(_ grammar: JSONGrammar, _ vocabulary: TokenVocabulary) {
        self.init(characters: vocabulary.maxTokenLength + 1, items: vocabulary.mostCommas + 2,
                  whitespaceFloor: UInt8(max(0, grammar.maxWhitespace - Int(vocabulary.longestLeadingWhitespace))))
    }

    /// The cap on the count distances of a frame of `kind` (nil: it has no count).
    @inline(__always) func horizon(_ kind: JSONGrammar.Kind) -> Int32? {
        switch kind {
        case .string: return characters
        case .array: return items
        default: return nil
        }
    }

    /// Both counts capped at `horizon` and no whitespace folded (every
    /// whitespace count its own key).
    static func uniform(_ horizon: Int32) -> TopKeyFolding { TopKeyFolding(characters: horizon, items: horizon, whitespaceFloor: 0) }
}
