import TurnstileCore
import TurnstileCrypto
import Glibc

/// A signature header taken apart: the usable entries and, for key-value headers, the timestamp entry.
///
/// Works on the header's UTF-8 bytes: this runs for every delivery.
struct ParsedSignature {
    /// The HMAC entries, decoded and laid end to end (each `macLength` bytes). One flat byte array rather
    /// than an array of entries keeps this path free of generic-metadata look-ups.
    var hmac: [UInt8] = []
    /// The Ed25519 entries, 64 bytes each, end to end.
    var ed25519: [UInt8] = []
    var timestamp: String? = nil

    var isEmpty: Bool { hmac.isEmpty && ed25519.isEmpty }

    /// Adds a decoded HMAC entry; returns 1 when the entry did not decode (to count it as malformed), else 0.
    mutating func appendHMAC(_ bytes: [UInt8]?) -> Int {
        guard let bytes else { return 1 }
        if hmac.isEmpty { hmac = bytes } else { hmac += bytes }
        return 0
    }

    /// Adds a decoded Ed25519 entry; returns 1 when the entry did not decode, else 0.
    mutating func appendEd25519(_ bytes: [UInt8]?) -> Int {
        guard let bytes else { return 1 }
        if ed25519.isEmpty { ed25519 = bytes } else { ed25519 += bytes }
        return 0
    }

    /// Parses `value` as `syntax` says. Malformed entries are skipped; the header fails only when nothing
    /// usable is left.
    static func parse(_ value: String, syntax: SignatureSyntax) throws(Rejection) -> ParsedSignature {
        try value.withUTF8Bytes { raw throws(Rejection) in try parse(raw, syntax: syntax) }
    }

    private static func parse(_ raw: UnsafeRawBufferPointer, syntax: SignatureSyntax) throws(Rejection) -> ParsedSignature {
        let format = syntax.format
        let encoding = syntax.encoding
        let macLength = syntax.macLength
        var parsed = ParsedSignature()
        var malformed = 0
        var otherVersions = 0
        let whole = trimmed(raw, 0..<raw.count)
        switch format {
        case .plain(let prefix):
            let prefixBytes = syntax.first
            guard whole.count >= prefixBytes.count, prefixBytes.indices.allSatisfy({ raw[whole.lowerBound + $0] == prefixBytes[$0] }) else {
                throw Rejection(.malformedSignature, prefix.isEmpty ? "the signature header is empty" : "the signature does not start with \"\(prefix)\"")
            }
            guard parsed.appendHMAC(decode(raw, (whole.lowerBound + prefixBytes.count)..<whole.upperBound, macLength, encoding)) == 0 else {
                throw Rejection(.malformedSignature, "the signature is not \(macLength) bytes of \(encoding.rawValue)")
            }
            return parsed
        case .keyValue(let signatureKey, let timestampKey):
            let signatureName = syntax.first
            let timestampName = syntax.second
            try forEachPiece(raw, whole, on: UInt8(ascii: ","), omittingEmpty: false) { piece throws(Rejection) in
                let entry = trimmed(raw, piece)
                guard let equals = firstIndex(of: UInt8(ascii: "="), in: raw, entry) else { malformed += 1; return }
                let key = entry.lowerBound..<equals
                let value = (equals + 1)..<entry.upperBound
                if equal(raw, key, timestampName) {
                    guard parsed.timestamp == nil else {
                        throw Rejection(.malformedSignature, "the \(timestampKey)= entry appears more than once")
                    }
                    parsed.timestamp = String(decoding: UnsafeRawBufferPointer(rebasing: raw[value]), as: UTF8.self)
                } else if equal(raw, key, signatureName) {
                    malformed += parsed.appendHMAC(decode(raw, value, macLength, encoding))
                } else {
                    otherVersions += 1
                }
            }
            if parsed.isEmpty && otherVersions > 0 && malformed == 0 {
                throw Rejection(.invalidSignature, "the header has no \(signatureKey)= entry (other schemes such as v0 are never accepted)")
            }
        case .versioned(let hmacVersion, let ed25519Version):
            let hmacName = syntax.first
            let ed25519Name = ed25519Version == nil ? nil : syntax.second
            try forEachPiece(raw, whole, on: UInt8(ascii: " "), omittingEmpty: true) { piece throws(Rejection) in
                guard let comma = firstIndex(of: UInt8(ascii: ","), in: raw, piece) else { malformed += 1; return }
                let version = piece.lowerBound..<comma
                let value = (comma + 1)..<piece.upperBound
                if equal(raw, version, hmacName) {
                    malformed += parsed.appendHMAC(decode(raw, value, macLength, encoding))
                } else if let ed25519Name, equal(raw, version, ed25519Name) {
                    malformed += parsed.appendEd25519(decode(raw, value, 64, .base64))
                } else {
                    otherVersions += 1
                }
            }
            if parsed.isEmpty && otherVersions > 0 && malformed == 0 {
                throw Rejection(.invalidSignature, "no entry has a supported version (\(hmacVersion)\(ed25519Version.map { " or \($0)" } ?? ""))")
            }
        }
        if parsed.isEmpty {
            throw Rejection(.malformedSignature, malformed == 0 ? "the signature header has no entries" : "no signature entry is well formed (\(malformed) malformed)")
        }
        return parsed
    }

    private static func decode(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>, _ length: Int,
                               _ encoding: SignatureEncoding) -> [UInt8]? {
        let slice = UnsafeRawBufferPointer(rebasing: raw[range])
        let bytes = encoding == .hex ? try? Hex.decode(bytes: slice) : try? Base64.decode(bytes: slice)
        guard let bytes, bytes.count == length else { return nil }
        return bytes
    }

    private static func trimmed(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>) -> Range<Int> {
        var lower = range.lowerBound
        var upper = range.upperBound
        while lower < upper, raw[lower] == 0x20 || raw[lower] == 0x09 { lower += 1 }
        while upper > lower, raw[upper - 1] == 0x20 || raw[upper - 1] == 0x09 { upper -= 1 }
        return lower..<upper
    }

    private static func forEachPiece(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>, on separator: UInt8,
                                     omittingEmpty: Bool, _ body: (Range<Int>) throws(Rejection) -> Void) throws(Rejection) {
        var start = range.lowerBound
        while start <= range.upperBound {
            let index = firstIndex(of: separator, in: raw, start..<range.upperBound) ?? range.upperBound
            if !(omittingEmpty && index == start) { try body(start..<index) }
            start = index + 1
        }
    }

    private static func firstIndex(of byte: UInt8, in raw: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        guard !range.isEmpty, let base = raw.baseAddress,
              let found = memchr(base + range.lowerBound, Int32(byte), range.count) else { return nil }
        return UnsafeRawPointer(found) - base
    }

    private static func equal(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>, _ name: [UInt8]) -> Bool {
        range.count == name.count && name.indices.allSatisfy { raw[range.lowerBound + $0] == name[$0] }
    }
}

/// A scheme's signature syntax with its names as bytes, prepared once per verifier (a class: passed per
/// delivery for one reference count).
final class SignatureSyntax: Sendable {
    let format: SignatureFormat
    let encoding: SignatureEncoding
    let macLength: Int
    /// plain: the prefix; key-value: the signature key; versioned: the HMAC version.
    let first: [UInt8]
    /// key-value: the timestamp key; versioned: the Ed25519 version.
    let second: [UInt8]

    init(_ spec: SchemeSpec) {
        format = spec.format
        encoding = spec.encoding
        macLength = spec.algorithm.outputByteCount
        switch spec.format {
        case .plain(let prefix): (first, second) = (Array(prefix.utf8), [])
        case .keyValue(let signatureKey, let timestampKey): (first, second) = (Array(signatureKey.utf8), Array(timestampKey.utf8))
        case .versioned(let hmacVersion, let ed25519Version): (first, second) = (Array(hmacVersion.utf8), Array((ed25519Version ?? "").utf8))
        }
    }
}

/// Unix seconds as providers write them: 1 to 12 ASCII digits.
func parseUnixSeconds(_ text: String) -> Int64? {
    var text = text
    return text.withUTF8 { utf8 -> Int64? in
        guard utf8.count >= 1, utf8.count <= 12 else { return nil }
        var seconds: Int64 = 0
        for byte in utf8 {
            let digit = byte &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            seconds = seconds * 10 + Int64(digit)
        }
        return seconds
    }
}

extension String {
    /// Without leading and trailing spaces and tabs (HTTP's optional white space); `self` when there are none.
    func trimmedOWS() -> String {
        var copy = self
        let untouched = copy.withUTF8 { utf8 in
            guard let first = utf8.first, let last = utf8.last else { return false }
            return first != 0x20 && first != 0x09 && last != 0x20 && last != 0x09
        }
        if untouched { return self }
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice.removeLast() }
        return String(slice)
    }
}
