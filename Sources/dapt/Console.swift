#if canImport(Glibc)
import Glibc
#endif
import DaptCore
import Foundation

/// The only place dapt prints. Progress goes to stderr, results to stdout.
enum Console {
    static func out(_ line: String) { write(to: 1, line + "\n") }

    static func error(_ line: String) { write(to: 2, "dapt: error: \(line)\n") }

    static func note(_ line: String) { write(to: 2, line + "\n") }

    /// Unbuffered, so lines from several ranks never interleave mid-line.
    private static func write(to fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { buf in
            var offset = 0
            while offset < buf.count {
                let n = Glibc.write(fd, buf.baseAddress! + offset, buf.count - offset)
                if n <= 0 { return }
                offset += n
            }
        }
    }
}

/// Prints stage events on rank 0, at most a few progress lines a second.
final class ConsoleSink: EventSink, @unchecked Sendable {
    private var lastProgress = 0.0
    private let started = monotonicSeconds()

    func report(_ event: StageEvent) {
        switch event {
        case .progress(let stage, let done, let total, let unit):
            let now = monotonicSeconds()
            let finished = total.map { done >= $0 } ?? false
            guard finished || now - lastProgress >= 0.5 else { return }
            lastProgress = now
            let rate = Double(done) / max(now - started, 1e-9)
            let of = total.map { " / \($0)" } ?? ""
            let eta = total.map { t in rate > 0 && t > done ? String(format: ", ETA %.0f s", Double(t - done) / rate) : "" } ?? ""
            Console.note("[\(stage)] \(done)\(of) \(unit) (\(String(format: "%.0f", rate)) \(unit)/s\(eta))")
        case .notice(let stage, let message):
            Console.note("[\(stage)] \(message)")
        case .warning(let stage, let message):
            Console.note("[\(stage)] warning: \(message)")
        case .metric(let stage, let name, let value, let unit):
            Console.note("[\(stage)] \(name) = \(value) \(unit)")
        }
    }
}
