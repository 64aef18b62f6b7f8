/// The one way dapt writes JSON text. Strings are escaped as `serde_json`
/// does (so files written for Hugging Face tools match theirs): raw UTF-8,
/// and escapes only where JSON requires them: `\" \\ \n \r \t \b \f`, other
/// control characters as `\u00XX`. Appending into `[UInt8]` is the hot path
/// (JSONL records); `JSONValue.text(indent:)` writes whole documents.
public enum JSONWriter {
    static let hex = Array("0123456789abcdef".utf8)
    public static let null: [UInt8] = Array("null".utf8)
    public static let `true`: [UInt8] = Array("true".utf8)
    public static let `false`: [UInt8] = Array("false".utf8)

    /// Appends `bytes` (UTF-8) as a JSON string literal.
    public static func appendString(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        out.append(0x22)
        var runStart = 0
        for i in 0..<bytes.count {
            let c = bytes[i]
            guard c < 0x20 || c == 0x22 || c == 0x5C else { continue }
            if runStart < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i])) }
            runStart = i + 1
            switch c {
            case 0x22: out.append(0x5C); out.append(0x22)
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            case 0x08: out.append(0x5C); out.append(UInt8(ascii: "b"))
            case 0x0C: out.append(0x5C); out.append(UInt8(ascii: "f"))
            default:
                out.append(0x5C); out.append(UInt8(ascii: "u")); out.append(0x30); out.append(0x30)
                out.append(hex[Int(c >> 4)]); out.append(hex[Int(c & 15)])
            }
        }
        if runStart < bytes.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<bytes.count])) }
        out.append(0x22)
    }

    public static func appendString(_ bytes: [UInt8], to out: inout [UInt8]) {
        bytes.withUnsafeBufferPointer { appendString($0, to: &out) }
    }

    public static func appendString(_ bytes: ArraySlice<UInt8>, to out: inout [UInt8]) {
        bytes.withUnsafeBufferPointer { appendString($0, to: &out) }
    }

    public static func appendString(_ string: String, to out: inout [UInt8]) {
        var s = string
        s.withUTF8 { appendString($0, to: &out) }
    }

    /// A string literal, or `null` for nil.
    public static func appendOptionalString(_ string: String?, to out: inout [UInt8]) {
        if let string { appendString(string, to: &out) } else { out.append(contentsOf: null) }
    }

    public static func appendInt<I: BinaryInteger>(_ value: I, to out: inout [UInt8]) {
        out.append(contentsOf: String(value).utf8)
    }

    /// `string` as a JSON string literal.
    public static func quoted(_ string: String) -> String {
        var out: [UInt8] = []
        appendString(string, to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}
