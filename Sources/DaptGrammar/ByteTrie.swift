/// A small trie over byte strings with a payload at each complete string:
/// the alternatives of an `enum`/`const`, the keys an object may take next.
/// Nodes are numbered from 0 (the root); `JSONGrammar.trieChild` follows an edge.
struct ByteTrie: Sendable {
    /// Children of each node, sorted by byte.
    private(set) var children: [[(byte: UInt8, node: Int32)]] = [[]]
    /// Payload of the string ending at each node, or -1.
    private(set) var payload: [Int32] = [-1]
    /// Bytes to the nearest terminal node (0 at a terminal).
    private(set) var distance: [Int32] = []
    /// The child on a shortest path to a terminal (nil at a terminal).
    private(set) var towardTerminal: [UInt8?] = []

    var isEmpty: Bool { children[0].isEmpty && payload[0] < 0 }

    mutating func insert(_ bytes: [UInt8], payload value: Int32) {
        var node = 0
        for b in bytes {
            if let next = children[node].first(where: { $0.byte == b })?.node {
                node = Int(next)
            } else {
                children.append([])
                payload.append(-1)
                let next = Int32(children.count - 1)
                children[node].append((b, next))
                children[node].sort { $0.byte < $1.byte }
                node = Int(next)
            }
        }
        if payload[node] < 0 { payload[node] = value }
    }

    /// Computes `distance` and `towardTerminal`; call after the last insert.
    mutating func finish() {
        let n = children.count
        distance = [Int32](repeating: Int32.max, count: n)
        towardTerminal = [UInt8?](repeating: nil, count: n)
        // Children always have higher numbers than their parent: one reverse pass.
        for node in stride(from: n - 1, through: 0, by: -1) {
            if payload[node] >= 0 { distance[node] = 0; continue }
            for (b, child) in children[node] where distance[Int(child)] != Int32.max && distance[Int(child)] + 1 < distance[node] {
                distance[node] = distance[Int(child)] + 1
                towardTerminal[node] = b
            }
        }
    }
}
