import DaptCore

/// Tokenised documents addressed by index: what the packer reads. Token
/// shards from `dapt tokenizer encode` and in-memory corpora both provide it.
public protocol DocumentSource: Sendable {
    var documentCount: Int { get }
    func documentLength(_ index: Int) -> Int
    /// Copies tokens `range` of document `index` to `destination`.
    func copyTokens(document index: Int, range: Range<Int>, into destination: UnsafeMutablePointer<Int32>) throws
}

/// Documents held in one token array with start offsets.
public struct InMemoryDocuments: DocumentSource {
    public let tokens: [Int32]
    /// `documentCount + 1` offsets into `tokens`.
    public let starts: [Int]

    public init(documents: [[Int32]]) {
        var tokens: [Int32] = []
        var starts = [0]
        for d in documents { tokens += d; starts.append(tokens.count) }
        self.tokens = tokens
        self.starts = starts
    }

    public init(tokens: [Int32], starts: [Int]) {
        precondition(starts.first == 0 && starts.last == tokens.count)
        self.tokens = tokens
        self.starts = starts
    }

    public var documentCount: Int { starts.count - 1 }
    public func documentLength(_ index: Int) -> Int { starts[index + 1] - starts[index] }
    public func copyTokens(document index: Int, range: Range<Int>, into destination: UnsafeMutablePointer<Int32>) {
        tokens.withUnsafeBufferPointer { destination.update(from: $0.baseAddress! + starts[index] + range.lowerBound, count: range.count) }
    }
}

/// A subset of another source's documents, in the order given.
public struct DocumentSubset: DocumentSource {
    public let base: any DocumentSource
    public let indices: [Int]
    public init(base: any DocumentSource, indices: [Int]) { self.base = base; self.indices = indices }
    public var documentCount: Int { indices.count }
    public func documentLength(_ index: Int) -> Int { base.documentLength(indices[index]) }
    public func copyTokens(document index: Int, range: Range<Int>, into destination: UnsafeMutablePointer<Int32>) throws {
        try base.copyTokens(document: indices[index], range: range, into: destination)
    }
}

/// Splits documents into training and held-out sets by a seeded hash of the
/// document index: the same seed and fraction give the same split on any run.
public func splitHeldOut(documentCount: Int, fraction: Double, seed: UInt64) -> (train: [Int], heldOut: [Int]) {
    var train: [Int] = [], heldOut: [Int] = []
    let threshold = UInt64(max(0, min(1, fraction)) * 1_000_000)
    for i in 0..<documentCount {
        let h = StableHash.mix64(seed ^ 0x4845_4C44_4F55_5421 ^ StableHash.mix64(UInt64(i))) % 1_000_000
        if h < threshold { heldOut.append(i) } else { train.append(i) }
    }
    return (train, heldOut)
}

/// Packs documents into fixed-length sequences. Each epoch the documents are
/// concatenated in an order drawn from (seed, epoch) and cut into sequences
/// of `sequenceLength` tokens; sequence `g` (counted over all epochs) is
/// therefore a pure function of (seed, g), so any step's batch is rebuilt
/// from its sequence index alone. Within a sequence each document piece gets
/// its own document id and positions restarting at 0; a token's target is
/// the next token of the same document (-100 at a document's end). Without
/// `documentMasks` every token of a sequence has document id 0 and the
/// positions run on through it (plain causal attention over the packed
/// documents), with the same tokens and targets.
public final class PackedSequenceOrder: @unchecked Sendable {
    public let source: any DocumentSource
    public let sequenceLength: Int
    public let seed: UInt64
    public let shuffle: Bool
    public let documentMasks: Bool
    public let tokensPerEpoch: Int
    public let sequencesPerEpoch: Int
    public static let ignoreIndex: Int32 = -100

    private var cachedEpoch = -1
    private var order: [Int] = []
    /// Stream offset where each document of `order` starts (+ the end).
    private var streamStarts: [Int] = []

    public init(source: any DocumentSource, sequenceLength: Int, seed: UInt64, shuffle: Bool = true, documentMasks: Bool = true) throws {
        self.source = source
        self.documentMasks = documentMasks
        self.sequenceLength = sequenceLength
        self.seed = seed
        self.shuffle = shuffle
        var total = 0
        for i in 0..<source.documentCount { total += source.documentLength(i) }
        tokensPerEpoch = total
        sequencesPerEpoch = total / sequenceLength
        guard sequencesPerEpoch > 0 else {
            throw TrainingError.notEnoughData(tokens: total, sequenceLength: sequenceLength)
        }
    }

    /// The document order of `epoch`: Fisher–Yates with a SplitMix64 seeded by (seed, epoch).
    public func documentOrder(epoch: Int) -> [Int] {
        var order = Array(0..<source.documentCount)
        guard shuffle else { return order }
        var rng = SplitMix64(seed: StableHash.mix64(seed ^ StableHash.mix64(UInt64(epoch) &+ 0x5045_5243)))
        if order.count > 1 {
            for i in stride(from: order.count - 1, to: 0, by: -1) {
                let j = Int(rng.next() % UInt64(i + 1))
                order.swapAt(i, j)
            }
        }
        return order
    }

    private func prepareEpoch(_ epoch: Int) {
        guard epoch != cachedEpoch else { return }
        order = documentOrder(epoch: epoch)
        streamStarts = [0]
        streamStarts.reserveCapacity(order.count + 1)
        var offset = 0
        for d in order { offset += source.documentLength(d); streamStarts.append(offset) }
        cachedEpoch = epoch
    }

    /// Writes sequence `globalIndex` into row `row` of the batch arrays.
    public func fill(sequence globalIndex: Int, row: Int, tokens: inout [Int32], targets: inout [Int32],
                     positions: inout [Int32], documentIds: inout [Int32]) throws {
        let epoch = globalIndex / sequencesPerEpoch
        let local = globalIndex % sequencesPerEpoch
        prepareEpoch(epoch)
        let T = sequenceLength
        let base = row * T
        var streamPos = local * T
        // First document overlapping the sequence: last start <= streamPos.
        var lo = 0, hi = order.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if streamStarts[mid] <= streamPos { lo = mid } else { hi = mid - 1 }
        }
        var doc = lo
        var filled = 0
        var pieceId: Int32 = 0
        var buffer = [Int32](repeating: 0, count: T + 1)
        while filled < T {
            while streamStarts[doc + 1] <= streamPos { doc += 1 }   // skip empty documents
            let within = streamPos - streamStarts[doc]
            let docLength = streamStarts[doc + 1] - streamStarts[doc]
            let take = min(T - filled, docLength - within)
            // One extra token when the document continues past this piece (its target).
            let extra = within + take < docLength ? 1 : 0
            try buffer.withUnsafeMutableBufferPointer {
                try source.copyTokens(document: order[doc], range: within..<(within + take + extra), into: $0.baseAddress!)
            }
            for k in 0..<take {
                tokens[base + filled + k] = buffer[k]
                targets[base + filled + k] = (k + 1 < take || extra == 1) ? buffer[k + 1] : Self.ignoreIndex
                positions[base + filled + k] = Int32(documentMasks ? k : filled + k)
                documentIds[base + filled + k] = documentMasks ? pieceId : 0
            }
            pieceId += 1
            filled += take
            streamPos += take
        }
    }
}

/// A batch of packed sequences for one micro-step, in the model's layout.
public struct PackedBatch: Equatable, Sendable {
    public var batchSize: Int
    public var sequenceLength: Int
    public var tokens: [Int32]
    public var targets: [Int32]
    public var positions: [Int32]
    public var documentIds: [Int32]
    /// Global sequence index of each row.
    public var sequenceIndices: [Int]

    /// Rows `first ..< first + count` of the global sequence order.
    public init(order: PackedSequenceOrder, firstSequence first: Int, count: Int) throws {
        let T = order.sequenceLength
        batchSize = count
        sequenceLength = T
        tokens = .init(repeating: 0, count: count * T)
        targets = tokens
        positions = tokens
        documentIds = tokens
        sequenceIndices = Array(first..<(first + count))
        for r in 0..<count {
            try order.fill(sequence: first + r, row: r, tokens: &tokens, targets: &targets, positions: &positions, documentIds: &documentIds)
        }
    }

    public var countedTargets: Int { targets.reduce(0) { $0 + ($1 == PackedSequenceOrder.ignoreIndex ? 0 : 1) } }
}
