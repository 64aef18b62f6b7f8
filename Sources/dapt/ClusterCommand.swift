#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import DaptBLAS
import DaptCluster
import DaptCore
import DaptTrain
import Foundation

struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Check the cluster runtime: ranks, collectives, the ZeroMQ exchange, BLAS.",
        subcommands: [Check.self]
    )

    enum AllReducePages: String, ExpressibleByArgument, CaseIterable { case huge, small }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Self-test and measure the cluster (run under mpirun for several ranks).",
            discussion: "Exits non-zero if any check fails.")

        @OptionGroup var options: ConfigOptions

        @Option(name: .customLong("exchange-mib"), help: "MiB each rank sends in the exchange self-test.")
        var exchangeMiB: Double = 8

        @Option(help: "Exchange rounds (each sends --exchange-mib).")
        var rounds: Int = 1

        @Option(name: .customLong("throughput-mib"), help: "MiB each rank streams in the raw throughput test.")
        var throughputMiB: Double = 64

        @Option(name: .customLong("record-bytes"), help: "Record size in the raw throughput test.")
        var recordBytes: Int = 1024

        @Option(name: .customLong("allreduce-mib"), help: "MiB of floats per all-reduce.")
        var allReduceMiB: Double = 16

        @Option(name: .customLong("bucket-mib"), help: "MiB per bucket of the bucketed non-blocking all-reduce (as parallel.bucket_mb).")
        var bucketMiB: Double = 4

        @Option(name: .customLong("allreduce-pages"), help: "Pages of the all-reduce buffer: huge (as gradients are allocated) or small (as a Swift array).")
        var allReducePages: AllReducePages = .huge

        @Option(help: "Square sgemm size for the GFLOP/s figure.")
        var gemm: Int = 1024

        @Option(help: "Write the results as JSON (one file per rank: PATH.rankN).")
        var json: String?

        @Option(name: .customLong("pid-dir"), help: "Each rank writes its pid here when the exchange starts (crash tests).")
        var pidDirectory: String?

        func run() throws {
            let config = try DaptConfig.load(options, section: "cluster")
            try Runtime.run(cluster: config.cluster) { ctx in
                let report = try runChecks(ctx)
                if let json {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.sortedKeys]
                    try FileWriter(path: "\(json).rank\(ctx.rank)").apply { try $0.write(Array(try encoder.encode(report))); try $0.commit() }
                }
                let failures = try ctx.communicator.allReduce(Int64(report.failures.count), op: .sum)
                if failures > 0 {
                    for f in report.failures { Console.error("rank \(ctx.rank): \(f)") }
                    throw ExitCode(ExitStatus.failure)
                }
                ctx.say("cluster check: all checks passed")
            }
        }

        struct Report: Codable {
            var rank = 0, size = 0, host = "", pid = 0, endpoint = ""
            var collectives = ClusterDiagnostics.CollectiveResults()
            var exchange = ClusterDiagnostics.ExchangeResults()
            var exchangeMBps = 0.0
            var throughputMBps = 0.0
            var allReduceSeconds = 0.0
            var allReduceBusGBps = 0.0
            var bucketedAllReduceSeconds = 0.0
            var bucketedAllReduceBusGBps = 0.0
            var bucketedReduceScatterSeconds = 0.0
            var bucketedReduceScatterBusGBps = 0.0
            var sgemmGFLOPs = 0.0
            var blasThreads = 0
            var failures: [String] = []
        }

        func runChecks(_ ctx: ClusterContext) throws -> Report {
            let comm = ctx.communicator
            var report = Report()
            report.rank = ctx.rank; report.size = ctx.size; report.host = comm.hostName
            report.pid = Int(getpid()); report.blasThreads = BLAS.threads

            if let lines = try comm.gather("rank \(ctx.rank)/\(ctx.size) on \(comm.hostName) (pid \(getpid()), \(BLAS.threads) BLAS threads)", root: 0) {
                lines.forEach { Console.out($0) }
            }

            report.collectives = try ClusterDiagnostics.checkCollectives(comm)
            report.failures += report.collectives.failures.map { "collectives: \($0)" }
            ctx.say("collectives: " + (try comm.allReduce(Int64(report.collectives.failures.count), op: .sum) == 0 ? "ok" : "FAILED"))

            let exchange = try ctx.makeExchange()
            report.endpoint = exchange.transport.endpoint
            let pidDirectory = self.pidDirectory
            report.exchange = try ClusterDiagnostics.checkExchange(
                exchange, bytesPerRank: Int(exchangeMiB * 1048576), rounds: rounds,
                onStart: {
                    if let dir = pidDirectory {
                        try? FileWriter(path: "\(dir)/rank\(ctx.rank).pid").apply { try $0.write("\(getpid())\n"); try $0.commit() }
                    }
                })
            report.failures += report.exchange.failures.map { "exchange: \($0)" }
            let slowest = try comm.allReduce(report.exchange.seconds, op: .max)
            let moved = try comm.allReduce(Int64(report.exchange.bytesSent), op: .sum)
            report.exchangeMBps = Double(moved) / slowest / 1e6
            ctx.say(String(format: "exchange: %d records, %.1f MB in %.3f s: %.1f MB/s aggregate (%d B batches)",
                           try comm.allReduce(Int64(report.exchange.recordsReceived), op: .sum), Double(moved) / 1e6,
                           slowest, report.exchangeMBps, ctx.config.batchBytes))

            if ctx.size > 1 {
                let (bytes, seconds) = try ClusterDiagnostics.exchangeThroughput(exchange, bytesPerRank: Int(throughputMiB * 1048576), recordBytes: recordBytes)
                let slowest = try comm.allReduce(seconds, op: .max)
                let total = try comm.allReduce(Int64(bytes), op: .sum)
                report.throughputMBps = Double(total) / slowest / 1e6
                ctx.say(String(format: "zeromq throughput: %.1f MB in %d-byte records in %.3f s: %.1f MB/s aggregate, %.1f MB/s per rank",
                               Double(total) / 1e6, recordBytes, slowest, report.throughputMBps, report.throughputMBps / Double(ctx.size)))
            }

            let elements = max(1, Int(allReduceMiB * 1048576) / 4)
            report.allReduceSeconds = try ClusterDiagnostics.allReduceSeconds(comm, elements: elements, iterations: 10, hugePages: allReducePages == .huge)
            if ctx.size > 1 {
            // Bus bandwidth as nccl-tests define it: 2(n-1)/n of the buffer per rank per call.
            let factor = ctx.size > 1 ? 2 * Double(ctx.size - 1) / Double(ctx.size) : 1
            report.allReduceBusGBps = Double(elements * 4) * factor / report.allReduceSeconds / 1e9
            ctx.say(String(format: "all-reduce: %.1f MiB float sum in %.2f ms: %.2f GB/s bus bandwidth",
                           allReduceMiB, report.allReduceSeconds * 1e3, report.allReduceBusGBps))
            // As the gradient reducer runs it: non-blocking, in buckets, all in flight at once.
            report.bucketedAllReduceSeconds = try ClusterDiagnostics.bucketedAllReduceSeconds(
                comm, elements: elements, bucketElements: Int(bucketMiB * 1048576) / 4, iterations: 10)
            report.bucketedAllReduceBusGBps = Double(elements * 4) * factor / report.bucketedAllReduceSeconds / 1e9
            ctx.say(String(format: "bucketed all-reduce: %.1f MiB in %.1f MiB non-blocking buckets in %.2f ms: %.2f GB/s bus bandwidth",
                           allReduceMiB, bucketMiB, report.bucketedAllReduceSeconds * 1e3, report.bucketedAllReduceBusGBps))
            // ZeRO-1's: a reduce-scatter per bucket, (n-1)/n of the buffer per rank (half the all-reduce's bus factor).
            report.bucketedReduceScatterSeconds = try ClusterDiagnostics.bucketedAllReduceSeconds(
                comm, elements: elements, bucketElements: Int(bucketMiB * 1048576) / 4, iterations: 10, scatter: true)
            report.bucketedReduceScatterBusGBps = Double(elements * 4) * factor / 2 / report.bucketedReduceScatterSeconds / 1e9
            ctx.say(String(format: "bucketed reduce-scatter: %.1f MiB in %.1f MiB non-blocking buckets in %.2f ms: %.2f GB/s bus bandwidth",
                           allReduceMiB, bucketMiB, report.bucketedReduceScatterSeconds * 1e3, report.bucketedReduceScatterBusGBps))
            }

            report.sgemmGFLOPs = sgemmGFLOPs(size: gemm)
            let all = try comm.allGatherV([report.sgemmGFLOPs])
            ctx.say(String(format: "sgemm %d^3: %@ GFLOP/s per rank (%d BLAS threads each)", gemm,
                           all.map { String(format: "%.1f", $0[0]) }.joined(separator: ", "), BLAS.threads))
            return report
        }
    }
}

extension FileWriter {
    /// Runs `body` with this writer (keeps one-line writes readable).
    func apply(_ body: (FileWriter) throws -> Void) throws { try body(self) }
}
