import DaptCore
import DaptGrammar
import DaptTestSupport
import XCTest

/// The byte automaton against RFC 8259 as DaptCore's scanner reads it, and
/// JSON Schema fixtures.
final class JSONGrammarTests: XCTestCase {
    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// n_ cases: each is refused by the scanner too.
    static let invalid: [[UInt8]] = [
        "", "  \n", "01", "-01", "[00]", "1.", "[1.]", "1e", "1e+", "-", "-a", ".5", "+1", "0x1", "[0x1]", "Infinity", "NaN",
        "tru", "[nul]", "[1,]", "[1 2]", "[1", "{", #"{"a" 1}"#, #"{"a":1,}"#, "{a:1}", #"{"a":1 "b":2}"#,
        #"{"a":1,"a":2}"#, #"{"x":{"a":1,"\u0061":2}}"#, "[1] x", "{} {}", #""abc"#, #"["a\"]"#, #""\x""#, #""\'""#,
        #""\u12""#, #""\u12G4""#, #""\U0041""#, #""\ud800""#, #""ab\uDBFF x""#, #""\udc00""#, #""\ud800\ud800""#,
        #""\ud800\u0041""#, #""\ude00\ud83d""#, "[1]\u{0B}", "truefalse", "[true false]", "{\"a\":}", "[,1]", "\"\u{7F}",
    ].map { Array($0.utf8) } + [
        [0x22, 0x61, 0x00, 0x22], [0x22, 0x0A, 0x22], [0x22, 0x09, 0x22], [0x22, 0x1F, 0x22],
        [0x22, 0x80, 0x22], [0x22, 0x61, 0xE4, 0xB8, 0x22], [0x22, 0xC0, 0xAF, 0x22], [0x22, 0xC1, 0xBF, 0x22],
        [0x22, 0xE0, 0x80, 0xAF, 0x22], [0x22, 0xF0, 0x80, 0x80, 0xAF, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22],
        [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], [0x22, 0xF5, 0x80, 0x80, 0x80, 0x22], [0x22, 0xFF, 0x22],
        [0x5B, 0xC3, 0xA9, 0x5D], [0x20, 0xEF, 0xBB, 0xBF, 0x31], [0x0C, 0x31], [0x5B, 0xC2, 0xA0, 0x31, 0x5D],
    ]

    func testConformanceCases() {
        let g = JSONGrammar.anyValue()
        for doc in JSONCases.valid {
            XCTAssertNoThrow(try JSONValue.parse(doc), doc)
            XCTAssertTrue(g.accepts(bytes(doc)), doc)
            for k in 0...doc.utf8.count { XCTAssertTrue(g.acceptsPrefix(bytes(doc).prefix(k)), "prefix \(k) of \(doc)") }
        }
        for doc in Self.invalid {
            XCTAssertThrowsError(try JSONValue.parse(doc), "\(doc)")
            XCTAssertFalse(g.accepts(doc), String(decoding: doc, as: UTF8.self).debugDescription)
        }
        // Dead ends are refused at their first byte, not later.
        for (prefix, ok) in [(#""\uDC"#, false), (#""\uDB"#, true), (#""\uD83D\uD8"#, false), ("01", false), ("-0.", true),
                             (#"{"a":1,"a""#, false), (#"{"a":1,"ab""#, true), ("[1,]", false), ("1 ", true), ("1 2", false)] {
            XCTAssertEqual(g.acceptsPrefix(bytes(prefix)), ok, prefix)
        }
        XCTAssertFalse(JSONGrammar.anyObject().accepts(bytes("[1]")))
        XCTAssertTrue(JSONGrammar.anyObject().accepts(bytes(#" {"a": [1, {"b": null}]}"#)))
    }

    func testNestingLimitMatchesTheScanner() {
        let g = JSONGrammar.anyValue()
        let atLimit = String(repeating: "[", count: JSON.maxDepth) + String(repeating: "]", count: JSON.maxDepth)
        XCTAssertTrue(g.accepts(bytes(atLimit)))
        XCTAssertFalse(g.acceptsPrefix(bytes(String(repeating: "[", count: JSON.maxDepth + 1))))
    }

    func testWhitespaceRunsAreBounded() {
        let g = JSONGrammar.anyValue(maxWhitespace: 2)
        XCTAssertTrue(g.accepts(bytes("  [ 1 ,\n 2 ]\r\n")))
        XCTAssertFalse(g.acceptsPrefix(bytes("[1,   ")))
        XCTAssertFalse(g.acceptsPrefix(bytes("   ")))
        XCTAssertFalse(g.accepts(bytes("1   ")))
        XCTAssertTrue(g.accepts(bytes(#"{"a  b" :  "c   d"}"#)), "whitespace inside strings is not counted")
        XCTAssertFalse(JSONGrammar.anyValue(maxWhitespace: 0).accepts(bytes("[1, 2]")))
    }

    /// Random documents and random edits of them: the automaton accepts
    /// exactly what the scanner parses, and every prefix of an accepted
    /// text is a valid prefix.
    func testRandomTextsAgreeWithTheScanner() {
        var rng = SplitMix64(seed: 7)
        let g = JSONGrammar.anyValue(maxWhitespace: 254)
        let alphabet: [UInt8] = Array(#"{}[],:"\ u0aDd1-.eE+tfnrl "#.utf8) + [0x09, 0x0A, 0x00, 0x80, 0xC3, 0xA9, 0xE4, 0xED, 0xA0, 0xF0, 0x9F, 0xFF]
        var agreed = 0, accepted = 0
        for _ in 0..<3000 {
            var doc = Array(randomDocument(&rng, depth: 0).utf8)
            for _ in 0..<Int.random(in: 0...2, using: &rng) where !doc.isEmpty {
                let at = Int.random(in: 0..<doc.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: doc.remove(at: at)
                case 1: doc.insert(alphabet.randomElement(using: &rng)!, at: at)
                default: doc[at] = alphabet.randomElement(using: &rng)!
                }
            }
            let scanner = (try? JSONValue.parse(doc)) != nil
            XCTAssertEqual(g.accepts(doc), scanner, String(decoding: doc, as: UTF8.self).debugDescription)
            if g.accepts(doc) == scanner { agreed += 1 }
            if scanner {
                accepted += 1
                for k in stride(from: 0, to: doc.count, by: 3) { XCTAssertTrue(g.acceptsPrefix(doc.prefix(k))) }
            }
        }
        XCTAssertEqual(agreed, 3000)
        XCTAssertGreaterThan(accepted, 600, "the edits must leave a fair share valid")
        XCTAssertLessThan(accepted, 2700, "and break a fair share")
    }

    func randomDocument(_ rng: inout SplitMix64, depth: Int) -> String {
        func ws() -> String { ["", "", "", " ", "\n  ", "\t", "\r\n"].randomElement(using: &rng)! }
        let pick = depth > 3 ? Int.random(in: 2..<7, using: &rng) : Int.random(in: 0..<7, using: &rng)
        switch pick {
        case 0:
            let n = Int.random(in: 0...3, using: &rng)
            var keys: [String] = []
            for _ in 0..<n { keys.append(["a", "b", "ab", "é", #"\u0061"#, "", "k\\n"].randomElement(using: &rng)!) }
            return "{" + ws() + keys.map { "\"\($0)\"" + ws() + ":" + ws() + randomDocument(&rng, depth: depth + 1) + ws() }.joined(separator: ",") + "}"
        case 1:
            let n = Int.random(in: 0...3, using: &rng)
            return "[" + ws() + (0..<n).map { _ in randomDocument(&rng, depth: depth + 1) + ws() }.joined(separator: "," + ws()) + "]"
        case 2:
            let parts = ["a", "é", "中", "😀", #"\""#, #"\\"#, #"\n"#, #"\u00e9"#, #"\ud83d\ude00"#, #"\uDBFF\uDFFF"#, " ", "/"]
            return "\"" + (0..<Int.random(in: 0...4, using: &rng)).map { _ in parts.randomElement(using: &rng)! }.joined() + "\""
        case 3, 4:
            return ["0", "-0", "12", "-3.25", "1e5", "2E-3", "0.0e+1", "-10.5E12", "7"].randomElement(using: &rng)!
        default:
            return ["true", "false", "null"].randomElement(using: &rng)!
        }
    }

    // MARK: schemas

    static let intentSchema = #"""
    {"type": "object", "additionalProperties": false,
     "properties": {
       "intent": {"enum": ["search", "compare", "summarize", "cite"]},
       "query": {"type": "string", "minLength": 1, "maxLength": 12},
       "limit": {"type": "integer"},
       "score": {"type": "number"},
       "strict": {"type": "boolean"},
       "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "minItems": 1, "maxItems": 3},
       "filter": {"type": "object", "properties": {"field": {"const": "claims"}, "value": {"type": ["string", "null"]}}, "required": ["field"]},
       "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 2}, {"type": "string", "minLength": 4, "maxLength": 5}, {"type": "integer"}]}
     },
     "required": ["intent", "query", "tags"]}
    """#

    func testSchemaAcceptsAndRejects() throws {
        let g = try JSONGrammar.schema(JSONValue.parse(Self.intentSchema))
        let schema = try JSONValue.parse(Self.intentSchema)
        let good = [
            #"{"intent":"search","query":"x","tags":["a"]}"#,
            #"{ "intent" : "cite", "query": "中文😀\"", "limit": -12, "score": 1.5e3, "strict": true, "tags": ["", "abc", "\u00e9"], "filter": {"field": "claims", "value": null}, "note": "abcd"}"#,
            #"{"intent":"compare","query":"abcdefghijkl","tags":["a","b","c"],"filter":{"field":"claims"},"note":7}"#,
            #"{"intent":"search","query":"q","tags":["a"],"note":"ab"}"#,
            #"{"intent":"search","query":"q","tags":["a"],"note":null}"#,
        ]
        for doc in good {
            XCTAssertTrue(g.accepts(bytes(doc)), doc)
            XCTAssertNil(schemaViolation(try JSONValue.parse(doc), schema), doc)
        }
        let bad = [
            #"{"intent":"find","query":"x","tags":["a"]}"#,                 // not in the enum
            #"{"intent":"search","query":"","tags":["a"]}"#,                // minLength
            #"{"intent":"search","query":"abcdefghijklm","tags":["a"]}"#,   // maxLength 12
            #"{"intent":"search","query":"x","tags":[]}"#,                  // minItems
            #"{"intent":"search","query":"x","tags":["a","b","c","d"]}"#,   // maxItems
            #"{"intent":"search","query":"x","tags":["abcd"]}"#,            // item maxLength
            #"{"intent":"search","query":"x"}"#,                            // required tags
            #"{"intent":"search","query":"x","tags":["a"],"extra":1}"#,     // additionalProperties false
            #"{"intent":"search","query":"x","tags":["a"],"limit":1.5}"#,   // integer
            #"{"intent":"search","query":"x","tags":["a"],"strict":null}"#, // boolean
            #"{"intent":"search","query":"x","tags":["a"],"filter":{"value":"v"}}"#, // nested required
            #"{"intent":"search","query":"x","tags":["a"],"filter":{"field":"claim"}}"#, // const
            #"{"intent":"search","query":"x","tags":["a"],"note":"abc"}"#,  // no anyOf alternative (3 chars)
            #"{"intent":"search","query":"x","tags":["a"],"note":"abcdef"}"#,
            #"{"intent":"search","query":"x","tags":["a"],"note":true}"#,
            #"["search"]"#,
        ]
        for doc in bad {
            XCTAssertFalse(g.accepts(bytes(doc)), doc)
            XCTAssertNotNil(schemaViolation(try JSONValue.parse(doc), schema), doc)
        }
        // Properties come in declared order (the documented restriction).
        XCTAssertFalse(g.accepts(bytes(#"{"query":"x","intent":"search","tags":["a"]}"#)))
        // Length counts code points: an escape or a surrogate pair is one character.
        let short = try JSONGrammar.schema(JSONValue.parse(#"{"type":"string","minLength":2,"maxLength":2}"#))
        for (doc, ok) in [(#""ab""#, true), (#""\ud83d\ude00x""#, true), (#""😀é""#, true), (#""\n\t""#, true), (#""a""#, false), (#""abc""#, false), (#""😀""#, false)] {
            XCTAssertEqual(short.accepts(bytes(doc)), ok, doc)
        }
    }

    func testSchemaErrorsNameTheKeywordAndPath() throws {
        func error(_ schema: String) -> String? {
            do { _ = try JSONGrammar.schema(JSONValue.parse(schema)); return nil } catch { return "\(error)" }
        }
        XCTAssertEqual(error(#"{"type":"object","properties":{"name":{"type":"string","pattern":"^a"}}}"#),
                       #"JSON Schema $.properties.name.pattern: unsupported keyword "pattern""#)
        XCTAssertEqual(error(#"{"type":"array","items":{"oneOf":[]}}"#), #"JSON Schema $.items.oneOf: unsupported keyword "oneOf""#)
        XCTAssertEqual(error(#"{"type":"strin"}"#), #"JSON Schema $.type: unknown type "strin""#)
        XCTAssertEqual(error(#"{"type":"string","minLength":3,"maxLength":2}"#), "JSON Schema $: minLength 3 > maxLength 2")
        XCTAssertEqual(error(#"{"type":"string","maxLength":-1}"#), "JSON Schema $.maxLength: must be a non-negative integer, not -1")
        XCTAssertEqual(error(#"{"enum":[]}"#), "JSON Schema $.enum: must be a non-empty array")
        XCTAssertEqual(error(#"{"anyOf":[{"type":"null"},{"$ref":"x"}]}"#), #"JSON Schema $.anyOf[1].$ref: unsupported keyword "$ref""#)
        XCTAssertEqual(error(#"{"type":"object","additionalProperties":{"type":"string"}}"#),
                       "JSON Schema $.additionalProperties: only true or false is supported, not object")
        XCTAssertEqual(error(#"{"properties":{"a":{}},"required":["b"],"additionalProperties":false}"#),
                       #"JSON Schema $.required: "b" is required but not in properties and additionalProperties is false"#)
        XCTAssertNil(error(#"{"title":"t","description":"d","type":"integer"}"#))
        let dir = try temporaryDirectory(self)
        try "{\"type\": \"number\", \"minimum\": 0}".write(toFile: dir + "/s.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try JSONGrammar.schema(file: dir + "/s.json")) {
            XCTAssertEqual("\($0)", "JSON Schema $.minimum: \(dir)/s.json: unsupported keyword \"minimum\"")
        }
    }
}
