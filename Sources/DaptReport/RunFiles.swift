import DaptCore
import DaptTrain
import Foundation

/// A stage output that is there but cannot be read as that stage writes it.
public struct RunReportError: Error, CustomStringConvertible, Equatable, Sendable {
    public var file: String
    /// The line of a JSON-lines file; nil for a whole JSON document.
    public var line: Int?
    public var field: String
    public var reason: String

    public init(file: String, line: Int? = nil, field: String, reason: String) {
        self.file = file; self.line = line; self.field = field; self.reason = reason
    }

    /// `FILE[:LINE]: field: reason`.
    public var description: String {
        "\(file)" + (line.map { ":\($0)" } ?? "") + ": " + (field.isEmpty ? "" : "\(field): ") + reason
    }
}

/// One JSON document of a stage's outputs, read field by field: a missing
/// field or one of the wrong type is a `RunReportError` naming it.
struct JSONDocument {
    let file: String
    let root: JSONValue
    /// Where `root` sits in the file (`groups[2]`), for the errors.
    let prefix: String

    init(file: String, root: JSONValue, prefix: String = "") { self.file = file; self.root = root; self.prefix = prefix }

    init(file: String) throws {
        let bytes = try FileSystem.readAll(file)
        let root: JSONValue
        do { root = try JSONValue.parse(bytes) } catch {
            throw RunReportError(file: file, field: "", reason: "not JSON: \(error)")
        }
        guard root.members != nil else { throw RunReportError(file: file, field: "", reason: "expected a JSON object, got \(root.typeName)") }
        self.init(file: file, root: root)
    }

    func problem(_ path: String, _ reason: String) -> RunReportError {
        RunReportError(file: file, field: prefix.isEmpty ? path : "\(prefix).\(path)", reason: reason)
    }

    /// The value at a dotted path (`check.records_in`); nil when absent.
    func optional(_ path: String) -> JSONValue? {
        var value: JSONValue? = root
        for key in path.split(separator: ".") { value = value?[String(key)] }
        return value
    }

    func value(_ path: String) throws -> JSONValue {
        guard let v = optional(path) else { throw problem(path, "missing") }
        return v
    }

    func int(_ path: String) throws -> Int {
        let v = try value(path)
        guard let i = v.int else { throw problem(path, "expected an integer, got \(describe(v))") }
        return i
    }

    func double(_ path: String) throws -> Double {
        let v = try value(path)
        guard let d = v.double else { throw problem(path, "expected a number, got \(describe(v))") }
        return d
    }

    /// A number that may be null or absent.
    func optionalDouble(_ path: String) throws -> Double? {
        guard let v = optional(path), !v.isNull else { return nil }
        guard let d = v.double else { throw problem(path, "expected a number or null, got \(describe(v))") }
        return d
    }

    func string(_ path: String) throws -> String {
        let v = try value(path)
        guard let s = v.string else { throw problem(path, "expected a string, got \(describe(v))") }
        return s
    }

    func array(_ path: String) throws -> [JSONValue] {
        let v = try value(path)
        guard let a = v.array else { throw problem(path, "expected a list, got \(describe(v))") }
        return a
    }

    /// The elements of the list at `path`, each a document whose errors name `path[i].field`.
    func elements(_ path: String) throws -> [JSONDocument] {
        let full = prefix.isEmpty ? path : "\(prefix).\(path)"
        return try array(path).enumerated().map { JSONDocument(file: file, root: $1, prefix: "\(full)[\($0)]") }
    }

    func describe(_ v: JSONValue) -> String {
        let text = v.text()
        return text.count > 40 ? v.typeName : text
    }
}

/// A training run's metrics.jsonl: its step lines and event lines (any line
/// with an `event` key: rollbacks, curriculum changes and the like).
public struct TrainingCurve: Sendable {
    public struct Event: Equatable, Sendable {
        public var step: Int
        public var name: String
        /// The event's other fields, `key=value`.
        public var details: String
    }

    public var file: String
    public var steps: [StepMetrics]
    public var events: [Event]

    public static func read(_ file: String) throws -> TrainingCurve {
        var steps: [StepMetrics] = [], events: [Event] = []
        var number = 0
        for line in try FileSystem.readText(file).split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            guard !line.allSatisfy(\.isWhitespace) else { continue }
            let value: JSONValue
            do { value = try JSONValue.parse(String(line)) } catch {
                throw RunReportError(file: file, line: number, field: "", reason: "not JSON: \(error)")
            }
            guard let members = value.members else { throw RunReportError(file: file, line: number, field: "", reason: "expected a JSON object") }
            guard let step = value["step"]?.int else {
                throw RunReportError(file: file, line: number, field: "step", reason: value["step"] == nil ? "missing" : "expected an integer")
            }
            if let event = value["event"] {
                guard let name = event.string else { throw RunReportError(file: file, line: number, field: "event", reason: "expected a string") }
                let details = members.filter { $0.0 != "event" && $0.0 != "step" }
                    .map { "\($0.0)=\($0.1.string ?? $0.1.text())" }.joined(separator: " ")
                events.append(Event(step: step, name: name, details: details))
                continue
            }
            do { steps.append(try JSONDecoder().decode(StepMetrics.self, from: Data(line.utf8))) } catch let error as DecodingError {
                let described = ConfigLoader.describe(error, file: nil)
                throw RunReportError(file: file, line: number, field: described.field, reason: described.reason)
            }
        }
        return TrainingCurve(file: file, steps: steps, events: events)
    }

    /// The events as lines on the loss curve.
    public var markers: [SVGPlot.Marker] {
        events.map { e in
            SVGPlot.Marker(x: Double(e.step), label: "step \(e.step): \(e.name)" + (e.details.isEmpty ? "" : " \(e.details)"),
                           colour: e.name == "rollback" ? "#8e44ad" : "#27ae60", caption: true)
        }
    }

    public var lastTrainLoss: Double? { steps.last { $0.loss != nil && $0.skipped != true }?.loss }
    public var heldOut: [(step: Int, perplexity: Double)] { steps.compactMap { m in m.evalPerplexity.map { (m.step, $0) } } }
}
