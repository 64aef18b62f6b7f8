import DaptCluster
import DaptCore
import DaptPrepare
import DaptTokenizer
import DaptDedup
import DaptTrain

/// One YAML file can hold every stage's section; each has defaults, so a
/// file names only what it changes. Unknown sections are an error.
struct DaptConfig: Decodable {
    var cluster = ClusterConfig()
    var prepare = PrepareConfig()
    var dedup = DedupConfig()
    var tokenizer = TokenizerConfig()
    var pretrain = PretrainConfig()

    enum CodingKeys: String, CodingKey, CaseIterable {
        case cluster
        case prepare
        case dedup
        case tokenizer
        case pretrain
    }

    init() {}

    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        cluster = try c.value(.cluster, default: ClusterConfig())
        prepare = try c.value(.prepare, default: PrepareConfig())
        tokenizer = try c.value(.tokenizer, default: TokenizerConfig())
        dedup = try c.value(.dedup, default: DedupConfig())
        pretrain = try c.value(.pretrain, default: PretrainConfig())
    }

    /// Validates every section, naming the bad field with its section.
    func validate() throws {
        try Self.validate(cluster, "cluster")
        try Self.validate(prepare, "prepare")
        try Self.validate(tokenizer, "tokenizer")
        try Self.validate(dedup, "dedup")
        try Self.validate(pretrain, "pretrain")
    }

    static func validate(_ section: some StageConfig, _ name: String) throws {
        do { try section.validate() } catch let error as ConfigError { throw error.under(name) }
    }

    /// Loads `path` (or all defaults when nil) and validates it.
    static func load(_ path: String?) throws -> DaptConfig {
        guard let path else { return DaptConfig() }
        let config = try ConfigLoader.load(DaptConfig.self, path: path)
        do { try config.validate() } catch var error as ConfigError { error.file = path; throw error }
        return config
    }
}
