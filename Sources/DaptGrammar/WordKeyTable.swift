import DaptCore

/// A hash table from keys made of `UInt32` words to values, in flat arrays
/// it owns (open addressing, linear probing). The grammar's caches and the
/// top-frame search use it instead of `Dictionary`/`Set`: the first
/// `Dictionary` or `Set` of a new key type in a process looks the key's
/// `Hashable` conformance up at run time, a scan of every conformance in
/// the binary (0.05-0.2 ms each, paid inside the first compile or the first
/// mask), and every look-up seeds a `Hasher`. Keys are hashed with
/// `StableHash.mix64`, so iteration order is the same in every process.
struct WordKeyTable<Value> {
    /// Every key's words, one after another: entry i's end at `ends[i]`
    /// (and start at `ends[i - 1]`, or 0).
    private var words: [UInt32] = []
    private var ends: [Int32] = []
    private var hashes: [UInt64] = []
    /// Values in insertion order (entry i's value is `values[i]`).
    private(set) var values: [Value] = []
    /// Entry index per slot, -1 when empty; a power of two, at most half
    /// full (empty until the first key: a table never used costs nothing).
    private var slots: [Int32] = []

    init() {}

    init(minimumCapacity: Int) {
        var size = 16
        while size < minimumCapacity * 2 { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
        values.reserveCapacity(minimumCapacity)
        hashes.reserveCapacity(minimumCapacity)
        ends.reserveCapacity(minimumCapacity)
    }

    var count: Int { values.count }

    @inline(__always) static func hash(_ key: [UInt32]) -> UInt64 {
        var h = UInt64(key.count)
        var i = 0
        while i + 1 < key.count {
            h = StableHash.mix64(h ^ (UInt64(key[i]) | UInt64(key[i + 1]) << 32))
            i += 2
        }
        if i < key.count { h = StableHash.mix64(h ^ UInt64(key[i])) }
        return h
    }

    /// The slot holding `key`, or the empty slot where it would go.
    @inline(__always) private func slot(of key: [UInt32], hash h: UInt64) -> (slot: Int, entry: Int32) {
        if slots.isEmpty { return (-1, -1) }
        let mask = slots.count - 1
        var s = Int(truncatingIfNeeded: h) & mask
        while true {
            let e = slots[s]
            if e < 0 { return (s, -1) }
            if hashes[Int(e)] == h && equals(Int(e), key) { return (s, e) }
            s = (s + 1) & mask
        }
    }

    @inline(__always) private func equals(_ entry: Int, _ key: [UInt32]) -> Bool {
        let start = entry == 0 ? 0 : Int(ends[entry - 1]), end = Int(ends[entry])
        guard end - start == key.count else { return false }
        for k in 0..<key.count where words[start + k] != key[k] { return false }
        return true
    }

    subscript(key: [UInt32]) -> Value? {
        let e = slot(of: key, hash: Self.hash(key)).entry
        return e < 0 ? nil : values[Int(e)]
    }

    /// Sets the value of `key` (adding the key if new).
    mutating func set(_ key: [UInt32], _ value: Value) {
        let h = Self.hash(key)
        let (s, e) = slot(of: key, hash: h)
        if e >= 0 { values[Int(e)] = value; return }
        append(key, value, hash: h, slot: s)
    }

    /// Adds `key` with `value` unless present; whether it was added.
    @discardableResult
    mutating func insert(_ key: [UInt32], _ value: Value) -> Bool {
        let h = Self.hash(key)
        let (s, e) = slot(of: key, hash: h)
        if e >= 0 { return false }
        append(key, value, hash: h, slot: s)
        return true
    }

    private mutating func append(_ key: [UInt32], _ value: Value, hash h: UInt64, slot: Int) {
        var s = slot
        if slots.isEmpty {
            slots = [Int32](repeating: -1, count: 16)
            s = Int(truncatingIfNeeded: h) & 15
        }
        slots[s] = Int32(values.count)
        words.append(contentsOf: key)
        ends.append(Int32(words.count))
        hashes.append(h)
        values.append(value)
        if values.count * 2 > slots.count { grow() }
    }

    private mutating func grow() {
        let size = slots.count * 2, mask = size - 1
        slots = [Int32](repeating: -1, count: size)
        for (e, h) in hashes.enumerated() {
            var s = Int(truncatingIfNeeded: h) & mask
            while slots[s] >= 0 { s = (s + 1) & mask }
            slots[s] = Int32(e)
        }
    }

    /// Empties the table, keeping its storage.
    mutating func removeAll() {
        words.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
        hashes.removeAll(keepingCapacity: true)
        values.removeAll(keepingCapacity: true)
        slots.withUnsafeMutableBufferPointer { $0.update(repeating: -1) }
    }

    /// The key of entry `i` (for tests).
    func key(at i: Int) -> [UInt32] { Array(words[(i == 0 ? 0 : Int(ends[i - 1]))..<Int(ends[i])]) }
}
