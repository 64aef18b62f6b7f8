import ArgumentParser
import DaptCore
import DaptModel
import DaptTokenizer
import DaptTrain
import Foundation
import Yams

struct PretrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pretrain",
        abstract: "Train a decoder-only LM on token shards (one rank): AdamW, warmup + cosine, fp32/fp16/bf16, checkpoints.",
        discussion: """
        Settings come from the config's pretrain: section (model, data, optimizer, schedule, precision,
        checkpoint, eval); any of them can be set on the command line with --set, e.g.
        --set optimizer.lr=3e-4 --set data.sequence_length=512. Prints one progress line per step,
        writes metrics.jsonl, checkpoints and loss_curve.svg into checkpoint.directory.
        """)

    @Option(help: "YAML config; its pretrain: section sets the run.")
    var config: String?

    @Option(name: .customLong("set"), help: ArgumentHelp("Override one pretrain setting: SECTION.KEY=VALUE (repeatable).", valueName: "key=value"))
    var overrides: [String] = []

    @Option(help: "Token shard directory (data.shards).")
    var shards: String?

    @Option(help: "Run directory for checkpoints and metrics (checkpoint.directory).")
    var output: String?

    @Option(help: "Total optimizer steps (schedule.total_steps).")
    var steps: Int?

    @Option(help: "fp32, fp16 or bf16 (precision.mode).")
    var precision: String?

    @Option(name: .customLong("from"), help: "Start from a Hugging Face model directory (model.from).")
    var from: String?

    @Option(help: "Continue from a checkpoint directory, or the newest checkpoint of a run directory.")
    var resume: String?

    @Option(name: .customLong("stop-after"), help: "Stop (with a checkpoint) after this many steps in this invocation.")
    var stopAfter: Int?

    @Flag(help: "Replace a run already in the run directory (it is removed before the new run starts).")
    var overwrite = false

    func run() throws {
        var all = overrides
        if let shards { all.append("data.shards=\(shards)") }
        if let output { all.append("checkpoint.directory=\(output)") }
        if let steps { all.append("schedule.total_steps=\(steps)") }
        if let precision { all.append("precision.mode=\(precision)") }
        if let from { all.append("model.from=\(from)") }
        // Without a config, a resumed run continues with the settings saved in its checkpoint.
        var saved: PretrainConfig?
        if let resume, config == nil { saved = try reportingErrors { try PretrainRun.savedConfig(checkpoint: resume) } }
        let daptConfig = try loadConfig(config, pretrainOverrides: all, pretrainBase: saved)
        try Runtime.run(cluster: daptConfig.cluster) { ctx in
            let options = PretrainOptions(resume: resume, stopAfter: stopAfter, overwrite: overwrite, ranks: ctx.size)
            try PretrainRun.run(config: daptConfig.pretrain, options: options, sink: ctx.sink)
        }
    }
}

/// Loads the config with `section.key=value` overrides applied under
/// `pretrain:`, on top of `pretrainBase` when given (instead of the file's section).
func loadConfig(_ path: String?, pretrainOverrides: [String], pretrainBase: PretrainConfig? = nil) throws -> DaptConfig {
    guard !pretrainOverrides.isEmpty || pretrainBase != nil else { return try loadConfig(path) }
    do {
        let text = try path.map { try FileSystem.readText($0) } ?? ""
        var root = (try Yams.load(yaml: text) as? [String: Any]) ?? [:]
        if let pretrainBase {
            root["pretrain"] = try Yams.load(yaml: YAMLEncoder().encode(pretrainBase))
        }
        var pretrain = root["pretrain"] as? [String: Any] ?? [:]
        for item in pretrainOverrides {
            guard let eq = item.firstIndex(of: "=") else {
                throw ConfigError(file: path, field: item, reason: "an override is SECTION.KEY=VALUE")
            }
            let keys = item[..<eq].split(separator: ".").map(String.init)
            let valueText = String(item[item.index(after: eq)...])
            let value: Any = (try? Yams.load(yaml: valueText)).flatMap { $0 } ?? valueText
            guard !keys.isEmpty else { throw ConfigError(file: path, field: item, reason: "empty key") }
            pretrain = setting(pretrain, keys[...], value)
        }
        root["pretrain"] = pretrain
        let config = try ConfigLoader.decode(DaptConfig.self, yaml: try Yams.dump(object: root), file: path)
        do { try config.validate() } catch var error as ConfigError { error.file = path; throw error }
        return config
    } catch let error as ConfigError {
        Console.error(error.description)
        throw ExitCode(2)
    } catch let error as FileError {
        Console.error(error.description)
        throw ExitCode(2)
    }
}

private func setting(_ dict: [String: Any], _ keys: ArraySlice<String>, _ value: Any) -> [String: Any] {
    var d = dict
    let key = keys.first!
    if keys.count == 1 { d[key] = value } else {
        d[key] = setting(d[key] as? [String: Any] ?? [:], keys.dropFirst(), value)
    }
    return d
}
