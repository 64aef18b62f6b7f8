#if canImport(Glibc)
import Glibc
#endif
import DaptCore

/// The inputs seen as one byte stream (files in the order given). Rank r of
/// N owns the lines whose first byte lies in [r·T/N, (r+1)·T/N) of the T
/// bytes, so ranks split the work without talking and rank order is input order.
public struct InputPlan: Sendable {
    public let paths: [String]
    public let sizes: [Int]
    public var totalBytes: Int { sizes.reduce(0, +) }

    public init(paths: [String]) throws {
        self.paths = paths
        sizes = try paths.map { try FileSystem.size($0) }
    }

    /// (file index, local start, local end) pieces of rank's byte range.
    public func pieces(rank: Int, size: Int) -> [(file: Int, start: Int, end: Int)] {
        let total = totalBytes
        let lo = Int((Double(rank) / Double(size) * Double(total)).rounded(.down))
        let hi = rank == size - 1 ? total : Int((Double(rank + 1) / Double(size) * Double(total)).rounded(.down))
        var out: [(Int, Int, Int)] = []
        var base = 0
        for (f, s) in sizes.enumerated() {
            let start = max(lo - base, 0), end = min(hi - base, s)
            if start < end { out.append((f, start, end)) }
            base += s
        }
        return out
    }
}

/// Reads the lines of `path` that start in [start, end): a line starts at 0
/// or right after a `\n`. Lines are passed without `\n` (and a trailing `\r`)
/// with their byte offset; the buffer is valid only during the call.
public func forEachLine(path: String, start: Int, end: Int,
                        _ body: (Int, UnsafeBufferPointer<UInt8>) throws -> Void) throws {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw FileError(path: path, operation: "open", errno: errno) }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    func readAt(_ offset: Int, into range: Range<Int>) throws -> Int {
        while true {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + range.lowerBound, range.count, off_t(offset)) }
            if n < 0 { if errno == EINTR { continue }; throw FileError(path: path, operation: "read", errno: errno) }
            return n
        }
    }
    // The first line start at or after `start`.
    var position = start
    if start > 0 {
        var probe = start - 1
        var found = false
        while !found {
            let n = try readAt(probe, into: 0..<buffer.count)
            if n == 0 { return }
            if let i = buffer[0..<n].firstIndex(of: 0x0A) { position = probe + i + 1; found = true } else { probe += n }
        }
    }
    var filled = 0          // bytes in buffer
    var bufferOffset = position  // file offset of buffer[0]
    var eof = false
    while true {
        if !eof && filled < buffer.count {
            let n = try readAt(bufferOffset + filled, into: filled..<buffer.count)
            if n == 0 { eof = true } else { filled += n }
        }
        var consumed = 0
        var finished = false
        try buffer.withUnsafeBufferPointer { all in
            var lineStart = 0
            while lineStart < filled {
                if bufferOffset + lineStart >= end { finished = true; return }
                guard let nl = UnsafeBufferPointer(rebasing: all[lineStart..<filled]).firstIndex(of: 0x0A) else {
                    if eof {
                        var e = filled
                        if e > lineStart && all[e - 1] == 0x0D { e -= 1 }
                        try body(bufferOffset + lineStart, UnsafeBufferPointer(rebasing: all[lineStart..<e]))
                        lineStart = filled
                        finished = true
                    }
                    break
                }
                let newline = lineStart + nl
                var e = newline
                if e > lineStart && all[e - 1] == 0x0D { e -= 1 }
                try body(bufferOffset + lineStart, UnsafeBufferPointer(rebasing: all[lineStart..<e]))
                lineStart = newline + 1
            }
            consumed = lineStart
        }
        if finished || (eof && consumed >= filled) { return }
        if consumed == 0 && filled == buffer.count {
            buffer += [UInt8](repeating: 0, count: buffer.count)   // a line longer than the buffer
            continue
        }
        if consumed > 0 {
            buffer.withUnsafeMutableBytes { raw in
                if filled > consumed { memmove(raw.baseAddress!, raw.baseAddress! + consumed, filled - consumed) }
            }
            filled -= consumed
            bufferOffset += consumed
        }
    }
}

/// Reads `length` bytes at `offset` of `path` (one record's line).
public func readBytes(path: String, offset: Int, length: Int) throws -> [UInt8] {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw FileError(path: path, operation: "open", errno: errno) }
    defer { close(fd) }
    var out = [UInt8](repeating: 0, count: length)
    var got = 0
    while got < length {
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, length - got, off_t(offset + got)) }
        if n < 0 { if errno == EINTR { continue }; throw FileError(path: path, operation: "read", errno: errno) }
        if n == 0 { throw FileError(path: path, operation: "read (file shrank)", errno: EIO) }
        got += n
    }
    return out
}

/// Writes one rank's region of a shared output file with buffered `pwrite`s.
final class RegionWriter {
    let path: String
    private var fd: Int32
    private var offset: Int
    private let limit: Int
    private var buffer: [UInt8] = []
    private(set) var written = 0

    init(path: String, offset: Int, length: Int) throws {
        self.path = path
        self.offset = offset
        self.limit = offset + length
        fd = open(path, O_WRONLY)
        guard fd >= 0 else { throw FileError(path: path, operation: "open for writing", errno: errno) }
        buffer.reserveCapacity(1 << 20)
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    func write(_ bytes: UnsafeBufferPointer<UInt8>) throws {
        buffer.append(contentsOf: bytes)
        if buffer.count >= 1 << 20 { try flush() }
    }

    func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBufferPointer { try write($0) } }

    func flush() throws {
        guard !buffer.isEmpty else { return }
        precondition(offset + buffer.count <= limit, "region overflow in \(path)")
        var done = 0
        while done < buffer.count {
            let n = buffer.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, $0.count - done, off_t(offset + done)) }
            if n < 0 { if errno == EINTR { continue }; throw FileError(path: path, operation: "write", errno: errno) }
            done += n
        }
        offset += buffer.count
        written += buffer.count
        buffer.removeAll(keepingCapacity: true)
    }

    /// Flushes and fsyncs; the region must be exactly filled.
    func close() throws {
        try flush()
        precondition(offset == limit, "region of \(path) not filled: \(offset) of \(limit)")
        if fsync(fd) != 0 { throw FileError(path: path, operation: "fsync", errno: errno) }
        Glibc.close(fd)
        fd = -1
    }
}

/// Creates (or truncates) `path` with `size` bytes, for ranks to fill.
func createSized(_ path: String, size: Int) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw FileError(path: path, operation: "create", errno: errno) }
    defer { close(fd) }
    if ftruncate(fd, off_t(size)) != 0 { throw FileError(path: path, operation: "ftruncate", errno: errno) }
}

// Little-endian packing of exchange entries.
extension Array where Element == UInt8 {
    @inline(__always) mutating func put<I: FixedWidthInteger>(_ v: I) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }
}

struct ByteCursor {
    let bytes: UnsafeRawBufferPointer
    var offset = 0
    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
    var atEnd: Bool { offset >= bytes.count }
    @inline(__always) mutating func get<I: FixedWidthInteger>(_: I.Type) -> I {
        let v = I(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: I.self))
        offset += MemoryLayout<I>.size
        return v
    }
    mutating func take(_ n: Int) -> UnsafeRawBufferPointer {
        let r = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
        offset += n
        return r
    }
}

/// Packs small entries per destination into exchange records of ~64 KiB.
final class PackedOutbox {
    let outbox: ExchangeOutboxLike
    private var buffers: [[UInt8]]
    private let limit = 64 << 10

    init(_ outbox: ExchangeOutboxLike, peers: Int) {
        self.outbox = outbox
        buffers = Array(repeating: [], count: peers)
    }

    func add(to peer: Int, _ fill: (inout [UInt8]) -> Void) throws {
        fill(&buffers[peer])
        if buffers[peer].count >= limit { try flush(peer) }
    }

    func flush(_ peer: Int) throws {
        guard !buffers[peer].isEmpty else { return }
        try outbox.appendRecord(buffers[peer], to: peer)
        buffers[peer].removeAll(keepingCapacity: true)
    }

    func flushAll() throws { for p in 0..<buffers.count { try flush(p) } }
}

protocol ExchangeOutboxLike { func appendRecord(_ record: [UInt8], to peer: Int) throws }

/// Re-reads records' lines at known (file, offset, length). Each input file is
/// opened once, on first use, and stays open; with `readAhead` a request that
/// misses the buffered window refills it with one `pread` of the window size,
/// so lines requested in ascending offset order are read in one sequential
/// pass (a few large reads), not one open and read per record. Without
/// `readAhead` (scattered requests) exactly the line is read.
final class LineFetcher {
    let paths: [String]
    private var descriptors: [Int32]
    private var window: [UInt8]
    private var windowFile = -1, windowStart = 0, windowFilled = 0
    /// Files opened, `pread` calls made and lines handed out, for tests.
    private(set) var opens = 0
    private(set) var reads = 0
    private(set) var lines = 0

    init(paths: [String], windowBytes: Int = 1 << 20) {
        self.paths = paths
        descriptors = Array(repeating: -1, count: paths.count)
        window = [UInt8](repeating: 0, count: windowBytes)
    }

    deinit { for fd in descriptors where fd >= 0 { close(fd) } }

    private func descriptor(_ file: Int) throws -> Int32 {
        if descriptors[file] < 0 {
            let fd = open(paths[file], O_RDONLY)
            guard fd >= 0 else { throw FileError(path: paths[file], operation: "open", errno: errno) }
            descriptors[file] = fd
            opens += 1
        }
        return descriptors[file]
    }

    /// Reads up to `count` bytes at `offset` into the window; at least `minimum`.
    private func fill(file: Int, offset: Int, count: Int, minimum: Int) throws {
        let fd = try descriptor(file)
        if window.count < count { window = [UInt8](repeating: 0, count: count) }
        windowFile = -1
        var got = 0
        while got < count {
            let n = window.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, count - got, off_t(offset + got)) }
            reads += 1
            if n < 0 { if errno == EINTR { continue }; throw FileError(path: paths[file], operation: "read", errno: errno) }
            if n == 0 { break }
            got += n
        }
        guard got >= minimum else { throw FileError(path: paths[file], operation: "read (file shrank)", errno: EIO) }
        windowFile = file; windowStart = offset; windowFilled = got
    }

    /// Calls `body` with the line's bytes (valid only inside `body`).
    func withLine<R>(file: Int, offset: Int, length: Int, readAhead: Bool = true,
                     _ body: (UnsafeBufferPointer<UInt8>) throws -> R) throws -> R {
        let inWindow = file == windowFile && offset >= windowStart && offset + length <= windowStart + windowFilled
        if !inWindow {
            try fill(file: file, offset: offset, count: readAhead ? max(window.count, length) : length, minimum: length)
        }
        lines += 1
        let start = offset - windowStart
        return try window.withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[start..<(start + length)])) }
    }
}
