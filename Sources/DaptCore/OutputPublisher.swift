#if canImport(Glibc)
import Glibc
#endif

/// A stage's output folder that is not a complete published output.
public enum PublishError: Error, CustomStringConvertible, Equatable {
    /// The folder exists, is not empty and was not published by dapt: replacing it could lose files.
    case foreignFolder(String)
    /// The folder has no completion marker: a run wrote it but did not finish, or it predates markers.
    case incomplete(String)

    public var description: String {
        switch self {
        case .foreignFolder(let d):
            return "\(d): exists, is not empty and is not a dapt output folder (no \(OutputPublisher.marker)); remove it or choose another output folder"
        case .incomplete(let d):
            return "\(d): not a complete dapt output (no \(OutputPublisher.marker)); rerun the stage that writes it"
        }
    }
}

/// Publishes a stage's output folder as a unit, so a reader sees the earlier
/// complete output or the new one, never a mix of two runs.
///
/// Outputs are written into a hidden staging folder beside the output folder
/// (`.NAME.staging`). When every file is written and synced, `publish` writes
/// the completion marker last, syncs the folder, and swaps it with the output
/// folder in one `renameat2(RENAME_EXCHANGE)` (where the file system lacks
/// it: the old folder is renamed aside, then the new one in; a run killed
/// between the two leaves the old one aside, and the next run puts it back
/// before starting). The old folder is then removed. A run killed before
/// `publish` leaves the earlier output as it was.
///
/// The output folder is replaced as a whole, so it should hold only the
/// stage's outputs; a non-empty folder without a marker is refused.
public struct OutputPublisher: Sendable {
    /// Written last into a complete output folder; readers check for it.
    public static let marker = ".dapt-complete"

    public let directory: String
    public let staging: String
    let aside: String

    public init(directory: String) {
        var dir = directory
        while dir.count > 1 && dir.hasSuffix("/") { dir.removeLast() }
        self.directory = dir
        let slash = dir.lastIndex(of: "/")
        let parent = slash.map { dir[..<$0].isEmpty ? "/" : String(dir[..<$0]) } ?? "."
        let name = slash.map { String(dir[dir.index(after: $0)...]) } ?? dir
        staging = (parent == "/" ? "" : parent) + "/." + name + ".staging"
        aside = (parent == "/" ? "" : parent) + "/." + name + ".old"
    }

    /// Path of `name` inside the staging folder, where outputs are written.
    public func path(_ name: String) -> String { staging + "/" + name }

    /// Creates an empty staging folder (on one process: rank 0), after
    /// checking that the output folder may be replaced and clearing what a
    /// killed run left.
    public func begin() throws {
        if !FileSystem.exists(directory) && FileSystem.isDirectory(aside) { try Self.rename(aside, directory) }
        if try FileSystem.isDirectory(directory) && !Self.isComplete(directory) && !FileSystem.list(directory).isEmpty {
            throw PublishError.foreignFolder(directory)
        }
        try FileSystem.removeTree(staging)
        try FileSystem.removeTree(aside)
        try FileSystem.makeDirectories(staging)
    }

    /// Writes the marker (listing `stage` and the files), syncs the staging
    /// folder and swaps it in (on one process, after every writer committed).
    public func publish(stage: String) throws {
        let files = try FileSystem.list(staging)
        let marker = try FileWriter(path: path(Self.marker))
        try marker.write("{\"stage\": \(JSONWriter.quoted(stage)), \"files\": [" + files.map { JSONWriter.quoted($0) }.joined(separator: ", ") + "]}\n")
        try marker.commit()
        try Self.syncDirectory(staging)
        if !FileSystem.exists(directory) {
            try Self.rename(staging, directory)
        } else if try !Self.exchange(staging, directory) {
            try Self.rename(directory, aside)
            try Self.rename(staging, directory)
        }
        try Self.syncDirectory(parent)
        try FileSystem.removeTree(staging)
        try FileSystem.removeTree(aside)
    }

    /// Removes the staging folder after a failed run (best effort).
    public func discard() { try? FileSystem.removeTree(staging) }

    var parent: String {
        guard let slash = directory.lastIndex(of: "/") else { return "." }
        return directory[..<slash].isEmpty ? "/" : String(directory[..<slash])
    }

    /// True when `directory` was published complete.
    public static func isComplete(_ directory: String) -> Bool { FileSystem.exists(directory + "/" + marker) }

    /// For readers of a stage's output: fails unless `directory` was published complete.
    public static func requireComplete(_ directory: String) throws {
        guard isComplete(directory) else { throw PublishError.incomplete(directory) }
    }

    static func rename(_ from: String, _ to: String) throws {
        if Glibc.rename(from, to) != 0 { throw FileError(path: to, operation: "rename from \(from)", errno: errno) }
    }

    private typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32

    /// Swaps two paths atomically; false when the system or file system cannot.
    static func exchange(_ a: String, _ b: String) throws -> Bool {
        // Glibc's headers do not show renameat2 to Swift; it is looked up by name.
        guard let symbol = dlsym(nil, "renameat2") else { return false }
        let renameat2 = unsafeBitCast(symbol, to: RenameAt2.self)
        let renameExchange: UInt32 = 2
        if renameat2(AT_FDCWD, a, AT_FDCWD, b, renameExchange) == 0 { return true }
        if errno == EINVAL || errno == ENOSYS || errno == ENOTSUP { return false }
        throw FileError(path: b, operation: "exchange with \(a)", errno: errno)
    }

    static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw FileError(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        if fsync(fd) != 0 && errno != EINVAL { throw FileError(path: path, operation: "fsync", errno: errno) }
    }
}

extension FileSystem {
    /// `rm -rf`: removes `path` and, for a folder, everything in it (symbolic
    /// links are removed, not followed). A missing path is not an error.
    public static func removeTree(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            if errno == ENOENT { return }
            throw FileError(path: path, operation: "stat", errno: errno)
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in try list(path) { try removeTree(path + "/" + name) }
            if rmdir(path) != 0 { throw FileError(path: path, operation: "rmdir", errno: errno) }
        } else if unlink(path) != 0 && errno != ENOENT {
            throw FileError(path: path, operation: "unlink", errno: errno)
        }
    }
}
