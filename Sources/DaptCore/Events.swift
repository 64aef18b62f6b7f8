/// Libraries report what they do through an `EventSink`; only the command
/// line decides what to print (and prints on rank 0 only).
public enum StageEvent: Sendable, Equatable {
    /// Work advanced: `done` of `total` (nil when unknown) `unit`s.
    case progress(stage: String, done: Int, total: Int?, unit: String)
    /// Something a user should know that is not an error (e.g. a reject).
    case notice(stage: String, message: String)
    /// The run goes on, but not as asked (e.g. a vocabulary smaller than requested).
    case warning(stage: String, message: String)
    /// A figure worth a line in the summary.
    case metric(stage: String, name: String, value: Double, unit: String)
}

public protocol EventSink: Sendable {
    func report(_ event: StageEvent)
}

/// Drops every event: for tests and for ranks other than 0.
public struct SilentSink: EventSink {
    public init() {}
    public func report(_ event: StageEvent) {}
}
