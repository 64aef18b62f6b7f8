import DaptCore
import DaptTokenizer
import Foundation

/// One line of a prompts file: `{"id": ..., "prompt": "text"}` or
/// `{"id": ..., "messages": [{"role": ..., "content": ...}, ...]}`, with an
/// optional `reference` (the expected answer, for evaluation). Other fields
/// are ignored.
public struct PromptRecord: Equatable, Sendable {
    public var line: Int
    /// A string or an integer, written back unchanged.
    public var id: JSONValue
    public var prompt: String?
    public var messages: [ChatMessage]?
    public var reference: JSONValue?

    /// The id as it appears in JSON: names the record and seeds its sampler.
    public var key: String { id.text() }
}

public enum PromptFile {
    /// Reads and checks every record; the first bad one is an error naming
    /// file, line and field. Blank lines are skipped.
    public static func read(path: String) throws -> [PromptRecord] {
        var records: [PromptRecord] = []
        var seen: [String: Int] = [:]
        try LineReader(path: path).forEachLine { line, bytes in
            if RecordProblem.isBlank(bytes) { return true }
            let record: PromptRecord
            do { record = try parse(bytes, line: line) } catch let problem as RecordProblem { throw problem.located(file: path, line: line) }
            if let first = seen[record.key] {
                throw InputError(file: path, line: line, field: "id", reason: "\(record.key) repeats the id of line \(first)")
            }
            seen[record.key] = line
            records.append(record)
            return true
        }
        return records
    }

    private static func parseJSON(_ bytes: UnsafeBufferPointer<UInt8>) throws(RecordProblem) -> JSONValue {
        do { return try JSONValue.parse(bytes) } catch { throw RecordProblem(error) }
    }

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, line: Int) throws -> PromptRecord {
        let value = try parseJSON(bytes)
        guard value.members != nil else { throw RecordProblem(field: nil, reason: "expected a JSON object, found \(value.typeName)") }
        guard let id = value["id"] else { throw RecordProblem(field: "id", reason: "missing (a string or an integer naming the record)") }
        guard id.string != nil || id.int != nil else { throw RecordProblem(field: "id", reason: "expected a string or an integer, found \(id.typeName)") }
        var record = PromptRecord(line: line, id: id, prompt: nil, messages: nil, reference: value["reference"])
        switch (value["prompt"], value["messages"]) {
        case (nil, nil): throw RecordProblem(field: "prompt", reason: "missing: give \"prompt\" (text) or \"messages\" (a chat)")
        case (.some, .some): throw RecordProblem(field: "messages", reason: "give either \"prompt\" or \"messages\", not both")
        case (.some(let prompt), nil):
            guard let text = prompt.string else { throw RecordProblem(field: "prompt", reason: "expected a string, found \(prompt.typeName)") }
            if text.isEmpty { throw RecordProblem(field: "prompt", reason: "empty") }
            record.prompt = text
        case (nil, .some(let messages)):
            do { record.messages = try ChatMessage.parse(messages) } catch {
                if case .badMessage(let field, let reason) = error { throw RecordProblem(field: field, reason: reason) }
                throw RecordProblem(field: "messages", reason: error.description)
            }
        }
        return record
    }
}
