import DaptCore

/// `--strict`: the first bad record in input order, the same on every rank.
public struct FirstBadRecord: CollectiveError, Equatable {
    public var message: String
    public var description: String { "\(message) (--strict)" }

    public init(message: String) { self.message = message }

    /// Every rank calls this with its first bad record (its position in the
    /// whole input, and the error), if any, after stopping at it; every rank
    /// then throws the one first in input order, or returns if there is none.
    public static func agree(_ local: (position: Int, error: InputError)?, _ comm: any Communicator) throws {
        if let first = try firstInInputOrder(local.map { ($0.position, $0.error.description) }, comm) {
            throw FirstBadRecord(message: first)
        }
    }
}

/// Every rank offers its first problem, if any, with its position in input
/// order; every rank gets back the message of the earliest one (nil: none).
/// Positions and messages travel as values, never as text to parse back.
public func firstInInputOrder(_ local: (position: Int, message: String)?, _ comm: any Communicator) throws -> String? {
    let positions = try comm.allGatherV([Int64(local?.position ?? -1)]).map { $0[0] }
    let messages = try comm.allGatherV(Array((local?.message ?? "").utf8))
    guard let first = positions.indices.filter({ positions[$0] >= 0 }).min(by: { positions[$0] < positions[$1] }) else { return nil }
    return String(decoding: messages[first], as: UTF8.self)
}
