import DaptCore

/// Open-addressing map from a pair of token ids to a 64-bit value, hashed
/// with `StableHash.mix64` (never Swift's per-process `Hasher`).
struct PairTable {
    private(set) var keys: [UInt64]
    private(set) var values: [UInt64]
    private(set) var count = 0
    private var mask: Int
    static let empty = UInt64.max

    init(capacity: Int = 16) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: Self.empty, count: size)
        values = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always) static func key(_ a: UInt32, _ b: UInt32) -> UInt64 { UInt64(a) << 32 | UInt64(b) }

    @inline(__always) func slot(_ key: UInt64) -> Int {
        var i = Int(truncatingIfNeeded: StableHash.mix64(key)) & mask
        while keys[i] != key && keys[i] != Self.empty { i = (i + 1) & mask }
        return i
    }

    @inline(__always) func get(_ key: UInt64) -> UInt64? {
        let i = slot(key)
        return keys[i] == key ? values[i] : nil
    }

    mutating func set(_ key: UInt64, _ value: UInt64) {
        let i = slot(key)
        if keys[i] == Self.empty {
            keys[i] = key
            count += 1
            values[i] = value
            if count * 2 > keys.count { grow() }
        } else {
            values[i] = value
        }
    }

    /// The slot of `key`, inserting it with `initial` if absent. Slots move
    /// when the table grows, so use the returned slot before the next insert.
    @inline(__always) mutating func slotInserting(_ key: UInt64, initial: UInt64) -> Int {
        var i = slot(key)
        if keys[i] == Self.empty {
            if (count + 1) * 2 > keys.count { grow(); i = slot(key) }
            keys[i] = key
            values[i] = initial
            count += 1
        }
        return i
    }

    @inline(__always) func value(at slot: Int) -> UInt64 { values[slot] }
    @inline(__always) mutating func setValue(at slot: Int, _ v: UInt64) { values[slot] = v }

    private mutating func grow() {
        let oldKeys = keys, oldValues = values
        keys = [UInt64](repeating: Self.empty, count: oldKeys.count * 2)
        values = [UInt64](repeating: 0, count: oldKeys.count * 2)
        mask = keys.count - 1
        for i in 0..<oldKeys.count where oldKeys[i] != Self.empty {
            let s = slot(oldKeys[i])
            keys[s] = oldKeys[i]
            values[s] = oldValues[i]
        }
    }
}

/// Interns byte strings: each distinct key gets a dense index (0, 1, ...) in
/// insertion order; keys live in one arena.
struct ByteStringTable {
    private var slots: [Int32]
    private var slotHashes: [UInt64]
    private var mask: Int
    private(set) var arena: [UInt8] = []
    private(set) var starts: [Int] = [0]
    var count: Int { starts.count - 1 }
    var arenaBytes: Int { arena.count }

    init(capacity: Int = 1024) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
        slotHashes = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    mutating func removeAll() {
        for i in 0..<slots.count { slots[i] = -1 }
        arena.removeAll(keepingCapacity: true)
        starts = [0]
    }

    func key(_ index: Int) -> ArraySlice<UInt8> { arena[starts[index]..<starts[index + 1]] }

    @inline(__always) private func equal(_ index: Int, _ key: UnsafeBufferPointer<UInt8>) -> Bool {
        let s = starts[index], e = starts[index + 1]
        guard e - s == key.count else { return false }
        return arena.withUnsafeBufferPointer { a in
            memcmp(a.baseAddress! + s, key.baseAddress!, key.count) == 0
        }
    }

    /// The index of `key`, or nil.
    @inline(__always) func find(_ key: UnsafeBufferPointer<UInt8>, hash: UInt64) -> Int? {
        var i = Int(truncatingIfNeeded: hash) & mask
        while slots[i] >= 0 {
            if slotHashes[i] == hash && equal(Int(slots[i]), key) { return Int(slots[i]) }
            i = (i + 1) & mask
        }
        return nil
    }

    /// The index of `key`, inserting it if new; `inserted` tells which.
    @inline(__always) mutating func insert(_ key: UnsafeBufferPointer<UInt8>, hash: UInt64) -> (index: Int, inserted: Bool) {
        var i = Int(truncatingIfNeeded: hash) & mask
        while slots[i] >= 0 {
            if slotHashes[i] == hash && equal(Int(slots[i]), key) { return (Int(slots[i]), false) }
            i = (i + 1) & mask
        }
        let index = count
        slots[i] = Int32(index)
        slotHashes[i] = hash
        if key.count > 0 { arena.append(contentsOf: key) }
        starts.append(arena.count)
        if count * 2 > slots.count { grow() }
        return (index, true)
    }

    private mutating func grow() {
        let oldSlots = slots, oldHashes = slotHashes
        slots = [Int32](repeating: -1, count: oldSlots.count * 2)
        slotHashes = [UInt64](repeating: 0, count: oldSlots.count * 2)
        mask = slots.count - 1
        for j in 0..<oldSlots.count where oldSlots[j] >= 0 {
            var i = Int(truncatingIfNeeded: oldHashes[j]) & mask
            while slots[i] >= 0 { i = (i + 1) & mask }
            slots[i] = oldSlots[j]
            slotHashes[i] = oldHashes[j]
        }
    }

    @inline(__always) static func hash(_ key: UnsafeBufferPointer<UInt8>) -> UInt64 {
        StableHash.xxh64(UnsafeRawBufferPointer(key), seed: 0x7A6B)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
