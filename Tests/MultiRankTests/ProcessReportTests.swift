import Foundation
import XCTest

/// The harness's failure report: a failing `mpirun` must say how it ended
/// (exit status, signal or timeout), what ran, and what both streams held.
final class ProcessReportTests: XCTestCase {
    func testExitStatusCommandAndBothStreams() throws {
        let script = "for i in $(seq 1 50); do echo out$i; done; echo 'last error' >&2; exit 3"
        let result = try DaptProcess.run("/bin/sh", ["-c", script], timeout: 30)
        XCTAssertEqual(result.status, 3)
        XCTAssertFalse(result.signaled)
        let report = result.report
        XCTAssertTrue(report.hasPrefix("exited with status 3 after "), report)
        XCTAssertTrue(report.contains("command: /bin/sh -c for i in"), report)
        XCTAssertTrue(report.contains("(10 earlier lines left out)\n  | out11\n"), report)
        XCTAssertTrue(report.contains("  | out50\nstderr (11 bytes, last lines):\n  | last error"), report)
    }

    /// A process ended by SIGHUP has terminationStatus 1, like `exit(1)`:
    /// only the report tells them apart.
    func testSignalIsNotAnExitStatus() throws {
        let result = try DaptProcess.run("/bin/sh", ["-c", "kill -HUP $$"], timeout: 30)
        XCTAssertEqual(result.status, SIGHUP)
        XCTAssertTrue(result.signaled)
        XCTAssertTrue(result.report.hasPrefix("ended by signal 1 (SIGHUP) after "), result.report)
        XCTAssertTrue(result.report.contains("stdout (0 bytes, last lines):\n  (empty)\nstderr (0 bytes, last lines):\n  (empty)"), result.report)
    }

    /// The multi-rank tests' assertions on a process print its report, not
    /// one raw stream: a line whose failure message is a bare `.stderr` or
    /// `.stdout`, or interpolates one, is named here. It reads one line at a
    /// time, so it cannot see a message wrapped onto a following line, nor a
    /// stream passed through a local (`let err = result.stderr` and then
    /// `err` as the message).
    func testAssertionsPrintTheReportNotARawStream() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let raw = try NSRegularExpression(pattern: #"(, \w+(\[\d+\])?\.(stderr|stdout)\)\s*$)|(\\\(\w+(\[\d+\])?\.(stderr|stdout)\))|(\.stdout \+ \w+\.stderr)"#)
        var found: [String] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        where name.hasSuffix(".swift") && !["MPIRun.swift", "ProcessReportTests.swift"].contains(name) {
            let lines = try String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            for (i, line) in lines.enumerated() where raw.firstMatch(in: String(line), range: NSRange(line.startIndex..., in: line)) != nil {
                found.append("\(name):\(i + 1): \(line.trimmingCharacters(in: .whitespaces))")
            }
        }
        XCTAssertEqual(found, [], found.joined(separator: "\n"))
        XCTAssertNotNil(raw.firstMatch(in: "XCTAssertEqual(r.status, 0, r.stderr)", range: NSRange(location: 0, length: 37)), "the pattern finds what it is for")
    }

    func testTimeoutIsReported() throws {
        let result = try DaptProcess.run("/bin/sh", ["-c", "echo started; exec sleep 30"], timeout: 0.5)
        XCTAssertTrue(result.timedOut)
        XCTAssertLessThan(result.seconds, 10)
        XCTAssertTrue(result.report.hasPrefix("timed out after "), result.report)
        XCTAssertTrue(result.report.contains("status 15, a signal"), result.report)
        XCTAssertTrue(result.report.contains("  | started"), result.report)
    }
}

/// mpirun's own silent failure: signalled from outside, it exits 1 with an
/// empty stderr, which reads like a failing rank unless the report says so.
final class MPIRunSignalReportTests: XCTestCase {
    func testSignalledMPIRunIsNamedAsSuch() throws {
        // Signal mpirun only once both ranks run, so its handlers are in place (a fixed
        // wait could signal it mid-start-up under load, when it may die of the signal).
        let dir = try DaptProcess.temporaryDirectory(self)
        let rank = "touch \(dir.path)/started.$OMPI_COMM_WORLD_RANK; exec sleep 30"
        let result = try DaptProcess.run("/usr/bin/env", ["mpirun"] + DaptProcess.mpirunArguments(np: 2) + ["sh", "-c", rank], timeout: 60) { process in
            let deadline = Date().addingTimeInterval(45)
            while Date() < deadline, (0..<2).contains(where: { !FileManager.default.fileExists(atPath: "\(dir.path)/started.\($0)") }) {
                Thread.sleep(forTimeInterval: 0.05)
            }
            kill(process.processIdentifier, SIGTERM)
        }
        XCTAssertEqual(result.status, 1, result.report)
        XCTAssertFalse(result.signaled, "mpirun exits 1 rather than dying of the signal")
        XCTAssertEqual(result.stderr, "")
        XCTAssertTrue(result.report.contains("with nothing on stderr: mpirun does this when it receives SIGTERM"), result.report)
    }

    /// A rank exiting 1 is reported by mpirun itself, so no hint is added.
    func testFailingRankIsNotTakenForASignal() throws {
        let result = try DaptProcess.run("/usr/bin/env", ["mpirun"] + DaptProcess.mpirunArguments(np: 2) + ["sh", "-c", "exit 1"], timeout: 60)
        XCTAssertEqual(result.status, 1, result.report)
        XCTAssertFalse(result.stderr.isEmpty)
        XCTAssertFalse(result.report.contains("nothing on stderr"), result.report)
    }
}
