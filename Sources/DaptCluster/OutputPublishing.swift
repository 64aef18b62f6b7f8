import DaptCore

/// An error every rank raises together: rank 0's, shared with all.
public struct SharedError: CollectiveError, Equatable {
    public var message: String
    public var description: String { message }

    public init(message: String) { self.message = message }
}

extension OutputPublisher {
    /// Every rank calls this before writing: rank 0 creates the staging
    /// folder; if it cannot, every rank fails with its error.
    public func begin(_ comm: any Communicator) throws {
        try Self.onRoot(comm) { try begin() }
    }

    /// Every rank calls this once its files in the staging folder are
    /// committed: rank 0 publishes after all have, and every rank returns
    /// once the output is published (or fails with rank 0's error).
    public func finish(stage: String, _ comm: any Communicator) throws {
        try comm.barrier()
        try Self.onRoot(comm) { try publish(stage: stage) }
    }

    /// Runs `body` on rank 0; the other ranks wait and fail with its error.
    static func onRoot(_ comm: any Communicator, _ body: () throws -> Void) throws {
        guard comm.size > 1 else { return try body() }
        var problem = ""
        if comm.rank == 0 { do { try body() } catch { problem = "\(error)" } }
        let shared = try comm.allGatherV(Array(problem.utf8))
        if !shared[0].isEmpty { throw SharedError(message: String(decoding: shared[0], as: UTF8.self)) }
    }
}
