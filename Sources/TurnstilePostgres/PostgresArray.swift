/// One-dimensional PostgreSQL array literals (`{1,2}`, `{"a",NULL}`), the text form in which a whole column of
/// a batch is bound as ONE parameter and unnested server-side: a batch's rows then cost one statement, not one
/// per row.
enum PostgresArray {
    /// `{1,2,3}`, for `$n::BIGINT[]`, `$n::INTEGER[]` or `$n::SMALLINT[]`.
    static func literal(_ values: [Int64]) -> String {
        "{" + values.map(String.init).joined(separator: ",") + "}"
    }

    /// `{1767225600.0,1.5}`, for `$n::FLOAT8[]`.
    static func literal(_ values: [Double]) -> String {
        "{" + values.map { "\($0)" }.joined(separator: ",") + "}"
    }

    /// `{"a","b\"c",NULL}`, for `$n::TEXT[]`: every element quoted and escaped, nil as NULL.
    static func literal(_ values: [String?]) -> String {
        var out = "{"
        for (index, value) in values.enumerated() {
            if index > 0 { out += "," }
            guard let value else { out += "NULL"; continue }
            out += "\""
            for character in value.unicodeScalars {
                if character == "\\" || character == "\"" { out += "\\" }
                out.unicodeScalars.append(character)
            }
            out += "\""
        }
        return out + "}"
    }

    /// `{"\\x0a1b",NULL}`, for `$n::BYTEA[]`: each element in bytea's hex form.
    static func literal(bytes values: [[UInt8]?]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = [UInt8(ascii: "{")]
        for (index, value) in values.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            guard let value else { out.append(contentsOf: "NULL".utf8); continue }
            out.reserveCapacity(out.count + value.count * 2 + 6)
            out.append(contentsOf: #""\\x"#.utf8)
            for byte in value {
                out.append(digits[Int(byte >> 4)])
                out.append(digits[Int(byte & 15)])
            }
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }

    /// The elements of a one-dimensional text array as PostgreSQL prints it (`{a,"b c",NULL}`); nil elements
    /// are NULLs. Text that is not such an array gives an empty list.
    static func parse(_ text: String) -> [String?] {
        let bytes = Array(text.utf8)
        guard bytes.first == UInt8(ascii: "{"), bytes.last == UInt8(ascii: "}") else { return [] }
        var elements: [String?] = []
        var index = 1
        let end = bytes.count - 1
        guard index < end else { return [] }
        while index <= end {
            var element: [UInt8] = []
            var quoted = false
            if index < end, bytes[index] == UInt8(ascii: "\"") {
                quoted = true
                index += 1
                while index < end, bytes[index] != UInt8(ascii: "\"") {
                    if bytes[index] == UInt8(ascii: "\\"), index + 1 < end { index += 1 }
                    element.append(bytes[index])
                    index += 1
                }
                index += 1 // the closing quote
            } else {
                while index < end, bytes[index] != UInt8(ascii: ",") {
                    element.append(bytes[index])
                    index += 1
                }
            }
            let text = String(decoding: element, as: UTF8.self)
            elements.append(!quoted && text == "NULL" ? nil : text)
            index += 1 // the comma, or past the closing brace
        }
        return elements
    }
}
