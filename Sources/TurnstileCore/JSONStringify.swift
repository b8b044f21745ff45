/// Serialisation exactly as JavaScript's `JSON.stringify` writes a parsed value: compact, integer-like keys
/// first in ascending order and then the others in insertion order, numbers in ECMAScript's shortest form
/// (`10.0` becomes `10`, `1e-7` stays `1e-7`), and no escaping of `/` or non-ASCII text.
///
/// Sync signs `JSON.stringify(req.body)` in its sample, so this is the form its fallback check re-creates.
/// Turnstile's own output lines use the same writer, so one serialiser exists in the package.
extension JSONValue {
    /// The UTF-8 bytes `JSON.stringify` would produce for this value.
    public func javaScriptStringified() -> [UInt8] {
        var out: [UInt8] = []
        JSONStringifier.write(self, into: &out)
        return out
    }

    /// The text `JSON.stringify` would produce for this value.
    public func serialized() -> String {
        String(decoding: javaScriptStringified(), as: UTF8.self)
    }
}

enum JSONStringifier {
    static func write(_ value: JSONValue, into out: inout [UInt8]) {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let flag): out.append(contentsOf: (flag ? "true" : "false").utf8)
        case .number(let number): out.append(contentsOf: formatNumber(number.doubleValue).utf8)
        case .string(let text): writeString(text, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                write(item, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            out.append(UInt8(ascii: "{"))
            var first = true
            for index in propertyOrder(object.keys) {
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                writeString(object.keys[index], into: &out)
                out.append(UInt8(ascii: ":"))
                write(object.values[index], into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// ECMAScript's OrdinaryOwnPropertyKeys: array indices ascending, then strings in creation order.
    static func propertyOrder(_ keys: [String]) -> [Int] {
        var indices: [(UInt32, Int)] = []
        var others: [Int] = []
        for (position, key) in keys.enumerated() {
            if let index = arrayIndex(key) { indices.append((index, position)) } else { others.append(position) }
        }
        if indices.isEmpty { return others }
        return indices.sorted { $0.0 < $1.0 }.map(\.1) + others
    }

    static func arrayIndex(_ key: String) -> UInt32? {
        let utf8 = key.utf8
        guard let first = utf8.first, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9"), utf8.count <= 10 else { return nil }
        if first == UInt8(ascii: "0") && utf8.count > 1 { return nil }
        guard utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let value = UInt64(key), value < 4_294_967_295 else { return nil }
        return UInt32(value)
    }

    static func writeString(_ text: String, into out: inout [UInt8]) {
        var text = text
        text.withUTF8 { bytes in
            out.reserveCapacity(out.count + bytes.count + 2)
            out.append(UInt8(ascii: "\""))
            // Runs that need no escape are copied whole.
            var runStart = 0
            for index in 0..<bytes.count {
                let byte = bytes[index]
                guard byte < 0x20 || byte == 0x22 || byte == 0x5c else { continue }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                runStart = index + 1
                switch byte {
                case 0x22: out.append(contentsOf: [0x5c, 0x22])
                case 0x5c: out.append(contentsOf: [0x5c, 0x5c])
                case 0x08: out.append(contentsOf: [0x5c, UInt8(ascii: "b")])
                case 0x09: out.append(contentsOf: [0x5c, UInt8(ascii: "t")])
                case 0x0a: out.append(contentsOf: [0x5c, UInt8(ascii: "n")])
                case 0x0c: out.append(contentsOf: [0x5c, UInt8(ascii: "f")])
                case 0x0d: out.append(contentsOf: [0x5c, UInt8(ascii: "r")])
                default:
                    let hex: StaticString = "0123456789abcdef"
                    out.append(contentsOf: [0x5c, UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                            hex.utf8Start[Int(byte >> 4)], hex.utf8Start[Int(byte & 0xf)]])
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<bytes.count]))
            out.append(UInt8(ascii: "\""))
        }
    }

    /// ECMAScript Number::toString for a double, built from Swift's shortest round-trip digits.
    static func formatNumber(_ value: Double) -> String {
        guard value.isFinite else { return "null" }
        if value == 0 { return "0" }
        if value < 0 { return "-" + formatNumber(-value) }
        // Swift prints the shortest digits that round-trip, e.g. "10.0", "0.001", "1e-07", "1.2345e+22".
        let printed = value.description
        var mantissa = Substring(printed)
        var exponent = 0
        if let e = printed.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = printed[..<e]
            exponent = Int(printed[printed.index(after: e)...]) ?? 0
        }
        var digits = [Character]()
        var integerCount = 0
        var seenPoint = false
        for character in mantissa {
            if character == "." { seenPoint = true; continue }
            digits.append(character)
            if !seenPoint { integerCount += 1 }
        }
        while let first = digits.first, first == "0", digits.count > 1 {
            digits.removeFirst()
            integerCount -= 1
        }
        while let last = digits.last, last == "0", digits.count > 1 { digits.removeLast() }
        let k = digits.count
        let n = integerCount + exponent
        let s = String(digits)
        if k <= n && n <= 21 {
            return s + String(repeating: "0", count: n - k)
        }
        if 0 < n && n <= 21 {
            return String(digits[0..<n]) + "." + String(digits[n...])
        }
        if -6 < n && n <= 0 {
            return "0." + String(repeating: "0", count: -n) + s
        }
        let e = n - 1
        let sign = e < 0 ? "-" : "+"
        if k == 1 { return s + "e" + sign + String(abs(e)) }
        return String(digits[0]) + "." + String(digits[1...]) + "e" + sign + String(abs(e))
    }
}
