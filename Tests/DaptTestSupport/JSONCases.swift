/// JSON texts shared by the tests of the JSON layer and of the JSON grammar.
public enum JSONCases {
    /// Documents that must parse (JSONTestSuite-style y_ cases).
    public static let valid: [String] = [
        "[]", "{}", "[[]]", #"{"a":{}}"#, "0", "-0", "-0.0", "1", "-1", "0.5", "1e5", "1E+5", "1e-5", "-1.25e-10",
        "123456789012345678901234567890", "1e999", "-1e999", String(repeating: "9", count: 100),
        "true", "false", "null", #""""#, #""a""#, " \t\r\n[ 1 , 2 ] \n",
        #""\" \\ \/ \b \f \n \r \t""#, #""\u0000\u001f\u0020""#, #""\u00e9\u4e2d""#,
        #""\ud83d\ude00""#, #""\uD834\uDD1E""#, "\"é中😀\"", "\"\u{7F}\"", "\"\u{FFFF}\"", "\"\u{10FFFF}\"",
        #"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#, #"{"b":1,"a":2}"#, #"[1,"a",{"x":[]}]"#,
        #"{"\u0061b":1}"#, #"{"":0}"#, "[1e2, 1.5E-3, -0e0]",
    ]
}
