import Foundation
import XCTest

/// The `dapt` binary's own behaviour: version, config validation, errors.
final class CommandLineTests: XCTestCase {
    func testVersion() throws {
        let r = try DaptProcess.dapt(["--version"])
        XCTAssertEqual(r.status, 0)
        XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "0.1.0")
    }

    func testBundledConfigsValidate() throws {
        let configs = DaptProcess.repositoryRoot.appendingPathComponent("configs")
        let files = try FileManager.default.contentsOfDirectory(atPath: configs.path).filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertFalse(files.isEmpty)
        for file in files {
            let r = try DaptProcess.dapt(["config", "validate", configs.appendingPathComponent(file).path])
            XCTAssertEqual(r.status, 0, "\(file): \(r.stderr)")
        }
    }

    func testBadFieldIsNamedWithFileAndExitCode() throws {
        let dir = try DaptProcess.temporaryDirectory(self)
        let cases: [(String, String)] = [
            ("cluster:\n  batch_bytes: 3\n", "cluster.batch_bytes: must be in"),
            ("cluster:\n  transprt: tcp\n", "cluster.transprt: unknown key"),
            ("clustr: {}\n", "clustr: unknown key"),
            ("cluster:\n  transport: udp\n", "cluster.transport: must be one of tcp, ipc"),
            ("cluster:\n  high_water_mark: many\n", "cluster.high_water_mark"),
            ("pretrain:\n  precision:\n    mode: fp8\n", "pretrain.precision.mode: must be one of fp32, fp16, bf16, got \"fp8\""),
        ]
        for (i, (yaml, expected)) in cases.enumerated() {
            let file = dir.appendingPathComponent("bad\(i).yaml").path
            try yaml.write(toFile: file, atomically: true, encoding: .utf8)
            let r = try DaptProcess.dapt(["config", "validate", file])
            XCTAssertEqual(r.status, 2, yaml)
            XCTAssertTrue(r.stderr.contains("\(file): \(expected)"), "expected '\(expected)' in: \(r.stderr)")
        }
        let missing = try DaptProcess.dapt(["config", "validate", dir.appendingPathComponent("none.yaml").path])
        XCTAssertEqual(missing.status, 2)
        XCTAssertTrue(missing.stderr.contains("none.yaml"), missing.stderr)
    }

    func testSingleRankCheckWithoutMPI() throws {
        let r = try DaptProcess.dapt(["cluster", "check", "--exchange-mib", "1", "--gemm", "64"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("rank 0/1 on "), r.stdout)
        XCTAssertTrue(r.stdout.contains("cluster check: all checks passed"), r.stdout)
    }
}
