#if canImport(Glibc)
import Glibc
#endif
import Yams

/// A bad configuration value, named by its dotted path (`dedup.threshold`)
/// and by where the value came from: the file (with line and column when
/// the YAML has them) or the command-line option that set it.
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    public var file: String?
    public var line: Int?
    public var column: Int?
    /// The command-line option that set the value (`--set optimizer.lr=fast`, `--steps -1`).
    public var source: String?
    public var field: String
    public var reason: String

    public init(file: String? = nil, line: Int? = nil, column: Int? = nil, source: String? = nil, field: String, reason: String) {
        self.file = file; self.line = line; self.column = column; self.source = source
        self.field = field; self.reason = reason
    }

    /// `--set KEY=VALUE`, or `FILE:LINE:COLUMN`, or `FILE`; nil when unknown.
    public var location: String? {
        if let source { return source }
        guard let file else { return nil }
        guard let line else { return file }
        return "\(file):\(line)" + (column.map { ":\($0)" } ?? "")
    }

    public var description: String {
        (location.map { "\($0): " } ?? "") + (field.isEmpty ? reason : "\(field): \(reason)")
    }

    /// The same error with its field placed under `section`.
    public func under(_ section: String) -> ConfigError {
        var error = self
        error.field = field.isEmpty ? section : "\(section).\(field)"
        return error
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
        try rejectUnknownKeys(known: Keys.allCases.map(\.stringValue))
    }

    /// The same for a section whose keys come from several types (a section
    /// that inlines another's fields).
    public func rejectUnknownKeys(known names: [String]) throws {
        let known = Set(names)
        let container = try container(keyedBy: AnyCodingKey.self)
        for key in container.allKeys where !known.contains(key.stringValue) {
            let path = FieldPath(codingPath + [key]).text
            throw ConfigError(field: path, reason: "unknown key (known: \(known.sorted().joined(separator: ", ")))")
        }
    }
}

/// One command-line override of a config key: `--set KEY=VALUE`, or a stage
/// shortcut such as `--steps 100` that stands for one key. The value is read
/// as YAML (`3e-4` is a number, `[a, b]` a list, `true` a flag).
public struct ConfigOverride: Equatable, Sendable {
    /// Dotted path, relative to the stage's section (`optimizer.lr`).
    public var key: String
    public var value: String
    /// How the user wrote it, for error messages (`--set optimizer.lr=3e-4`, `--steps 100`).
    public var source: String

    public init(key: String, value: String, source: String) {
        self.key = key; self.value = value; self.source = source
    }

    /// A shortcut option standing for `key`: `--steps 100` sets `schedule.total_steps`.
    public init(key: String, value: some CustomStringConvertible, option: String) {
        self.init(key: key, value: value.description, source: "\(option) \(value)")
    }

    /// Parses the argument of `--set`: `KEY=VALUE`.
    public static func parse(_ text: String) throws -> ConfigOverride {
        let source = "--set \(text)"
        guard let eq = text.firstIndex(of: "=") else {
            throw ConfigError(source: source, field: "", reason: "expected KEY=VALUE, e.g. --set optimizer.lr=3e-4")
        }
        let key = String(text[..<eq]).trimmingWhitespace
        if key.isEmpty || key.split(separator: ".", omittingEmptySubsequences: false).contains(where: \.isEmpty) {
            throw ConfigError(source: source, field: key, reason: "expected KEY=VALUE with a dotted key, e.g. --set optimizer.lr=3e-4")
        }
        return ConfigOverride(key: key, value: String(text[text.index(after: eq)...]), source: source)
    }
}

extension String {
    fileprivate var trimmingWhitespace: String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}

public enum ConfigLoader {
    /// Decodes `yaml` as `T` with `overrides` applied under `section`, then
    /// runs `validate`. Every failure is a `ConfigError` naming the field and
    /// where its value came from (the file's line and column, or the override).
    /// An empty document decodes as all defaults.
    ///
    /// An override's key is relative to `section` unless its first part is
    /// `section` itself or one of `sections` (the file's other top-level keys,
    /// e.g. `cluster.blas_threads`).
    public static func decode<T: Decodable>(_ type: T.Type, yaml: String, file: String? = nil,
                                            overrides: [ConfigOverride] = [], section: String? = nil, sections: [String] = [],
                                            validate: (T) throws -> Void = { _ in }) throws -> T {
        var root = try parse(yaml, file: file)
        var applied: [(path: [String], source: String)] = []
        for override in overrides {
            var path = override.key.split(separator: ".").map(String.init)
            if let section, path.first != section, !sections.contains(path[0]) { path.insert(section, at: 0) }
            try set(&root, path: path[...], value: try valueNode(override), override: override, fullPath: path)
            applied.append((path, override.source))
        }
        // The error names the override whose key covers the field, else the file's position of the field.
        func located(_ error: ConfigError) -> ConfigError {
            var error = error
            let field = FieldPath(error.field).keys
            if let hit = applied.last(where: { $0.path.starts(with: field) || field.starts(with: $0.path) }), !field.isEmpty {
                error.source = hit.source
                error.file = nil; error.line = nil; error.column = nil
                return error
            }
            error.file = file
            if let mark = FieldPath(error.field).mark(in: root) { error.line = mark.line; error.column = mark.column }
            return error
        }
        let value: T
        do {
            value = try YAMLDecoder().decode(T.self, from: root)
        } catch let error as ConfigError {
            throw located(error)
        } catch let error as DecodingError {
            throw located(describe(error, root: root))
        }
        do { try validate(value) } catch let error as ConfigError { throw located(error) }
        return value
    }

    /// Reads `path` (nil: no file, all defaults) and decodes it as `decode` does.
    public static func load<T: Decodable>(_ type: T.Type, path: String?,
                                          overrides: [ConfigOverride] = [], section: String? = nil, sections: [String] = [],
                                          validate: (T) throws -> Void = { _ in }) throws -> T {
        var text = ""
        if let path {
            do { text = try FileSystem.readText(path) } catch let error as FileError {
                throw ConfigError(file: path, field: "", reason: "cannot read the config: \(error.operation) failed: \(String(cString: strerror(error.errno)))")
            }
        }
        return try decode(type, yaml: text, file: path, overrides: overrides, section: section, sections: sections, validate: validate)
    }

    /// The document's node tree; an empty document is an empty mapping.
    static func parse(_ yaml: String, file: String?) throws -> Node {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            switch error {
            case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
                 .composer(let context, let problem, let mark, _):
                let reason = "not valid YAML: " + (context.map { "\($0.text) " } ?? "") + problem
                throw ConfigError(file: file, line: mark.line, column: mark.column, field: "", reason: reason)
            case .duplicatedKeysInMapping(let duplicates, let context):
                throw ConfigError(file: file, line: context.mark.line, column: context.mark.column, field: "",
                                  reason: "not valid YAML: duplicate keys \(duplicates.joined(separator: ", "))")
            default:
                throw ConfigError(file: file, field: "", reason: "not valid YAML: \(error)")
            }
        }
        switch node {
        case nil: return Node([(Node, Node)]())
        case .mapping?: return node!
        case .scalar(let scalar)? where ["", "~", "null"].contains(scalar.string): return Node([(Node, Node)]())
        case let other?:
            throw ConfigError(file: file, line: other.mark?.line, column: other.mark?.column, field: "",
                              reason: "expected a mapping of keys at the top level, got \(describe(other))")
        }
    }

    private static func valueNode(_ override: ConfigOverride) throws -> Node {
        do {
            guard let node = try Yams.compose(yaml: override.value) else { return Node("") }
            return node
        } catch {
            throw ConfigError(source: override.source, field: override.key, reason: "the value is not valid YAML: \(override.value)")
        }
    }

    /// Sets `path` in the mapping `node`, creating the sections it passes through.
    private static func set(_ node: inout Node, path: ArraySlice<String>, value: Node, override: ConfigOverride, fullPath: [String]) throws {
        guard var mapping = node.mapping else {
            let parent = fullPath[..<(fullPath.count - path.count)].joined(separator: ".")
            throw ConfigError(source: override.source, field: parent, reason: "holds a value, not keys, so it has no \(path.first!)")
        }
        let key = path.first!
        let index = mapping.firstIndex { $0.key.string == key }
        if path.count == 1 {
            if let index { mapping[index] = (mapping[index].key, value) } else { mapping[Node(key)] = value }
        } else {
            var child = index.map { mapping[$0].value } ?? Node([(Node, Node)]())
            try set(&child, path: path.dropFirst(), value: value, override: override, fullPath: fullPath)
            if let index { mapping[index] = (mapping[index].key, child) } else { mapping[Node(key)] = child }
        }
        node = .mapping(mapping)
    }

    /// A decoding failure (of a document read elsewhere) as a `ConfigError`
    /// naming the field's dotted path.
    public static func describe(_ error: DecodingError, file: String?) -> ConfigError {
        var described = describe(error, root: nil)
        described.file = file
        return described
    }

    /// The failure naming the field, and the value found when `root` is the decoded tree.
    private static func describe(_ error: DecodingError, root: Node?) -> ConfigError {
        switch error {
        case .typeMismatch(let type, let ctx):
            let field = FieldPath(ctx.codingPath).text
            guard let root else { return ConfigError(field: field, reason: "expected \(describe(type))") }
            let found = FieldPath(ctx.codingPath).node(in: root).map(describe) ?? "nothing"
            return ConfigError(field: field, reason: "expected \(describe(type)), got \(found)")
        case .valueNotFound(let type, let ctx):
            return ConfigError(field: FieldPath(ctx.codingPath).text, reason: "expected \(describe(type)), got nothing")
        case .keyNotFound(let key, let ctx):
            return ConfigError(field: FieldPath(ctx.codingPath + [key]).text, reason: "required key is missing")
        case .dataCorrupted(let ctx):
            if let inner = ctx.underlyingError as? ConfigError { return inner }
            return ConfigError(field: FieldPath(ctx.codingPath).text, reason: ctx.debugDescription)
        @unknown default:
            return ConfigError(field: "", reason: "\(error)")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type, is Int64.Type, is Int32.Type, is UInt64.Type, is UInt32.Type, is UInt.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is Bool.Type: return "true or false"
        case is String.Type: return "a string"
        case is Node.Mapping.Type: return "a mapping of keys"
        case is Node.Sequence.Type: return "a list"
        case is Node.Scalar.Type: return "a single value"
        default: return "\(type)"
        }
    }

    private static func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): return "\"\(scalar.string)\""
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }
}

/// A field's path, `pretrain.optimizer.lr` or `special_tokens[2]`, as keys
/// and list indices: to print it and to find its node in a YAML tree.
struct FieldPath {
    enum Step: Equatable { case key(String), index(Int) }
    var steps: [Step]

    init(_ codingPath: [CodingKey]) {
        steps = codingPath.map { key in key.intValue.map(Step.index) ?? .key(key.stringValue) }
    }

    init(_ text: String) {
        steps = []
        for part in text.split(separator: ".") {
            var name = Substring(part)
            var indices: [Int] = []
            while name.hasSuffix("]"), let open = name.lastIndex(of: "["), let i = Int(name[name.index(after: open)..<name.index(before: name.endIndex)]) {
                indices.insert(i, at: 0)
                name = name[..<open]
            }
            if !name.isEmpty { steps.append(.key(String(name))) }
            steps += indices.map(Step.index)
        }
    }

    var keys: [String] { steps.compactMap { if case .key(let k) = $0 { return k } else { return nil } } }

    var text: String {
        var out = ""
        for step in steps {
            switch step {
            case .key(let k): out += out.isEmpty ? k : ".\(k)"
            case .index(let i): out += "[\(i)]"
            }
        }
        return out
    }

    /// The value node at this path.
    func node(in root: Node) -> Node? {
        var node = root
        for step in steps {
            guard let next = Self.child(node, step)?.value else { return nil }
            node = next
        }
        return node
    }

    /// Where the field is written: its key (or list item) in the file.
    func mark(in root: Node) -> Mark? {
        guard !steps.isEmpty else { return nil }
        var node = root
        for step in steps.dropLast() {
            guard let next = Self.child(node, step)?.value else { return nil }
            node = next
        }
        return Self.child(node, steps.last!)?.mark
    }

    private static func child(_ node: Node, _ step: Step) -> (value: Node, mark: Mark?)? {
        switch (step, node) {
        case (.key(let k), .mapping(let m)):
            return m.first { $0.key.string == k }.map { ($0.value, $0.key.mark) }
        case (.index(let i), .sequence(let s)):
            return s.indices.contains(i) ? (s[i], s[i].mark) : nil
        default:
            return nil
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
    /// A path the stage reads must exist before work starts.
    public static func exists(_ path: String, _ field: String) throws {
        if !FileSystem.exists(path) { throw ConfigError(field: field, reason: "no such file or directory: \(path)") }
    }
    public static func oneOf(_ value: String, _ allowed: [String], _ field: String) throws {
        if !allowed.contains(value) { throw ConfigError(field: field, reason: "must be one of \(allowed.joined(separator: ", ")), got \"\(value)\"") }
    }
}
