import Yams

/// A bad configuration value, named by its dotted path (`dedup.threshold`).
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    public var file: String?
    public var field: String
    public var reason: String

    public init(file: String? = nil, field: String, reason: String) {
        self.file = file; self.field = field; self.reason = reason
    }

    public var description: String {
        (file.map { "\($0): " } ?? "") + "\(field): \(reason)"
    }

    /// The same error with its field placed under `section`.
    public func under(_ section: String) -> ConfigError {
        ConfigError(file: file, field: field.isEmpty ? section : "\(section).\(field)", reason: reason)
    }
}

/// Every stage's configuration: decodable from YAML with a default for every
/// missing key, and one `validate()` that names the bad field.
public protocol StageConfig: Codable, Sendable {
    init()
    func validate() throws
}

/// A coding key for any string, used to find keys a config does not know.
public struct AnyCodingKey: CodingKey {
    public var stringValue: String
    public var intValue: Int?
    public init(stringValue: String) { self.stringValue = stringValue; intValue = nil }
    public init?(intValue: Int) { stringValue = String(intValue); self.intValue = intValue }
}

extension KeyedDecodingContainer {
    /// The value at `key`, or `fallback` when the key is absent.
    public func value<T: Decodable>(_ key: Key, default fallback: @autoclosure () -> T) throws -> T {
        try decodeIfPresent(T.self, forKey: key) ?? fallback()
    }
}

extension Decoder {
    /// Throws for keys that `Keys` does not list: a typo in a config must not
    /// silently fall back to a default.
    public func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_ keys: Keys.Type) throws {
        let known = Set(Keys.allCases.map(\.stringValue))
        let container = try container(keyedBy: AnyCodingKey.self)
        for key in container.allKeys where !known.contains(key.stringValue) {
            let path = (codingPath + [key]).map(\.stringValue).joined(separator: ".")
            throw ConfigError(field: path, reason: "unknown key (known: \(known.sorted().joined(separator: ", ")))")
        }
    }
}

public enum ConfigLoader {
    /// Decodes `yaml` as `T`, turning decoding failures into `ConfigError`s
    /// that name the field. An empty document decodes as all defaults.
    public static func decode<T: Decodable>(_ type: T.Type, yaml: String, file: String? = nil) throws -> T {
        do {
            let trimmed = yaml.split(whereSeparator: \.isNewline).filter { !$0.hasPrefix("#") && !$0.allSatisfy(\.isWhitespace) }
            return try YAMLDecoder().decode(T.self, from: trimmed.isEmpty ? "{}" : yaml)
        } catch var error as ConfigError {
            error.file = file
            throw error
        } catch let error as DecodingError {
            throw describe(error, file: file)
        } catch {
            throw ConfigError(file: file, field: "", reason: "not valid YAML: \(error)")
        }
    }

    public static func load<T: Decodable>(_ type: T.Type, path: String) throws -> T {
        try decode(type, yaml: FileSystem.readText(path), file: path)
    }

    /// A decoding failure as a `ConfigError` naming the field's dotted path.
    public static func describe(_ error: DecodingError, file: String?) -> ConfigError {
        func path(_ p: [CodingKey]) -> String { p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") }
        switch error {
        case .typeMismatch(let type, let ctx):
            return ConfigError(file: file, field: path(ctx.codingPath), reason: "expected \(type): \(ctx.debugDescription)")
        case .valueNotFound(let type, let ctx):
            return ConfigError(file: file, field: path(ctx.codingPath), reason: "missing value of type \(type)")
        case .keyNotFound(let key, let ctx):
            return ConfigError(file: file, field: path(ctx.codingPath + [key]), reason: "required key is missing")
        case .dataCorrupted(let ctx):
            if let inner = ctx.underlyingError as? ConfigError { var e = inner; e.file = file; return e }
            return ConfigError(file: file, field: path(ctx.codingPath), reason: ctx.debugDescription)
        @unknown default:
            return ConfigError(file: file, field: "", reason: "\(error)")
        }
    }
}

/// Small checks shared by every `validate()`. Floating-point values must
/// also be finite: NaN compares false with everything, so a range check
/// alone would let it through.
public enum Check {
    public static func finite<T: BinaryFloatingPoint>(_ value: T, _ field: String) throws {
        if !value.isFinite { throw ConfigError(field: field, reason: "must be a finite number, got \(value)") }
    }
    public static func positive<T: BinaryFloatingPoint>(_ value: T, _ field: String) throws {
        try finite(value, field)
        if value <= 0 { throw ConfigError(field: field, reason: "must be > 0, got \(value)") }
    }
    public static func nonNegative<T: BinaryFloatingPoint>(_ value: T, _ field: String) throws {
        try finite(value, field)
        if value < 0 { throw ConfigError(field: field, reason: "must be >= 0, got \(value)") }
    }
    public static func positive<T: Comparable & Numeric>(_ value: T, _ field: String) throws {
        if value <= 0 { throw ConfigError(field: field, reason: "must be > 0, got \(value)") }
    }
    public static func nonNegative<T: Comparable & Numeric>(_ value: T, _ field: String) throws {
        if value < 0 { throw ConfigError(field: field, reason: "must be >= 0, got \(value)") }
    }
    public static func inRange<T: Comparable>(_ value: T, _ range: ClosedRange<T>, _ field: String) throws {
        if !range.contains(value) { throw ConfigError(field: field, reason: "must be in \(range.lowerBound)...\(range.upperBound), got \(value)") }
    }
    public static func oneOf(_ value: String, _ allowed: [String], _ field: String) throws {
        if !allowed.contains(value) { throw ConfigError(field: field, reason: "must be one of \(allowed.joined(separator: ", ")), got \"\(value)\"") }
    }
}
