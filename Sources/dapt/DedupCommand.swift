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
        and report.json to --output. Each --input is a JSONL file or a `dapt prepare` \
        manifest.json (for its shards), read in this order as one corpus. Run under \
        `mpirun -np N` to share the work; the output is the same for any N.
        """)

    @OptionGroup var options: StageOptions

    @OptionGroup var records: RecordOptions

    @Option(help: "Kind of text: patent, web, book or code (sets the threshold; preset).")
    var preset: String?

    @Option(parsing: .unconditional, help: "Jaccard threshold, overriding the preset (threshold).")
    var threshold: Double?

    @Option(help: "Verification of candidate pairs: hybrid, estimated or exact (verify).")
    var verify: String?

    func run() throws {
        var shortcuts = Overrides()
        shortcuts.add("preset", preset, "--preset")
        shortcuts.add("threshold", threshold, "--threshold")
        shortcuts.add("verify", verify, "--verify")
        shortcuts.add("strict", records.strict, "--strict")
        let config = try DaptConfig.load(options.config, section: "dedup", shortcuts: shortcuts)
        let inputs = try options.input.existing()
        guard !inputs.isEmpty else { throw ValidationError("at least one --input is required") }
        guard let output = options.output.output else { throw ValidationError("--output (the output directory) is required") }
        let resolved = try DedupInputs.resolve(inputs)
        for path in resolved.files where !FileSystem.exists(path) {
            throw ConfigError(field: "", reason: "\(path): no such file or directory (a shard listed in an --input manifest)")
        }
        let dedupConfig = config.dedup
        try Runtime.run(cluster: config.cluster) { ctx in
            let job = DedupJob(config: dedupConfig, inputs: resolved.files, shards: resolved.shards, outputDirectory: output,
                               communicator: ctx.communicator, exchange: try ctx.makeExchange(), sink: ctx.sink)
            let report = try job.run()
            ctx.say(report.summary)
        }
    }
}
