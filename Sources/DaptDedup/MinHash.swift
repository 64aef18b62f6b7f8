import DaptCore

/// MinHash signatures with `numPerm` hash permutations of the 32-bit shingle
/// hash x:  h_i(x) = (a_i · x + b_i) mod 2^32, a_i odd (a bijection on 32-bit
/// values), a_i and b_i drawn from SplitMix64(seed). Signature value i is the
/// minimum of h_i over the record's shingles. Since x is itself a seeded,
/// well-mixed hash of the shingle, each h_i(x) is uniform and the chance that
/// two records agree at position i is their Jaccard similarity; the unit
/// tests check the estimator's error against sqrt(J(1−J)/numPerm).
///
/// The kernel works on 32 permutations at a time (four 8-lane vectors of
/// mins, multipliers and offsets held in registers) and streams every shingle
/// through them: one multiply, add and unsigned min per lane, no allocation.
public struct MinHasher: Sendable {
    public let numPerm: Int
    public let seed: UInt64
    /// a_i and b_i, 8 permutations per vector.
    let multipliers: [SIMD8<UInt32>]
    let offsets: [SIMD8<UInt32>]

    public init(numPerm: Int, seed: UInt64) {
        precondition(numPerm > 0 && numPerm % 8 == 0, "numPerm must be a positive multiple of 8")
        self.numPerm = numPerm
        self.seed = seed
        var rng = SplitMix64(seed: StableHash.mix64(seed ^ 0x6D69_6E68_6173_6821)) // "minhash!"
        var a: [SIMD8<UInt32>] = [], b: [SIMD8<UInt32>] = []
        for _ in 0..<(numPerm / 8) {
            var va = SIMD8<UInt32>(), vb = SIMD8<UInt32>()
            for lane in 0..<8 {
                va[lane] = UInt32(truncatingIfNeeded: rng.next() >> 32) | 1
                vb[lane] = UInt32(truncatingIfNeeded: rng.next() >> 32)
            }
            a.append(va); b.append(vb)
        }
        multipliers = a
        offsets = b
    }

    /// Writes the signature of `shingles` (64-bit shingle hashes; their high
    /// 32 bits are used) to `out` (numPerm values). No shingles: all UInt32.max.
    public func signature(of shingles: UnsafeBufferPointer<UInt64>, into out: UnsafeMutableBufferPointer<UInt32>) {
        precondition(out.count >= numPerm)
        let raw = UnsafeMutableRawPointer(out.baseAddress!)
        multipliers.withUnsafeBufferPointer { a in
            offsets.withUnsafeBufferPointer { b in
                minHashKernel(shingles: shingles, multipliers: a, offsets: b, out: raw)
            }
        }
    }

    public func signature(of shingles: [UInt64]) -> [UInt32] {
        var out = [UInt32](repeating: 0, count: numPerm)
        shingles.withUnsafeBufferPointer { s in out.withUnsafeMutableBufferPointer { signature(of: s, into: $0) } }
        return out
    }

    /// Fraction of positions where two signatures agree: the estimate of Jaccard.
    public static func estimatedJaccard(_ x: UnsafeBufferPointer<UInt32>, _ y: UnsafeBufferPointer<UInt32>) -> Double {
        Double(agreements(x, y)) / Double(x.count)
    }

    public static func estimatedJaccard(_ x: [UInt32], _ y: [UInt32]) -> Double {
        x.withUnsafeBufferPointer { a in y.withUnsafeBufferPointer { b in estimatedJaccard(a, b) } }
    }

    /// Positions where two equally long signatures agree.
    public static func agreements(_ x: UnsafeBufferPointer<UInt32>, _ y: UnsafeBufferPointer<UInt32>) -> Int {
        precondition(x.count == y.count)
        let n = x.count
        let px = UnsafeRawPointer(x.baseAddress!), py = UnsafeRawPointer(y.baseAddress!)
        var acc = SIMD8<UInt32>()
        let one = SIMD8<UInt32>(repeating: 1), zero = SIMD8<UInt32>()
        var i = 0
        while i + 8 <= n {
            let vx = px.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<UInt32>.self)
            let vy = py.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<UInt32>.self)
            acc &+= zero.replacing(with: one, where: vx .== vy)
            i += 8
        }
        var count = Int(acc.wrappedSum())
        while i < n { if x[i] == y[i] { count += 1 }; i += 1 }
        return count
    }
}

/// Mins of (a·x + b) over every shingle x, 32 permutations per pass.
@inline(never)
func minHashKernel(shingles: UnsafeBufferPointer<UInt64>, multipliers a: UnsafeBufferPointer<SIMD8<UInt32>>,
                   offsets b: UnsafeBufferPointer<SIMD8<UInt32>>, out: UnsafeMutableRawPointer) {
    let vectors = a.count
    let stride = MemoryLayout<SIMD8<UInt32>>.size
    let maxV = SIMD8<UInt32>(repeating: .max)
    var v = 0
    while v + 4 <= vectors {
        let a0 = a[v], a1 = a[v + 1], a2 = a[v + 2], a3 = a[v + 3]
        let b0 = b[v], b1 = b[v + 1], b2 = b[v + 2], b3 = b[v + 3]
        var m0 = maxV, m1 = maxV, m2 = maxV, m3 = maxV
        for s in shingles {
            let x = SIMD8<UInt32>(repeating: UInt32(truncatingIfNeeded: s >> 32))
            m0 = pointwiseMin(m0, a0 &* x &+ b0)
            m1 = pointwiseMin(m1, a1 &* x &+ b1)
            m2 = pointwiseMin(m2, a2 &* x &+ b2)
            m3 = pointwiseMin(m3, a3 &* x &+ b3)
        }
        out.storeBytes(of: m0, toByteOffset: v * stride, as: SIMD8<UInt32>.self)
        out.storeBytes(of: m1, toByteOffset: (v + 1) * stride, as: SIMD8<UInt32>.self)
        out.storeBytes(of: m2, toByteOffset: (v + 2) * stride, as: SIMD8<UInt32>.self)
        out.storeBytes(of: m3, toByteOffset: (v + 3) * stride, as: SIMD8<UInt32>.self)
        v += 4
    }
    while v < vectors {
        let av = a[v], bv = b[v]
        var m = maxV
        for s in shingles { m = pointwiseMin(m, av &* SIMD8<UInt32>(repeating: UInt32(truncatingIfNeeded: s >> 32)) &+ bv) }
        out.storeBytes(of: m, toByteOffset: v * stride, as: SIMD8<UInt32>.self)
        v += 1
    }
}

/// LSH band keys of a signature: band k's key is the seeded xxh64 of its
/// `rows` values (little-endian bytes), with a per-band seed so equal values
/// in different bands never share a key.
public struct BandKeys: Sendable {
    public let bands: Int
    public let rows: Int
    let bandSeeds: [UInt64]

    public init(bands: Int, rows: Int, seed: UInt64) {
        self.bands = bands
        self.rows = rows
        bandSeeds = (0..<bands).map { StableHash.mix64(seed ^ 0x6261_6E64_0000_0000 ^ UInt64($0)) }
    }

    public func key(_ signature: UnsafeBufferPointer<UInt32>, band: Int) -> UInt64 {
        let start = band * rows
        return StableHash.xxh64(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(signature)[(start * 4)..<((start + rows) * 4)]),
                                seed: bandSeeds[band])
    }
}
