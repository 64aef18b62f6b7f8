import DaptCore
import Foundation

/// The run directory of `dapt pretrain`: checkpoints, `metrics.jsonl` and
/// `loss_curve.svg`. A fresh run never mixes its files with an older run's.
public enum RunDirectory {
    public static let metricsFile = "metrics.jsonl"
    public static let lossCurveFile = "loss_curve.svg"
    public static let rollbacksFile = "rollbacks.jsonl"

    /// True for the names a run writes (leftovers of interrupted saves included).
    static func isRunEntry(_ name: String) -> Bool {
        name.hasPrefix(CheckpointStore.prefix) || name.hasPrefix(".tmp-" + CheckpointStore.prefix)
            || name.hasPrefix(".old-" + CheckpointStore.prefix) || name == metricsFile || name == lossCurveFile || name == rollbacksFile
    }

    /// Throws unless a fresh run may start in `directory`: it holds no run,
    /// or `overwrite` and nothing but a run. Returns whether a run is there to
    /// replace. Reads only, so it can come before any other check.
    @discardableResult
    public static func checkFresh(_ directory: String, overwrite: Bool) throws -> Bool {
        let names = FileSystem.isDirectory(directory) ? try FileSystem.list(directory).sorted() : []
        let run = names.filter(isRunEntry)
        guard !run.isEmpty else { return false }
        guard overwrite else { throw TrainingError.runDirectoryInUse(directory: directory, entries: run) }
        let other = names.filter { !isRunEntry($0) }
        guard other.isEmpty else { throw TrainingError.runDirectoryHoldsOtherFiles(directory: directory, entries: other) }
        return true
    }

    /// Makes `directory` ready for a fresh run (see `checkFresh`): an
    /// existing run is removed as a unit (renamed aside in one step, then
    /// deleted) before anything new is written.
    public static func prepareFresh(_ directory: String, overwrite: Bool) throws {
        if try checkFresh(directory, overwrite: overwrite) { try replace(directory) }
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
