import DaptCore

/// The input files of a dedup run. A path ending in `.json` is read as a
/// `dapt prepare` manifest and stands for its shards, in the manifest's
/// order (shard files are relative to the manifest's directory); each shard
/// is checked against the manifest (records, bytes, SHA-1) before the run,
/// as `prepare --merge-only` checks them; the manifest's folder must have
/// been published complete. Any other path is a JSONL file.
public struct DedupInputs: Sendable, Equatable {
    public static let manifestFormat = CorpusManifest.format

    /// Every input file, in order.
    public var files: [String]
    /// The manifests' shards among `files`, to check.
    public var shards: [PreparedShard]

    public init(files: [String], shards: [PreparedShard] = []) {
        self.files = files; self.shards = shards
    }

    public static func resolve(_ paths: [String]) throws -> DedupInputs {
        var inputs = DedupInputs(files: [])
        for path in paths {
            guard path.hasSuffix(".json") else { inputs.files.append(path); continue }
            let corpus = try PreparedCorpus(manifestPath: path)
            try OutputPublisher.requireComplete(corpus.directory)
            inputs.files += corpus.shardPaths
            inputs.shards += corpus.shards
        }
        return inputs
    }

    public static func expand(_ paths: [String]) throws -> [String] { try resolve(paths).files }
}
