import DaptCore
import DaptGrammar
import DaptTokenizer
import Foundation

/// Constrained JSON output: what the answers must be.
public enum JSONOutput: Equatable, Sendable {
    /// Any JSON object.
    case object
    /// A value the JSON Schema (file) allows.
    case schema(String)

    /// The grammar's token masks over the model's vocabulary (ids past the
    /// tokenizer's have no bytes and are never allowed; `endTokens` close
    /// the output; other special tokens never appear inside it). One value
    /// serves every record (masks are cached per automaton state).
    public func masks(tokenizer: BPETokenizer, vocabSize: Int, endTokens: Set<Int32>) throws -> GrammarMasks {
        let grammar: JSONGrammar
        switch self {
        case .object: grammar = .anyObject()
        case .schema(let path): grammar = try Self.grammar(schemaFile: path)
        }
        return GrammarMasks(grammar: grammar, vocabulary: Self.vocabulary(tokenizer: tokenizer, vocabSize: vocabSize, endTokens: endTokens))
    }

    static func grammar(schemaFile path: String) throws -> JSONGrammar {
        do { return try JSONGrammar.schema(file: path) } catch let error as JSONSchemaError {
            throw ConfigError(file: path, field: error.path, reason: error.reason)
        }
    }

    static func vocabulary(tokenizer: BPETokenizer, vocabSize: Int, endTokens: Set<Int32>) -> TokenVocabulary {
        let tokens = (0..<vocabSize).map { id in Array((try? tokenizer.bytes(of: UInt32(id))) ?? []) }
        let ends = Set(endTokens.map { Int($0) }.filter { $0 < vocabSize })
        let special = Set(tokenizer.addedTokens.filter(\.special).map { Int($0.id) }).subtracting(ends)
        return TokenVocabulary(tokens: tokens, endTokens: ends, excludedTokens: special)
    }

    /// The constraint maker of `dapt eval json`: the schema's grammar, or any object.
    public static func evaluationConstraint(tokenizer: BPETokenizer, vocabSize: Int, endTokens: Set<Int32>,
                                            schema: JSONValue?) throws -> any TokenConstraint {
        let grammar: JSONGrammar
        if let schema {
            do throws(JSONSchemaError) { grammar = try JSONGrammar.schema(schema) } catch {
                throw ConfigError(field: error.path, reason: error.reason)
            }
        } else {
            grammar = .anyObject()
        }
        return GrammarMasks(grammar: grammar, vocabulary: vocabulary(tokenizer: tokenizer, vocabSize: vocabSize, endTokens: endTokens)).constraint()
    }
}
