import DaptCluster
import DaptCore

/// Encodes JSONL corpora into token shards across ranks.
///
/// Input lines, numbered globally over the inputs in order, are cut into
/// shards of `shardLines` lines; shard k is written by rank k mod size. A
/// shard's bytes depend only on its lines, so the output directory is
/// byte-identical whatever the number of ranks.
public struct ShardEncoder {
    public struct Options: Sendable {
        public var textField = "text"
        public var addBos = false
        public var addEos = true
        public var shardLines = 4096
        public var cacheEntries = 1 << 16
        public var strict = true
        public init() {}
        public init(_ config: TokenizerConfig) {
            textField = config.textField; addBos = config.addBos; addEos = config.addEos
            shardLines = config.shardLines; cacheEntries = config.cacheEntries; strict = config.strict
        }
    }

    public let tokenizer: BPETokenizer
    public let tokenizerJSON: [UInt8]
    public let options: Options

    public init(tokenizer: BPETokenizer, tokenizerJSON: [UInt8], options: Options) {
        self.tokenizer = tokenizer; self.tokenizerJSON = tokenizerJSON; self.options = options
    }

    public static func shardName(_ k: Int) -> String {
        let s = String(k)
        return "shard-" + String(repeating: "0", count: max(0, 5 - s.count)) + s
    }

    /// Encodes `inputs` into `output`; every rank calls this. Everything is
    /// written into a staging folder and published as a unit (see
    /// `OutputPublisher`), so no shard of an earlier run survives beside
    /// these. Returns the manifest (on every rank).
    public func run(inputs: [String], output: String, communicator: any Communicator, sink: any EventSink) throws -> TokenManifest {
        let publisher = OutputPublisher(directory: output)
        try publisher.begin(communicator)
        let staging = publisher.staging
        let tokenBytes = tokenizer.vocabSize <= 1 << 16 ? 2 : 4
        let encoder = TokenEncoder(tokenizer, cacheEntries: options.cacheEntries)
        let bos = try options.addBos ? requireId(SpecialTokens.bos) : nil
        let eos = try options.addEos ? requireId(SpecialTokens.eos) : nil
        let rank = communicator.rank, size = communicator.size
        var written: [ShardInfo] = []
        var stats = LanguageStats()
        var inputLines: [(path: String, lines: Int)] = []

        var current: ShardBuilder?
        var globalLine = 0
        var ids: [UInt32] = []
        var text: [UInt8] = []
        var reader = JSONLText(field: options.textField)
        // Under strict, this rank's first problem and its line position in the input.
        var strictProblem: (position: Int, error: InputError)?
        reading: for path in inputs {
            var linesInFile = 0
            try LineReader(path: path).forEachLine { number, line in
                linesInFile = number
                let k = globalLine / options.shardLines
                globalLine += 1
                guard k % size == rank else { return true }
                if current?.index != k {
                    if let done = try current?.finish() { written.append(done); sink.report(.progress(stage: "tokenizer", done: written.count, total: nil, unit: "shards")) }
                    current = try ShardBuilder(directory: staging, index: k, firstLine: globalLine - 1, tokenBytes: tokenBytes)
                }
                let shard = current!
                shard.lines += 1
                if RecordProblem.isBlank(line) { shard.blankLines += 1; return true }
                do {
                    try reader.extract(line, into: &text)
                } catch let bad as RecordProblem {
                    let problem = bad.located(file: path, line: number)
                    if options.strict { strictProblem = (globalLine - 1, problem); return false }
                    try shard.reject(problem)
                    return true
                }
                ids.removeAll(keepingCapacity: true)
                if let bos { ids.append(bos) }
                text.withUnsafeBufferPointer { encoder.encode(bytes: $0, into: &ids) }
                let contentTokens = ids.count - (bos == nil ? 0 : 1)
                if let eos { ids.append(eos) }
                text.withUnsafeBufferPointer { stats.add(text: $0, tokens: contentTokens) }
                try shard.append(ids)
                return true
            }
            if strictProblem != nil { break reading }
            inputLines.append((path, linesInFile))
        }
        // Every rank stops with the first problem in input order, whichever rank met it.
        if options.strict { try FirstBadRecord.agree(strictProblem, communicator) }
        // A rank whose last shard was cut short by the end of input finishes it here.
        if let done = try current?.finish() { written.append(done) }

        // Rank 0 collects every shard's figures and writes the manifest.
        var flat = stats.flat
        try communicator.allReduce(&flat, op: .sum)
        let total = LanguageStats(flat: flat)
        let mine = JSONValue.array(written.map(\.json)).text()
        let gathered = try communicator.gather(mine, root: 0)
        var manifest = TokenManifest(tokenBytes: tokenBytes, vocabSize: tokenizer.vocabSize,
                                     tokenizerChecksum: tokenizerJSON.withUnsafeBytes { hex64(StableHash.xxh64($0)) },
                                     addBos: options.addBos, addEos: options.addEos, inputs: inputLines, shards: [], languages: total)
        if let gathered {
            var all: [ShardInfo] = []
            for text in gathered {
                guard let list = try JSONValue.parse(Array(text.utf8)).array else { continue }
                all += try list.map { try ShardInfo(json: $0, field: "shard") }
            }
            manifest.shards = all.sorted { $0.index < $1.index }
            let expectedShards = (globalLine + options.shardLines - 1) / options.shardLines
            guard manifest.shards.map(\.index) == Array(0..<expectedShards) else {
                throw TokenShardError.invalidManifest(field: "shards", reason: "ranks wrote shards \(manifest.shards.map(\.index)), expected 0..<\(expectedShards)")
            }
            guard manifest.documents + manifest.rejected + manifest.blankLines == manifest.lines else {
                throw TokenShardError.invalidManifest(field: "documents", reason: "\(manifest.documents) documents + \(manifest.rejected) rejected + \(manifest.blankLines) blank != \(manifest.lines) lines read")
            }
            let tok = try FileWriter(path: publisher.path("tokenizer.json"))
            try tok.write(tokenizerJSON)
            try tok.commit()
            let writer = try FileWriter(path: publisher.path("manifest.json"))
            try writer.write(manifest.json.text(indent: 2) + "\n")
            try writer.commit()
        }
        try publisher.finish(stage: "tokenizer encode", communicator)
        // Other ranks read the manifest rank 0 wrote, so every rank returns the same one.
        if rank != 0 { manifest = try TokenShardReader(directory: output, verify: false).manifest }
        return manifest
    }

    private func requireId(_ token: String) throws -> UInt32 {
        guard let id = tokenizer.id(of: token) else { throw TokenizerError.missingToken(token) }
        return id
    }
}

/// Writes one shard: tokens, document index, and rejects when there are any.
final class ShardBuilder {
    let directory: String
    let index: Int
    let firstLine: Int
    let tokenBytes: Int
    var lines = 0
    var blankLines = 0
    private var offsets: [UInt64] = [0]
    private var rejected = 0
    private let tokens: FileWriter
    private var rejects: FileWriter?
    private var scratch: [UInt8] = []

    init(directory: String, index: Int, firstLine: Int, tokenBytes: Int) throws {
        self.directory = directory; self.index = index; self.firstLine = firstLine; self.tokenBytes = tokenBytes
        tokens = try FileWriter(path: directory + "/" + ShardEncoder.shardName(index) + ".tokens", atomic: true)
    }

    func append(_ ids: [UInt32]) throws {
        scratch.removeAll(keepingCapacity: true)
        if tokenBytes == 2 {
            for id in ids { scratch.append(UInt8(id & 0xFF)); scratch.append(UInt8(id >> 8)) }
        } else {
            for id in ids { appendLE32(&scratch, id) }
        }
        try tokens.write(scratch)
        offsets.append(offsets.last! + UInt64(ids.count))
    }

    func reject(_ problem: InputError) throws {
        if rejects == nil { rejects = try FileWriter(path: directory + "/" + ShardEncoder.shardName(index) + ".rejects.jsonl", atomic: true) }
        rejected += 1
        try rejects!.write(problem.rejectJSON + "\n")
    }

    func finish() throws -> ShardInfo {
        let name = ShardEncoder.shardName(index)
        try tokens.commit()
        try rejects?.commit()
        var indexBytes: [UInt8] = []
        indexBytes.reserveCapacity(offsets.count * 8)
        for o in offsets { appendLE64(&indexBytes, o) }
        let indexWriter = try FileWriter(path: directory + "/" + name + ".index", atomic: true)
        try indexWriter.write(indexBytes)
        try indexWriter.commit()
        var info = ShardInfo(index: index, name: name, firstLine: firstLine, lines: lines, documents: offsets.count - 1,
                             rejected: rejected, tokens: Int(offsets.last!),
                             tokensChecksum: try fileChecksum(directory + "/" + name + ".tokens"),
                             indexChecksum: indexBytes.withUnsafeBytes { hex64(StableHash.xxh64($0)) })
        info.blankLines = blankLines
        return info
    }
}
