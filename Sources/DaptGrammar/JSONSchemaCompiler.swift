import DaptCore

/// A JSON Schema that cannot be compiled to a grammar: an unsupported
/// keyword, a bad value, or a schema no value satisfies. `path` locates the
/// problem in the schema (`$.properties.name.pattern`).
public struct JSONSchemaError: Error, Equatable, Sendable, CustomStringConvertible {
    public var path: String
    public var reason: String

    public init(path: String, reason: String) { self.path = path; self.reason = reason }

    public var description: String { "JSON Schema \(path): \(reason)" }
}

/// Compiles the supported subset of JSON Schema into grammar nodes.
///
/// Supported: `type` (a name or a list of names: object, array, string,
/// number, integer, boolean, null), `properties`, `required`,
/// `additionalProperties` (false, true or absent: only declared properties
/// are generated either way), `enum`, `const`, `minLength`, `maxLength`,
/// `items`, `minItems`, `maxItems`, `anyOf`; annotations (`title`,
/// `description`, `$schema`, `$id`, `$comment`, `default`, `examples`) are
/// ignored. Anything else is an error naming the keyword and its path.
struct JSONSchemaCompiler {
    var grammar: JSONGrammar
    private var anyValue: Int32?

    init(grammar: JSONGrammar) { self.grammar = grammar }

    static let annotations: Set<String> = ["title", "description", "$schema", "$id", "$comment", "default", "examples"]
    static let keywords: Set<String> = ["type", "properties", "required", "additionalProperties", "enum", "const",
                                        "minLength", "maxLength", "items", "minItems", "maxItems", "anyOf"]
    static let typeNames = ["object", "array", "string", "number", "integer", "boolean", "null"]

    mutating func any() -> Int32 {
        if let anyValue { return anyValue }
        let node = grammar.addAnyValue()
        anyValue = node
        return node
    }

    mutating func compile(_ schema: JSONValue, path: String) throws(JSONSchemaError) -> Int32 {
        if case .bool(let allowed) = schema {
            guard allowed else { throw JSONSchemaError(path: path, reason: "false allows no value") }
            return any()
        }
        guard let members = schema.members else { throw JSONSchemaError(path: path, reason: "a schema must be an object or a boolean, not \(schema.typeName)") }
        for (key, _) in members where !Self.keywords.contains(key) && !Self.annotations.contains(key) {
            throw JSONSchemaError(path: path + "." + key, reason: "unsupported keyword \"\(key)\"")
        }
        if let constant = schema["const"] {
            if schema["enum"] != nil { throw JSONSchemaError(path: path, reason: "both const and enum") }
            return grammar.addLiterals([Array(constant.text().utf8)])
        }
        if let values = schema["enum"] {
            guard let items = values.array, !items.isEmpty else { throw JSONSchemaError(path: path + ".enum", reason: "must be a non-empty array") }
            return grammar.addLiterals(items.map { Array($0.text().utf8) })
        }
        if let alternatives = schema["anyOf"] {
            guard let items = alternatives.array, !items.isEmpty else { throw JSONSchemaError(path: path + ".anyOf", reason: "must be a non-empty array") }
            let others = members.filter { !Self.annotations.contains($0.0) && $0.0 != "anyOf" }.map(\.0)
            if let other = others.first {
                throw JSONSchemaError(path: path + "." + other, reason: "\"\(other)\" beside anyOf is not supported (move it into each alternative)")
            }
            var alts: [Int32] = []
            for (k, item) in items.enumerated() { alts.append(try compile(item, path: "\(path).anyOf[\(k)]")) }
            return grammar.add(JSONGrammar.Node(kind: .anyOf, alternatives: alts))
        }
        var types: [String]
        switch schema["type"] {
        case .string(let name)?: types = [name]
        case .array(let names)?:
            types = []
            for (k, name) in names.enumerated() {
                guard let s = name.string else { throw JSONSchemaError(path: "\(path).type[\(k)]", reason: "must be a type name") }
                types.append(s)
            }
            if types.isEmpty { throw JSONSchemaError(path: path + ".type", reason: "an empty list allows no value") }
        case nil:
            // No type: inferred from the keywords given, any value without them.
            if schema["properties"] != nil || schema["required"] != nil || schema["additionalProperties"] != nil { types = ["object"] }
            else if schema["items"] != nil || schema["minItems"] != nil || schema["maxItems"] != nil { types = ["array"] }
            else if schema["minLength"] != nil || schema["maxLength"] != nil { types = ["string"] }
            else { return any() }
        case let other?: throw JSONSchemaError(path: path + ".type", reason: "must be a type name or a list of them, not \(other.typeName)")
        }
        for (k, name) in types.enumerated() where !Self.typeNames.contains(name) {
            throw JSONSchemaError(path: types.count == 1 ? path + ".type" : "\(path).type[\(k)]", reason: "unknown type \"\(name)\"")
        }
        var alts: [Int32] = []
        for name in types { alts.append(try compile(type: name, schema, path: path)) }
        return alts.count == 1 ? alts[0] : grammar.add(JSONGrammar.Node(kind: .anyOf, alternatives: alts))
    }

    func count(_ schema: JSONValue, _ key: String, path: String) throws(JSONSchemaError) -> Int32? {
        guard let value = schema[key] else { return nil }
        guard let n = value.int, n >= 0, n < Int(Int32.max) else {
            throw JSONSchemaError(path: path + "." + key, reason: "must be a non-negative integer, not \(value.text())")
        }
        return Int32(n)
    }

    mutating func compile(type name: String, _ schema: JSONValue, path: String) throws(JSONSchemaError) -> Int32 {
        switch name {
        case "string":
            let min = try count(schema, "minLength", path: path) ?? 0
            let max = try count(schema, "maxLength", path: path) ?? -1
            if max >= 0 && min > max { throw JSONSchemaError(path: path, reason: "minLength \(min) > maxLength \(max)") }
            return grammar.add(JSONGrammar.Node(kind: .string, minCount: min, maxCount: max))
        case "number": return grammar.add(JSONGrammar.Node(kind: .number))
        case "integer": return grammar.add(JSONGrammar.Node(kind: .integer))
        case "boolean": return grammar.addLiterals([JSONWriter.true, JSONWriter.false])
        case "null": return grammar.addLiterals([JSONWriter.null])
        case "array":
            let min = try count(schema, "minItems", path: path) ?? 0
            let max = try count(schema, "maxItems", path: path) ?? -1
            if max >= 0 && min > max { throw JSONSchemaError(path: path, reason: "minItems \(min) > maxItems \(max)") }
            let items = try schema["items"].map { v throws(JSONSchemaError) in try compile(v, path: path + ".items") } ?? any()
            return grammar.add(JSONGrammar.Node(kind: .array, minCount: min, maxCount: max, items: items))
        default:
            return try compileObject(schema, path: path)
        }
    }

    mutating func compileObject(_ schema: JSONValue, path: String) throws(JSONSchemaError) -> Int32 {
        var closed = false
        switch schema["additionalProperties"] {
        case nil, .bool(true)?: break
        case .bool(false)?: closed = true
        case let other?:
            throw JSONSchemaError(path: path + ".additionalProperties", reason: "only true or false is supported, not \(other.typeName)")
        }
        var required: [String] = []
        if let list = schema["required"] {
            guard let items = list.array else { throw JSONSchemaError(path: path + ".required", reason: "must be an array of names") }
            for (k, item) in items.enumerated() {
                guard let name = item.string else { throw JSONSchemaError(path: "\(path).required[\(k)]", reason: "must be a string") }
                if required.contains(name) { throw JSONSchemaError(path: "\(path).required[\(k)]", reason: "\"\(name)\" is listed twice") }
                required.append(name)
            }
        }
        guard let declared = schema["properties"] else {
            if required.isEmpty { return grammar.add(JSONGrammar.Node(kind: closed ? .object : .freeObject, items: any())) }
            if closed { throw JSONSchemaError(path: path + ".required", reason: "required properties but no properties and additionalProperties false") }
            return try objectNode(declared: [], required: required, path: path)
        }
        guard let members = declared.members else { throw JSONSchemaError(path: path + ".properties", reason: "must be an object") }
        for name in required where !members.contains(where: { $0.0 == name }) && closed {
            throw JSONSchemaError(path: path + ".required", reason: "\"\(name)\" is required but not in properties and additionalProperties is false")
        }
        return try objectNode(declared: members, required: required, path: path)
    }

    mutating func objectNode(declared: [(String, JSONValue)], required: [String], path: String) throws(JSONSchemaError) -> Int32 {
        var props: [JSONGrammar.Property] = []
        for (name, sub) in declared {
            let node = try compile(sub, path: path + ".properties." + name)
            props.append(JSONGrammar.Property(name: name, node: node, required: required.contains(name)))
        }
        // Required names without a declared schema come last, any value.
        for name in required where !declared.contains(where: { $0.0 == name }) {
            props.append(JSONGrammar.Property(name: name, node: any(), required: true))
        }
        return grammar.add(JSONGrammar.Node(kind: .object, properties: props))
    }
}
