import DaptCore
import DaptModel
import DaptTokenizer

/// Chat examples rendered by the chat template: one document per example,
/// and beside it a document of the same length holding 1 for assistant
/// tokens and 0 elsewhere. Both are packed by the same `PackedSequenceOrder`
/// (same seed, same lengths, so the same layout); a position's target counts
/// only when the token it predicts is an assistant token.
public struct ChatDocuments: Sendable {
    public let tokens: InMemoryDocuments
    public let assistantMask: InMemoryDocuments
    public var count: Int { tokens.documentCount }

    public init(encodings: [ChatEncoding]) {
        tokens = InMemoryDocuments(documents: encodings.map { $0.ids.map { Int32(bitPattern: $0) } })
        assistantMask = InMemoryDocuments(documents: encodings.map { $0.assistantMask.map { $0 ? 1 : 0 } })
    }

    public func subset(_ indices: [Int]) -> (tokens: DocumentSubset, mask: DocumentSubset) {
        (DocumentSubset(base: tokens, indices: indices), DocumentSubset(base: assistantMask, indices: indices))
    }

    /// Reads a JSONL file of `{"messages": [...]}` records (other keys are
    /// ignored; blank lines skipped). A bad record is an error naming the
    /// file, line and field; a record without an assistant message too (it
    /// would add nothing to the loss).
    public static func load(path: String, template: ChatTemplate) throws -> ChatDocuments {
        var encodings: [ChatEncoding] = []
        let encoder = TokenEncoder(template.tokenizer)
        try LineReader(path: path).forEachLine { number, line in
            guard line.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { return true }
            let record: JSONValue
            do { record = try JSONValue.parse(line) } catch { throw InputError(file: path, line: number, reason: "not valid JSON: \(error)") }
            guard let value = record["messages"] else { throw InputError(file: path, line: number, field: "messages", reason: "missing") }
            let messages: [ChatMessage]
            do { messages = try ChatMessage.parse(value) } catch let error as ChatTemplateError {
                if case let .badMessage(field, reason) = error { throw InputError(file: path, line: number, field: field, reason: reason) }
                throw InputError(file: path, line: number, field: "messages", reason: error.description)
            }
            guard messages.contains(where: { $0.role == .assistant }) else {
                throw InputError(file: path, line: number, field: "messages", reason: "no assistant message: nothing to learn from")
            }
            encodings.append(template.encode(messages, encoder: encoder))
            return true
        }
        return ChatDocuments(encodings: encodings)
    }
}

/// Packed batches of chat documents with the loss only on assistant tokens.
public final class ChatBatches: @unchecked Sendable {
    public let tokens: PackedSequenceOrder
    public let mask: PackedSequenceOrder

    public init(tokens: any DocumentSource, mask: any DocumentSource, sequenceLength: Int, seed: UInt64, shuffle: Bool = true) throws {
        self.tokens = try PackedSequenceOrder(source: tokens, sequenceLength: sequenceLength, seed: seed, shuffle: shuffle)
        self.mask = try PackedSequenceOrder(source: mask, sequenceLength: sequenceLength, seed: seed, shuffle: shuffle)
    }

    public var sequencesPerEpoch: Int { tokens.sequencesPerEpoch }

    /// Sequences `first ..< first + count` (global indices), document-masked,
    /// targets -100 except where the next token is an assistant token.
    public func batch(firstSequence first: Int, count: Int) throws -> TokenBatch {
        let p = try PackedBatch(order: tokens, firstSequence: first, count: count)
        let m = try PackedBatch(order: mask, firstSequence: first, count: count)
        var targets = p.targets
        for i in targets.indices where m.targets[i] != 1 { targets[i] = ignoreIndex }
        return try TokenBatch(batchSize: count, seqLen: p.sequenceLength, tokens: p.tokens, targets: targets,
                              positions: p.positions, documentIds: p.documentIds)
    }
}
