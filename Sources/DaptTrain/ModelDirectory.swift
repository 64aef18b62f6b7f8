import DaptCluster
import DaptCore
import DaptModel
import DaptTokenizer
import Foundation

/// A directory dapt loads a model from. A dapt checkpoint is verified
/// against its `manifest.json` before anything is read; a Hugging Face model
/// directory has no manifest (and none of a checkpoint's training files) and
/// loads as it is. A run directory stands for its newest checkpoint.
public enum ModelDirectory: Equatable, Sendable {
    case checkpoint(String)
    case huggingFace(String)

    public var path: String {
        switch self { case .checkpoint(let p), .huggingFace(let p): return p }
    }

    /// Files only a dapt checkpoint has: one of them without a manifest means
    /// the manifest was lost, not that this is a Hugging Face model.
    static let checkpointOnlyFiles = [Trainer.stateFile, Trainer.optimizerFile, Trainer.trainConfigFile]

    /// Resolves a checkpoint, a run directory (its newest checkpoint) or a
    /// Hugging Face model directory; anything else is an error naming it.
    public static func resolve(_ path: String) throws -> ModelDirectory {
        guard FileSystem.isDirectory(path) else {
            throw TrainingError.notAModel(path: path, reason: FileSystem.exists(path) ? "not a directory" : "no such directory")
        }
        if FileSystem.exists(path + "/" + CheckpointStore.manifestName) { return .checkpoint(path) }
        // Not by name: Hugging Face trainers also write checkpoint-N directories.
        if checkpointOnlyFiles.contains(where: { FileSystem.exists(path + "/" + $0) }) {
            throw TrainingError.notAModel(path: path, reason: "a checkpoint without \(CheckpointStore.manifestName) is not a checkpoint (its files cannot be verified; was the manifest deleted or the copy incomplete?)")
        }
        if FileSystem.exists(path + "/" + Trainer.configFile) { return .huggingFace(path) }
        if let latest = try CheckpointStore.latest(root: path) { return try resolve(latest) }
        throw TrainingError.notAModel(path: path, reason: "not a checkpoint (no \(CheckpointStore.manifestName)), a run directory (no \(CheckpointStore.prefix)*) or a Hugging Face model directory (no \(Trainer.configFile))")
    }

    /// Resolves `path` and requires a dapt checkpoint (to resume from).
    public static func resolveCheckpoint(_ path: String) throws -> String {
        let resolved = try resolve(path)
        guard case .checkpoint(let dir) = resolved else {
            throw TrainingError.notAModel(path: path, reason: "a Hugging Face model directory, not a dapt checkpoint: start from it with --from instead")
        }
        return dir
    }

    /// A checkpoint to resume from: `path` itself when it is one; for a run
    /// directory its newest checkpoint that verifies, each newer damaged
    /// one (truncated, corrupted, manifest lost) reported through `skipped`;
    /// when none verifies, the newest one's error.
    public static func resolveResumable(_ path: String, skipped: (String, Error) -> Void) throws -> String {
        if FileSystem.isDirectory(path), !FileSystem.exists(path + "/" + CheckpointStore.manifestName),
           !FileSystem.exists(path + "/" + Trainer.configFile), !(try CheckpointStore.list(root: path)).isEmpty {
            var damaged: [(String, Error)] = []
            if let intact = try CheckpointStore.newestIntact(root: path, check: { _ = try CheckpointStore.verify(directory: resolveCheckpoint($0)) },
                                                              skipped: { damaged.append(($0, $1)) }) {
                for (checkpoint, error) in damaged { skipped(checkpoint, error) }
                return intact
            }
            // None is intact: the newest one's problem is the error.
            if let newest = damaged.first { throw newest.1 }
        }
        return try resolveCheckpoint(path)
    }

    /// The model, after verifying a checkpoint's files against its manifest.
    /// The model (this rank's part of it, given a tensor group).
    public func loadModel(tensorGroup: (any Communicator)? = nil, stage: PipelineStage? = nil) throws -> LlamaModel {
        if case .checkpoint(let dir) = self { _ = try CheckpointStore.verify(directory: dir) }
        return try LlamaModel(directory: path, tensorGroup: tensorGroup, stage: stage)
    }

    /// The weights under `config` (the directory's own with, say, another
    /// RoPE scaling), after the same verification.
    public func loadModel(config: LlamaConfig) throws -> LlamaModel {
        if case .checkpoint(let dir) = self { _ = try CheckpointStore.verify(directory: dir) }
        let model = try LlamaModel(config: config)
        try model.parameters.loadSafeTensors(directory: path)
        return model
    }

    /// The tokenizer to read text with: `requested`, which must then be
    /// the same file as the one beside the weights (by checksum), or that one.
    public func tokenizer(requested: String?) throws -> String? {
        guard let requested else { return tokenizerPath }
        if let own = tokenizerPath, own != requested {
            let (expected, found) = (try fileChecksum(own), try fileChecksum(requested))
            if expected != found {
                throw TrainingError.tokenizerMismatch(expectedPath: path, expectedChecksum: expected, foundPath: requested, foundChecksum: found)
            }
        }
        return requested
    }

    /// The tokenizer.json beside the weights, when there is one.
    public var tokenizerPath: String? {
        let p = path + "/" + Trainer.tokenizerFile
        return FileSystem.exists(p) ? p : nil
    }
}
