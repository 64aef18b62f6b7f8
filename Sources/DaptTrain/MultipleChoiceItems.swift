import DaptCore
import Foundation

/// The two multiple-choice file formats `dapt eval mc` reads.
public enum MultipleChoiceFormat: String, CaseIterable, Sendable {
    /// MMLU: CSV rows without a header: question, A, B, C, D, answer;
    /// `<subject>_test.csv`, few-shot examples in `<subject>_dev.csv`.
    case mmlu
    /// C-Eval: CSV with the header `id,question,A,B,C,D,answer[,explanation]`;
    /// `<subject>_val.csv` (or `_test.csv` with answers), examples in `<subject>_dev.csv`.
    case ceval

    static let cevalHeader = ["id", "question", "A", "B", "C", "D", "answer"]
    /// The names of the fields a row has, in order (for error messages).
    var columns: [String] { self == .mmlu ? ["question", "A", "B", "C", "D", "answer"] : Self.cevalHeader + ["explanation"] }

    /// C-Eval when the first record is C-Eval's header, MMLU otherwise.
    public static func detect(_ records: [CSVRecord]) -> MultipleChoiceFormat {
        guard let first = records.first, first.fields.count >= cevalHeader.count,
              Array(first.fields.prefix(cevalHeader.count)) == cevalHeader else { return .mmlu }
        return .ceval
    }
}

/// One question with four choices.
public struct MultipleChoiceItem: Equatable, Sendable {
    public var file: String
    /// The line the item's record starts on.
    public var line: Int
    /// C-Eval's `id` column.
    public var id: String?
    public var question: String
    public var choices: [String]
    /// 0...3 (A...D).
    public var answer: Int

    public init(file: String, line: Int, id: String? = nil, question: String, choices: [String], answer: Int) {
        self.file = file; self.line = line; self.id = id; self.question = question; self.choices = choices; self.answer = answer
    }
}

/// A subject: its items and its few-shot examples.
public struct MultipleChoiceSubject: Sendable {
    /// The file's subject (`patent_law` of `patent_law_test.csv`).
    public var name: String
    /// As the prompt names it (`patent law`, or C-Eval's Chinese name).
    public var displayName: String
    public var file: String
    public var items: [MultipleChoiceItem]
    /// Rows of the file that are not items, with file, line, field and reason.
    public var rejects: [InputError]
    /// The dev split's items, in file order (shots are its first k).
    public var dev: [MultipleChoiceItem]
    public var devFile: String?
}

public enum MultipleChoiceData {
    public static let letters = ["A", "B", "C", "D"]
    static let splitSuffixes = ["_test.csv", "_val.csv", "_dev.csv"]

    /// A file's records as items: C-Eval's header row is left out; a row
    /// with the wrong number of fields, an empty question or an answer that
    /// is not A–D is a reject (with `strict`, an error).
    public static func items(records: [CSVRecord], format: MultipleChoiceFormat, file: String, strict: Bool) throws
        -> (items: [MultipleChoiceItem], rejects: [InputError]) {
        var items: [MultipleChoiceItem] = [], rejects: [InputError] = []
        let rows = format == .ceval ? Array(records.dropFirst()) : records
        let columns = format.columns
        let (minCount, maxCount) = format == .mmlu ? (6, 6) : (7, 8)
        for record in rows {
            let f = record.fields
            var problem: InputError?
            if f.count < minCount || f.count > maxCount {
                let expected = minCount == maxCount ? "\(minCount)" : "\(minCount) or \(maxCount)"
                problem = InputError(file: file, line: record.line, reason: "\(f.count) fields, expected \(expected) (\(columns.prefix(maxCount).joined(separator: ",")))")
            } else {
                let base = format == .mmlu ? 0 : 1
                let answerIndex = base + 5
                let answerText = f[answerIndex].trimmingCharacters(in: .whitespaces)
                if f[base].trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                    problem = InputError(file: file, line: record.fieldLines[base], field: "question", reason: "empty")
                } else if let k = (1...4).first(where: { f[base + $0].isEmpty }) {
                    problem = InputError(file: file, line: record.fieldLines[base + k], field: letters[k - 1], reason: "empty choice")
                } else if let answer = letters.firstIndex(of: answerText) {
                    items.append(MultipleChoiceItem(file: file, line: record.line, id: format == .ceval ? f[0] : nil,
                                                    question: f[base], choices: Array(f[(base + 1)...(base + 4)]), answer: answer))
                } else {
                    problem = InputError(file: file, line: record.fieldLines[answerIndex], field: "answer",
                                         reason: "\(JSONWriter.quoted(f[answerIndex])) is not one of A, B, C, D")
                }
            }
            if let problem {
                if strict { throw problem }
                rejects.append(problem)
            }
        }
        return (items, rejects)
    }

    /// The subject of `<subject>_<split>.csv`.
    public static func subjectName(file: String) -> String {
        let base = (file as NSString).lastPathComponent
        for suffix in splitSuffixes where base.hasSuffix(suffix) { return String(base.dropLast(suffix.count)) }
        return base.hasSuffix(".csv") ? String(base.dropLast(4)) : base
    }

    /// The files to evaluate: `input` itself, or in a directory the
    /// `_test.csv` files (MMLU) or `_val.csv` files (C-Eval; `_test.csv`
    /// when there is no `_val.csv`), in name order.
    public static func evaluationFiles(input: String) throws -> [String] {
        guard FileSystem.isDirectory(input) else { return [input] }
        let names = try FileSystem.list(input).sorted()
        let val = names.filter { $0.hasSuffix("_val.csv") }
        let chosen = val.isEmpty ? names.filter { $0.hasSuffix("_test.csv") } : val
        if chosen.isEmpty {
            throw TrainingError.invalidInput(path: input, reason: "no <subject>_test.csv or <subject>_val.csv files")
        }
        return chosen.map { input + "/" + $0 }
    }

    /// The dev file of `subject`: in `devDirectory` when given, else beside
    /// the evaluated file or in a sibling `dev/` folder (C-Eval's and MMLU's
    /// published layouts); nil when there is none.
    public static func devFile(subject: String, evaluated file: String, devDirectory: String?) -> String? {
        let name = subject + "_dev.csv"
        let folder = (file as NSString).deletingLastPathComponent
        let candidates = devDirectory.map { [$0 + "/" + name] }
            ?? [(folder.isEmpty ? "." : folder) + "/" + name, (folder.isEmpty ? "." : folder) + "/../dev/" + name]
        return candidates.first(where: FileSystem.exists)
    }

    /// C-Eval's `subject_mapping.json` beside the files (or one folder up):
    /// subject → [English name, Chinese name, category]; the prompt uses the Chinese name.
    static func cevalNames(near file: String) throws -> [String: String] {
        let folder = (file as NSString).deletingLastPathComponent
        for candidate in [folder + "/subject_mapping.json", folder + "/../subject_mapping.json"] where FileSystem.exists(candidate) {
            let value: JSONValue
            do { value = try JSONValue.parse(try FileSystem.readAll(candidate)) } catch let error as JSONSyntaxError {
                throw TrainingError.invalidInput(path: candidate, reason: error.description)
            }
            var names: [String: String] = [:]
            for (subject, entry) in value.members ?? [] {
                if let chinese = entry.array?.dropFirst().first?.string { names[subject] = chinese }
            }
            return names
        }
        return [:]
    }

    /// Reads the subjects of `input` (a file or a directory) with their dev
    /// splits. `format`: nil to detect from the first file (every file must
    /// agree). A CSV syntax error or a bad dev row is an error; a bad
    /// evaluated row is a reject unless `strict`.
    public static func load(input: String, format requested: MultipleChoiceFormat?, devDirectory: String?, strict: Bool) throws
        -> (format: MultipleChoiceFormat, subjects: [MultipleChoiceSubject]) {
        var format = requested
        var subjects: [MultipleChoiceSubject] = []
        for file in try evaluationFiles(input: input) {
            let records = try CSV.read(path: file)
            let detected = MultipleChoiceFormat.detect(records)
            if let known = format, known != detected {
                let why = requested == nil ? "the first file is \(known.rawValue)" : "--format \(known.rawValue)"
                throw InputError(file: file, line: 1, reason: "looks like \(detected.rawValue) (header \(detected == .ceval ? "present" : "absent")), but \(why)")
            }
            format = detected
            let name = subjectName(file: file)
            let read = try items(records: records, format: detected, file: file, strict: strict)
            var dev: [MultipleChoiceItem] = []
            let devPath = devFile(subject: name, evaluated: file, devDirectory: devDirectory)
            if let devPath {
                let devRecords = try CSV.read(path: devPath)
                if MultipleChoiceFormat.detect(devRecords) != detected {
                    throw InputError(file: devPath, line: 1, reason: "dev split is not in the \(detected.rawValue) format of \(file)")
                }
                dev = try items(records: devRecords, format: detected, file: devPath, strict: true).items
            }
            let display = detected == .ceval ? (try cevalNames(near: file))[name] ?? spaced(name) : spaced(name)
            subjects.append(MultipleChoiceSubject(name: name, displayName: display, file: file, items: read.items,
                                                  rejects: read.rejects, dev: dev, devFile: devPath))
        }
        return (format ?? .mmlu, subjects)
    }

    static func spaced(_ subject: String) -> String { subject.replacingOccurrences(of: "_", with: " ") }
}

/// The prompts, as lm-evaluation-harness builds them for MMLU (and C-Eval
/// with the header of C-Eval's own evaluation code).
public enum MultipleChoicePrompt {
    /// What follows the prompt for each choice: " A" ... " D".
    public static let continuations = MultipleChoiceData.letters.map { " " + $0 }

    /// The header naming the subject.
    public static func header(format: MultipleChoiceFormat, subject: String) -> String {
        switch format {
        case .mmlu: return "The following are multiple choice questions (with answers) about \(subject).\n\n"
        case .ceval: return "以下是中国关于\(subject)考试的单项选择题，请选出其中的正确答案。\n\n"
        }
    }

    /// One question and its choices, ending with the answer cue (the question stripped of surrounding whitespace).
    public static func question(_ item: MultipleChoiceItem, format: MultipleChoiceFormat) -> String {
        var text = item.question.trimmingCharacters(in: .whitespacesAndNewlines)
        for (letter, choice) in zip(MultipleChoiceData.letters, item.choices) { text += "\n\(letter). \(choice)" }
        return text + (format == .mmlu ? "\nAnswer:" : "\n答案：")
    }

    /// An example: the question, its answer letter, a blank line.
    public static func shot(_ item: MultipleChoiceItem, format: MultipleChoiceFormat) -> String {
        question(item, format: format) + continuations[item.answer] + "\n\n"
    }

    /// Header, the examples in order, then the question.
    public static func prompt(_ item: MultipleChoiceItem, shots: ArraySlice<MultipleChoiceItem>, format: MultipleChoiceFormat, subject: String) -> String {
        header(format: format, subject: subject) + shots.map { shot($0, format: format) }.joined() + question(item, format: format)
    }
}
