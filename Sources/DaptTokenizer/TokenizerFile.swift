import DaptCore

/// Reading and writing the Hugging Face `tokenizer.json` format for byte-level BPE.
extension BPETokenizer {
    /// Loads a `tokenizer.json` whose model is BPE over a byte-level alphabet,
    /// with either pre-tokenizer form: `ByteLevel` with its GPT-2 regex, or a
    /// `Split` (one of the patterns dapt implements) followed by `ByteLevel` without regex.
    public static func load(path: String) throws -> BPETokenizer {
        try load(json: FileSystem.readAll(path), path: path)
    }

    public static func load(json bytes: [UInt8], path: String = "tokenizer.json") throws -> BPETokenizer {
        func bad(_ field: String, _ reason: String) -> TokenizerError { .invalidFile(path: path, field: field, reason: reason) }
        let root: JSONValue
        do { root = try JSONValue.parse(bytes) } catch { throw bad("", error.description) }
        guard let model = root["model"] else { throw bad("model", "missing") }
        if let type = model["type"]?.string, type != "BPE" { throw bad("model.type", "\"\(type)\" is not supported (only BPE)") }
        if let normalizer = root["normalizer"], !normalizer.isNull { throw bad("normalizer", "normalizers are not supported (must be null)") }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = model[key], !v.isNull, v.string != "" { throw bad("model.\(key)", "not supported for byte-level BPE") }
        }
        if model["byte_fallback"]?.bool == true { throw bad("model.byte_fallback", "not supported for byte-level BPE") }
        if let d = model["dropout"], !d.isNull, (d.double ?? 0) > 0 { throw bad("model.dropout", "BPE dropout is not supported") }
        let ignoreMerges = model["ignore_merges"]?.bool ?? false

        // Pre-tokenizer.
        var kind: PreTokenizerKind
        var addPrefixSpace = false
        guard let pre = root["pre_tokenizer"], !pre.isNull else { throw bad("pre_tokenizer", "missing: a byte-level pre-tokenizer is required") }
        func byteLevel(_ v: JSONValue, _ field: String) throws -> (usesRegex: Bool, prefix: Bool) {
            guard v["type"]?.string == "ByteLevel" else { throw bad(field, "expected ByteLevel") }
            return (v["use_regex"]?.bool ?? true, v["add_prefix_space"]?.bool ?? false)
        }
        switch pre["type"]?.string {
        case "ByteLevel":
            let b = try byteLevel(pre, "pre_tokenizer")
            guard b.usesRegex else { throw bad("pre_tokenizer.use_regex", "ByteLevel without a regex and without a Split is not supported") }
            kind = .gpt2; addPrefixSpace = b.prefix
        case "Sequence":
            guard let list = pre["pretokenizers"]?.array, list.count == 2 else { throw bad("pre_tokenizer.pretokenizers", "expected [Split, ByteLevel]") }
            let split = list[0]
            guard split["type"]?.string == "Split" else { throw bad("pre_tokenizer.pretokenizers[0]", "expected Split") }
            guard let pattern = split["pattern"]?["Regex"]?.string else { throw bad("pre_tokenizer.pretokenizers[0].pattern", "expected {\"Regex\": ...}") }
            guard let k = PreTokenizerKind(pattern: pattern) else { throw bad("pre_tokenizer.pretokenizers[0].pattern", "unsupported pattern \(JSONWriter.quoted(pattern)); dapt implements the dapt, GPT-4 and GPT-2 patterns") }
            guard split["behavior"]?.string == "Isolated", split["invert"]?.bool != true else { throw bad("pre_tokenizer.pretokenizers[0]", "only behavior Isolated without invert is supported") }
            let b = try byteLevel(list[1], "pre_tokenizer.pretokenizers[1]")
            guard !b.usesRegex else { throw bad("pre_tokenizer.pretokenizers[1].use_regex", "must be false after a Split") }
            kind = k; addPrefixSpace = b.prefix
        default:
            throw bad("pre_tokenizer.type", "expected ByteLevel or Sequence [Split, ByteLevel]")
        }

        // Vocabulary and merges.
        guard let vocabMembers = model["vocab"]?.members else { throw bad("model.vocab", "missing or not an object") }
        var vocab: [(bytes: [UInt8], id: UInt32)] = []
        vocab.reserveCapacity(vocabMembers.count)
        var idOf: [String: UInt32] = [:]
        for (spelling, v) in vocabMembers {
            guard let id = v.int, id >= 0, id < 1 << 31 else { throw bad("model.vocab.\(spelling)", "id must be a non-negative integer") }
            idOf[spelling] = UInt32(id)
            // Tokens outside the byte alphabet (e.g. "<|endoftext|>" with other
            // characters) stand for their own UTF-8.
            vocab.append((ByteLevel.decode(spelling) ?? Array(spelling.utf8), UInt32(id)))
        }
        guard let mergeList = model["merges"]?.array else { throw bad("model.merges", "missing or not an array") }
        var merges: [(UInt32, UInt32)] = []
        merges.reserveCapacity(mergeList.count)
        for (i, m) in mergeList.enumerated() {
            let parts: [String]
            if let s = m.string {
                parts = s.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            } else if let a = m.array?.compactMap(\.string) {
                parts = a
            } else { parts = [] }
            guard parts.count == 2 else { throw bad("model.merges[\(i)]", "expected \"a b\" or [\"a\", \"b\"]") }
            guard let a = idOf[parts[0]], let b = idOf[parts[1]] else { throw bad("model.merges[\(i)]", "\"\(parts[0]) \(parts[1])\" uses a token not in the vocabulary") }
            merges.append((a, b))
        }
        var added: [AddedToken] = []
        for (i, t) in (root["added_tokens"]?.array ?? []).enumerated() {
            guard let id = t["id"]?.int, let content = t["content"]?.string else { throw bad("added_tokens[\(i)]", "needs id and content") }
            added.append(AddedToken(id: UInt32(id), content: content, special: t["special"]?.bool ?? false))
        }
        do {
            return try BPETokenizer(vocab: vocab, merges: merges, added: added, preTokenizer: kind,
                                    addPrefixSpace: addPrefixSpace, ignoreMerges: ignoreMerges)
        } catch TokenizerError.invalidFile(_, let field, let reason) {
            throw bad(field, reason)
        }
    }

    /// The `tokenizer.json` text for this tokenizer.
    public func jsonText() -> String {
        func byteLevel(regex: Bool) -> JSONValue {
            .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(addPrefixSpace)),
                     ("trim_offsets", .bool(true)), ("use_regex", .bool(regex))])
        }
        let pre: JSONValue
        if preTokenizer == .gpt2 {
            pre = byteLevel(regex: true)
        } else {
            pre = .object([("type", .string("Sequence")), ("pretokenizers", .array([
                .object([("type", .string("Split")), ("pattern", .object([("Regex", .string(preTokenizer.pattern))])),
                         ("behavior", .string("Isolated")), ("invert", .bool(false))]),
                byteLevel(regex: false),
            ]))])
        }
        let added: JSONValue = .array(addedTokens.map { t in
            .object([("id", .integer(t.id)), ("content", .string(t.content)), ("single_word", .bool(false)),
                     ("lstrip", .bool(false)), ("rstrip", .bool(false)), ("normalized", .bool(false)), ("special", .bool(t.special))])
        })
        // The vocabulary: model tokens by id, spelled byte-level.
        var vocabLines: [String] = []
        for id in 0..<vocabSize where present[id] {
            let bytes = tokenBytes[tokenStarts[id]..<tokenStarts[id + 1]]
            let spelling = addedTokens.first(where: { $0.id == UInt32(id) })?.content ?? ByteLevel.encode(bytes)
            vocabLines.append("      \(JSONWriter.quoted(spelling)): \(id)")
        }
        func spell(_ id: UInt32) -> String { ByteLevel.encode(tokenBytes[tokenStarts[Int(id)]..<tokenStarts[Int(id) + 1]]) }
        let mergeLines = merges.map { "      \(JSONWriter.quoted(spell($0.0) + " " + spell($0.1)))" }
        func indented(_ v: JSONValue) -> String {
            v.text(indent: 2, level: 1)
        }
        var out = "{\n"
        out += "  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n"
        out += "  \"added_tokens\": \(indented(added)),\n"
        out += "  \"normalizer\": null,\n"
        out += "  \"pre_tokenizer\": \(indented(pre)),\n"
        out += "  \"post_processor\": null,\n"
        out += "  \"decoder\": \(indented(byteLevel(regex: true))),\n"
        out += "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
        out += "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
        out += "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"ignore_merges\": \(ignoreMerges),\n"
        out += "    \"vocab\": {\n" + vocabLines.joined(separator: ",\n") + "\n    },\n"
        out += "    \"merges\": [\n" + mergeLines.joined(separator: ",\n") + "\n    ]\n  }\n}\n"
        return out
    }

    /// Writes `tokenizer.json` atomically.
    public func save(path: String) throws {
        let writer = try FileWriter(path: path, atomic: true)
        try writer.write(jsonText())
        try writer.commit()
    }
}
