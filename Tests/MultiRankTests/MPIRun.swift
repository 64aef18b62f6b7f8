import Foundation
import XCTest
import DaptTestSupport

/// Runs the built `dapt` binary, alone or under a real `mpirun`.
enum DaptProcess {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        var seconds: Double
        var timedOut: Bool
        /// True when `status` is the number of the signal that ended the
        /// process, not its exit code (Foundation reports both in one field,
        /// so a SIGHUP reads as "1").
        var signaled = false
        /// The command line that ran, for failure messages.
        var command: [String] = []

        /// What to print when a test finds an unexpected status: how the
        /// process ended, how long it took, the command, and the last lines
        /// of both streams (each labelled, so an empty stream shows as empty).
        var report: String {
            let time = String(format: "%.1f s", seconds)
            var ending: String
            if timedOut {
                ending = "timed out after \(time) and was killed (status \(status)\(signaled ? ", a signal" : ""))"
            } else if signaled {
                ending = "ended by signal \(status) (\(Self.signalName(status))) after \(time)"
            } else {
                ending = "exited with status \(status) after \(time)"
            }
            // Open MPI 4.1's mpirun says nothing and exits 1 when it gets
            // SIGTERM, SIGINT or SIGHUP itself; a failing rank makes it print
            // "Primary job terminated normally, but 1 process returned...".
            let launchedByMPIRun = command.prefix(2).contains { $0.hasSuffix("mpirun") }
            if launchedByMPIRun && !timedOut && !signaled && status == 1 && stderr.isEmpty {
                ending += " with nothing on stderr: mpirun does this when it receives SIGTERM, SIGINT or SIGHUP, so something outside the job signalled it"
            }
            return [ending,
                    "command: " + command.joined(separator: " "),
                    "stdout (\(stdout.utf8.count) bytes, last lines):", Self.tail(stdout),
                    "stderr (\(stderr.utf8.count) bytes, last lines):", Self.tail(stderr)].joined(separator: "\n")
        }

        /// The last `lines` lines of a stream, indented, or "(empty)".
        static func tail(_ text: String, lines: Int = 40) -> String {
            var all = text.split(separator: "\n", omittingEmptySubsequences: false)
            if all.last == "" { all.removeLast() }
            if all.isEmpty { return "  (empty)" }
            let shown = all.suffix(lines).map { "  | " + $0 }.joined(separator: "\n")
            return all.count > lines ? "  (\(all.count - lines) earlier lines left out)\n" + shown : shown
        }

        static func signalName(_ signal: Int32) -> String {
            switch signal {
            case SIGHUP: "SIGHUP"
            case SIGINT: "SIGINT"
            case SIGQUIT: "SIGQUIT"
            case SIGILL: "SIGILL"
            case SIGABRT: "SIGABRT"
            case SIGBUS: "SIGBUS"
            case SIGFPE: "SIGFPE"
            case SIGKILL: "SIGKILL"
            case SIGSEGV: "SIGSEGV"
            case SIGPIPE: "SIGPIPE"
            case SIGTERM: "SIGTERM"
            default: "signal \(signal)"
            }
        }
    }

    /// The `dapt` built beside this test bundle (or `$DAPT_BIN`).
    static var binary: String {
        if let path = ProcessInfo.processInfo.environment["DAPT_BIN"] { return path }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if dir.path.hasSuffix(".xctest/Contents/MacOS") { dir = dir.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }
        return dir.appendingPathComponent("dapt").path
    }

    /// The repository root (for bundled data and configs).
    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// `mpirun -np N` on one host: oversubscribed, shared memory, one BLAS
    /// thread per rank, root allowed.
    static func mpirunArguments(np: Int) -> [String] {
        var args = ["-np", String(np), "--oversubscribe", "--mca", "btl", "self,vader,tcp", "-x", "OPENBLAS_NUM_THREADS=1"]
        if getuid() == 0 { args.append("--allow-run-as-root") }
        return args
    }

    static func mpirun(np: Int, _ arguments: [String], timeout: Double = 300, onStart: ((Process) -> Void)? = nil) throws -> Result {
        try run("/usr/bin/env", ["mpirun"] + mpirunArguments(np: np) + [binary] + arguments, timeout: timeout, onStart: onStart)
    }

    static func dapt(_ arguments: [String], timeout: Double = 300) throws -> Result {
        try run(binary, arguments, timeout: timeout)
    }

    static func run(_ executable: String, _ arguments: [String], timeout: Double, onStart: ((Process) -> Void)? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["OPENBLAS_NUM_THREADS"] = environment["OPENBLAS_NUM_THREADS"] ?? "1"
        process.environment = environment
        let outFile = FileManager.default.temporaryDirectory.appendingPathComponent("dapt-test-\(UUID().uuidString).out")
        let errFile = FileManager.default.temporaryDirectory.appendingPathComponent("dapt-test-\(UUID().uuidString).err")
        FileManager.default.createFile(atPath: outFile.path, contents: nil)
        FileManager.default.createFile(atPath: errFile.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outFile); try? FileManager.default.removeItem(at: errFile) }
        process.standardOutput = try FileHandle(forWritingTo: outFile)
        process.standardError = try FileHandle(forWritingTo: errFile)
        let started = Date()
        try process.run()
        onStart?(process)
        var timedOut = false
        while process.isRunning {
            if Date().timeIntervalSince(started) > timeout {
                timedOut = true
                process.terminate()
                // Two seconds to end on SIGTERM (mpirun passes it to its ranks), then SIGKILL.
                let killAt = Date().addingTimeInterval(2)
                while process.isRunning && Date() < killAt { Thread.sleep(forTimeInterval: 0.02) }
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                break
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        process.waitUntilExit()
        let seconds = Date().timeIntervalSince(started)
        return Result(status: process.terminationStatus,
                      stdout: (try? String(contentsOf: outFile, encoding: .utf8)) ?? "",
                      stderr: (try? String(contentsOf: errFile, encoding: .utf8)) ?? "",
                      seconds: seconds, timedOut: timedOut,
                      signaled: process.terminationReason == .uncaughtSignal,
                      command: [executable] + arguments)
    }

    /// A fresh temporary directory, removed by the test's teardown block.
    static func temporaryDirectory(_ test: XCTestCase) throws -> URL {
        try temporaryDirectoryURL(test)
    }

    /// True while a process with this pid exists (and is not a zombie we own).
    static func isAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return !stat.contains(") Z ")
    }
}
