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
                Thread.sleep(forTimeInterval: 2)
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
                      seconds: seconds, timedOut: timedOut)
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
