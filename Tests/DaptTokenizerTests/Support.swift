import DaptCore
import DaptTokenizer
import Foundation
import XCTest
import DaptTestSupport

enum Fixtures {
    static var directory: URL { Bundle.module.resourceURL!.appendingPathComponent("Fixtures") }

    /// The `text` of every line of a JSONL fixture.
    static func texts(_ path: String) throws -> [String] {
        try String(contentsOf: directory.appendingPathComponent(path), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
            .map { line in
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                return object["text"] as! String
            }
    }

    static func expectedIds(_ path: String) throws -> [[UInt32]] {
        var lines = try String(contentsOf: directory.appendingPathComponent(path), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        return lines.map { $0.split(separator: " ").map { UInt32($0)! } }
    }
}


func jsonl(_ texts: [String]) -> [String] {
    texts.enumerated().map { i, t in
        let data = try! JSONSerialization.data(withJSONObject: ["id": "d\(i)", "text": t], options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}

/// A small tokenizer trained on the parity fixture lines (dapt pre-tokenizer).
func trainedOnFixtures(vocabSize: Int = 900, kind: PreTokenizerKind = .dapt) throws -> BPETokenizer {
    var trainer = BPETrainer(vocabSize: vocabSize, minFrequency: 2, preTokenizer: kind)
    for t in try Fixtures.texts("parity/lines.jsonl") { trainer.add(t) }
    return try trainer.train()
}

/// Random strings over many scripts, whitespace kinds, specials and emoji.
func randomText(_ rng: inout SplitMix64, length: Int) -> String {
    let pools: [[UInt32]] = [
        Array(0x20...0x7E), [0x09, 0x0A, 0x0D, 0x20, 0x20, 0xA0, 0x3000, 0x2028, 0x85],
        Array(0x4E00...0x4E80), Array(0x3040...0x30FF), Array(0xAC00...0xAC40), Array(0x0400...0x044F),
        Array(0x1F600...0x1F64F), [0x200D, 0xFE0F, 0x2E80, 0x3007, 0x3005, 0x20000, 0x17F, 0x27],
        Array(0x00C0...0x017F), Array(0x0660...0x0669), Array(0xFF01...0xFF5E),
    ]
    var s = String.UnicodeScalarView()
    for _ in 0..<length {
        let pool = pools[Int(rng.next() % UInt64(pools.count))]
        s.append(Unicode.Scalar(pool[Int(rng.next() % UInt64(pool.count))])!)
    }
    return String(s)
}
