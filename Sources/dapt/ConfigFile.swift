import DaptCluster
import DaptCore
import DaptPrepare
import DaptTokenizer
import DaptDedup
import DaptTrain
import DaptFilter
import DaptGenerate

/// One YAML file can hold every stage's section; each has defaults, so a
/// file names only what it changes. Unknown sections are an error.
struct DaptConfig: Decodable {
    var cluster = ClusterConfig()
    var prepare = PrepareConfig()
    var dedup = DedupConfig()
    var filter = FilterConfig()
    var tokenizer = TokenizerConfig()
    var pretrain = PretrainConfig()
    var finetune = FinetuneConfig()
    var eval = EvalConfig()
    var generate = GenerationConfig()

    enum CodingKeys: String, CodingKey, CaseIterable {
        case cluster
        case prepare
        case dedup
        case filter
        case tokenizer
        case pretrain
        case finetune
        case eval
        case generate
    }

    init() {}

    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        cluster = try c.value(.cluster, default: ClusterConfig())
        prepare = try c.value(.prepare, default: PrepareConfig())
        tokenizer = try c.value(.tokenizer, default: TokenizerConfig())
        dedup = try c.value(.dedup, default: DedupConfig())
        filter = try c.value(.filter, default: FilterConfig())
        pretrain = try c.value(.pretrain, default: PretrainConfig())
        finetune = try c.value(.finetune, default: FinetuneConfig())
        eval = try c.value(.eval, default: EvalConfig())
        generate = try c.value(.generate, default: GenerationConfig())
    }

    /// Sections a stage's `--set` may name besides its own (`cluster.blas_threads=1`);
    /// any other key is the stage's own, so `pretrain --set eval.sequences=4` stays
    /// under pretrain: even though eval: is also a section.
    static let sharedSections = [CodingKeys.cluster.rawValue]

    /// Validates every section, naming the bad field with its section.
    func validate() throws {
        try Self.validate(cluster, "cluster")
        try Self.validate(prepare, "prepare")
        try Self.validate(tokenizer, "tokenizer")
        try Self.validate(dedup, "dedup")
        try Self.validate(filter, "filter")
        try Self.validate(pretrain, "pretrain")
        try Self.validate(finetune, "finetune")
        try Self.validate(eval, "eval")
        try Self.validate(generate, "generate")
    }

    static func validate(_ section: some StageConfig, _ name: String) throws {
        do { try section.validate() } catch let error as ConfigError { throw error.under(name) }
    }

    /// Loads `path` (all defaults when nil) with `overrides` applied under
    /// `section`, validates it, then runs the stage's own `check` (inputs
    /// that must exist, say). Errors name the file's line or the option.
    static func load(_ path: String?, overrides: [ConfigOverride] = [], section: String? = nil,
                     check: (DaptConfig) throws -> Void = { _ in }) throws -> DaptConfig {
        try ConfigLoader.load(DaptConfig.self, path: path, overrides: overrides, section: section,
                              sections: Self.sharedSections) { config in
            try config.validate()
            try check(config)
        }
    }

    /// One section's YAML read from elsewhere than a config file (a resumed
    /// run's saved settings), named by `origin` in errors.
    struct Document {
        var section: String
        var yaml: String
        var origin: String
    }

    /// The config a command's `--config` and `--set` (then its shortcuts)
    /// give; without `--config`, `instead` (when given) is the file.
    static func load(_ options: ConfigOptions, section: String?, shortcuts: Overrides = Overrides(), instead: Document? = nil,
                     check: (DaptConfig) throws -> Void = { _ in }) throws -> DaptConfig {
        let overrides = try options.overrides() + shortcuts.list
        guard options.config == nil, let document = instead else {
            return try load(options.config, overrides: overrides, section: section, check: check)
        }
        let indented = document.yaml.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n")
        do {
            return try ConfigLoader.decode(DaptConfig.self, yaml: "\(document.section):\n\(indented)\n", file: document.origin,
                                           overrides: overrides, section: section, sections: Self.sharedSections) { config in
                try config.validate()
                try check(config)
            }
        } catch var error as ConfigError where error.file == document.origin {
            // Lines of the re-encoded document are no one's to look up.
            error.line = nil; error.column = nil
            throw error
        }
    }
}
