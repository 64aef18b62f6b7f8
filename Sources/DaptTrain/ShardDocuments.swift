import DaptCore
import DaptTokenizer

/// Token shards from `dapt tokenizer encode` as a document source.
public final class ShardDocuments: DocumentSource, @unchecked Sendable {
    public let reader: TokenShardReader
    private let lengths: [Int]

    /// Opens `directory`, verifying its files against the manifest.
    public init(directory: String, verify: Bool = true) throws {
        let r = try TokenShardReader(directory: directory, verify: verify)
        reader = r
        lengths = try (0..<r.documentCount).map { try r.documentLength($0) }
    }

    public var documentCount: Int { lengths.count }
    public var vocabSize: Int { reader.vocabSize }
    public var tokenizerPath: String { reader.directory + "/tokenizer.json" }
    public func documentLength(_ index: Int) -> Int { lengths[index] }
    /// xxh64 of the tokenizer.json the shards were encoded with (from their manifest).
    public var tokenizerChecksum: String { reader.manifest.tokenizerChecksum }
    /// One xxh64 (16 hex digits) standing for the corpus: over the manifest's checksums of every
    /// shard's tokens and index, in order (the files were verified against them on opening).
    /// The same documents cut into other shards give another value.
    public var corpusChecksum: String {
        CheckpointStore.hex64(StableHash.xxh64(reader.manifest.shards.map { $0.tokensChecksum + ":" + $0.indexChecksum }.joined(separator: ",")))
    }

    /// Throws unless the tokenizer file at `path` is byte for byte the one
    /// the shards were encoded with, naming both.
    public func requireTokenizer(_ path: String) throws {
        let found = try fileChecksum(path)
        guard found == tokenizerChecksum else {
            throw TrainingError.tokenizerMismatch(expectedPath: reader.directory, expectedChecksum: tokenizerChecksum,
                                                  foundPath: path, foundChecksum: found)
        }
    }

    public func copyTokens(document index: Int, range: Range<Int>, into destination: UnsafeMutablePointer<Int32>) throws {
        var tokens: [UInt32] = []
        try reader.appendDocument(index, to: &tokens)
        for (k, t) in tokens[range].enumerated() { destination[k] = Int32(bitPattern: t) }
    }
}

/// Tokenises a JSONL file's `text` field, one document per line, with
/// `<|bos|>`/`<|eos|>` as `dapt tokenizer encode` adds them (defaults: eos
/// only). Blank lines are skipped; a line without text is an error naming
/// the file and line.
public func documentsFromJSONL(path: String, tokenizer: BPETokenizer, addBos: Bool = false, addEos: Bool = true) throws -> InMemoryDocuments {
    try documentsAndCountsFromJSONL(path: path, tokenizer: tokenizer, addBos: addBos, addEos: addEos).documents
}

/// `documentsFromJSONL` with the lines read and the blank lines skipped.
public func documentsAndCountsFromJSONL(path: String, tokenizer: BPETokenizer, addBos: Bool = false,
                                        addEos: Bool = true) throws -> (documents: InMemoryDocuments, counts: JSONLText.Counts) {
    let encoder = TokenEncoder(tokenizer)
    func special(_ name: String) throws -> UInt32 {
        guard let id = tokenizer.id(of: name) else { throw TrainingError.invalidInput(path: path, reason: "the tokenizer has no \(name) token") }
        return id
    }
    let bos = addBos ? try special(SpecialTokens.bos) : nil
    let eos = addEos ? try special(SpecialTokens.eos) : nil
    var tokens: [Int32] = []
    var starts = [0]
    var ids: [UInt32] = []
    let counts = try JSONLText.forEachText(path: path, reject: { throw $0 }) { _, text in
        ids.removeAll(keepingCapacity: true)
        if let bos { ids.append(bos) }
        encoder.encode(bytes: text, into: &ids)
        if let eos { ids.append(eos) }
        tokens.append(contentsOf: ids.map { Int32(bitPattern: $0) })
        starts.append(tokens.count)
    }
    return (InMemoryDocuments(tokens: tokens, starts: starts), counts)
}
