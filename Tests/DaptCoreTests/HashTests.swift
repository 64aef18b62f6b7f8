import DaptCore
import Foundation
import XCTest
import DaptTestSupport

final class HashTests: XCTestCase {
    func testSHA1KnownVectors() {
        XCTAssertEqual(SHA1.hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        XCTAssertEqual(SHA1.hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d")
        XCTAssertEqual(SHA1.hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
                       "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        XCTAssertEqual(SHA1.hex([UInt8](repeating: 0x61, count: 1_000_000)), "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
    }

    /// Lengths around the 55/56/64-byte padding edges, and UTF-8 text, against `sha1sum`.
    func testSHA1AgainstSha1sum() throws {
        let dir = try temporaryDirectoryURL(self, prefix: "sha1")
        var inputs: [[UInt8]] = [Array("步骤S101:将专利文本按步骤切分。".utf8)]
        for n in [1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000] { inputs.append((0..<n).map { UInt8(($0 * 7 + n) % 256) }) }
        for (i, bytes) in inputs.enumerated() {
            let file = dir.appendingPathComponent("\(i)")
            try Data(bytes).write(to: file)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/sha1sum")
            process.arguments = [file.path]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            process.waitUntilExit()
            let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            XCTAssertEqual(SHA1.hex(bytes), String(out.prefix(40)), "length \(bytes.count)")
        }
    }

    func testSHA1StreamingEqualsOneShot() {
        var rng = SplitMix64(seed: 99)
        for length in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 4097] {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            var s = SHA1()
            // Uneven pieces, so updates cross block boundaries in every way.
            var i = 0
            while i < bytes.count { let n = min(bytes.count - i, 1 + Int(rng.next() % 70)); s.update(bytes[i..<(i + n)]); i += n }
            XCTAssertEqual(s.finalizeHex(), SHA1.hex(bytes), "length \(length)")
        }
    }

    /// Reference values from the xxHash project's own implementation.
    func testXXH64KnownVectors() {
        XCTAssertEqual(StableHash.xxh64([], seed: 0), 0xEF46_DB37_51D8_E999)
        XCTAssertEqual(StableHash.xxh64("a", seed: 0), 0xD24E_C4F1_A98C_6E5B)
        XCTAssertEqual(StableHash.xxh64("abc", seed: 0), 0x44BC_2CF5_AD77_0999)
        XCTAssertEqual(StableHash.xxh64("Nobody inspects the spammish repetition", seed: 0), 0xFBCE_A83C_8A37_8BF1)
    }

    func testXXH64SeedAndLengthSensitivity() {
        let bytes = (0..<100).map { UInt8($0) }
        var seen = Set<UInt64>()
        for n in 0...100 { seen.insert(StableHash.xxh64(Array(bytes[0..<n]), seed: 1)) }
        XCTAssertEqual(seen.count, 101)
        XCTAssertNotEqual(StableHash.xxh64(bytes, seed: 1), StableHash.xxh64(bytes, seed: 2))
    }

    func testSplitMixIsReplayable() {
        var a = SplitMix64(seed: 42)
        let first = (0..<5).map { _ in a.next() }
        var b = SplitMix64(seed: 42)
        XCTAssertEqual((0..<5).map { _ in b.next() }, first)
        XCTAssertEqual(Set(first).count, 5)
        // The state is the whole story: a copy continues identically.
        var c = a
        XCTAssertEqual(a.next(), c.next())
    }
}
