/// What can go wrong in training, said exactly.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case notEnoughData(tokens: Int, sequenceLength: Int)
    case checkpointMissingFile(directory: String, file: String)
    case checkpointChecksumMismatch(path: String, expected: String, found: String)
    case checkpointSizeMismatch(path: String, expected: Int, found: Int)
    case checkpointBadManifest(path: String, reason: String)
    case checkpointShapeMismatch(path: String, tensor: String, expected: [Int], found: [Int])
    case checkpointIncompatible(path: String, reason: String)
    case noCheckpoint(directory: String)
    case invalidInput(path: String, reason: String)

    public var description: String {
        switch self {
        case let .notEnoughData(tokens, T):
            return "training data has \(tokens) tokens, fewer than one sequence of \(T)"
        case let .checkpointMissingFile(dir, file): return "\(dir): checkpoint file \(file) is missing"
        case let .checkpointChecksumMismatch(path, expected, found):
            return "\(path): checksum \(found) does not match the manifest's \(expected) (file corrupted)"
        case let .checkpointSizeMismatch(path, expected, found):
            return "\(path): \(found) bytes, the manifest says \(expected) (file truncated or corrupted)"
        case let .checkpointBadManifest(path, reason): return "\(path): bad checkpoint manifest: \(reason)"
        case let .checkpointShapeMismatch(path, tensor, expected, found):
            return "\(path): \(tensor): shape \(found), the model needs \(expected)"
        case let .checkpointIncompatible(path, reason): return "\(path): \(reason)"
        case let .noCheckpoint(dir): return "\(dir): no checkpoint-* directory found"
        case let .invalidInput(path, reason): return "\(path): \(reason)"
        }
    }
}
