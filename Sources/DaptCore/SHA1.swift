/// SHA-1 (FIPS 180-4), used for record fingerprints (`sha1:` + hex) and
/// shard checksums. Written here rather than pulled from a crypto package: it
/// is the only digest dapt needs, and a crypto dependency costs minutes of
/// build per CI run. The message schedule lives in a 16-word stack window.
public struct SHA1: Sendable {
    private var h0: UInt32 = 0x6745_2301, h1: UInt32 = 0xEFCD_AB89, h2: UInt32 = 0x98BA_DCFE
    private var h3: UInt32 = 0x1032_5476, h4: UInt32 = 0xC3D2_E1F0
    private var pending: [UInt8] = []
    private var total: UInt64 = 0

    public init() { pending.reserveCapacity(64) }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        total &+= UInt64(bytes.count)
        var i = 0
        if !pending.isEmpty {
            let take = min(64 - pending.count, bytes.count)
            pending.append(contentsOf: bytes[0..<take])
            i = take
            if pending.count == 64 {
                let block = pending
                block.withUnsafeBytes { compress($0.baseAddress!) }
                pending.removeAll(keepingCapacity: true)
            }
        }
        let base = bytes.baseAddress!
        while bytes.count - i >= 64 {
            compress(base + i)
            i += 64
        }
        if i < bytes.count { pending.append(contentsOf: bytes[i..<bytes.count]) }
    }

    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    public mutating func update(_ bytes: ArraySlice<UInt8>) { bytes.withUnsafeBytes { update($0) } }

    public mutating func update(_ string: String) {
        var s = string
        s.withUTF8 { update(UnsafeRawBufferPointer($0)) }
    }

    /// The 20-byte digest; the value is spent afterwards.
    public mutating func finalize() -> [UInt8] {
        let bitLength = total &* 8
        var tail = pending
        tail.append(0x80)
        while tail.count % 64 != 56 { tail.append(0) }
        for shift in stride(from: 56, through: 0, by: -8) { tail.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift))) }
        tail.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count { compress(raw.baseAddress! + offset); offset += 64 }
        }
        pending.removeAll()
        var out = [UInt8](); out.reserveCapacity(20)
        for word in [h0, h1, h2, h3, h4] {
            out += [UInt8(word >> 24), UInt8((word >> 16) & 0xff), UInt8((word >> 8) & 0xff), UInt8(word & 0xff)]
        }
        return out
    }

    /// Lower-case hex digest.
    public mutating func finalizeHex() -> String { Hex.encode(finalize()) }

    public static func hex(_ bytes: [UInt8]) -> String {
        var s = SHA1(); s.update(bytes); return s.finalizeHex()
    }

    public static func hex(_ string: String) -> String {
        var s = SHA1(); s.update(string); return s.finalizeHex()
    }

    @inline(__always) private static func rotl(_ x: UInt32, _ n: UInt32) -> UInt32 { (x << n) | (x >> (32 - n)) }

    private mutating func compress(_ p: UnsafeRawPointer) {
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 16) { w in
            for t in 0..<16 { w[t] = UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 4 * t, as: UInt32.self)) }
            var a = h0, b = h1, c = h2, d = h3, e = h4
            @inline(__always) func schedule(_ t: Int) -> UInt32 {
                if t < 16 { return w[t] }
                let x = Self.rotl(w[(t - 3) & 15] ^ w[(t - 8) & 15] ^ w[(t - 14) & 15] ^ w[t & 15], 1)
                w[t & 15] = x
                return x
            }
            // Four rounds of 20 with their own function and constant (no per-step branch).
            for t in 0..<20 {
                let temp = Self.rotl(a, 5) &+ ((b & c) | (~b & d)) &+ e &+ 0x5A82_7999 &+ schedule(t)
                e = d; d = c; c = Self.rotl(b, 30); b = a; a = temp
            }
            for t in 20..<40 {
                let temp = Self.rotl(a, 5) &+ (b ^ c ^ d) &+ e &+ 0x6ED9_EBA1 &+ schedule(t)
                e = d; d = c; c = Self.rotl(b, 30); b = a; a = temp
            }
            for t in 40..<60 {
                let temp = Self.rotl(a, 5) &+ ((b & c) | (b & d) | (c & d)) &+ e &+ 0x8F1B_BCDC &+ schedule(t)
                e = d; d = c; c = Self.rotl(b, 30); b = a; a = temp
            }
            for t in 60..<80 {
                let temp = Self.rotl(a, 5) &+ (b ^ c ^ d) &+ e &+ 0xCA62_C1D6 &+ schedule(t)
                e = d; d = c; c = Self.rotl(b, 30); b = a; a = temp
            }
            h0 &+= a; h1 &+= b; h2 &+= c; h3 &+= d; h4 &+= e
        }
    }
}

public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8](); out.reserveCapacity(bytes.count * 2)
        append(bytes, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the hex digits of `bytes` to `out` (no String allocated).
    public static func append(_ bytes: [UInt8], to out: inout [UInt8]) {
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
    }
}
