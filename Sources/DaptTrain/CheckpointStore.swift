import DaptCore
import Foundation

/// One file of a checkpoint as recorded in its manifest.
public struct CheckpointFileRecord: Codable, Equatable, Sendable {
    public var name: String
    public var bytes: Int
    /// xxh64 (seed 0) of the file's bytes, 16 hex digits.
    public var xxh64: String
}

/// `manifest.json` of a checkpoint directory.
public struct CheckpointManifest: Codable, Equatable, Sendable {
    public static let formatName = "dapt-checkpoint-1"
    public var format: String = formatName
    public var step: Int
    public var files: [CheckpointFileRecord]
}

/// Checkpoint directories `checkpoint-NNNNNNNN` under one root, written
/// atomically: every file goes into a hidden temporary directory, is fsynced
/// and listed with its size and checksum in `manifest.json`; then the
/// directory is renamed into place and the root fsynced. A crash at any
/// point leaves earlier checkpoints untouched and no half-written
/// `checkpoint-*` directory.
public enum CheckpointStore {
    public static let manifestName = "manifest.json"
    public static let prefix = "checkpoint-"

    public static func directoryName(step: Int) -> String {
        let digits = String(step)
        return prefix + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    /// Writes a checkpoint for `step`. `writeFiles` writes the named files into
    /// the directory it is given and returns their names. Keeps the newest
    /// `keepLast` checkpoints (0 keeps all). Returns the final directory.
    @discardableResult
    public static func save(root: String, step: Int, keepLast: Int,
                            writeFiles: (String) throws -> [String]) throws -> String {
        try FileSystem.makeDirectories(root)
        let finalPath = root + "/" + directoryName(step: step)
        let temporary = root + "/.tmp-" + directoryName(step: step) + "-\(getpid())"
        removeTree(temporary)
        do {
            try FileSystem.makeDirectories(temporary)
            let names = try writeFiles(temporary)
            var records: [CheckpointFileRecord] = []
            for name in names.sorted() {
                let path = temporary + "/" + name
                let (size, hash) = try checksum(path: path, sync: true)
                records.append(CheckpointFileRecord(name: name, bytes: size, xxh64: hex64(hash)))
            }
            let manifest = CheckpointManifest(step: step, files: records)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let writer = try FileWriter(path: temporary + "/" + manifestName, atomic: true)
            try writer.write(Array(encoder.encode(manifest)))
            try writer.commit()
            try syncDirectory(temporary)
        } catch {
            // A full disk: the partial copy goes (it holds the space), the earlier checkpoints were never touched.
            removeTree(temporary)
            throw TrainingError.checkpointWriteFailed(path: finalPath, reason: "\(error)", previous: try? latest(root: root))
        }
        // Re-saving a step: move the old one aside first (rename cannot replace a non-empty directory).
        if FileSystem.exists(finalPath) { try retire(root: root, finalPath) }
        guard rename(temporary, finalPath) == 0 else { throw FileError(path: finalPath, operation: "rename", errno: errno) }
        try syncDirectory(root)
        if keepLast > 0 {
            let all = try list(root: root)
            for old in all.dropLast(keepLast) { try retire(root: root, old.path) }
        }
        removeStaleTemporaries(root: root)
        return finalPath
    }

    /// Removes a checkpoint so that no half-deleted `checkpoint-*` can be
    /// seen: one atomic rename to a hidden name, then the deletion.
    static func retire(root: String, _ path: String) throws {
        let name = String(path.split(separator: "/").last ?? "")
        let aside = root + "/.old-" + name + "-\(getpid())"
        guard rename(path, aside) == 0 else { throw FileError(path: path, operation: "rename", errno: errno) }
        try syncDirectory(root)
        removeTree(aside)
    }

    /// Checkpoint directories under `root`, oldest first (by step).
    public static func list(root: String) throws -> [(step: Int, path: String)] {
        guard FileSystem.isDirectory(root) else { return [] }
        return try FileSystem.list(root).compactMap { name -> (Int, String)? in
            guard name.hasPrefix(prefix), let step = Int(name.dropFirst(prefix.count)) else { return nil }
            return (step, root + "/" + name)
        }.sorted { $0.0 < $1.0 }
    }

    /// The newest checkpoint under `root`.
    public static func latest(root: String) throws -> String? { try list(root: root).last?.path }

    /// The newest checkpoint under `root` that passes `check` (by default:
    /// verifies); each newer one that does not is passed to `skipped` with
    /// its error (naming the file).
    public static func newestIntact(root: String, check: (String) throws -> Void = { _ = try verify(directory: $0) },
                                    skipped: (String, Error) -> Void) throws -> String? {
        for candidate in try list(root: root).reversed() {
            do {
                try check(candidate.path)
                return candidate.path
            } catch {
                skipped(candidate.path, error)
            }
        }
        return nil
    }

    /// Reads the manifest and checks every listed file's size and checksum.
    public static func verify(directory: String) throws -> CheckpointManifest {
        let manifestPath = directory + "/" + manifestName
        guard FileSystem.exists(manifestPath) else {
            throw TrainingError.checkpointMissingFile(directory: directory, file: manifestName)
        }
        let manifest: CheckpointManifest
        do {
            manifest = try JSONDecoder().decode(CheckpointManifest.self, from: Data(FileSystem.readAll(manifestPath)))
        } catch {
            throw TrainingError.checkpointBadManifest(path: manifestPath, reason: "\(error)")
        }
        guard manifest.format == CheckpointManifest.formatName else {
            throw TrainingError.checkpointBadManifest(path: manifestPath, reason: "format \"\(manifest.format)\", expected \"\(CheckpointManifest.formatName)\"")
        }
        for record in manifest.files {
            let path = directory + "/" + record.name
            guard FileSystem.exists(path) else { throw TrainingError.checkpointMissingFile(directory: directory, file: record.name) }
            let size = try FileSystem.size(path)
            guard size == record.bytes else { throw TrainingError.checkpointSizeMismatch(path: path, expected: record.bytes, found: size) }
            let (_, hash) = try checksum(path: path, sync: false)
            guard hex64(hash) == record.xxh64 else {
                throw TrainingError.checkpointChecksumMismatch(path: path, expected: record.xxh64, found: hex64(hash))
            }
        }
        return manifest
    }

    static func hex64(_ x: UInt64) -> String {
        let s = String(x, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    /// Size and xxh64 of a file (streamed); optionally fsyncs it.
    static func checksum(path: String, sync: Bool) throws -> (Int, UInt64) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FileError(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        if sync, fsync(fd) != 0 { throw FileError(path: path, operation: "fsync", errno: errno) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileError(path: path, operation: "stat", errno: errno) }
        let size = Int(st.st_size)
        if size == 0 { return (0, StableHash.xxh64([UInt8]())) }
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != MAP_FAILED else {
            throw FileError(path: path, operation: "mmap", errno: errno)
        }
        defer { munmap(map, size) }
        return (size, StableHash.xxh64(UnsafeRawBufferPointer(start: map, count: size)))
    }

    static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw FileError(path: path, operation: "open directory", errno: errno) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw FileError(path: path, operation: "fsync directory", errno: errno) }
    }

    /// Leftovers of writes that were killed part-way (`.tmp-*`, `.old-*`).
    static func removeStaleTemporaries(root: String) {
        guard let names = try? FileSystem.list(root) else { return }
        for name in names where name.hasPrefix(".tmp-" + prefix) || name.hasPrefix(".old-" + prefix) {
            removeTree(root + "/" + name)
        }
    }

    /// Removes a directory tree (files and subdirectories).
    public static func removeTree(_ path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in (try? FileSystem.list(path)) ?? [] { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }
}
