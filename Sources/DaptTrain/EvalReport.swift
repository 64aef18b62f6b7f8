import DaptCore
import DaptModel
import DaptTokenizer
import Foundation

/// The kinds of evaluation that write into one report, each its own section.
public enum EvalKind: String, CaseIterable, Sendable {
    case ppl, mc, json
}

/// Which model a report is about: the directory, its weights and its
/// tokenizer by checksum (xxh64), and the LoRA adapter merged into it if
/// any, so two sections of one report are known to be on the same model
/// (base and base + adapter are different models).
public struct EvalModelInfo: Equatable, Sendable {
    public var path: String
    public var weightsChecksum: String
    public var tokenizerPath: String?
    public var tokenizerChecksum: String?
    /// The adapter directory and the xxh64 of its adapter_model.safetensors.
    public var adapterPath: String?
    public var adapterChecksum: String?

    public init(path: String, weightsChecksum: String, tokenizerPath: String?, tokenizerChecksum: String?,
                adapterPath: String? = nil, adapterChecksum: String? = nil) {
        self.path = path; self.weightsChecksum = weightsChecksum
        self.tokenizerPath = tokenizerPath; self.tokenizerChecksum = tokenizerChecksum
        self.adapterPath = adapterPath; self.adapterChecksum = adapterChecksum
    }

    /// The model in `modelDirectory` (resolved: a checkpoint or Hugging Face
    /// model directory), evaluated with `tokenizer` (nil: none, e.g. token
    /// shard input) and with the adapter in `adapter` (a directory holding
    /// adapter_model.safetensors) merged, if given.
    public init(modelDirectory: String, tokenizer: String?, adapter: String? = nil) throws {
        self.init(path: modelDirectory, weightsChecksum: try fileChecksum(modelDirectory + "/" + Trainer.modelFile),
                  tokenizerPath: tokenizer, tokenizerChecksum: try tokenizer.map(fileChecksum),
                  adapterPath: adapter, adapterChecksum: try adapter.map { try fileChecksum($0 + "/" + LoraAdapters.weightsFile) })
    }

    public var json: JSONValue {
        .object([("path", .string(path)), ("weights_xxh64", .string(weightsChecksum)),
                 ("tokenizer", tokenizerPath.map { .string($0) } ?? .null),
                 ("tokenizer_xxh64", tokenizerChecksum.map { .string($0) } ?? .null),
                 ("adapter", adapterPath.map { .object([("path", .string($0)), ("adapter_model_xxh64", .string(adapterChecksum ?? ""))]) } ?? .null)])
    }

    /// The `model` member of a report read from `file` (named in errors).
    public init(json: JSONValue, file: String) throws {
        guard let path = json["path"]?.string, let weights = json["weights_xxh64"]?.string else {
            throw EvalReportError.malformed(file: file, reason: "model: needs path and weights_xxh64")
        }
        let adapter = json["adapter"].flatMap { $0.isNull ? nil : $0 }
        if let adapter, adapter["path"]?.string == nil || adapter["adapter_model_xxh64"]?.string == nil {
            throw EvalReportError.malformed(file: file, reason: "model.adapter: needs path and adapter_model_xxh64")
        }
        self.init(path: path, weightsChecksum: weights, tokenizerPath: json["tokenizer"]?.string,
                  tokenizerChecksum: json["tokenizer_xxh64"]?.string,
                  adapterPath: adapter?["path"]?.string, adapterChecksum: adapter?["adapter_model_xxh64"]?.string)
    }
}

/// What one evaluation contributes to the report: its settings, counts,
/// figures, and per-item results (written to `<kind>.items.jsonl`) and
/// rejected records (`<kind>.rejects.jsonl`).
public struct EvalSection: Sendable {
    public var kind: EvalKind
    public var inputs: [String]
    /// The settings the figures depend on.
    public var config: JSONValue
    /// Record counts, in order (e.g. items read, scored, rejected); the
    /// writer adds `items` and `rejected` from the lines it writes.
    public var counts: [(String, Int)]
    /// The figures (accuracy, perplexity, validity rates, ...).
    public var results: JSONValue
    /// One JSON object per evaluated item (one line each of the items file).
    public var items: [JSONValue]
    /// Records that could not be evaluated, with file, line, field and reason.
    public var rejects: [InputError]

    public init(kind: EvalKind, inputs: [String], config: JSONValue, counts: [(String, Int)] = [], results: JSONValue,
                items: [JSONValue] = [], rejects: [InputError] = []) {
        self.kind = kind; self.inputs = inputs; self.config = config; self.counts = counts
        self.results = results; self.items = items; self.rejects = rejects
    }
}

public enum EvalReportError: Error, CustomStringConvertible, Equatable {
    case malformed(file: String, reason: String)
    /// The output folder holds a report on another model.
    case otherModel(directory: String, existing: String, new: String)

    public var description: String {
        switch self {
        case let .malformed(file, reason): return "\(file): not a dapt eval report: \(reason)"
        case let .otherModel(directory, existing, new):
            return "\(directory): its report is on \(existing), not \(new): write this evaluation to another --output folder (a report covers one model)"
        }
    }
}

/// The eval output folder: one `report.json` with a section per kind of
/// evaluation (`ppl`, `mc`, `json`), each kind's items and rejects beside it.
///
///     report.json   {"format": "dapt-eval-report", "version": 1,
///                    "model": {path, weights_xxh64, tokenizer, tokenizer_xxh64,
///                              adapter: null or {path, adapter_model_xxh64}},
///                    "sections": {"mc": {"inputs": [...], "config": {...},
///                                        "counts": {...}, "results": {...},
///                                        "items_file": "mc.items.jsonl",
///                                        "rejects_file": "mc.rejects.jsonl"}, ...}}
///     mc.items.jsonl, mc.rejects.jsonl, ppl.items.jsonl, ...
///
/// Writing a section keeps the folder's other sections (a report covers one
/// model: a folder with a report on another model is refused) and publishes
/// the folder as a unit.
public enum EvalReport {
    public static let fileName = "report.json"
    public static let format = "dapt-eval-report"
    public static let version = 1

    public static func itemsFile(_ kind: EvalKind) -> String { "\(kind.rawValue).items.jsonl" }
    public static func rejectsFile(_ kind: EvalKind) -> String { "\(kind.rawValue).rejects.jsonl" }

    /// Writes `section` into the report in `directory` (created, or updated
    /// keeping its other sections), published as a unit.
    public static func write(_ section: EvalSection, model: EvalModelInfo, to directory: String) throws {
        var kept: [(String, JSONValue)] = []
        if OutputPublisher.isComplete(directory), FileSystem.exists(directory + "/" + fileName) {
            let existing = try load(directory: directory)
            let file = directory + "/" + fileName
            let existingModel = try EvalModelInfo(json: existing["model"] ?? .null, file: file)
            if existingModel.weightsChecksum != model.weightsChecksum || existingModel.tokenizerChecksum != model.tokenizerChecksum
                || existingModel.adapterChecksum != model.adapterChecksum {
                throw EvalReportError.otherModel(directory: directory, existing: describe(existingModel), new: describe(model))
            }
            kept = (existing["sections"]?.members ?? []).filter { $0.0 != section.kind.rawValue }
        }
        let publisher = OutputPublisher(directory: directory)
        try publisher.begin()
        do {
            // The other sections' files move over unchanged.
            for (name, _) in kept {
                guard let kind = EvalKind(rawValue: name) else { continue }
                for file in [itemsFile(kind), rejectsFile(kind)] where FileSystem.exists(directory + "/" + file) {
                    try copy(directory + "/" + file, to: publisher.path(file))
                }
            }
            try writeLines(section.items.map { $0.text() }, to: publisher.path(itemsFile(section.kind)))
            try writeLines(section.rejects.map(\.rejectJSON), to: publisher.path(rejectsFile(section.kind)))
            var sections = kept
            sections.append((section.kind.rawValue, sectionJSON(section)))
            let order = EvalKind.allCases.map(\.rawValue)
            sections.sort { (order.firstIndex(of: $0.0) ?? order.count) < (order.firstIndex(of: $1.0) ?? order.count) }
            let report = JSONValue.object([("format", .string(format)), ("version", .integer(version)),
                                           ("model", model.json), ("sections", .object(sections))])
            let writer = try FileWriter(path: publisher.path(fileName))
            try writer.write(report.text(indent: 2) + "\n")
            try writer.commit()
            try publisher.publish(stage: "eval")
        } catch {
            publisher.discard()
            throw error
        }
    }

    /// The report of a published eval folder.
    public static func load(directory: String) throws -> JSONValue {
        try OutputPublisher.requireComplete(directory)
        let file = directory + "/" + fileName
        let value: JSONValue
        do { value = try JSONValue.parse(try FileSystem.readAll(file)) } catch let error as JSONSyntaxError {
            throw EvalReportError.malformed(file: file, reason: error.description)
        }
        guard value["format"]?.string == format else { throw EvalReportError.malformed(file: file, reason: "format is not \(format)") }
        guard value["version"]?.int == version else { throw EvalReportError.malformed(file: file, reason: "version is not \(version)") }
        return value
    }

    static func sectionJSON(_ section: EvalSection) -> JSONValue {
        var counts = section.counts.map { ($0.0, JSONValue.integer($0.1)) }
        counts.append(("items", .integer(section.items.count)))
        counts.append(("rejected", .integer(section.rejects.count)))
        return .object([("inputs", .array(section.inputs.map { .string($0) })), ("config", section.config),
                        ("counts", .object(counts)), ("results", section.results),
                        ("items_file", .string(itemsFile(section.kind))), ("rejects_file", .string(rejectsFile(section.kind)))])
    }

    static func describe(_ model: EvalModelInfo) -> String {
        "\(model.path) (weights xxh64 \(model.weightsChecksum), tokenizer xxh64 \(model.tokenizerChecksum ?? "none")"
            + (model.adapterPath.map { ", adapter \($0) xxh64 \(model.adapterChecksum ?? "none")" } ?? "") + ")"
    }

    static func writeLines(_ lines: [String], to path: String) throws {
        let writer = try FileWriter(path: path)
        for line in lines { try writer.write(line + "\n") }
        try writer.commit()
    }

    static func copy(_ source: String, to destination: String) throws {
        let writer = try FileWriter(path: destination)
        try writer.write(try FileSystem.readAll(source))
        try writer.commit()
    }
}
