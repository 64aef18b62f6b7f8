import DaptCore
import Foundation

/// Outputs written into a fresh folder beside the output directory, then
/// put in its place in one step: readers see the old run's files or the new
/// run's, never a mix.
struct OutputStaging {
    let output: String
    let staging: String

    init(output: String) throws {
        self.output = output
        staging = output.hasSuffix("/") ? String(output.dropLast()) + ".partial-\(getpid())" : output + ".partial-\(getpid())"
        try? FileManager.default.removeItem(atPath: staging)
        try FileSystem.makeDirectories(staging)
    }

    func path(_ name: String) -> String { staging + "/" + name }

    func publish() throws {
        let fm = FileManager.default
        let target = output.hasSuffix("/") ? String(output.dropLast()) : output
        if FileSystem.exists(target) {
            let old = target + ".old-\(getpid())"
            try fm.moveItem(atPath: target, toPath: old)
            try fm.moveItem(atPath: staging, toPath: target)
            try? fm.removeItem(atPath: old)
        } else {
            let parent = (target as NSString).deletingLastPathComponent
            if !parent.isEmpty { try FileSystem.makeDirectories(parent) }
            try fm.moveItem(atPath: staging, toPath: target)
        }
    }
}
