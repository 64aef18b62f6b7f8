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
            throw ExitCode(3)
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
            throw ExitCode(1)
        } catch let error as ConfigError {
            // A setting that does not fit the data or model found on disk: a usage error, before any work.
            let prefix = communicator.size > 1 ? "rank \(communicator.rank): " : ""
            Console.error(prefix + error.description)
            if mpi && communicator.size > 1 { MPIRuntime.abort(code: 2) }
            throw ExitCode(2)
        } catch let exit as ExitCode {
            if mpi && communicator.size > 1 { MPIRuntime.abort(code: exit.rawValue) }
            throw exit
        } catch {
            let prefix = communicator.size > 1 ? "rank \(communicator.rank): " : ""
            Console.error(prefix + "\(error)")
            if mpi && communicator.size > 1 { MPIRuntime.abort(code: 1) }
            throw ExitCode(1)
        }
        if mpi { try MPIRuntime.stop() }
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
