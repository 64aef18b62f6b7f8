import DaptCore
import Foundation

/// A schema the validator cannot apply, naming the keyword's path.
public struct SchemaValidatorError: Error, Equatable, Sendable, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String { "JSON Schema \(path): \(reason)" }
}

/// Checks JSON values against a JSON Schema (the subset constrained
/// decoding supports: `type`, `properties`, `required`,
/// `additionalProperties` true/false, `enum`, `const`, `minLength`,
/// `maxLength`, `items`, `minItems`, `maxItems`, `anyOf`; annotations
/// ignored). It works on parsed values, independently of the grammar that
/// generates them, so evaluation does not take the generator's word for it.
public struct JSONSchemaValidator: Sendable {
    public let schema: JSONValue

    static let annotations: Set<String> = ["title", "description", "$schema", "$id", "$comment", "default", "examples"]
    static let keywords: Set<String> = ["type", "properties", "required", "additionalProperties", "enum", "const",
                                        "minLength", "maxLength", "items", "minItems", "maxItems", "anyOf"]

    /// Checks that `schema` uses only supported keywords.
    public init(schema: JSONValue) throws {
        try Self.check(schema, path: "$")
        self.schema = schema
    }

    public init(file: String) throws {
        let value: JSONValue
        do { value = try JSONValue.parse(try FileSystem.readAll(file)) } catch let error as JSONSyntaxError {
            throw ConfigError(file: file, field: "", reason: "not JSON: \(error)")
        }
        do { try self.init(schema: value) } catch let error as SchemaValidatorError {
            throw ConfigError(file: file, field: error.path, reason: error.reason)
        }
    }

    private static func check(_ schema: JSONValue, path: String) throws {
        if case .bool = schema { return }
        guard let members = schema.members else { throw SchemaValidatorError(path: path, reason: "a schema must be an object or a boolean") }
        for (key, value) in members {
            if annotations.contains(key) { continue }
            guard keywords.contains(key) else { throw SchemaValidatorError(path: path + "." + key, reason: "unsupported keyword") }
            switch key {
            case "properties":
                guard let props = value.members else { throw SchemaValidatorError(path: path + ".properties", reason: "must be an object") }
                for (name, sub) in props { try check(sub, path: path + ".properties." + name) }
            case "items": try check(value, path: path + ".items")
            case "anyOf":
                guard let list = value.array, !list.isEmpty else { throw SchemaValidatorError(path: path + ".anyOf", reason: "must be a non-empty array") }
                for (i, sub) in list.enumerated() { try check(sub, path: "\(path).anyOf[\(i)]") }
            case "minLength", "maxLength", "minItems", "maxItems":
                guard let n = value.int, n >= 0 else { throw SchemaValidatorError(path: path + "." + key, reason: "must be a non-negative integer") }
            default: break
            }
        }
    }

    /// Whether `value` satisfies the schema.
    public func accepts(_ value: JSONValue) -> Bool { Self.accepts(value, schema) }

    static func accepts(_ value: JSONValue, _ schema: JSONValue) -> Bool {
        if case .bool(let b) = schema { return b }
        if let type = schema["type"] {
            let names = type.array?.compactMap(\.string) ?? [type.string ?? ""]
            if !names.contains(where: { has(value, type: $0) }) { return false }
        }
        if let options = schema["enum"]?.array, !options.contains(where: { same($0, value) }) { return false }
        if let constant = schema["const"], !same(constant, value) { return false }
        if case .string(let s) = value {
            let length = s.unicodeScalars.count
            if let min = schema["minLength"]?.int, length < min { return false }
            if let max = schema["maxLength"]?.int, length > max { return false }
        }
        if case .array(let items) = value {
            if let min = schema["minItems"]?.int, items.count < min { return false }
            if let max = schema["maxItems"]?.int, items.count > max { return false }
            if let itemSchema = schema["items"], !items.allSatisfy({ accepts($0, itemSchema) }) { return false }
        }
        if case .object(let members) = value {
            let names = Set(members.map(\.0))
            if names.count != members.count { return false }  // a repeated key is not one object
            let properties = schema["properties"]?.members ?? []
            if let required = schema["required"]?.array?.compactMap(\.string), !required.allSatisfy(names.contains) { return false }
            for (name, sub) in members {
                if let propertySchema = properties.first(where: { $0.0 == name })?.1 {
                    if !accepts(sub, propertySchema) { return false }
                } else if case .bool(false)? = schema["additionalProperties"] {
                    return false
                }
            }
        }
        if let options = schema["anyOf"]?.array, !options.contains(where: { accepts(value, $0) }) { return false }
        return true
    }

    static func has(_ value: JSONValue, type: String) -> Bool {
        switch (type, value) {
        case ("object", .object), ("array", .array), ("string", .string), ("boolean", .bool), ("null", .null), ("number", .number): return true
        case ("integer", .number(let text)): return Double(text).map { $0 == $0.rounded() } ?? false
        default: return false
        }
    }

    /// JSON equality with numbers compared by value (1.0 equals 1).
    public static func same(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case let (.number(x), .number(y)): return x == y || (Double(x) != nil && Double(x) == Double(y))
        case let (.array(x), .array(y)): return x.count == y.count && zip(x, y).allSatisfy { same($0, $1) }
        case let (.object(x), .object(y)):
            return x.count == y.count && x.allSatisfy { member in y.contains { $0.0 == member.0 && same($0.1, member.1) } }
        default: return a == b
        }
    }
}
