import DaptCore
@testable import DaptGrammar
import XCTest

final class WordKeyTableTests: XCTestCase {
    /// The table against a `Dictionary` over random keys of several lengths
    /// (the empty key, prefixes of one another, equal words in another
    /// order), through growth and `removeAll`.
    func testAgreesWithADictionary() {
        var rng = SplitMix64(seed: 3)
        var table = WordKeyTable<Int>()
        var reference: [[UInt32]: Int] = [:]
        XCTAssertNil(table[[1, 2]], "an empty table finds nothing")
        for round in 0..<2 {
            for i in 0..<3000 {
                let key = (0..<Int.random(in: 0...5, using: &rng)).map { _ in UInt32.random(in: 0..<4, using: &rng) }
                if Bool.random(using: &rng) {
                    let added = table.insert(key, i)
                    XCTAssertEqual(added, reference[key] == nil)
                    if reference[key] == nil { reference[key] = i }
                } else {
                    table.set(key, i)
                    reference[key] = i
                }
            }
            XCTAssertEqual(table.count, reference.count)
            for (key, value) in reference { XCTAssertEqual(table[key], value, "round \(round), key \(key)") }
            XCTAssertNil(table[[9, 9, 9]])
            for i in 0..<table.count { XCTAssertEqual(reference[table.key(at: i)], table.values[i]) }
            table.removeAll()
            reference.removeAll()
            XCTAssertEqual(table.count, 0)
            XCTAssertNil(table[[0]])
        }
    }
}
