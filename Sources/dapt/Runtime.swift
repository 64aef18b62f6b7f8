#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import DaptBLAS
import DaptCluster
import DaptCore
import DaptMPI
import DaptZMQ

/// What a stage runs with: its rank's communicator, the exchange when it
/// needs one, and the sink that prints on rank 0 only.
struct ClusterContext {
    let communicator: any Communicator
    let config: ClusterConfig
    let sink: any EventSink

    var rank: Int { communicator.rank }
    var size: Int { communicator.size }
    var isRoot: Bool { communicator.rank == 0 }

    /// The ZeroMQ exchange (or a self-only one for a single rank).
    func makeExchange() throws -> RecordExchange {
        let transport: any FrameTransport
        if size == 1 {
            transport = SelfOnlyTransport()
        } else {
            var options = ZMQTransportOptions()
            options.scheme = config.transport == "ipc" ? .ipc : .tcp
            options.interface = config.interface
            options.basePort = config.basePort
            options.highWaterMark = config.highWaterMark
            options.ipcDirectory = config.ipcDirectory
            options.maxMessageBytes = max(options.maxMessageBytes, config.batchBytes * 2 + 4096)
            let tag = try communicator.broadcast("dapt-\(getpid())", root: 0)
            transport = try ZMQTransport(communicator: communicator, options: options, jobTag: tag)
        }
        return RecordExchange(transport: transport, communicator: communicator, options: config.exchangeOptions)
    }

    /// Prints on rank 0 only.
    func say(_ line: String) { if isRoot { Console.out(line) } }
}

/// One mapping from errors to exit statuses, the same for every stage:
/// - 64 usage: the command line does not parse (ArgumentParser's validation errors);
/// - 2 configuration: a bad config value or option, or a missing or unreadable
///   input, found before any work starts (anything a command throws before
///   `Runtime.run` or `Runtime.work`, and a `ConfigError` anywhere);
/// - 1 failure: the work started and failed.
enum ExitStatus {
    static let failure: Int32 = 1
    static let configuration: Int32 = 2
    static let usage: Int32 = 64

    /// The status of an error thrown once work has started.
    static func ofWork(_ error: Error) -> Int32 {
        error is ConfigError ? configuration : failure
    }
}

enum Runtime {
    /// Runs `body` on this rank: under `mpirun` with the MPI world, otherwise
    /// as a single rank. An error on any rank prints with its rank and, under
    /// MPI, aborts the whole job so no rank waits forever in a collective.
    static func run(cluster config: ClusterConfig, _ body: (ClusterContext) throws -> Void) throws {
        let communicator: any Communicator
        let mpi = MPIRuntime.launchedByMPI
        do {
            communicator = mpi ? try MPIRuntime.start() : SingleRankCommunicator(hostName: ProcessEnvironment.hostName)
        } catch {
            Console.error("\(error)")
            throw ExitCode(ExitStatus.failure)
        }
        BLAS.setThreads(blasThreads(config: config, ranksOnHost: ranksOnThisHost(communicator)))
        let sink: any EventSink = communicator.rank == 0 ? ConsoleSink() : SilentSink()
        let context = ClusterContext(communicator: communicator, config: config, sink: sink)
        do {
            try body(context)
        } catch let error as CollectiveError {
            if communicator.rank == 0 { Console.error("\(error)") }
            if mpi {
                try? communicator.barrier()
                try? MPIRuntime.stop()
            }
            throw ExitCode(error.exitCode)
        } catch let exit as ExitCode {
            if mpi && communicator.size > 1 { MPIRuntime.abort(code: exit.rawValue) }
            throw exit
        } catch {
            let prefix = communicator.size > 1 ? "rank \(communicator.rank): " : ""
            Console.error(prefix + "\(error)")
            let status = ExitStatus.ofWork(error)
            if mpi && communicator.size > 1 { MPIRuntime.abort(code: status) }
            throw ExitCode(status)
        }
        if mpi { try MPIRuntime.stop() }
    }

    /// Runs the work of a command that needs no cluster (one process):
    /// errors print and exit as `run`'s do.
    static func work<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let exit as ExitCode { throw exit } catch {
            Console.error("\(error)")
            throw ExitCode(ExitStatus.ofWork(error))
        }
    }

    /// OpenBLAS threads: configured, or the host's cores shared by its ranks.
    static func blasThreads(config: ClusterConfig, ranksOnHost: Int) -> Int {
        if config.blasThreads > 0 { return config.blasThreads }
        if let env = ProcessEnvironment.value("OPENBLAS_NUM_THREADS"), let n = Int(env), n > 0 { return n }
        let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        return max(1, cores / max(1, ranksOnHost))
    }

    static func ranksOnThisHost(_ communicator: any Communicator) -> Int {
        if let local = ProcessEnvironment.value("OMPI_COMM_WORLD_LOCAL_SIZE"), let n = Int(local) { return n }
        return communicator.size
    }
}
