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
/// present, held-out loss as points.
public func lossCurveSVG(_ metrics: [StepMetrics], title: String = "dapt pretrain") -> String {
    let width = 720.0, height = 420.0, left = 64.0, right = 20.0, top = 36.0, bottom = 48.0
    let train = metrics.compactMap { m -> (Double, Double)? in
        guard m.skipped != true, let loss = m.loss, loss.isFinite else { return nil }
        return (Double(m.step), loss)
    }
    let eval = metrics.compactMap { m in m.evalLoss.map { (Double(m.step), $0) } }
    let all = train + eval
    guard !all.isEmpty else {
        return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\"><text x=\"20\" y=\"40\">no data</text></svg>\n"
    }
    let xMin = all.map(\.0).min()!, xMax = max(all.map(\.0).max()!, xMin + 1)
    var yMin = all.map(\.1).min()!, yMax = all.map(\.1).max()!
    if yMax - yMin < 1e-6 { yMin -= 0.5; yMax += 0.5 }
    func px(_ x: Double) -> Double { left + (x - xMin) / (xMax - xMin) * (width - left - right) }
    func py(_ y: Double) -> Double { top + (yMax - y) / (yMax - yMin) * (height - top - bottom) }
    func f(_ v: Double) -> String { String(format: "%.2f", v) }
    var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
    svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    svg += "<text x=\"\(f(width / 2))\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">\(title)</text>\n"
    svg += "<line x1=\"\(f(left))\" y1=\"\(f(height - bottom))\" x2=\"\(f(width - right))\" y2=\"\(f(height - bottom))\" stroke=\"black\"/>\n"
    svg += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(height - bottom))\" stroke=\"black\"/>\n"
    for k in 0...4 {
        let y = yMin + (yMax - yMin) * Double(k) / 4
        svg += "<text x=\"\(f(left - 6))\" y=\"\(f(py(y) + 4))\" text-anchor=\"end\">\(String(format: "%.3g", y))</text>\n"
        let x = xMin + (xMax - xMin) * Double(k) / 4
        svg += "<text x=\"\(f(px(x)))\" y=\"\(f(height - bottom + 16))\" text-anchor=\"middle\">\(Int(x.rounded()))</text>\n"
    }
    svg += "<text x=\"\(f(width / 2))\" y=\"\(f(height - 10))\" text-anchor=\"middle\">step</text>\n"
    svg += "<text x=\"14\" y=\"\(f(height / 2))\" transform=\"rotate(-90 14 \(f(height / 2)))\" text-anchor=\"middle\">loss</text>\n"
    if !train.isEmpty {
        svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\""
        svg += train.map { "\(f(px($0.0))),\(f(py($0.1)))" }.joined(separator: " ")
        svg += "\"/>\n"
    }
    for (x, y) in eval {
        svg += "<circle cx=\"\(f(px(x)))\" cy=\"\(f(py(y)))\" r=\"3.5\" fill=\"#d62728\"/>\n"
    }
    svg += "<text x=\"\(f(width - right - 150))\" y=\"\(f(top + 4))\" fill=\"#1f77b4\">— train loss</text>\n"
    if !eval.isEmpty { svg += "<text x=\"\(f(width - right - 150))\" y=\"\(f(top + 20))\" fill=\"#d62728\">● held-out loss</text>\n" }
    svg += "</svg>\n"
    return svg
}
