#if canImport(Glibc)
import Glibc
#endif

/// A JSON text that is not well formed, with where it went wrong.
public struct JSONError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Byte offset of the problem in the input.
    public let offset: Int
    public let message: String

    public init(offset: Int, message: String) {
        self.offset = offset
        self.message = message
    }

    public var description: String { "\(message) at byte \(offset)" }
}

/// Strict RFC 8259 parsing into ``JSONValue``: no trailing commas, comments, leading zeros, bare
/// control characters or invalid UTF-8; nesting is bounded.
public enum JSONParser {
    /// Deepest nesting of arrays and objects accepted.
    public static let maximumDepth = 256

    /// What to do with a key an object repeats.
    public enum RepeatedKeys: Sendable {
        /// Keep the first position and the last value, as JavaScript's `JSON.parse` does.
        case lastWins
        /// Refuse the document: for files people write (a config), where a repeat is a mistake.
        case refuse
    }

    public static func parse(_ bytes: [UInt8], repeatedKeys: RepeatedKeys = .lastWins) throws(JSONError) -> JSONValue {
        try bytes.withBytes { raw throws(JSONError) in try parse(raw, repeatedKeys: repeatedKeys) }
    }

    public static func parse(_ text: String) throws(JSONError) -> JSONValue {
        try parse(Array(text.utf8))
    }

    /// Parses one JSON text. Work is linear in the input (objects with many keys included); nesting deeper
    /// than ``maximumDepth`` is refused.
    public static func parse(_ raw: UnsafeRawBufferPointer, repeatedKeys: RepeatedKeys = .lastWins) throws(JSONError) -> JSONValue {
        var cursor = JSONCursor(raw)
        cursor.refusesRepeatedKeys = repeatedKeys == .refuse
        cursor.skipWhitespace()
        let value = try cursor.parseValue(depth: 0)
        cursor.skipWhitespace()
        guard cursor.atEnd else { throw cursor.error("unexpected data after the JSON value") }
        return value
    }
}

/// A value found by ``JSONScanner`` without decoding the rest of the document.
public enum JSONField: Sendable, Hashable {
    case string(String)
    case number(String)
    case bool(Bool)
    case null
    /// An object; the range covers it from `{` to `}` inclusive.
    case object(Range<Int>)
    /// An array; the range covers it from `[` to `]` inclusive.
    case array(Range<Int>)

    public var stringValue: String? {
        if case .string(let text) = self { return text }
        return nil
    }
}

/// Reads chosen members of a JSON object straight from the raw bytes, skipping everything else.
///
/// This is the hot path of verification: schemes need two or three fields of a body they must not
/// decode whole. Skipped values are checked for structure, not fully validated.
public enum JSONScanner {
    /// The values of `names` among the members of the object spanning `range` (the whole input when nil).
    ///
    /// - Throws: ``JSONError`` when the input is not an object, is broken on the way, or repeats one of
    ///   `names` (an ambiguous key is refused rather than guessed).
    public static func fields(
        _ names: [String], in raw: UnsafeRawBufferPointer, object range: Range<Int>? = nil
    ) throws(JSONError) -> [JSONField?] {
        var found: [JSONField?] = []
        for offset in try locate(names, in: raw, object: range) {
            found.append(offset < 0 ? nil : try field(at: offset, in: raw))
        }
        return found
    }

    /// Where the values of `names` start among the members of the object spanning `range`: one byte offset
    /// per name, or -1 for a name that is absent. Read a value with ``field(at:in:)``.
    ///
    /// Offsets rather than values keep this allocation-light: it runs on every delivery.
    /// - Throws: as ``fields(_:in:object:)``.
    public static func locate(
        _ names: [String], in raw: UnsafeRawBufferPointer, object range: Range<Int>? = nil
    ) throws(JSONError) -> [Int] {
        let spans = try spans(of: names, in: raw, object: range)
        return names.indices.map { spans.start(of: $0) }
    }

    /// As ``locate(_:in:object:)``, with each value's end too, into a ``JSONSpans`` that holds a few names
    /// without allocating (this runs on every delivery). Read a value with ``field(from:to:in:)`` without
    /// scanning it again.
    ///
    /// - Parameter stopWhenAllFound: return as soon as every name has been seen, without reading the rest of
    ///   the object (so without refusing a repeated key further on). Only for bodies whose every byte is
    ///   covered by a verified signature, where the sender is the only one who could have repeated a key.
    public static func spans(
        of names: [String], in raw: UnsafeRawBufferPointer, object range: Range<Int>? = nil, stopWhenAllFound: Bool = false
    ) throws(JSONError) -> JSONSpans {
        var cursor = JSONCursor(raw, range: range)
        cursor.skipWhitespace()
        guard cursor.peek() == UInt8(ascii: "{") else { throw cursor.error("expected a JSON object") }
        cursor.advance()
        var found = JSONSpans(count: names.count)
        var missing = names.count
        cursor.skipWhitespace()
        if cursor.peek() == UInt8(ascii: "}") { return found }
        while true {
            cursor.skipWhitespace()
            let keyStart = cursor.position
            let match = try cursor.matchKey(names)
            cursor.skipWhitespace()
            try cursor.expect(UInt8(ascii: ":"))
            cursor.skipWhitespace()
            let valueStart = cursor.position
            try cursor.skipValue(depth: 0)
            if let match {
                guard found.start(of: match) < 0 else {
                    throw JSONError(offset: keyStart, message: "key \"\(names[match])\" appears more than once")
                }
                found.set(match, start: valueStart, end: cursor.position)
                missing -= 1
                if stopWhenAllFound && missing == 0 { return found }
            }
            cursor.skipWhitespace()
            guard let next = cursor.peek() else { throw cursor.error("unterminated object") }
            cursor.advance()
            if next == UInt8(ascii: "}") { return found }
            guard next == UInt8(ascii: ",") else { throw JSONError(offset: cursor.position - 1, message: "expected ',' or '}'") }
        }
    }

    /// The value that starts at byte `offset` (as ``locate(_:in:object:)`` reports it).
    public static func field(at offset: Int, in raw: UnsafeRawBufferPointer) throws(JSONError) -> JSONField {
        var cursor = JSONCursor(raw, range: offset..<raw.count)
        return try cursor.readField()
    }

    /// The value spanning `start..<end` (as ``spans(of:in:object:stopWhenAllFound:)`` reports it); objects and arrays are
    /// not scanned again.
    public static func field(from start: Int, to end: Int, in raw: UnsafeRawBufferPointer) throws(JSONError) -> JSONField {
        switch raw[start] {
        case UInt8(ascii: "{"): return .object(start..<end)
        case UInt8(ascii: "["): return .array(start..<end)
        default: return try field(at: start, in: raw)
        }
    }

    /// The value at a path of object keys, e.g. `["call", "call_id"]`.
    public static func field(at path: [String], in raw: UnsafeRawBufferPointer) throws(JSONError) -> JSONField? {
        var range: Range<Int>? = nil
        for (index, key) in path.enumerated() {
            guard let field = try fields([key], in: raw, object: range)[0] else { return nil }
            if index == path.count - 1 { return field }
            guard case .object(let inner) = field else { return nil }
            range = inner
        }
        return nil
    }
}

struct JSONCursor {
    private let bytes: UnsafeRawBufferPointer
    private let end: Int
    private(set) var position: Int
    /// Whether ``parseValue(depth:)`` refuses an object that repeats a key.
    var refusesRepeatedKeys = false

    init(_ bytes: UnsafeRawBufferPointer, range: Range<Int>? = nil) {
        self.bytes = bytes
        self.position = range?.lowerBound ?? 0
        self.end = range?.upperBound ?? bytes.count
    }

    var atEnd: Bool { position >= end }

    @inline(__always) func peek() -> UInt8? { position < end ? bytes[position] : nil }
    @inline(__always) mutating func advance() { position += 1 }

    func error(_ message: String) -> JSONError { JSONError(offset: position, message: message) }

    mutating func skipWhitespace() {
        while position < end {
            switch bytes[position] {
            case 0x20, 0x09, 0x0a, 0x0d: position += 1
            default: return
            }
        }
    }

    mutating func expect(_ byte: UInt8) throws(JSONError) {
        guard peek() == byte else { throw error("expected '\(Character(Unicode.Scalar(byte)))'") }
        position += 1
    }

    mutating func expectLiteral(_ literal: StaticString) throws(JSONError) {
        let count = literal.utf8CodeUnitCount
        guard position + count <= end else { throw error("invalid literal") }
        for index in 0..<count where bytes[position + index] != literal.utf8Start[index] {
            throw error("invalid literal")
        }
        position += count
    }

    // MARK: Full parsing

    mutating func parseValue(depth: Int) throws(JSONError) -> JSONValue {
        guard let byte = peek() else { throw error("unexpected end of input") }
        switch byte {
        case UInt8(ascii: "{"):
            guard depth < JSONParser.maximumDepth else { throw error("nesting deeper than \(JSONParser.maximumDepth)") }
            return .object(try parseObject(depth: depth + 1))
        case UInt8(ascii: "["):
            guard depth < JSONParser.maximumDepth else { throw error("nesting deeper than \(JSONParser.maximumDepth)") }
            position += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if peek() == UInt8(ascii: "]") { position += 1; return .array(items) }
            while true {
                skipWhitespace()
                items.append(try parseValue(depth: depth + 1))
                skipWhitespace()
                guard let next = peek() else { throw error("unterminated array") }
                position += 1
                if next == UInt8(ascii: "]") { return .array(items) }
                guard next == UInt8(ascii: ",") else { throw JSONError(offset: position - 1, message: "expected ',' or ']'") }
            }
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        default: return .number(JSONNumber(text: try scanNumber()))
        }
    }

    /// An object's members. Repeats are found through a hash table, not by searching the keys so far, so
    /// an object with many keys costs linear time (hashing is seeded per process, so collisions cannot be
    /// planned).
    private mutating func parseObject(depth: Int) throws(JSONError) -> JSONObject {
        position += 1
        var keys: [String] = []
        var values: [JSONValue] = []
        var positions: [String: Int] = [:]
        skipWhitespace()
        if peek() == UInt8(ascii: "}") { position += 1; return JSONObject() }
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let keyStart = position
            let key = try parseString()
            skipWhitespace()
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            let value = try parseValue(depth: depth)
            if let earlier = positions[key] {
                if refusesRepeatedKeys { throw JSONError(offset: keyStart, message: "key \"\(key)\" appears more than once") }
                values[earlier] = value
            } else {
                positions[key] = keys.count
                keys.append(key)
                values.append(value)
            }
            skipWhitespace()
            guard let next = peek() else { throw error("unterminated object") }
            position += 1
            if next == UInt8(ascii: "}") { return JSONObject(uniqueKeys: keys, values: values) }
            guard next == UInt8(ascii: ",") else { throw JSONError(offset: position - 1, message: "expected ',' or '}'") }
        }
    }

    /// `slice` as text when it is valid UTF-8. ASCII, the common case, skips the (generic, slower) validating
    /// initialiser.
    static func validatedText(_ slice: UnsafeRawBufferPointer) -> String? {
        var ascii = true
        for byte in slice where byte >= 0x80 {
            ascii = false
            break
        }
        if ascii { return String(decoding: slice, as: UTF8.self) }
        return String(validating: slice, as: UTF8.self)
    }

    /// Reads a string token (cursor on the opening quote) and returns its decoded text.
    mutating func parseString() throws(JSONError) -> String {
        let start = position
        position += 1
        let contentStart = position
        // Fast path: no escapes.
        while position < end {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                let slice = UnsafeRawBufferPointer(rebasing: bytes[contentStart..<position])
                position += 1
                guard let text = Self.validatedText(slice) else {
                    throw JSONError(offset: start, message: "string is not valid UTF-8")
                }
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw error("control character in string") }
            position += 1
        }
        var buffer = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[contentStart..<position]))
        while true {
            guard position < end else { throw JSONError(offset: start, message: "unterminated string") }
            let byte = bytes[position]
            switch byte {
            case UInt8(ascii: "\""):
                position += 1
                guard let text = String(validating: buffer, as: UTF8.self) else {
                    throw JSONError(offset: start, message: "string is not valid UTF-8")
                }
                return text
            case UInt8(ascii: "\\"):
                position += 1
                guard let escape = peek() else { throw JSONError(offset: start, message: "unterminated string") }
                position += 1
                switch escape {
                case UInt8(ascii: "\""): buffer.append(0x22)
                case UInt8(ascii: "\\"): buffer.append(0x5c)
                case UInt8(ascii: "/"): buffer.append(0x2f)
                case UInt8(ascii: "b"): buffer.append(0x08)
                case UInt8(ascii: "f"): buffer.append(0x0c)
                case UInt8(ascii: "n"): buffer.append(0x0a)
                case UInt8(ascii: "r"): buffer.append(0x0d)
                case UInt8(ascii: "t"): buffer.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try readHex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard position + 1 < end, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") else {
                            throw error("unpaired surrogate in \\u escape")
                        }
                        position += 2
                        let low = try readHex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw error("unpaired surrogate in \\u escape") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw error("unpaired surrogate in \\u escape")
                    }
                    buffer.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
                default:
                    throw JSONError(offset: position - 2, message: "invalid escape in string")
                }
            default:
                // Copy the run up to the next quote, backslash or control character in one go.
                let runStart = position
                while position < end {
                    let next = bytes[position]
                    if next == UInt8(ascii: "\"") || next == UInt8(ascii: "\\") || next < 0x20 { break }
                    position += 1
                }
                if position == runStart {
                    throw error("control character in string")
                }
                buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart..<position]))
            }
        }
    }

    private mutating func readHex4() throws(JSONError) -> UInt32 {
        guard position + 4 <= end else { throw error("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            value = value << 4 | digit
            position += 1
        }
        return value
    }

    /// Reads a number token and returns its text.
    mutating func scanNumber() throws(JSONError) -> String {
        let start = position
        if peek() == UInt8(ascii: "-") { position += 1 }
        guard let first = peek(), isDigit(first) else { throw JSONError(offset: start, message: "invalid value") }
        position += 1
        if first != UInt8(ascii: "0") {
            while let byte = peek(), isDigit(byte) { position += 1 }
        } else if let byte = peek(), isDigit(byte) {
            throw error("leading zero in number")
        }
        if peek() == UInt8(ascii: ".") {
            position += 1
            guard let byte = peek(), isDigit(byte) else { throw error("expected a digit after '.'") }
            while let byte = peek(), isDigit(byte) { position += 1 }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            position += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { position += 1 }
            guard let byte = peek(), isDigit(byte) else { throw error("expected a digit in the exponent") }
            while let byte = peek(), isDigit(byte) { position += 1 }
        }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
    }

    @inline(__always) private func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }

    // MARK: Scanning

    /// Reads an object key (cursor on its quote) and returns the index of the matching name, if any.
    mutating func matchKey(_ names: [String]) throws(JSONError) -> Int? {
        guard peek() == UInt8(ascii: "\"") else { throw error("expected a string key") }
        let contentStart = position + 1
        var scan = contentStart
        while scan < end, bytes[scan] != UInt8(ascii: "\""), bytes[scan] != UInt8(ascii: "\\") { scan += 1 }
        if scan < end, bytes[scan] == UInt8(ascii: "\"") {
            let key = UnsafeRawBufferPointer(rebasing: bytes[contentStart..<scan])
            position = scan + 1
            for index in names.indices where names[index].utf8.count == key.count {
                var name = names[index]
                let equal = name.withUTF8 { stored in key.count == 0 || memcmp(stored.baseAddress!, key.baseAddress!, key.count) == 0 }
                if equal { return index }
            }
            return nil
        }
        let key = try parseString()
        return names.firstIndex(of: key)
    }

    /// Reads the value under the cursor as a ``JSONField``.
    mutating func readField() throws(JSONError) -> JSONField {
        guard let byte = peek() else { throw error("unexpected end of input") }
        switch byte {
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "{"):
            let start = position
            try skipValue(depth: 0)
            return .object(start..<position)
        case UInt8(ascii: "["):
            let start = position
            try skipValue(depth: 0)
            return .array(start..<position)
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        default: return .number(try scanNumber())
        }
    }

    /// Moves past one value, checking brackets, strings and literals on the way.
    mutating func skipValue(depth: Int) throws(JSONError) {
        guard let byte = peek() else { throw error("unexpected end of input") }
        switch byte {
        case UInt8(ascii: "\""):
            try skipString()
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            guard depth < JSONParser.maximumDepth else { throw error("nesting deeper than \(JSONParser.maximumDepth)") }
            let close = byte == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
            let isObject = byte == UInt8(ascii: "{")
            position += 1
            skipWhitespace()
            if peek() == close { position += 1; return }
            while true {
                skipWhitespace()
                if isObject {
                    guard peek() == UInt8(ascii: "\"") else { throw error("expected a string key") }
                    try skipString()
                    skipWhitespace()
                    try expect(UInt8(ascii: ":"))
                    skipWhitespace()
                }
                try skipValue(depth: depth + 1)
                skipWhitespace()
                guard let next = peek() else { throw error("unterminated \(isObject ? "object" : "array")") }
                position += 1
                if next == close { return }
                guard next == UInt8(ascii: ",") else { throw JSONError(offset: position - 1, message: "expected ',' or a closing bracket") }
            }
        case UInt8(ascii: "t"): try expectLiteral("true")
        case UInt8(ascii: "f"): try expectLiteral("false")
        case UInt8(ascii: "n"): try expectLiteral("null")
        default: _ = try scanNumber()
        }
    }

    /// Moves past a string token. Finds each candidate closing quote with `memchr` and counts the
    /// backslashes before it; the contents are not validated (skipped values are checked for structure only).
    private mutating func skipString() throws(JSONError) {
        let start = position
        guard let base = bytes.baseAddress else { throw error("unexpected end of input") }
        var from = position + 1
        while from < end {
            guard let found = memchr(base + from, 0x22, end - from) else { break }
            let quote = base.distance(to: UnsafeRawPointer(found))
            var backslashes = 0
            var index = quote - 1
            while index > start && bytes[index] == 0x5c {
                backslashes += 1
                index -= 1
            }
            if backslashes % 2 == 0 {
                position = quote + 1
                return
            }
            from = quote + 1
        }
        throw JSONError(offset: start, message: "unterminated string")
    }
}

/// Where each of several names' values starts and ends in a JSON text (-1 for an absent name). Up to four
/// names are held inline, so reading a few fields of a body allocates nothing.
public struct JSONSpans: Sendable {
    public let count: Int
    private var inline: (Int, Int, Int, Int, Int, Int, Int, Int) = (-1, -1, -1, -1, -1, -1, -1, -1)
    private var spill: [Int]

    init(count: Int) {
        self.count = count
        spill = count > 4 ? [Int](repeating: -1, count: 2 * count) : []
    }

    /// Where the value of name `index` starts, or -1.
    public func start(of index: Int) -> Int { value(2 * index) }
    /// Where the value of name `index` ends (exclusive), or -1.
    public func end(of index: Int) -> Int { value(2 * index + 1) }

    private func value(_ slot: Int) -> Int {
        precondition(slot >= 0 && slot < 2 * count, "JSONSpans index out of range")
        if count > 4 { return spill[slot] }
        return withUnsafeBytes(of: inline) { $0.load(fromByteOffset: slot * MemoryLayout<Int>.stride, as: Int.self) }
    }

    mutating func set(_ index: Int, start: Int, end: Int) {
        precondition(index >= 0 && index < count, "JSONSpans index out of range")
        if count > 4 {
            spill[2 * index] = start
            spill[2 * index + 1] = end
            return
        }
        withUnsafeMutableBytes(of: &inline) { raw in
            raw.storeBytes(of: start, toByteOffset: 2 * index * MemoryLayout<Int>.stride, as: Int.self)
            raw.storeBytes(of: end, toByteOffset: (2 * index + 1) * MemoryLayout<Int>.stride, as: Int.self)
        }
    }
}
