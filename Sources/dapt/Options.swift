import ArgumentParser
import DaptCore

// The options every stage spells alike. A command takes the groups it uses,
// so its help lists only its own options:
//   StageOptions   --input, --output, --config, --set (stages that read and write data)
//   ConfigOptions  --config, --set (every command that reads the config)
//   RecordOptions  --strict (stages that read records)
// Stage shortcuts (`--steps`, `--threshold`) become `Overrides` of one key
// each, applied with `--set` by one loader (ConfigLoader in DaptCore).

struct ConfigOptions: ParsableArguments {
    @Option(help: ArgumentHelp("YAML config; one file may hold every stage's section.", valueName: "file"))
    var config: String?

    @Option(name: .customLong("set"), parsing: .unconditionalSingleValue,
            help: ArgumentHelp("Set KEY of this stage's config section to VALUE (YAML), e.g. --set optimizer.lr=3e-4 (repeatable; `cluster.KEY` sets the cluster section).",
                               valueName: "key=value"))
    var settings: [String] = []

    /// `--set` as overrides, in the order given.
    func overrides() throws -> [ConfigOverride] { try settings.map(ConfigOverride.parse) }
}

struct InputOptions: ParsableArguments {
    @Option(name: .customLong("input"), parsing: .unconditionalSingleValue,
            help: ArgumentHelp("Input file, folder or manifest (repeatable; read in this order).", valueName: "path"))
    var inputs: [String] = []

    /// The inputs, each of which must exist: a missing one is found before any work starts.
    func existing() throws -> [String] {
        for path in inputs where !FileSystem.exists(path) {
            throw ConfigError(source: "--input \(path)", field: "", reason: "no such file or directory")
        }
        return inputs
    }

    /// The one input of a command that reads one; `checked`: it must exist
    /// (else the command checks it with the config, naming the key it sets).
    func single(checked: Bool = true) throws -> String? {
        if inputs.count > 1 { throw ValidationError("--input: this command reads one input, got \(inputs.count)") }
        return checked ? try existing().first : inputs.first
    }
}

struct OutputOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: ArgumentHelp("Where to write the output (see the description).", valueName: "path"))
    var output: String?
}

/// The common options of a stage that reads inputs and writes an output.
struct StageOptions: ParsableArguments {
    @OptionGroup var input: InputOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var config: ConfigOptions

    var inputs: [String] { input.inputs }
}

struct RecordOptions: ParsableArguments {
    @Flag(name: .customLong("strict"), inversion: .prefixedNo,
          help: "Stop at the first bad record (else it goes to the rejects file with its reason).")
    var strict: Bool?
}

/// Stage shortcuts as config overrides: `--steps 100` is `schedule.total_steps=100`.
struct Overrides {
    private(set) var list: [ConfigOverride] = []

    mutating func add(_ key: String, _ value: Int?, _ option: String) {
        if let value { list.append(ConfigOverride(key: key, value: value, option: option)) }
    }

    mutating func add(_ key: String, _ value: Double?, _ option: String) {
        if let value { list.append(ConfigOverride(key: key, value: value, option: option)) }
    }

    mutating func add(_ key: String, _ value: Bool?, _ option: String) {
        if let value { list.append(ConfigOverride(key: key, value: "\(value)", source: value ? option : "--no-" + option.dropFirst(2))) }
    }

    /// Strings are quoted so that `yes` or `1e3` stay strings.
    mutating func add(_ key: String, _ value: String?, _ option: String) {
        if let value { list.append(ConfigOverride(key: key, value: JSONWriter.quoted(value), source: "\(option) \(value)")) }
    }

    mutating func add(_ key: String, _ values: [String], _ option: String) {
        guard !values.isEmpty else { return }
        list.append(ConfigOverride(key: key, value: "[" + values.map(JSONWriter.quoted).joined(separator: ", ") + "]",
                                   source: values.map { "\(option) \($0)" }.joined(separator: " ")))
    }
}
