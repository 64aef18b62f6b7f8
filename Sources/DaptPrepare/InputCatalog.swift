#if canImport(Glibc)
import Glibc
#endif
import DaptCore

/// The input files in their one global order (config order; folders
/// recursively in name order), each placed at an offset of the concatenated
/// input. Ranks split that concatenation into equal byte ranges, so the
/// split is deterministic and concatenating rank outputs gives input order.
public struct InputCatalog: Equatable, Sendable {
    public enum Kind: String, Sendable { case jsonl, text }

    public struct File: Equatable, Sendable {
        public var path: String
        public var kind: Kind
        public var size: Int
        /// Where this file starts in the concatenated input.
        public var offset: Int
    }

    public var files: [File] = []
    /// Files in folders that are not inputs (not `.jsonl`, `.txt`, `.md`).
    public var ignored: [String] = []
    public var totalBytes: Int { files.last.map { $0.offset + $0.size } ?? 0 }

    public static func kind(of path: String) -> Kind? {
        let lower = path.lowercased()
        if lower.hasSuffix(".jsonl") { return .jsonl }
        if lower.hasSuffix(".txt") || lower.hasSuffix(".md") { return .text }
        return nil
    }

    public static func discover(_ inputs: [String]) throws -> InputCatalog {
        var catalog = InputCatalog()
        var offset = 0
        func add(_ path: String, _ kind: Kind) throws {
            let size = try FileSystem.size(path)
            catalog.files.append(File(path: path, kind: kind, size: size, offset: offset))
            offset += size
        }
        func walk(_ dir: String) throws {
            for name in try FileSystem.list(dir) where !name.hasPrefix(".") {
                let path = dir.hasSuffix("/") ? dir + name : dir + "/" + name
                if FileSystem.isDirectory(path) { try walk(path); continue }
                if let kind = kind(of: name) { try add(path, kind) } else { catalog.ignored.append(path) }
            }
        }
        for input in inputs {
            guard FileSystem.exists(input) else { throw PrepareError.missingInput(input) }
            if FileSystem.isDirectory(input) { try walk(input); continue }
            guard let kind = kind(of: input) else { throw PrepareError.unknownInputKind(input) }
            try add(input, kind)
        }
        return catalog
    }

    /// Rank `rank` of `size` owns the records whose first byte lies in this
    /// range of the concatenated input.
    public func byteRange(rank: Int, size: Int) -> Range<Int> {
        let total = totalBytes
        let lo = Int((Int64(total) * Int64(rank)) / Int64(size))
        let hi = Int((Int64(total) * Int64(rank + 1)) / Int64(size))
        return lo..<hi
    }

    /// The rank owning a record starting at `offset` (an empty last file
    /// belongs to the last rank).
    public func owner(ofOffset offset: Int, size: Int) -> Int {
        for r in 0..<size where byteRange(rank: r, size: size).contains(offset) { return r }
        return size - 1
    }
}

/// The part of one JSONL file a rank reads: whole lines starting in its range.
struct LineRegion {
    var start: Int
    var end: Int

    /// Line-aligned bounds of `range` (file offsets) within `p`: a line
    /// belongs to the range holding its first byte.
    static func aligned(_ range: Range<Int>, in p: UnsafeBufferPointer<UInt8>) -> LineRegion {
        func align(_ x: Int) -> Int {
            if x <= 0 { return 0 }
            if x >= p.count { return p.count }
            var i = x - 1
            while i < p.count && p[i] != 0x0A { i += 1 }
            return min(i + 1, p.count)
        }
        return LineRegion(start: align(range.lowerBound), end: align(range.upperBound))
    }

    func newlineCount(in p: UnsafeBufferPointer<UInt8>) -> Int {
        guard end > start else { return 0 }
        var n = 0
        var i = start
        while i < end {
            let remaining = end - i
            guard let hit = memchr(p.baseAddress! + i, 0x0A, remaining) else { break }
            n += 1
            i = UnsafeRawPointer(hit) - UnsafeRawPointer(p.baseAddress!) + 1
        }
        return n
    }
}
