import ArgumentParser
import DaptCluster
import DaptCore
import DaptDedup

struct DedupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dedup",
        abstract: "Remove exact and near-duplicate records (MinHash LSH), sharded across ranks.",
        discussion: """
        Reads JSONL records with at least `id` and `text` (and `hash`, which is \
        recomputed and checked). Writes kept.jsonl (input order), removed.jsonl \
        (with duplicate_of, similarity, reason), clusters.jsonl, rejects.jsonl \
        and report.json to --out. Run under `mpirun -np N` to share the work; \
        the output is the same for any N.
        """)

    @Argument(help: "Input JSONL files (or `dapt prepare` manifest.json files, for their shards), read in this order as one corpus.")
    var inputs: [String]

    @Option(help: "Output directory.")
    var out: String

    @Option(help: "YAML config; its dedup: and cluster: sections apply.")
    var config: String?

    @Option(help: "Kind of text: patent, web, book or code (sets the threshold).")
    var preset: String?

    @Option(help: "Jaccard threshold (overrides the preset).")
    var threshold: Double?

    @Option(help: "Verification of candidate pairs: hybrid, estimated or exact.")
    var verify: String?

    @Flag(help: "Stop at the first bad record or hash mismatch.")
    var strict = false

    func run() throws {
        var config = try loadConfig(config)
        if let preset { config.dedup.preset = preset }
        if let threshold { config.dedup.threshold = threshold }
        if let verify { config.dedup.verify = verify }
        if strict { config.dedup.strict = true }
        do { try DaptConfig.validate(config.dedup, "dedup") } catch let error as ConfigError {
            Console.error(error.description)
            throw ExitCode(2)
        }
        let resolved: DedupInputs
        do { resolved = try DedupInputs.resolve(inputs) } catch {
            Console.error("\(error)")
            throw ExitCode(2)
        }
        for path in resolved.files where !FileSystem.exists(path) {
            Console.error("\(path): no such file")
            throw ExitCode(2)
        }
        let dedupConfig = config.dedup
        try Runtime.run(cluster: config.cluster) { ctx in
            let job = DedupJob(config: dedupConfig, inputs: resolved.files, shards: resolved.shards, outputDirectory: out,
                               communicator: ctx.communicator, exchange: try ctx.makeExchange(), sink: ctx.sink)
            let report = try job.run()
            ctx.say(report.summary)
        }
    }
}
