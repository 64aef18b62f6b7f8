import DaptCore
import DaptModel
import DaptTokenizer
import Foundation

/// What `dapt eval mc` evaluates.
public struct MultipleChoiceRequest: Sendable {
    /// A checkpoint, a run directory (its newest checkpoint) or a Hugging Face model directory.
    public var model: String
    /// A CSV file or a directory of `<subject>_test.csv` / `<subject>_val.csv` files.
    public var input: String
    /// tokenizer.json; default: the model directory's.
    public var tokenizer: String?
    /// nil: detected from the files.
    public var format: MultipleChoiceFormat?
    /// Examples from the dev split before each question (its first `shots` items).
    public var shots = 0
    /// Where the `<subject>_dev.csv` files are; default: beside the input, or `../dev`.
    public var devDirectory: String?
    /// Tokens the model may see; nil: its position limit.
    public var maxLength: Int?
    /// A bad row is an error instead of a reject.
    public var strict = false
    /// Prompts scored together in one forward pass (sorted by length, padded to the longest).
    public var batchSize = 8

    public init(model: String, input: String, tokenizer: String? = nil) {
        self.model = model; self.input = input; self.tokenizer = tokenizer
    }
}

/// A scored item.
public struct MultipleChoiceResult: Equatable, Sendable {
    public var subject: String
    public var item: MultipleChoiceItem
    /// Examples that fit before it (fewer than asked when the prompt was too long).
    public var shots: Int
    /// Tokens of the prompt (without the answer).
    public var promptTokens: Int
    /// Log-likelihood of " A" ... " D" after the prompt.
    public var logLikelihoods: [Double]
    /// The choice of highest log-likelihood (the first of equals).
    public var pick: Int { MultipleChoiceScoring.pick(logLikelihoods) }
    public var correct: Bool { pick == item.answer }

    public init(subject: String, item: MultipleChoiceItem, shots: Int, promptTokens: Int, logLikelihoods: [Double]) {
        self.subject = subject; self.item = item; self.shots = shots; self.promptTokens = promptTokens; self.logLikelihoods = logLikelihoods
    }
}

/// Accuracy of one subject.
public struct SubjectAccuracy: Equatable, Sendable {
    public var subject: String
    public var items: Int
    public var correct: Int
    public var rejected: Int
    public var accuracy: Double { items > 0 ? Double(correct) / Double(items) : 0 }
}

public struct MultipleChoiceReport: Sendable {
    public var modelDirectory: String
    public var tokenizerPath: String
    public var format: MultipleChoiceFormat
    public var subjects: [SubjectAccuracy]
    public var results: [MultipleChoiceResult]
    public var rejects: [InputError]
    /// Items read (scored + rejected).
    public var read: Int
    /// The longest token sequence the model was given.
    public var maxLength: Int
    /// Items whose prompt lost examples to fit the model's context.
    public var truncatedShots: Int
    /// Correct / scored over every subject.
    public var microAccuracy: Double
    /// The mean of the accuracies of the subjects with a scored item.
    public var macroAccuracy: Double
    /// Wall time of encoding and scoring the items (model and files loaded), for speed figures only.
    public var scoringSeconds: Double = 0
}

/// Scores choices by the log-likelihood the model gives each continuation
/// after the context, as lm-evaluation-harness does: the context and
/// context + continuation are encoded separately and the continuation's
/// tokens are those of the whole past the context's; the model sees
/// (context + continuation) without its last token, and the continuation's
/// log-likelihood is the sum of its tokens' log-probabilities.
public struct MultipleChoiceScoring {
    public let model: LlamaModel
    public let encoder: TokenEncoder
    /// The longest token sequence the model may see.
    public let maxLength: Int

    public init(model: LlamaModel, tokenizer: BPETokenizer, maxLength: Int) {
        self.model = model; self.encoder = TokenEncoder(tokenizer); self.maxLength = maxLength
    }

    /// The context's tokens and each continuation's.
    public func encode(context: String, continuations: [String]) -> (context: [UInt32], continuations: [[UInt32]]) {
        let contextTokens = encoder.encode(context)
        return (contextTokens, continuations.map { Array(encoder.encode(context + $0).dropFirst(contextTokens.count)) })
    }

    /// Tokens the model sees for the longest choice (context + continuation, less its last token).
    public func length(context: [UInt32], continuations: [[UInt32]]) -> Int {
        context.count + (continuations.map(\.count).max() ?? 0) - 1
    }

    /// Log-likelihood of each continuation after the context. Continuations
    /// whose tokens before the last agree share one row (`sharedPrefixLogLikelihoods`:
    /// " A" ... " D" are one row, the context alone or the context and a
    /// shared space token); with `sharedContext` false (or an empty
    /// context) one pass over a batch of a row per continuation.
    public func logLikelihoods(context: [UInt32], continuations: [[UInt32]], sharedContext: Bool = true) throws -> [Double] {
        if sharedContext && !context.isEmpty {
            return try sharedPrefixLogLikelihoods([(context, continuations)])[0]
        }
        return try rowLogLikelihoods([(context, continuations)])[0]
    }

    /// Log-likelihoods from a row per continuation (context + continuation,
    /// less its last token) of every prompt, all rows in one pass padded at the end to the longest.
    public func rowLogLikelihoods(_ prompts: [(context: [UInt32], continuations: [[UInt32]])]) throws -> [[Double]] {
        let rows = prompts.flatMap { p in p.continuations.map { (tokens: p.context + $0, scoredFrom: p.context.count) } }
        let seqLen = rows.map { $0.tokens.count - 1 }.max() ?? 0
        precondition(seqLen <= maxLength && seqLen > 0 && prompts.allSatisfy { $0.continuations.allSatisfy { !$0.isEmpty } })
        var tokens = [Int32](repeating: 0, count: rows.count * seqLen)
        var targets = [Int32](repeating: ignoreIndex, count: rows.count * seqLen)
        for (r, row) in rows.enumerated() {
            for t in 0..<(row.tokens.count - 1) {
                tokens[r * seqLen + t] = Int32(row.tokens[t])
                if t + 1 >= row.scoredFrom { targets[r * seqLen + t] = Int32(row.tokens[t + 1]) }
            }
        }
        let losses = try model.tokenLosses(try TokenBatch(batchSize: rows.count, seqLen: seqLen, tokens: tokens, targets: targets))
        let lls = (0..<rows.count).map { r in
            -(0..<seqLen).reduce(0.0) { $0 + (targets[r * seqLen + $1] == ignoreIndex ? 0 : Double(losses[r * seqLen + $1])) }
        }
        var out: [[Double]] = [], r = 0
        for p in prompts { out.append(Array(lls[r..<(r + p.continuations.count)])); r += p.continuations.count }
        return out
    }

    /// Log-likelihoods of several prompts' continuations (after non-empty
    /// contexts) in one forward pass. A prompt's continuations whose tokens
    /// before the last agree share one row, context + those tokens (the
    /// last token is only predicted); the rows are padded at the end to the
    /// longest (causal attention keeps a row's positions blind to the padding
    /// after them), and the LM head and softmax run only at the positions
    /// that predict a continuation's token.
    public func sharedPrefixLogLikelihoods(_ prompts: [(context: [UInt32], continuations: [[UInt32]])]) throws -> [[Double]] {
        guard !prompts.isEmpty else { return [] }
        precondition(prompts.allSatisfy { !$0.context.isEmpty && $0.continuations.allSatisfy { !$0.isEmpty } })
        var rows: [[UInt32]] = [], firstPredicting: [Int] = [], rowOf: [[Int]] = []
        for p in prompts {
            var index: [[UInt32]: Int] = [:]
            rowOf.append(p.continuations.map { c in
                let input = p.context + c.dropLast()
                if let r = index[input] { return r }
                index[input] = rows.count
                rows.append(input)
                firstPredicting.append(p.context.count - 1)
                return rows.count - 1
            })
        }
        let seqLen = rows.map(\.count).max()!
        precondition(seqLen <= maxLength)
        var tokens = [Int32](repeating: 0, count: rows.count * seqLen)
        var positions: [Int] = [], firstSelected: [Int] = []
        for (r, row) in rows.enumerated() {
            for (t, token) in row.enumerated() { tokens[r * seqLen + t] = Int32(token) }
            firstSelected.append(positions.count)
            for t in firstPredicting[r]..<row.count { positions.append(r * seqLen + t) }
        }
        let batch = try TokenBatch(batchSize: rows.count, seqLen: seqLen, tokens: tokens, targets: [Int32](repeating: ignoreIndex, count: tokens.count))
        let logits = try model.logits(batch, rows: positions)
        let V = model.config.vocabSize
        let logSums = positions.indices.map { k -> Double in
            let row = logits[(k * V)..<((k + 1) * V)]
            let top = Double(row.max() ?? 0)
            return top + log(row.reduce(0.0) { $0 + exp(Double($1) - top) })
        }
        return prompts.enumerated().map { i, p in
            p.continuations.enumerated().map { j, c in
                let first = firstSelected[rowOf[i][j]]
                return c.enumerated().reduce(0.0) { sum, tc in Double(logits[(first + tc.offset) * V + Int(tc.element)]) - logSums[first + tc.offset] + sum }
            }
        }
    }

    /// Log-likelihoods of every prompt, `batchSize` prompts per forward pass
    /// in order of length (so a batch pads little): `sharedPrefixLogLikelihoods`,
    /// or a row per continuation for an empty context. Results in the
    /// prompts' order; `afterBatch` gets the number of prompts each pass scored.
    public func logLikelihoods(_ prompts: [(context: [UInt32], continuations: [[UInt32]])], batchSize: Int,
                               afterBatch: (Int) -> Void = { _ in }) throws -> [[Double]] {
        precondition(batchSize >= 1)
        var out = [[Double]](repeating: [], count: prompts.count)
        let shares = prompts.map { !$0.context.isEmpty }
        for sharing in [true, false] {
            let order = prompts.indices.filter { shares[$0] == sharing }.sorted {
                (length(context: prompts[$0].context, continuations: prompts[$0].continuations), $0)
                    < (length(context: prompts[$1].context, continuations: prompts[$1].continuations), $1)
            }
            var start = 0
            while start < order.count {
                let group = Array(order[start..<min(start + batchSize, order.count)])
                let batch = group.map { prompts[$0] }
                let scores = sharing ? try sharedPrefixLogLikelihoods(batch) : try rowLogLikelihoods(batch)
                for (k, ll) in scores.enumerated() { out[group[k]] = ll }
                start += group.count
                afterBatch(group.count)
            }
        }
        return out
    }

    /// The index of the highest value, the first of equals.
    public static func pick(_ values: [Double]) -> Int {
        var best = 0
        for (i, v) in values.enumerated() where v > values[best] { best = i }
        return best
    }
}

public enum MultipleChoiceEvaluation {
    /// Per-subject and overall accuracy of `results` (subjects in the order given).
    public static func accuracy(subjects: [String], results: [MultipleChoiceResult], rejected: [String: Int] = [:])
        -> (subjects: [SubjectAccuracy], micro: Double, macro: Double) {
        var table = subjects.map { SubjectAccuracy(subject: $0, items: 0, correct: 0, rejected: rejected[$0] ?? 0) }
        let index = Dictionary(uniqueKeysWithValues: subjects.enumerated().map { ($1, $0) })
        for r in results {
            guard let k = index[r.subject] else { continue }
            table[k].items += 1
            if r.correct { table[k].correct += 1 }
        }
        let scored = table.reduce(0) { $0 + $1.items }, correct = table.reduce(0) { $0 + $1.correct }
        let withItems = table.filter { $0.items > 0 }
        let macro = withItems.isEmpty ? 0 : withItems.reduce(0.0) { $0 + $1.accuracy } / Double(withItems.count)
        return (table, scored > 0 ? Double(correct) / Double(scored) : 0, macro)
    }

    /// Loads the items, scores every one that fits the model (dropping
    /// examples from the end until it does; a question too long even alone
    /// is a reject), and checks that items read = scored + rejected.
    public static func run(_ request: MultipleChoiceRequest, sink: any EventSink = SilentSink()) throws -> MultipleChoiceReport {
        if request.shots < 0 { throw ConfigError(field: "--shots", reason: "must be >= 0, got \(request.shots)") }
        if request.batchSize < 1 { throw ConfigError(field: "--batch-size", reason: "must be >= 1, got \(request.batchSize)") }
        let directory = try ModelDirectory.resolve(request.model)
        guard let tokenizerPath = try directory.tokenizer(requested: request.tokenizer) else {
            throw TrainingError.invalidInput(path: directory.path, reason: "no \(Trainer.tokenizerFile) beside the model: give one with --tokenizer")
        }
        let modelConfig = try LlamaConfig.load(path: directory.path + "/" + Trainer.configFile)
        let limit = request.maxLength ?? modelConfig.positionLimit
        if limit < 1 || limit > modelConfig.positionLimit {
            throw ConfigError(field: "--max-length", reason: "\(limit) is outside 1...\(modelConfig.positionLimit) (the positions of \(directory.path))")
        }
        let data = try MultipleChoiceData.load(input: request.input, format: request.format, devDirectory: request.devDirectory, strict: request.strict)
        for subject in data.subjects where subject.dev.count < request.shots {
            throw TrainingError.invalidInput(path: subject.devFile ?? subject.file,
                                             reason: subject.devFile == nil ? "--shots \(request.shots) needs \(subject.name)_dev.csv (give its folder with --dev)"
                                                 : "\(subject.dev.count) dev items, fewer than --shots \(request.shots)")
        }
        let tokenizer = try BPETokenizer.load(path: tokenizerPath)
        let scoring = MultipleChoiceScoring(model: try directory.loadModel(), tokenizer: tokenizer, maxLength: limit)

        var rejects: [InputError] = [], rejectedBySubject: [String: Int] = [:]
        var truncated = 0
        let started = monotonicSeconds()
        // Encode every item first (examples dropped until it fits), then score them in batches.
        var pending: [(subject: String, item: MultipleChoiceItem, shots: Int, context: [UInt32], continuations: [[UInt32]])] = []
        for subject in data.subjects {
            rejects += subject.rejects
            rejectedBySubject[subject.name, default: 0] += subject.rejects.count
            for item in subject.items {
                var shots = request.shots
                var encoded = encode(item, shots: shots, subject: subject, format: data.format, scoring: scoring)
                while scoring.length(context: encoded.context, continuations: encoded.continuations) > limit && shots > 0 {
                    shots -= 1
                    encoded = encode(item, shots: shots, subject: subject, format: data.format, scoring: scoring)
                }
                let length = scoring.length(context: encoded.context, continuations: encoded.continuations)
                if length > limit {
                    rejects.append(InputError(file: item.file, line: item.line, field: "question",
                                              reason: "the prompt is \(length) tokens without examples, more than the model's \(limit)"))
                    rejectedBySubject[subject.name, default: 0] += 1
                    continue
                }
                if shots < request.shots { truncated += 1 }
                pending.append((subject.name, item, shots, encoded.context, encoded.continuations))
            }
        }
        var done = 0
        let t0 = monotonicSeconds()
        let scores = try scoring.logLikelihoods(pending.map { ($0.context, $0.continuations) }, batchSize: request.batchSize) { n in
            let before = done
            done += n
            if done / 10 > before / 10 || done == pending.count { sink.report(.progress(stage: "eval", done: done, total: pending.count, unit: "items")) }
        }
        let forwardSeconds = monotonicSeconds() - t0
        let results = zip(pending, scores).map { p, ll in
            MultipleChoiceResult(subject: p.subject, item: p.item, shots: p.shots, promptTokens: p.context.count, logLikelihoods: ll)
        }
        let read = data.subjects.reduce(0) { $0 + $1.items.count + $1.rejects.count }
        guard read == results.count + rejects.count else {
            throw TrainingError.invalidInput(path: request.input, reason: "internal count mismatch: \(read) items read, \(results.count) scored + \(rejects.count) rejected")
        }
        let scoringSeconds = monotonicSeconds() - started
        sink.report(.metric(stage: "eval", name: "scoring", value: scoringSeconds, unit: "s"))
        sink.report(.metric(stage: "eval", name: "forward passes", value: forwardSeconds, unit: "s"))
        let accuracy = accuracy(subjects: data.subjects.map(\.name), results: results, rejected: rejectedBySubject)
        return MultipleChoiceReport(modelDirectory: directory.path, tokenizerPath: tokenizerPath, format: data.format, subjects: accuracy.subjects,
                                    results: results, rejects: rejects, read: read, maxLength: limit, truncatedShots: truncated,
                                    microAccuracy: accuracy.micro, macroAccuracy: accuracy.macro, scoringSeconds: scoringSeconds)
    }

    static func encode(_ item: MultipleChoiceItem, shots: Int, subject: MultipleChoiceSubject, format: MultipleChoiceFormat,
                       scoring: MultipleChoiceScoring) -> (context: [UInt32], continuations: [[UInt32]]) {
        let context = MultipleChoicePrompt.prompt(item, shots: subject.dev.prefix(shots), format: format, subject: subject.displayName)
        return scoring.encode(context: context, continuations: MultipleChoicePrompt.continuations)
    }

    /// The `mc` section of the eval report.
    public static func section(_ request: MultipleChoiceRequest, _ report: MultipleChoiceReport) -> EvalSection {
        let config = JSONValue.object([
            ("format", .string(report.format.rawValue)), ("shots", .integer(request.shots)),
            ("dev", request.devDirectory.map { .string($0) } ?? .null), ("max_length", .integer(report.maxLength)),
            ("batch_size", .integer(request.batchSize)),
            ("continuations", .array(MultipleChoicePrompt.continuations.map { .string($0) })),
            ("scoring", .string("log-likelihood of each continuation after the prompt; pick = highest")),
        ])
        let subjects = JSONValue.object(report.subjects.map { s in
            (s.subject, .object([("items", .integer(s.items)), ("correct", .integer(s.correct)), ("rejected", .integer(s.rejected)),
                                 ("accuracy", .float(s.accuracy))]))
        })
        let correct = report.results.filter(\.correct).count
        let results = JSONValue.object([("accuracy_micro", .float(report.microAccuracy)), ("accuracy_macro", .float(report.macroAccuracy)),
                                        ("correct", .integer(correct)), ("subjects", subjects)])
        let items = report.results.map { r -> JSONValue in
            var members: [(String, JSONValue)] = [("subject", .string(r.subject)), ("file", .string(r.item.file)), ("line", .integer(r.item.line))]
            if let id = r.item.id { members.append(("id", .string(id))) }
            members += [("answer", .string(MultipleChoiceData.letters[r.item.answer])), ("pick", .string(MultipleChoiceData.letters[r.pick])),
                        ("correct", .bool(r.correct)), ("shots", .integer(r.shots)), ("prompt_tokens", .integer(r.promptTokens)),
                        ("loglikelihoods", .array(r.logLikelihoods.map { .float($0) }))]
            return .object(members)
        }
        return EvalSection(kind: .mc, inputs: [request.input], config: config,
                           counts: [("read", report.read), ("scored", report.results.count), ("shots_truncated", report.truncatedShots)],
                           results: results, items: items, rejects: report.rejects)
    }

    /// Runs `request` and writes its section into the eval report in `output`.
    @discardableResult
    public static func run(_ request: MultipleChoiceRequest, output: String, sink: any EventSink = SilentSink()) throws -> MultipleChoiceReport {
        let report = try run(request, sink: sink)
        try EvalReport.write(section(request, report),
                             model: try EvalModelInfo(modelDirectory: report.modelDirectory, tokenizer: report.tokenizerPath), to: output)
        return report
    }
}
