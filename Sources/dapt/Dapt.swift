import ArgumentParser
import DaptCore

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
            FilterCommand.self,
            PretrainCommand.self,
            PlanCommand.self,
            FinetuneCommand.self,
            EvalCommand.self,
            GenerateCommand.self,
            ReportCommand.self,
            BenchCommand.self,
        ]
    )

    /// Parses and runs one command, mapping errors to exit statuses
    /// (`ExitStatus`): usage errors exit 64 as ArgumentParser reports them;
    /// an error thrown before the command's work starts is a configuration
    /// error (2); `Runtime` has already printed and mapped errors of the work.
    static func main() {
        var command: any ParsableCommand
        do { command = try parseAsRoot() } catch { exit(withError: error) }
        do {
            try command.run()
        } catch {
            // ArgumentParser's own errors (help, usage, ExitCode) keep their statuses.
            if error is ExitCode || exitCode(for: error) != .failure { exit(withError: error) }
            // Under mpirun every rank finds the same error before work starts: rank 0 says it.
            if (ProcessEnvironment.value("OMPI_COMM_WORLD_RANK") ?? "0") == "0" { Console.error("\(error)") }
            exit(withError: ExitCode(ExitStatus.configuration))
        }
    }
}
