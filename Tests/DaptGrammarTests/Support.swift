import DaptCore
import DaptGrammar
import DaptTokenizer
import Foundation

enum Fixtures {
    static var directory: URL { Bundle.module.resourceURL!.appendingPathComponent("Fixtures") }

    /// The vocabulary of the fixture tokenizer (trained by dapt, 1,100
    /// tokens): its bytes per id, `<|eos|>` the end token, other special tokens excluded.
    static func tokenizerVocabulary() throws -> TokenVocabulary {
        TokenVocabulary(tokenizer: try BPETokenizer.load(path: directory.appendingPathComponent("tokenizer.json").path))
    }
}

/// Checks a value against the supported JSON Schema subset. Written from
/// the JSON Schema rules, independently of the grammar compiler: returns the
/// first violation, nil when valid.
func schemaViolation(_ value: JSONValue, _ schema: JSONValue, path: String = "$") -> String? {
    if case .bool(let b) = schema { return b ? nil : "\(path): false schema" }
    if let c = schema["const"] { return value == c ? nil : "\(path): not the const" }
    if let e = schema["enum"]?.array { return e.contains(value) ? nil : "\(path): not in enum" }
    if let alts = schema["anyOf"]?.array {
        return alts.contains { schemaViolation(value, $0, path: path) == nil } ? nil : "\(path): no anyOf alternative matches"
    }
    if let t = schema["type"] {
        let names = t.string.map { [$0] } ?? (t.array ?? []).compactMap(\.string)
        let matches = names.contains { name in
            switch (name, value) {
            case ("null", .null), ("boolean", .bool), ("string", .string), ("array", .array), ("object", .object), ("number", .number): return true
            case ("integer", .number(let text)): return Double(text).map { $0 == $0.rounded() } ?? false
            default: return false
            }
        }
        if !matches { return "\(path): not of type \(names)" }
    }
    switch value {
    case .string(let s):
        let n = s.unicodeScalars.count
        if let min = schema["minLength"]?.int, n < min { return "\(path): shorter than \(min)" }
        if let max = schema["maxLength"]?.int, n > max { return "\(path): longer than \(max)" }
    case .array(let items):
        if let min = schema["minItems"]?.int, items.count < min { return "\(path): fewer than \(min) items" }
        if let max = schema["maxItems"]?.int, items.count > max { return "\(path): more than \(max) items" }
        if let itemSchema = schema["items"] {
            for (k, item) in items.enumerated() { if let v = schemaViolation(item, itemSchema, path: "\(path)[\(k)]") { return v } }
        }
    case .object(let members):
        let properties = schema["properties"]?.members ?? []
        for name in schema["required"]?.array?.compactMap(\.string) ?? [] where !members.contains(where: { $0.0 == name }) {
            return "\(path): missing required \(name)"
        }
        for (name, v) in members {
            if let sub = properties.first(where: { $0.0 == name })?.1 {
                if let violation = schemaViolation(v, sub, path: "\(path).\(name)") { return violation }
            } else if schema["additionalProperties"] == .bool(false) {
                return "\(path): additional property \(name)"
            }
        }
    default: break
    }
    return nil
}
