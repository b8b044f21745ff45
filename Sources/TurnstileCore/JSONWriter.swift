/// Writes one JSON object straight into bytes, members in the order given: the hot-path form of
/// `JSONValue.object(…).javaScriptStringified()` (same escaping, same numbers) without building values first.
/// For objects whose keys are distinct and not integer-like, so that the order JavaScript would give is the
/// order written; ``keysNeedJSONObject(_:)`` says when they are not.
public struct JSONWriter {
    public private(set) var bytes: [UInt8]
    private var empty = true

    public init(reservingCapacity capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
        bytes.append(UInt8(ascii: "{"))
    }

    private mutating func key(_ key: String) {
        if !empty { bytes.append(UInt8(ascii: ",")) }
        empty = false
        JSONStringifier.writeString(key, into: &bytes)
        bytes.append(UInt8(ascii: ":"))
    }

    public mutating func add(_ name: String, string: String) {
        key(name)
        JSONStringifier.writeString(string, into: &bytes)
    }

    public mutating func add(_ name: String, integer: Int64) {
        key(name)
        // Integers JavaScript holds exactly print as themselves; larger ones as JSON.stringify prints the double.
        if integer.magnitude < 1 << 53 {
            bytes.append(contentsOf: String(integer).utf8)
        } else {
            bytes.append(contentsOf: JSONStringifier.formatNumber(Double(integer)).utf8)
        }
    }

    public mutating func add(_ name: String, bool: Bool) {
        key(name)
        bytes.append(contentsOf: (bool ? "true" : "false").utf8)
    }

    public mutating func add(_ name: String, _ value: JSONValue) {
        key(name)
        JSONStringifier.write(value, into: &bytes)
    }

    /// A member whose value is JSON text already (copied as it is: the caller vouches for it).
    public mutating func add(_ name: String, json: [UInt8]) {
        key(name)
        bytes += json
    }

    /// The object, closed.
    public mutating func finish() -> [UInt8] {
        bytes.append(UInt8(ascii: "}"))
        return bytes
    }

    /// Appends `text` as a JSON string (quoted and escaped as `JSON.stringify` does).
    public static func appendString(_ text: String, to bytes: inout [UInt8]) {
        JSONStringifier.writeString(text, into: &bytes)
    }

    /// Replaces raw U+2028 and U+2029 in a serialised JSON text with `\u2028` and `\u2029`: JSON allows them
    /// unescaped (only inside strings), but readers that split lines on them (Python's `str.splitlines`,
    /// JavaScript line tools) would cut a JSON line there. For lines written out (the `jsonl` handler, the
    /// log); never for the `JSON.stringify` form a signature is checked over.
    public static func escapeLineSeparators(_ bytes: inout [UInt8]) {
        guard bytes.contains(0xe2) else { return }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        var index = 0
        while index < bytes.count {
            if bytes[index] == 0xe2, index + 2 < bytes.count, bytes[index + 1] == 0x80, bytes[index + 2] == 0xa8 || bytes[index + 2] == 0xa9 {
                out.append(contentsOf: Array((bytes[index + 2] == 0xa8 ? "\\u2028" : "\\u2029").utf8))
                index += 3
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        bytes = out
    }

    /// Whether an object with these keys, in this order, must go through ``JSONObject``: a key repeats (the
    /// last value wins there) or is integer-like (JavaScript puts those first).
    public static func keysNeedJSONObject(_ keys: [String]) -> Bool {
        for (index, key) in keys.enumerated() {
            if JSONStringifier.arrayIndex(key) != nil { return true }
            for other in keys[..<index] where other == key { return true }
        }
        return false
    }
}
