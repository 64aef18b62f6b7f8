import DaptCore
import Foundation

/// The run directory of `dapt pretrain`: checkpoints, `metrics.jsonl` and
/// `loss_curve.svg`. A fresh run never mixes its files with an older run's.
public enum RunDirectory {
    public static let metricsFile = "metrics.jsonl"
    public static let lossCurveFile = "loss_curve.svg"

    /// True for the names a run writes (leftovers of interrupted saves included).
    static func isRunEntry(_ name: String) -> Bool {
        name.hasPrefix(CheckpointStore.prefix) || name.hasPrefix(".tmp-" + CheckpointStore.prefix)
            || name.hasPrefix(".old-" + CheckpointStore.prefix) || name == metricsFile || name == lossCurveFile
    }

    /// Makes `directory` ready for a fresh run. An existing run is an error
    /// unless `overwrite`; then it is removed as a unit (renamed aside in
    /// one step, then deleted) before anything new is written. Files that
    /// are not a run's are never removed.
    public static func prepareFresh(_ directory: String, overwrite: Bool) throws {
        let names = FileSystem.isDirectory(directory) ? try FileSystem.list(directory).sorted() : []
        let run = names.filter(isRunEntry)
        if !run.isEmpty {
            guard overwrite else { throw TrainingError.runDirectoryInUse(directory: directory, entries: run) }
            let other = names.filter { !isRunEntry($0) }
            guard other.isEmpty else { throw TrainingError.runDirectoryHoldsOtherFiles(directory: directory, entries: other) }
            try replace(directory)
        }
        try FileSystem.makeDirectories(directory)
    }

    /// Renames `directory` to a hidden sibling, syncs the parent, and deletes it.
    static func replace(_ directory: String) throws {
        let trimmed = directory.hasSuffix("/") && directory.count > 1 ? String(directory.dropLast()) : directory
        let url = URL(fileURLWithPath: trimmed)
        let parent = url.deletingLastPathComponent().path
        let aside = parent + "/." + url.lastPathComponent + ".replaced-\(getpid())"
        CheckpointStore.removeTree(aside)
        guard rename(trimmed, aside) == 0 else { throw FileError(path: trimmed, operation: "rename", errno: errno) }
        try CheckpointStore.syncDirectory(parent)
        CheckpointStore.removeTree(aside)
    }
}
