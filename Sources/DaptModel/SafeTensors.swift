import DaptCore
import Foundation

/// A safetensors file problem, naming the file and the tensor.
public enum SafeTensorsError: Error, CustomStringConvertible, Equatable {
    case badHeader(path: String, reason: String)
    case missingTensor(path: String, name: String)
    case unexpectedTensor(path: String, name: String)
    case shapeMismatch(path: String, name: String, expected: [Int], found: [Int])
    case unsupportedDType(path: String, name: String, dtype: String)
    case badDataOffsets(path: String, name: String, reason: String)

    public var description: String {
        switch self {
        case let .badHeader(path, reason): return "\(path): not a valid safetensors file: \(reason)"
        case let .missingTensor(path, name): return "\(path): \(name): tensor is missing"
        case let .unexpectedTensor(path, name): return "\(path): \(name): unexpected tensor (not part of this model)"
        case let .shapeMismatch(path, name, expected, found):
            return "\(path): \(name): shape \(found) does not match the config's \(expected)"
        case let .unsupportedDType(path, name, dtype): return "\(path): \(name): dtype \(dtype) is not supported (F32, F16, BF16, F64)"
        case let .badDataOffsets(path, name, reason): return "\(path): \(name): bad data_offsets: \(reason)"
        }
    }
}

/// Element types dapt reads (all converted to Float) and writes.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
    public var byteCount: Int {
        switch self { case .f32: 4; case .f16, .bf16: 2; case .f64: 8 }
    }
}

/// A safetensors file read into memory: an 8-byte little-endian header
/// length, a JSON header (`name → {dtype, shape, data_offsets}`), the data.
public struct SafeTensorsFile: Sendable {
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        /// Byte range in the data section.
        public var dataRange: Range<Int>
        public var count: Int { shape.reduce(1, *) }
    }

    public let path: String
    /// Entries sorted by name.
    public let entries: [Entry]
    public let metadata: [String: String]
    private let storage: Storage
    private let dataStart: Int

    /// The file's bytes: memory-mapped (pages are read as tensors are, so a
    /// reader of a few tensors touches only those), or given in memory.
    private enum Storage: Sendable {
        case bytes([UInt8])
        case mapped(MappedFile)

        func withRawBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
            switch self {
            case let .bytes(b): return try b.withUnsafeBytes(body)
            case let .mapped(m): return try m.withRawBytes(body)
            }
        }
    }

    /// Maps the file at `path` (it is never read whole).
    public init(path: String) throws {
        try self.init(storage: .mapped(MappedFile(path: path)), path: path)
    }

    public init(bytes: [UInt8], path: String) throws {
        try self.init(storage: .bytes(bytes), path: path)
    }

    private init(storage: Storage, path: String) throws {
        self.path = path
        self.storage = storage
        let (headerLength, fileSize) = storage.withRawBytes { raw -> (Int, Int) in
            var length = 0
            if raw.count >= 8 { for i in 0..<8 { length |= Int(raw[i]) << (8 * i) } }
            return (length, raw.count)
        }
        guard fileSize >= 8 else { throw SafeTensorsError.badHeader(path: path, reason: "file has \(fileSize) bytes, fewer than the 8-byte header length") }
        guard headerLength >= 2, headerLength <= fileSize - 8 else {
            throw SafeTensorsError.badHeader(path: path, reason: "header length \(headerLength) exceeds the file size \(fileSize)")
        }
        dataStart = 8 + headerLength
        let header: JSONValue
        let headerEnd = dataStart
        do {
            header = try storage.withRawBytes { raw throws(JSONSyntaxError) in
                try JSONValue.parse(UnsafeBufferPointer(rebasing: raw.bindMemory(to: UInt8.self)[8..<headerEnd]))
            }
        } catch {
            throw SafeTensorsError.badHeader(path: path, reason: "header is not JSON: \(error)")
        }
        guard let members = header.members else { throw SafeTensorsError.badHeader(path: path, reason: "header is not a JSON object") }
        var entries: [Entry] = []
        var metadata: [String: String] = [:]
        let dataSize = fileSize - dataStart
        for (name, value) in members {
            if name == "__metadata__" {
                for (k, v) in value.members ?? [] { metadata[k] = v.string ?? v.text() }
                continue
            }
            func ints(_ v: JSONValue?) -> [Int]? {
                guard let items = v?.array else { return nil }
                let values = items.compactMap(\.int)
                return values.count == items.count ? values : nil
            }
            guard let dtype = value["dtype"]?.string, let shape = ints(value["shape"]),
                  let offsets = ints(value["data_offsets"]), offsets.count == 2 else {
                throw SafeTensorsError.badHeader(path: path, reason: "\(name): needs dtype, shape and data_offsets")
            }
            guard offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= dataSize else {
                throw SafeTensorsError.badDataOffsets(path: path, name: name, reason: "\(offsets) outside the \(dataSize)-byte data section")
            }
            let entry = Entry(name: name, dtype: dtype, shape: shape, dataRange: offsets[0]..<offsets[1])
            if let t = SafeTensorsDType(rawValue: dtype), entry.count * t.byteCount != entry.dataRange.count {
                throw SafeTensorsError.badDataOffsets(path: path, name: name,
                    reason: "\(entry.dataRange.count) bytes for \(entry.count) \(dtype) elements")
            }
            entries.append(entry)
        }
        self.entries = entries.sorted { $0.name < $1.name }
        self.metadata = metadata
    }

    public func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }

    /// Converts tensor `name` to Float into `destination` (which must hold
    /// exactly its elements), checking its shape when `expectedShape` is given.
    public func read(_ name: String, expectedShape: [Int]? = nil, into destination: UnsafeMutableBufferPointer<Float>) throws {
        let (e, dtype) = try checkedEntry(name, expectedShape: expectedShape)
        precondition(destination.count == e.count, "\(name): destination holds \(destination.count), tensor has \(e.count)")
        convert(e, dtype, from: 0, count: e.count, into: destination)
    }

    /// Reads the tensor named like `slice` into its buffer: the whole
    /// tensor, or the slice's part of it when split among tensor ranks.
    public func read(part slice: ParameterSlice, name: String? = nil, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try read(name ?? slice.name, shape: slice.fullShape, part: slice.split, elements: 0..<slice.count, into: destination)
    }

    /// Elements `elements` (row-major) of tensor `name` of shape `shape`, or
    /// of its part `part` when split among tensor ranks, into `destination`
    /// (`elements.count` values). Only those elements are read from the file.
    public func read(_ name: String, shape: [Int], part: TensorSplit?, elements: Range<Int>,
                     into destination: UnsafeMutableBufferPointer<Float>) throws {
        let (e, dtype) = try checkedEntry(name, expectedShape: shape)
        precondition(destination.count == elements.count, "\(name): destination holds \(destination.count) of \(elements.count) elements")
        guard let part else {
            return convert(e, dtype, from: elements.lowerBound, count: elements.count, into: destination)
        }
        part.forEachRun(elements) { wholeStart, partStart, count in
            let at = partStart - elements.lowerBound
            convert(e, dtype, from: wholeStart, count: count, into: UnsafeMutableBufferPointer(rebasing: destination[at..<(at + count)]))
        }
    }

    private func checkedEntry(_ name: String, expectedShape: [Int]?) throws -> (Entry, SafeTensorsDType) {
        guard let e = entry(name) else { throw SafeTensorsError.missingTensor(path: path, name: name) }
        if let expectedShape, expectedShape != e.shape {
            throw SafeTensorsError.shapeMismatch(path: path, name: name, expected: expectedShape, found: e.shape)
        }
        guard let dtype = SafeTensorsDType(rawValue: e.dtype) else {
            throw SafeTensorsError.unsupportedDType(path: path, name: name, dtype: e.dtype)
        }
        return (e, dtype)
    }

    /// Elements `first ..< first + count` of entry `e` as Float.
    private func convert(_ e: Entry, _ dtype: SafeTensorsDType, from first: Int, count n: Int, into destination: UnsafeMutableBufferPointer<Float>) {
        storage.withRawBytes { raw in
            let src = raw.baseAddress! + dataStart + e.dataRange.lowerBound + first * dtype.byteCount
            switch dtype {
            case .f32:
                for i in 0..<n { destination[i] = src.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
            case .f64:
                for i in 0..<n { destination[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
            case .f16:
                for i in 0..<n { destination[i] = Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            case .bf16:
                for i in 0..<n { destination[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) }
            }
        }
    }

    public func floats(_ name: String, expectedShape: [Int]? = nil) throws -> [Float] {
        guard let e = entry(name) else { throw SafeTensorsError.missingTensor(path: path, name: name) }
        var out = [Float](repeating: 0, count: e.count)
        try out.withUnsafeMutableBufferPointer { try read(name, expectedShape: expectedShape, into: $0) }
        return out
    }
}

public enum SafeTensors {
    /// One tensor to write: its name, shape and Float values.
    public struct Tensor {
        public var name: String
        public var shape: [Int]
        public var values: UnsafeBufferPointer<Float>
        public init(name: String, shape: [Int], values: UnsafeBufferPointer<Float>) {
            self.name = name; self.shape = shape; self.values = values
        }
    }

    /// Writes `tensors` (in the given order) atomically: temporary file,
    /// fsync, rename. Names must be unique.
    public static func write(path: String, tensors: [Tensor], dtype: SafeTensorsDType = .f32,
                             metadata: [String: String] = ["format": "pt"]) throws {
        let writer = try SafeTensorsWriter(path: path, tensors: tensors.map { ($0.name, $0.shape) }, dtype: dtype, metadata: metadata)
        for t in tensors { try writer.append(t.values) }
        try writer.commit()
    }
}

/// A safetensors file written tensor by tensor: the header is written from
/// the names and shapes alone, then each tensor's values in header order,
/// so the writer never needs more than one tensor in memory. Atomic:
/// temporary file, fsync, rename on `commit`; dropped uncommitted, nothing
/// appears at `path`.
public final class SafeTensorsWriter {
    public let path: String
    public let dtype: SafeTensorsDType
    private let shapes: [(name: String, shape: [Int])]
    private var next = 0
    private let writer: FileWriter
    private static let chunk = 1 << 16
    private var staging = [UInt8](repeating: 0, count: chunk * 4)
    private var halves = [UInt16](repeating: 0, count: chunk)

    public init(path: String, tensors: [(name: String, shape: [Int])], dtype: SafeTensorsDType = .f32,
                metadata: [String: String] = ["format": "pt"]) throws {
        precondition(dtype != .f64, "writing F64 is not supported")
        self.path = path
        self.dtype = dtype
        shapes = tensors
        var members: [(String, JSONValue)] = [("__metadata__", .object(metadata.keys.sorted().map { ($0, .string(metadata[$0]!)) }))]
        var offset = 0
        var seen = Set<String>()
        for t in tensors {
            precondition(seen.insert(t.name).inserted, "duplicate tensor name \(t.name)")
            let size = t.shape.reduce(1, *) * dtype.byteCount
            members.append((t.name, .object([("dtype", .string(dtype.rawValue)), ("shape", .array(t.shape.map { .integer($0) })),
                                             ("data_offsets", .array([.integer(offset), .integer(offset + size)]))])))
            offset += size
        }
        var header = JSONValue.object(members).text()
        // Pad with spaces so the data section starts 8-byte aligned.
        while (header.utf8.count % 8) != 0 { header += " " }
        writer = try FileWriter(path: path, atomic: true)
        var lengthBytes = [UInt8](repeating: 0, count: 8)
        let headerLength = header.utf8.count
        for i in 0..<8 { lengthBytes[i] = UInt8((headerLength >> (8 * i)) & 0xFF) }
        try writer.write(lengthBytes)
        try writer.write(header)
    }

    /// The name and shape of the tensor `append` expects next (nil when all are written).
    public var expected: (name: String, shape: [Int])? { next < shapes.count ? shapes[next] : nil }

    /// Writes the values of the next tensor of the header.
    public func append(_ values: UnsafeBufferPointer<Float>) throws {
        precondition(next < shapes.count, "\(path): more tensors than the header lists")
        let t = shapes[next]
        precondition(t.shape.reduce(1, *) == values.count, "\(t.name): \(values.count) values for shape \(t.shape)")
        next += 1
        let chunk = Self.chunk, dtype = dtype
        var start = 0
        while start < values.count {
            let n = min(chunk, values.count - start)
            let part = UnsafeBufferPointer(rebasing: values[start..<(start + n)])
            // fp16/bf16 go through the project's one rounding (Precision.swift).
            halves.withUnsafeMutableBufferPointer { h in
                if dtype == .f16 { convertToFloat16Bits(part, into: h) }
                if dtype == .bf16 { convertToBFloat16Bits(part, into: h) }
            }
            let halves = halves
            staging.withUnsafeMutableBytes { raw in
                switch dtype {
                case .f32: for i in 0..<n { raw.storeBytes(of: part[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
                case .f16, .bf16: for i in 0..<n { raw.storeBytes(of: halves[i].littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
                case .f64: break
                }
            }
            try staging.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<(n * dtype.byteCount)])) }
            start += n
        }
    }

    /// Publishes the file once every tensor of the header is written.
    public func commit() throws {
        precondition(next == shapes.count, "\(path): \(shapes.count - next) tensors of the header not written")
        try writer.commit()
    }
}

extension ParameterBuffer {
    /// Writes every tensor of the layout under its Hugging Face name (a tied
    /// LM head is not written, as transformers does).
    public func saveSafeTensors(path: String, dtype: SafeTensorsDType = .f32) throws {
        precondition(!layout.isSplit, "a tensor-parallel part is saved through gatherWhole, as whole tensors")
        precondition(!layout.stage.isPartial, "a pipeline stage's tensors are saved gathered with the other stages'")
        try withBuffer { buffer in
            let tensors = layout.slices.map {
                SafeTensors.Tensor(name: $0.name, shape: $0.shape, values: UnsafeBufferPointer(rebasing: buffer[$0.range]))
            }
            try SafeTensors.write(path: path, tensors: tensors, dtype: dtype)
        }
    }

    /// Fills the buffer from one or more safetensors files (a sharded
    /// checkpoint is several). Every tensor of the layout must be present with
    /// its shape; tensors the model does not have are an error, except
    /// `lm_head.weight` of a tied model and RoPE buffers.
    public func loadSafeTensors(paths: [String]) throws {
        let files = try paths.map { try SafeTensorsFile(path: $0) }
        var owner: [String: Int] = [:]
        for (i, f) in files.enumerated() {
            for e in f.entries {
                if layout.slice(named: e.name) == nil {
                    let tiedHead = e.name == "lm_head.weight" && layout.lmHead.map { $0.name != "lm_head.weight" } ?? false
                    // A pipeline stage reads its own tensors; the other stages read the rest.
                    if tiedHead || e.name.hasSuffix("rotary_emb.inv_freq") || layout.stage.isPartial { continue }
                    throw SafeTensorsError.unexpectedTensor(path: f.path, name: e.name)
                }
                owner[e.name] = i
            }
        }
        for s in layout.slices {
            guard let i = owner[s.name] else {
                throw SafeTensorsError.missingTensor(path: paths.joined(separator: ", "), name: s.name)
            }
            try withSlice(s) { try files[i].read(part: s, into: $0) }
        }
    }

    /// Loads `model.safetensors` or the shards listed in
    /// `model.safetensors.index.json` from a Hugging Face model directory.
    public func loadSafeTensors(directory: String) throws {
        let single = directory + "/model.safetensors"
        if FileSystem.exists(single) { try loadSafeTensors(paths: [single]); return }
        let indexPath = directory + "/model.safetensors.index.json"
        guard FileSystem.exists(indexPath) else {
            throw SafeTensorsError.badHeader(path: directory, reason: "no model.safetensors or model.safetensors.index.json")
        }
        let index: JSONValue
        do { index = try JSONValue.parse(FileSystem.readAll(indexPath)) } catch let e as JSONSyntaxError {
            throw SafeTensorsError.badHeader(path: indexPath, reason: e.description)
        }
        guard let map = index["weight_map"]?.members, map.allSatisfy({ $0.1.string != nil }) else {
            throw SafeTensorsError.badHeader(path: indexPath, reason: "no weight_map object of file names")
        }
        try loadSafeTensors(paths: Set(map.compactMap { $0.1.string }).sorted().map { directory + "/" + $0 })
    }
}
