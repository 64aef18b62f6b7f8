import DaptCore

/// A JSON grammar over bytes: any JSON value, any object, or the values a
/// JSON Schema (the subset in docs/constrained-decoding.md) allows. It is
/// compiled once into a graph of nodes and run as a pushdown automaton
/// (`JSONMachine`) one byte at a time.
public struct JSONGrammar: Sendable {
    enum Kind: UInt8, Sendable {
        /// An object with declared properties, written in declared order.
        case object
        /// An object with any keys (unique), each value `items`.
        case freeObject
        case array
        case string
        case number
        case integer
        /// One of a fixed set of values (enum, const, true/false/null), by their compact text.
        case literal
        /// Any of `alternatives`.
        case anyOf
    }

    struct Property: Sendable {
        var name: String
        var node: Int32
        var required: Bool
    }

    struct Node: Sendable {
        var kind: Kind
        /// string: minLength; array: minItems.
        var minCount: Int32 = 0
        /// string: maxLength; array: maxItems; -1 when unbounded.
        var maxCount: Int32 = -1
        /// array: the items' node; freeObject: the values' node.
        var items: Int32 = -1
        /// literal: index into `literals`.
        var trie: Int32 = -1
        var alternatives: [Int32] = []
        var properties: [Property] = []
        /// object: the keys allowed next when property `i` is the first not yet
        /// considered (index into `keyTries`, one per i in 0...properties.count).
        var keyTries: [Int32] = []
        /// object: `requiredFrom[i]`: a required property is at index ≥ i.
        var requiredFrom: [Bool] = []
        /// Bytes that can start a value of this node.
        var firstBytes = ByteSet()

        /// The count a frame tracks, saturating: enough to check both bounds.
        var countCap: Int32 { maxCount >= 0 ? maxCount : minCount }
    }

    var nodes: [Node] = []
    var tries: [ByteTrie] = []
    var root: Int32 = 0
    /// The shortest text of each node's values (used to close an output).
    var shortest: [[UInt8]] = []

    /// Longest run of whitespace accepted between two tokens of the JSON text
    /// (and before or after the value): whitespace is allowed where RFC 8259
    /// allows it, but not without end, so a decoder cannot loop in it.
    public let maxWhitespace: Int

    /// The default whitespace run limit: a newline and a few spaces of indentation.
    public static let defaultMaxWhitespace = 4

    init(maxWhitespace: Int) {
        precondition(maxWhitespace >= 0 && maxWhitespace < 255, "maxWhitespace must be in 0..<255")
        self.maxWhitespace = maxWhitespace
    }

    /// Any JSON value (RFC 8259, as `JSONValue.parse` reads it: unique keys,
    /// valid UTF-8, no lone surrogates, at most `JSON.maxDepth` levels).
    public static func anyValue(maxWhitespace: Int = defaultMaxWhitespace) -> JSONGrammar {
        var g = JSONGrammar(maxWhitespace: maxWhitespace)
        g.root = g.addAnyValue()
        g.finish()
        return g
    }

    /// Any JSON object (its members any values).
    public static func anyObject(maxWhitespace: Int = defaultMaxWhitespace) -> JSONGrammar {
        var g = JSONGrammar(maxWhitespace: maxWhitespace)
        let any = g.addAnyValue()
        g.root = g.add(Node(kind: .freeObject, items: any))
        g.finish()
        return g
    }

    /// The values `schema` allows (see `JSONSchemaError` for what is refused).
    public static func schema(_ schema: JSONValue, maxWhitespace: Int = defaultMaxWhitespace) throws(JSONSchemaError) -> JSONGrammar {
        var compiler = JSONSchemaCompiler(grammar: JSONGrammar(maxWhitespace: maxWhitespace))
        let root = try compiler.compile(schema, path: "$")
        var g = compiler.grammar
        g.root = root
        g.finish()
        return g
    }

    /// The values the JSON Schema in file `path` allows.
    public static func schema(file path: String, maxWhitespace: Int = defaultMaxWhitespace) throws -> JSONGrammar {
        let bytes = try FileSystem.readAll(path)
        let value: JSONValue
        do { value = try JSONValue.parse(bytes) } catch { throw JSONSchemaError(path: "$", reason: "\(path): \(error)") }
        do { return try schema(value, maxWhitespace: maxWhitespace) } catch { throw JSONSchemaError(path: error.path, reason: "\(path): \(error.reason)") }
    }

    // MARK: building

    mutating func add(_ node: Node) -> Int32 {
        nodes.append(node)
        return Int32(nodes.count - 1)
    }

    mutating func addTrie(_ trie: ByteTrie) -> Int32 {
        var t = trie
        t.finish()
        tries.append(t)
        return Int32(tries.count - 1)
    }

    mutating func addLiterals(_ values: [[UInt8]]) -> Int32 {
        var trie = ByteTrie()
        for (k, v) in values.enumerated() { trie.insert(v, payload: Int32(k)) }
        return add(Node(kind: .literal, trie: addTrie(trie)))
    }

    /// An `anyOf` of any object, array, string, number and true/false/null
    /// (their first bytes differ, so the automaton never forks on it).
    mutating func addAnyValue() -> Int32 {
        let any = add(Node(kind: .anyOf))
        let object = add(Node(kind: .freeObject, items: any))
        let array = add(Node(kind: .array, items: any))
        let string = add(Node(kind: .string))
        let number = add(Node(kind: .number))
        let literals = addLiterals([JSONWriter.true, JSONWriter.false, JSONWriter.null])
        nodes[Int(any)].alternatives = [object, array, string, number, literals]
        return any
    }

    /// Computes first bytes, key tries and shortest texts once all nodes exist.
    mutating func finish() {
        for i in nodes.indices where nodes[i].kind == .object {
            let props = nodes[i].properties
            var tries: [Int32] = []
            var requiredFrom = [Bool](repeating: false, count: props.count + 1)
            for start in stride(from: props.count - 1, through: 0, by: -1) {
                requiredFrom[start] = props[start].required || requiredFrom[start + 1]
            }
            for start in 0...props.count {
                var trie = ByteTrie()
                var j = start
                while j < props.count {
                    trie.insert(Array(JSONWriter.quoted(props[j].name).utf8), payload: Int32(j))
                    if props[j].required { break }
                    j += 1
                }
                tries.append(addTrie(trie))
            }
            nodes[i].keyTries = tries
            nodes[i].requiredFrom = requiredFrom
        }
        // First bytes: a fixed point, since anyOf may refer to nodes after it.
        var changed = true
        while changed {
            changed = false
            for i in nodes.indices {
                var set = ByteSet()
                switch nodes[i].kind {
                case .object, .freeObject: set.insert(UInt8(ascii: "{"))
                case .array: set.insert(UInt8(ascii: "["))
                case .string: set.insert(UInt8(ascii: "\""))
                case .number, .integer:
                    set.insert(UInt8(ascii: "-"))
                    for d in UInt8(ascii: "0")...UInt8(ascii: "9") { set.insert(d) }
                case .literal:
                    for edge in tries[Int(nodes[i].trie)].children[0] { set.insert(edge.byte) }
                case .anyOf:
                    for alt in nodes[i].alternatives { set.formUnion(nodes[Int(alt)].firstBytes) }
                }
                if set != nodes[i].firstBytes { nodes[i].firstBytes = set; changed = true }
            }
        }
        // Shortest texts: also a fixed point (nodes only refer to finite ones in the end).
        var best = [[UInt8]?](repeating: nil, count: nodes.count)
        changed = true
        while changed {
            changed = false
            for i in nodes.indices {
                let n = nodes[i]
                var text: [UInt8]?
                switch n.kind {
                case .object:
                    var out: [UInt8] = [UInt8(ascii: "{")]
                    var complete = true
                    for p in n.properties where p.required {
                        guard let value = best[Int(p.node)] else { complete = false; break }
                        if out.count > 1 { out.append(UInt8(ascii: ",")) }
                        out += Array(JSONWriter.quoted(p.name).utf8) + [UInt8(ascii: ":")] + value
                    }
                    text = complete ? out + [UInt8(ascii: "}")] : nil
                case .freeObject: text = Array("{}".utf8)
                case .array:
                    if n.minCount == 0 { text = Array("[]".utf8) } else if let item = best[Int(n.items)] {
                        var out: [UInt8] = [UInt8(ascii: "[")]
                        for k in 0..<Int(n.minCount) { if k > 0 { out.append(UInt8(ascii: ",")) }; out += item }
                        text = out + [UInt8(ascii: "]")]
                    }
                case .string: text = [0x22] + [UInt8](repeating: UInt8(ascii: "a"), count: Int(n.minCount)) + [0x22]
                case .number, .integer: text = [UInt8(ascii: "0")]
                case .literal:
                    var out: [UInt8] = []
                    var node: Int32 = 0
                    while let b = tries[Int(n.trie)].towardTerminal[Int(node)] { out.append(b); node = trieChild(Int(n.trie), node, b)! }
                    text = out
                case .anyOf:
                    text = n.alternatives.compactMap { best[Int($0)] }.min { $0.count < $1.count }
                }
                if let text, best[i] == nil || text.count < best[i]!.count { best[i] = text; changed = true }
            }
        }
        shortest = best.map { $0 ?? [] }
    }
}

/// A set of bytes (256 bits).
struct ByteSet: Equatable, Sendable {
    var bits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    static func == (a: ByteSet, b: ByteSet) -> Bool { a.bits == b.bits }

    @inline(__always) func contains(_ b: UInt8) -> Bool {
        let bit = UInt64(1) << UInt64(b & 63)
        switch b >> 6 {
        case 0: return bits.0 & bit != 0
        case 1: return bits.1 & bit != 0
        case 2: return bits.2 & bit != 0
        default: return bits.3 & bit != 0
        }
    }

    mutating func insert(_ b: UInt8) {
        let bit = UInt64(1) << UInt64(b & 63)
        switch b >> 6 {
        case 0: bits.0 |= bit
        case 1: bits.1 |= bit
        case 2: bits.2 |= bit
        default: bits.3 |= bit
        }
    }

    mutating func formUnion(_ o: ByteSet) {
        bits = (bits.0 | o.bits.0, bits.1 | o.bits.1, bits.2 | o.bits.2, bits.3 | o.bits.3)
    }
}
