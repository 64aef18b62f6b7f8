import ArgumentParser

@main
struct Dapt: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "dapt",
        abstract: "Domain-adaptive continued pretraining, run as a cluster of MPI ranks.",
        discussion: """
        Every stage runs alone or under `mpirun -np N dapt <stage>`.
        """,
        version: version,
        subcommands: [
            ConfigCommand.self,
            ClusterCommand.self,
            PrepareCommand.self,
            TokenizerCommand.self,
            DedupCommand.self,
            PretrainCommand.self,
            EvalCommand.self,
            BenchCommand.self,
        ]
    )
}
