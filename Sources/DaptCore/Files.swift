#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An I/O failure naming the file and the system's reason.
public struct FileError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var operation: String
    public var errno: Int32
    public init(path: String, operation: String, errno: Int32) {
        self.path = path; self.operation = operation; self.errno = errno
    }
    public var description: String {
        "\(path): \(operation) failed: \(String(cString: strerror(errno)))"
    }
}

/// Reads a file line by line in large chunks, handing each line (without its
/// `\n`, and without a trailing `\r`) to a closure with its 1-based number.
/// The buffer passed to the closure is only valid during the call.
public struct LineReader {
    public let path: String
    public var chunkSize: Int

    public init(path: String, chunkSize: Int = 1 << 20) {
        self.path = path; self.chunkSize = chunkSize
    }

    /// Calls `body(lineNumber, bytes)` for every line; `body` returns false to stop.
    public func forEachLine(_ body: (Int, UnsafeBufferPointer<UInt8>) throws -> Bool) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FileError(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: chunkSize)
        var filled = 0
        var lineNumber = 0
        var eof = false
        while !eof {
            if filled == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }
            let got = buffer.withUnsafeMutableBytes { raw in
                read(fd, raw.baseAddress! + filled, raw.count - filled)
            }
            if got < 0 {
                if errno == EINTR { continue }
                throw FileError(path: path, operation: "read", errno: errno)
            }
            if got == 0 { eof = true } else { filled += got }
            var stop = false
            let consumed: Int = try buffer.withUnsafeBufferPointer { all in
                var start = 0
                var i = 0
                while i < filled {
                    if all[i] == 0x0A {
                        lineNumber += 1
                        var end = i
                        if end > start && all[end - 1] == 0x0D { end -= 1 }
                        if try !body(lineNumber, UnsafeBufferPointer(rebasing: all[start..<end])) { stop = true; return i + 1 }
                        start = i + 1
                    }
                    i += 1
                }
                if eof && start < filled {
                    lineNumber += 1
                    var end = filled
                    if all[end - 1] == 0x0D { end -= 1 }
                    if try !body(lineNumber, UnsafeBufferPointer(rebasing: all[start..<end])) { stop = true }
                    return filled
                }
                return start
            }
            if stop { return }
            if consumed > 0 {
                buffer.withUnsafeMutableBytes { raw in
                    if filled > consumed { memmove(raw.baseAddress!, raw.baseAddress! + consumed, filled - consumed) }
                }
                filled -= consumed
            }
        }
    }
}

/// A buffered file writer. Writes go to `path` directly, or to a temporary
/// sibling that `commit()` fsyncs and renames into place (atomic outputs).
public final class FileWriter {
    public let path: String
    private let writePath: String
    private let atomic: Bool
    private var fd: Int32
    private var buffer: [UInt8] = []
    private let capacity: Int
    public private(set) var bytesWritten: Int = 0

    public init(path: String, atomic: Bool = false, bufferSize: Int = 1 << 20) throws {
        self.path = path
        self.atomic = atomic
        self.writePath = atomic ? path + ".tmp-\(getpid())" : path
        self.capacity = bufferSize
        buffer.reserveCapacity(bufferSize)
        fd = open(writePath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw FileError(path: writePath, operation: "open for writing", errno: errno) }
    }

    deinit {
        if fd >= 0 {
            close(fd)
            if atomic { unlink(writePath) }
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        if buffer.count + bytes.count > capacity { try flush() }
        if bytes.count >= capacity { try writeAll(bytes); return }
        buffer.append(contentsOf: bytes)
    }

    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    public func write(_ string: String) throws {
        var s = string
        try s.withUTF8 { try write(UnsafeRawBufferPointer($0)) }
    }

    public func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(path: writePath, operation: "write", errno: errno)
            }
            offset += n
        }
        bytesWritten += bytes.count
    }

    /// Flushes, syncs and closes; an atomic writer then renames into place.
    public func commit() throws {
        try flush()
        if fsync(fd) != 0 { throw FileError(path: writePath, operation: "fsync", errno: errno) }
        if close(fd) != 0 { fd = -1; throw FileError(path: writePath, operation: "close", errno: errno) }
        fd = -1
        if atomic, rename(writePath, path) != 0 {
            throw FileError(path: path, operation: "rename", errno: errno)
        }
    }
}

public enum FileSystem {
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// `mkdir -p`.
    public static func makeDirectories(_ path: String) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw FileError(path: current, operation: "mkdir", errno: errno)
            }
        }
    }

    public static func readAll(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FileError(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        var out = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw FileError(path: path, operation: "read", errno: errno) }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        return out
    }

    public static func readText(_ path: String) throws -> String {
        String(decoding: try readAll(path), as: UTF8.self)
    }

    /// Entries of a directory, sorted by name (so every rank sees one order).
    public static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw FileError(path: path, operation: "opendir", errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public static func remove(_ path: String) { unlink(path) }

    public static func size(_ path: String) throws -> Int {
        var st = stat()
        guard stat(path, &st) == 0 else { throw FileError(path: path, operation: "stat", errno: errno) }
        return Int(st.st_size)
    }
}
