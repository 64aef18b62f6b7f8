import Foundation
import XCTest

/// `dapt cluster check` under real mpirun: every collective gives the right
/// numbers, the exchange delivers every byte, and a killed rank ends the job.
final class ClusterCheckTests: XCTestCase {
    struct Report: Decodable {
        struct Collectives: Decodable {
            var size: Int
            var allReduceSumInt64: Int64
            var allReduceMaxDouble: Double
            var allReduceMinFloat: Float
            var nonBlockingAllReduceSum: [Float]
            var nonBlockingReduceScatter: [Float]
            var nonBlockingElementsChecked: Int
            var allGatherTotal: Int
            var gatherRoot: [Int64]
            var broadcastValue: Int64
            var splitSize: Int
            var splitRank: Int
            var splitSum: Int64
        }
        struct Exchange: Decodable { var recordsSent: Int; var recordsReceived: Int; var bytesSent: Int; var bytesReceived: Int; var failures: [String] }
        var rank: Int
        var size: Int
        var endpoint: String
        var collectives: Collectives
        var exchange: Exchange
        var failures: [String]
    }

    func runCheck(np: Int) throws -> [Report] {
        let dir = try DaptProcess.temporaryDirectory(self)
        let json = dir.appendingPathComponent("report").path
        let result = try DaptProcess.mpirun(np: np, ["cluster", "check", "--exchange-mib", "3", "--allreduce-mib", "1", "--gemm", "128", "--json", json], timeout: 120)
        XCTAssertEqual(result.status, 0, result.report)
        XCTAssertTrue(result.stdout.contains("cluster check: all checks passed"), result.report)
        for r in 0..<np { XCTAssertTrue(result.stdout.contains("rank \(r)/\(np) on "), result.report) }
        let reports = try (0..<np).map { r in
            try JSONDecoder().decode(Report.self, from: Data(contentsOf: URL(fileURLWithPath: "\(json).rank\(r)")))
        }
        for report in reports { XCTAssertTrue(report.endpoint.hasPrefix("tcp://127.0.0.1:"), report.endpoint) }
        return reports
    }

    func checkNumbers(_ reports: [Report], mib: Int = 3) {
        let n = reports.count
        let totalSent = reports.reduce(0) { $0 + $1.exchange.bytesSent }
        let totalReceived = reports.reduce(0) { $0 + $1.exchange.bytesReceived }
        // Each rank sends at least its budget (records stop once past it).
        XCTAssertGreaterThanOrEqual(totalSent, mib * 1_048_576 / n * n * n - 8 * n * n)
        XCTAssertEqual(totalSent, totalReceived, "every byte sent arrives")
        XCTAssertEqual(reports.reduce(0) { $0 + $1.exchange.recordsSent }, reports.reduce(0) { $0 + $1.exchange.recordsReceived })
        for report in reports {
            let c = report.collectives
            XCTAssertEqual(report.size, n)
            XCTAssertEqual(c.allReduceSumInt64, Int64(n * (n + 1) / 2))
            XCTAssertEqual(c.allReduceMaxDouble, Double(n - 1) * 1.5)
            XCTAssertEqual(c.allReduceMinFloat, -0.5)
            XCTAssertEqual(c.nonBlockingAllReduceSum, (0..<10).map { Float($0 * n * (n + 1) / 2) })
            // Rank r's r elements: source indices from 1 + r(r−1)/2, each summed over the ranks' multiples.
            XCTAssertEqual(c.nonBlockingReduceScatter, (0..<report.rank).map { Float((1 + report.rank * (report.rank - 1) / 2 + $0) * n * (n + 1) / 2) })
            // 1001 sums and 1001 maxima, 12 × 50 sums, and this rank's block of the reduce-scatter (rank 1's is empty).
            var spread = (0..<n).map { $0 < 2 ? 0 : 1001 / n }
            spread[0] = 1001 - spread.reduce(0, +)
            XCTAssertEqual(c.nonBlockingElementsChecked, 2602 + spread[report.rank])
            XCTAssertEqual(c.allGatherTotal, n * (n + 1) / 2)
            XCTAssertEqual(c.broadcastValue, 4242)
            let members = (0..<n).filter { $0 % 2 == report.rank % 2 }
            XCTAssertEqual(c.splitSize, members.count)
            XCTAssertEqual(c.splitRank, members.reversed().firstIndex(of: report.rank))
            XCTAssertEqual(c.splitSum, Int64(members.reduce(0, +)))
            XCTAssertEqual(report.failures, [])
        }
        XCTAssertEqual(reports[0].collectives.gatherRoot, (0..<n).map { Int64($0 * $0) })
    }

    func testTwoRanks() throws { checkNumbers(try runCheck(np: 2)) }

    func testFourRanks() throws { checkNumbers(try runCheck(np: 4)) }

    func testThreeRanksOverIPC() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let config = dir.appendingPathComponent("ipc.yaml")
        try "cluster:\n  transport: ipc\n  ipc_directory: \(dir.path)\n".write(to: config, atomically: true, encoding: .utf8)
        let json = dir.appendingPathComponent("report").path
        let result = try DaptProcess.mpirun(np: 3, ["cluster", "check", "--config", config.path, "--exchange-mib", "2",
                                                    "--allreduce-mib", "1", "--gemm", "64", "--json", json], timeout: 120)
        XCTAssertEqual(result.status, 0, result.report)
        for r in 0..<3 { XCTAssertTrue(result.stdout.contains("rank \(r)/3 on "), result.report) }
        let reports = try (0..<3).map { r in
            try JSONDecoder().decode(Report.self, from: Data(contentsOf: URL(fileURLWithPath: "\(json).rank\(r)")))
        }
        checkNumbers(reports, mib: 2)
        for report in reports { XCTAssertTrue(report.endpoint.hasPrefix("ipc://\(dir.path)/"), report.endpoint) }
        XCTAssertEqual(Set(reports.map(\.endpoint)).count, 3)
        let leftover = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".sock") }
        XCTAssertEqual(leftover, [], "ipc socket files are removed at shutdown")
    }

    /// A rank killed with SIGKILL in the middle of the exchange makes the
    /// whole job exit non-zero within 10 s, leaving no process behind.
    func testKilledRankEndsTheJob() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        var killedAt: Date?
        var pids: [Int32] = []
        let result = try DaptProcess.mpirun(np: 4, ["cluster", "check", "--exchange-mib", "64", "--rounds", "1000", "--pid-dir", dir.path], timeout: 90) { _ in
            // Wait until every rank is inside the exchange, then kill rank 1.
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                pids = (0..<4).compactMap { r in
                    (try? String(contentsOfFile: dir.appendingPathComponent("rank\(r).pid").path, encoding: .utf8))
                        .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
                }
                if pids.count == 4 { break }
                Thread.sleep(forTimeInterval: 0.05)
            }
            guard pids.count == 4 else { return }
            Thread.sleep(forTimeInterval: 0.3)
            kill(pids[1], SIGKILL)
            killedAt = Date()
        }
        XCTAssertEqual(pids.count, 4, "ranks never reached the exchange: \(result.report)")
        XCTAssertFalse(result.timedOut, "mpirun hung after a rank was killed\n\(result.report)")
        XCTAssertNotEqual(result.status, 0, result.report)
        if let killedAt { XCTAssertLessThan(Date().timeIntervalSince(killedAt), 10, "job took too long to end") }
        Thread.sleep(forTimeInterval: 0.5)
        for pid in pids { XCTAssertFalse(DaptProcess.isAlive(pid), "rank process \(pid) left behind") }
    }
}
