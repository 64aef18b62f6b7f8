/// What can go wrong in training, said exactly.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case notEnoughData(tokens: Int, sequenceLength: Int)
    case checkpointMissingFile(directory: String, file: String)
    case checkpointChecksumMismatch(path: String, expected: String, found: String)
    case checkpointSizeMismatch(path: String, expected: Int, found: Int)
    case checkpointBadManifest(path: String, reason: String)
    case checkpointShapeMismatch(path: String, tensor: String, expected: [Int], found: [Int])
    case checkpointIncompatible(path: String, reason: String)
    case invalidInput(path: String, reason: String)
    /// A directory given as a model is none of the kinds dapt loads.
    case notAModel(path: String, reason: String)
    /// A fresh run would replace the run already in `directory`.
    case runDirectoryInUse(directory: String, entries: [String])
    /// `--overwrite` would remove files that are not part of a run.
    case runDirectoryHoldsOtherFiles(directory: String, entries: [String])
    /// Two sources of token ids disagree on the tokenizer.
    case tokenizerMismatch(expectedPath: String, expectedChecksum: String, foundPath: String, foundChecksum: String)
    case conflictingOptions(String)
    /// Writing a checkpoint failed (e.g. the disk is full); `previous` is the newest intact one.
    case checkpointWriteFailed(path: String, reason: String, previous: String?)
    /// The loss spiked and no rollback is left or possible.
    case unrecoverableSpike(String)

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
        case let .invalidInput(path, reason): return "\(path): \(reason)"
        case let .notAModel(path, reason): return "\(path): \(reason)"
        case let .runDirectoryInUse(dir, entries):
            return "\(dir) already holds a run (\(Self.listing(entries))); continue it with --resume \(dir), or replace it with --overwrite"
        case let .runDirectoryHoldsOtherFiles(dir, entries):
            return "\(dir) holds files that are not part of a run (\(Self.listing(entries))); --overwrite removes only a run directory: choose another --output"
        case let .tokenizerMismatch(expectedPath, expected, foundPath, found):
            return "tokenizer mismatch: \(expectedPath) uses tokenizer xxh64 \(expected), but \(foundPath) has xxh64 \(found); the ids of one tokenizer mean nothing to a model of another"
        case let .conflictingOptions(reason): return reason
        case let .unrecoverableSpike(message): return message
        case let .checkpointWriteFailed(path, reason, previous):
            return "could not write checkpoint \(path): \(reason); the run stops here. "
                + (previous.map { "The previous checkpoint \($0) is intact: free space and continue with --resume." } ?? "There is no earlier checkpoint.")
        }
    }

    static func listing(_ entries: [String]) -> String {
        entries.count <= 4 ? entries.joined(separator: ", ") : entries.prefix(4).joined(separator: ", ") + " and \(entries.count - 4) more"
    }
}
