import DaptCore

/// A role in a chat conversation.
public enum ChatRole: String, Sendable, CaseIterable {
    case system, user, assistant
}

/// One message of a conversation.
public struct ChatMessage: Sendable, Equatable {
    public var role: ChatRole
    public var content: String
    public init(role: ChatRole, content: String) { self.role = role; self.content = content }

    /// The messages of a JSON array of `{"role": ..., "content": ...}`
    /// objects; errors name the field (`messages[2].role`).
    public static func parse(_ value: JSONValue, field: String = "messages") throws(ChatTemplateError) -> [ChatMessage] {
        guard let list = value.array else { throw .badMessage(field: field, reason: "expected an array of messages, got \(value.typeName)") }
        guard !list.isEmpty else { throw .badMessage(field: field, reason: "is empty") }
        var messages: [ChatMessage] = []
        for (i, item) in list.enumerated() {
            guard let roleText = item["role"]?.string else { throw .badMessage(field: "\(field)[\(i)].role", reason: "missing or not a string") }
            guard let role = ChatRole(rawValue: roleText) else {
                throw .badMessage(field: "\(field)[\(i)].role", reason: "\"\(roleText)\" is not one of system, user, assistant")
            }
            guard let content = item["content"]?.string else { throw .badMessage(field: "\(field)[\(i)].content", reason: "missing or not a string") }
            messages.append(ChatMessage(role: role, content: content))
        }
        return messages
    }

    /// The JSON array form `parse` reads.
    public static func json(_ messages: [ChatMessage]) -> JSONValue {
        .array(messages.map { .object([("role", .string($0.role.rawValue)), ("content", .string($0.content))]) })
    }
}

public enum ChatTemplateError: Error, CustomStringConvertible, Equatable {
    case missingToken(String)
    case badMessage(field: String, reason: String)
    case badConfig(path: String, reason: String)

    public var description: String {
        switch self {
        case .missingToken(let t): return "the chat template needs the special token \"\(t)\", which the tokenizer does not have (dapt's tokenizers have it; see tokenizer.special_tokens)"
        case .badMessage(let field, let reason): return "\(field): \(reason)"
        case .badConfig(let path, let reason): return "\(path): \(reason)"
        }
    }
}

/// A conversation as token ids, with the tokens the loss is taken on.
public struct ChatEncoding: Sendable, Equatable {
    public var ids: [UInt32]
    /// True for the tokens of assistant replies (their text and the `<|end|>`
    /// closing each), as transformers' `return_assistant_tokens_mask` marks them.
    public var assistantMask: [Bool]
}

/// dapt's one chat template: each message is its role marker, its text and
/// `<|end|>`, then a newline, after `<|bos|>`. The Jinja source is written as
/// `chat_template` into `tokenizer_config.json`, so transformers'
/// `apply_chat_template` renders the same text and, through the
/// `{% generation %}` block, the same assistant-token mask.
public struct ChatTemplate: Sendable {
    /// The Jinja source (transformers' chat-template dialect).
    public static let source = #"{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>' }}{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{% else %}{{ message['content'] + '<|end|>' }}{% endif %}{{ '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"#
    public static let endToken = "<|end|>"
    public static let configFile = "tokenizer_config.json"

    public static func roleToken(_ role: ChatRole) -> String { "<|\(role.rawValue)|>" }

    public let tokenizer: BPETokenizer
    /// The `bos_token` the template starts with.
    public let bosToken: String
    /// The id of `<|end|>`, which ends every message (generation stops at it).
    public let endId: UInt32

    /// Requires the role markers and `<|end|>` to be tokens of `tokenizer`.
    public init(tokenizer: BPETokenizer, bosToken: String = SpecialTokens.bos) throws(ChatTemplateError) {
        for token in ChatRole.allCases.map(Self.roleToken) + [Self.endToken, bosToken] where tokenizer.id(of: token) == nil {
            throw .missingToken(token)
        }
        self.tokenizer = tokenizer
        self.bosToken = bosToken
        self.endId = tokenizer.id(of: Self.endToken)!
    }

    /// The text `apply_chat_template(messages, tokenize=False)` gives, and the
    /// UTF-8 byte ranges of the `{% generation %}` blocks.
    public func renderWithSpans(_ messages: [ChatMessage], addGenerationPrompt: Bool = false) -> (text: String, assistantSpans: [Range<Int>]) {
        var text = bosToken
        var spans: [Range<Int>] = []
        for message in messages {
            text += Self.roleToken(message.role)
            let start = text.utf8.count
            text += message.content + Self.endToken
            if message.role == .assistant { spans.append(start..<text.utf8.count) }
            text += "\n"
        }
        if addGenerationPrompt { text += Self.roleToken(.assistant) }
        return (text, spans)
    }

    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = false) -> String {
        renderWithSpans(messages, addGenerationPrompt: addGenerationPrompt).text
    }

    /// The token ids of the rendered text and its assistant mask: a token is
    /// an assistant token when any of its bytes lies in an assistant span.
    public func encode(_ messages: [ChatMessage], addGenerationPrompt: Bool = false, encoder: TokenEncoder? = nil) -> ChatEncoding {
        let (text, spans) = renderWithSpans(messages, addGenerationPrompt: addGenerationPrompt)
        let ids = (encoder ?? TokenEncoder(tokenizer)).encode(text)
        var mask = [Bool](repeating: false, count: ids.count)
        var offset = 0
        var span = 0
        for (i, id) in ids.enumerated() {
            // Byte-level BPE is lossless: every id stands for its bytes of the text.
            let end = offset + ((try? tokenizer.bytes(of: id).count) ?? 0)
            while span < spans.count && spans[span].upperBound <= offset { span += 1 }
            // Any overlap, as transformers marks the token of every character in a span.
            if span < spans.count && spans[span].lowerBound < end && offset < spans[span].upperBound { mask[i] = true }
            offset = end
        }
        return ChatEncoding(ids: ids, assistantMask: mask)
    }

    /// Writes (or updates) `directory/tokenizer_config.json` so transformers
    /// loads the tokenizer with this chat template: `chat_template`, the
    /// special tokens and the tokenizer class are set, other keys of an
    /// existing file are kept.
    public func writeTokenizerConfig(directory: String) throws {
        let path = directory + "/" + Self.configFile
        var members: [(String, JSONValue)] = []
        if FileSystem.exists(path) {
            let existing: JSONValue
            do { existing = try JSONValue.parse(FileSystem.readAll(path)) } catch { throw ChatTemplateError.badConfig(path: path, reason: "\(error)") }
            guard let m = existing.members else { throw ChatTemplateError.badConfig(path: path, reason: "not a JSON object") }
            members = m
        }
        func set(_ key: String, _ value: JSONValue) {
            if let i = members.firstIndex(where: { $0.0 == key }) { members[i].1 = value } else { members.append((key, value)) }
        }
        if !members.contains(where: { $0.0 == "tokenizer_class" }) { set("tokenizer_class", .string("PreTrainedTokenizerFast")) }
        set("bos_token", .string(bosToken))
        for (key, token) in [("eos_token", SpecialTokens.eos), ("pad_token", SpecialTokens.pad)]
        where tokenizer.id(of: token) != nil && !members.contains(where: { $0.0 == key }) {
            set(key, .string(token))
        }
        set("chat_template", .string(Self.source))
        let writer = try FileWriter(path: path, atomic: true)
        try writer.write(JSONValue.object(members).text(indent: 2) + "\n")
        try writer.commit()
    }
}
