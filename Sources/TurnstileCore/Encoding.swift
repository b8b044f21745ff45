/// Text that is not well-formed hex or base64.
public struct EncodingError: Error, Hashable, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Strict hex and base64 codecs: malformed text is an error, never a shorter value.
public enum Hex {
    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    /// Lower-case hex of `bytes`.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes hex of either case; odd length or any other character throws.
    public static func decode(_ text: some StringProtocol) throws(EncodingError) -> [UInt8] {
        try Array(text.utf8).withBytes { raw throws(EncodingError) in try decode(bytes: raw) }
    }

    /// Decodes hex digits given as ASCII bytes.
    public static func decode(bytes: UnsafeRawBufferPointer) throws(EncodingError) -> [UInt8] {
        guard bytes.count % 2 == 0 else { throw EncodingError("hex has an odd number of digits") }
        var out = [UInt8](repeating: 0, count: bytes.count / 2)
        for index in 0..<out.count {
            guard let high = value(of: bytes[2 * index]), let low = value(of: bytes[2 * index + 1]) else {
                throw EncodingError("hex has a character that is not a hex digit")
            }
            out[index] = high << 4 | low
        }
        return out
    }

    /// Plain comparisons rather than range patterns: this runs for every signature byte, and range
    /// patterns can compile to generic `contains` calls.
    @inline(__always)
    static func value(of character: UInt8) -> UInt8? {
        let digit = character &- UInt8(ascii: "0")
        if digit < 10 { return digit }
        let letter = (character | 0x20) &- UInt8(ascii: "a")
        if letter < 6 { return letter + 10 }
        return nil
    }
}

/// Standard base64 (RFC 4648 section 4) with padding required and no whitespace.
public enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Padded standard base64 of `bytes`.
    public static func encode(_ bytes: some Collection<UInt8>) -> String {
        let input = Array(bytes)
        var out = [UInt8]()
        out.reserveCapacity((input.count + 2) / 3 * 4)
        var index = 0
        while index + 3 <= input.count {
            let chunk = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8 | UInt32(input[index + 2])
            out.append(alphabet[Int(chunk >> 18 & 63)])
            out.append(alphabet[Int(chunk >> 12 & 63)])
            out.append(alphabet[Int(chunk >> 6 & 63)])
            out.append(alphabet[Int(chunk & 63)])
            index += 3
        }
        let rest = input.count - index
        if rest == 1 {
            let chunk = UInt32(input[index]) << 16
            out.append(alphabet[Int(chunk >> 18 & 63)])
            out.append(alphabet[Int(chunk >> 12 & 63)])
            out.append(UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        } else if rest == 2 {
            let chunk = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8
            out.append(alphabet[Int(chunk >> 18 & 63)])
            out.append(alphabet[Int(chunk >> 12 & 63)])
            out.append(alphabet[Int(chunk >> 6 & 63)])
            out.append(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes padded standard base64. Wrong length, a foreign character, misplaced padding
    /// or non-zero unused bits all throw.
    public static func decode(_ text: some StringProtocol) throws(EncodingError) -> [UInt8] {
        try Array(text.utf8).withBytes { raw throws(EncodingError) in try decode(bytes: raw) }
    }

    /// Decodes padded standard base64 given as ASCII bytes.
    public static func decode(bytes input: UnsafeRawBufferPointer) throws(EncodingError) -> [UInt8] {
        guard !input.isEmpty else { return [] }
        guard input.count % 4 == 0 else {
            throw EncodingError("base64 length is not a multiple of 4")
        }
        var padding = 0
        if input[input.count - 1] == UInt8(ascii: "=") { padding += 1 }
        if input[input.count - 2] == UInt8(ascii: "=") { padding += 1 }
        let count = input.count / 4 * 3 - padding
        var out = [UInt8](repeating: 0, count: count)
        let failure: EncodingError? = sextets.withUnsafeBufferPointer { table in
            out.withUnsafeMutableBufferPointer { out -> EncodingError? in
                var index = 0
                var written = 0
                while index < input.count {
                    let isLast = index + 4 == input.count
                    let used = isLast ? 4 - padding : 4
                    var chunk: UInt32 = 0
                    for offset in 0..<4 {
                        guard offset < used else {
                            chunk <<= 6
                            continue
                        }
                        let value = table[Int(input[index + offset])]
                        if value == 0xff { return EncodingError("base64 has a character outside its alphabet") }
                        chunk = chunk << 6 | UInt32(value)
                    }
                    out[written] = UInt8(truncatingIfNeeded: chunk >> 16)
                    written += 1
                    if !(isLast && padding == 2) { out[written] = UInt8(truncatingIfNeeded: chunk >> 8); written += 1 }
                    if !(isLast && padding >= 1) { out[written] = UInt8(truncatingIfNeeded: chunk); written += 1 }
                    if isLast {
                        let unused: UInt32 = padding == 2 ? chunk & 0xffff : padding == 1 ? chunk & 0xff : 0
                        if unused != 0 { return EncodingError("base64 has non-zero padding bits") }
                    }
                    index += 4
                }
                return nil
            }
        }
        if let failure { throw failure }
        return out
    }

    /// The value of each base64 character, 0xff for the others.
    private static let sextets: [UInt8] = (0..<256).map { code -> UInt8 in
        switch UInt8(code) {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): UInt8(code) - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): UInt8(code) - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt8(code) - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): 62
        case UInt8(ascii: "/"): 63
        default: 0xff
        }
    }
}
