import DaptCore
import Foundation

/// One line of `metrics.jsonl`: a training step's figures and/or a
/// held-out evaluation (step 0 holds the evaluation before training).
public struct StepMetrics: Codable, Equatable, Sendable {
    public var step: Int
    public var loss: Double?
    public var learningRate: Double?
    public var gradientNorm: Double?
    public var tokens: Int?
    public var tokensPerSecond: Double?
    public var lossScale: Double?
    public var skipped: Bool?
    public var evalLoss: Double?
    public var evalPerplexity: Double?
    public var sequenceLength: Int?

    public init(step: Int, loss: Double? = nil, learningRate: Double? = nil, gradientNorm: Double? = nil, tokens: Int? = nil,
                tokensPerSecond: Double? = nil, lossScale: Double? = nil, skipped: Bool? = nil,
                evalLoss: Double? = nil, evalPerplexity: Double? = nil) {
        self.step = step; self.loss = loss; self.learningRate = learningRate; self.gradientNorm = gradientNorm
        self.tokens = tokens; self.tokensPerSecond = tokensPerSecond; self.lossScale = lossScale; self.skipped = skipped
        self.evalLoss = evalLoss; self.evalPerplexity = evalPerplexity
    }

    enum CodingKeys: String, CodingKey {
        case step, loss, tokens, skipped
        case learningRate = "lr", gradientNorm = "grad_norm", tokensPerSecond = "tokens_per_second"
        case lossScale = "loss_scale", evalLoss = "eval_loss", evalPerplexity = "eval_ppl", sequenceLength = "sequence_length"
    }
}

/// Appends metrics as JSON lines, flushed each line so a crash loses nothing
/// already reported: step lines and event lines (`RunEvent`, with an
/// `event` key). On resume, lines for steps after the resumed step are
/// dropped first so the file stays one line per step; rollback events stay,
/// since the resumed state carries what they did.
public final class MetricsLog {
    public let path: String
    private let handle: FileHandle
    private let encoder = JSONEncoder()

    public init(path: String, truncateAfterStep: Int? = nil) throws {
        self.path = path
        if let keep = truncateAfterStep, FileSystem.exists(path) {
            let lines = try FileSystem.readText(path).split(separator: "\n")
            let kept = lines.filter { line in
                guard let m = try? JSONDecoder().decode(LineKind.self, from: Data(line.utf8)) else { return false }
                return m.step <= keep || m.event == "rollback"
            }
            try Data((kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).utf8).write(to: URL(fileURLWithPath: path))
        } else if truncateAfterStep == nil || !FileSystem.exists(path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil)
        }
        guard let h = FileHandle(forWritingAtPath: path) else { throw FileError(path: path, operation: "open for appending", errno: errno) }
        handle = h
        handle.seekToEndOfFile()
        encoder.outputFormatting = [.sortedKeys]
    }

    public func append(_ line: some Encodable) throws {
        var data = try encoder.encode(line)
        data.append(0x0A)
        handle.write(data)
    }

    /// What tells a step line from an event line.
    struct LineKind: Decodable { var step: Int; var event: String? }

    /// The step lines.
    public static func read(path: String) throws -> [StepMetrics] {
        try FileSystem.readText(path).split(separator: "\n").compactMap {
            let data = Data($0.utf8)
            return try JSONDecoder().decode(LineKind.self, from: data).event == nil ? try JSONDecoder().decode(StepMetrics.self, from: data) : nil
        }
    }

    /// The event lines (decisions other than continue).
    public static func readEvents(path: String) throws -> [RunEvent] {
        try FileSystem.readText(path).split(separator: "\n").compactMap {
            let data = Data($0.utf8)
            return try JSONDecoder().decode(LineKind.self, from: data).event == nil ? nil : try JSONDecoder().decode(RunEvent.self, from: data)
        }
    }

    deinit { try? handle.close() }
}

/// A loss-curve plot as a standalone SVG: training loss per step and, when
/// present, held-out loss as points; `events` (rollbacks, curriculum
/// changes) as vertical lines at their steps.
public func lossCurveSVG(_ metrics: [StepMetrics], events: [SVGPlot.Marker] = [], title: String = "dapt pretrain") -> String {
    let train = metrics.compactMap { m -> (x: Double, y: Double)? in
        guard m.skipped != true, let loss = m.loss else { return nil }
        return (Double(m.step), loss)
    }
    let eval = metrics.compactMap { m in m.evalLoss.map { (x: Double(m.step), y: $0) } }
    return SVGPlot.lineChart([SVGPlot.Series(name: "train loss", colour: "#1f77b4", style: .line, points: train),
                              SVGPlot.Series(name: "held-out loss", colour: "#d62728", style: .dots, points: eval)],
                             markers: events, title: title, xAxis: "step", yAxis: "loss")
}
