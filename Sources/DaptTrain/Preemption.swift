import DaptCore
import Foundation
import Synchronization

/// A failed C call of the signal setup, named with its errno.
public struct SignalSetupError: Error, CustomStringConvertible, Equatable {
    public var call: String
    public var errno: Int32
    public var description: String { "\(call) failed: \(String(cString: strerror(errno)))" }
}

/// SIGTERM and SIGINT (a scheduler's preemption, Ctrl-C) become a request to
/// stop at the next step boundary: the handler only records the signal; the
/// training loop reads it between steps and the ranks agree on it through
/// the communicator, so every rank finishes the same step and rank 0 writes
/// a checkpoint before the job exits.
public enum Preemption {
    public static let signals: [Int32] = [SIGTERM, SIGINT]
    /// The last signal received (0: none). Lock-free, so the handler may store to it.
    static let received = Atomic<Int32>(0)

    /// The signal received since `install` (nil: none).
    public static var pendingSignal: Int32? {
        let s = received.load(ordering: .relaxed)
        return s == 0 ? nil : s
    }

    /// Records `signal` as if it had arrived (what the handler does).
    public static func request(_ signal: Int32) { received.store(signal, ordering: .relaxed) }
    public static func clear() { received.store(0, ordering: .relaxed) }

    /// Every C call of the setup goes through here: a non-zero return is an error naming the call.
    static func checked(_ call: String, _ rc: Int32) throws {
        guard rc == 0 else { throw SignalSetupError(call: call, errno: errno) }
    }

    /// Handlers in place for `signals` until the returned value's `restore()`.
    public struct Installation {
        fileprivate var previous: [(Int32, sigaction)]
        /// Puts back the handlers found at installation.
        public func restore() throws {
            for (signal, old) in previous {
                var old = old
                try checked("sigaction(\(signal))", sigaction(signal, &old, nil))
            }
        }
    }

    /// Installs the recording handler for SIGTERM and SIGINT; clears any earlier request.
    public static func install() throws -> Installation {
        clear()
        var installation = Installation(previous: [])
        for signal in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { Preemption.request($0) }
            try checked("sigemptyset", sigemptyset(&action.sa_mask))
            action.sa_flags = SA_RESTART
            var old = sigaction()
            try checked("sigaction(\(signal))", sigaction(signal, &action, &old))
            installation.previous.append((signal, old))
        }
        return installation
    }

    public static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGTERM: return "SIGTERM"
        case SIGINT: return "SIGINT"
        default: return "signal \(signal)"
        }
    }
}
