import TurnstileCore

/// A signature header taken apart: the usable entries and, for key-value headers, the timestamp entry.
struct ParsedSignature {
    enum Kind { case hmac, ed25519 }
    struct Entry {
        let kind: Kind
        let bytes: [UInt8]
    }
    var entries: [Entry] = []
    var timestamp: Substring? = nil

    /// Parses `value` as `format` says. Malformed entries are skipped; the header fails only when nothing
    /// usable is left.
    static func parse(_ value: String, format: SignatureFormat, encoding: SignatureEncoding,
                      macLength: Int) throws(Rejection) -> ParsedSignature {
        var parsed = ParsedSignature()
        var malformed = 0
        var otherVersions = 0
        func decode(_ text: Substring, length: Int, with encoding: SignatureEncoding) -> [UInt8]? {
            let bytes = encoding == .hex ? try? Hex.decode(text) : try? Base64.decode(text)
            guard let bytes, bytes.count == length else { return nil }
            return bytes
        }
        let trimmed = value.trimmingOWS()
        switch format {
        case .plain(let prefix):
            guard trimmed.hasPrefix(prefix) else {
                throw Rejection(.malformedSignature, prefix.isEmpty ? "the signature header is empty" : "the signature does not start with \"\(prefix)\"")
            }
            guard let bytes = decode(trimmed.dropFirst(prefix.count), length: macLength, with: encoding) else {
                throw Rejection(.malformedSignature, "the signature is not \(macLength) bytes of \(encoding.rawValue)")
            }
            parsed.entries.append(Entry(kind: .hmac, bytes: bytes))
            return parsed
        case .keyValue(let signatureKey, let timestampKey):
            for piece in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
                let entry = piece.trimmingOWS()
                guard let equals = entry.firstIndex(of: "=") else { malformed += 1; continue }
                let key = entry[..<equals]
                let text = entry[entry.index(after: equals)...]
                if key == timestampKey {
                    guard parsed.timestamp == nil else {
                        throw Rejection(.malformedSignature, "the \(timestampKey)= entry appears more than once")
                    }
                    parsed.timestamp = text
                } else if key == signatureKey {
                    if let bytes = decode(text, length: macLength, with: encoding) {
                        parsed.entries.append(Entry(kind: .hmac, bytes: bytes))
                    } else {
                        malformed += 1
                    }
                } else {
                    otherVersions += 1
                }
            }
            if parsed.entries.isEmpty && otherVersions > 0 && malformed == 0 {
                throw Rejection(.invalidSignature, "the header has no \(signatureKey)= entry (other schemes such as v0 are never accepted)")
            }
        case .versioned(let hmacVersion, let ed25519Version):
            for piece in trimmed.split(separator: " ", omittingEmptySubsequences: true) {
                guard let comma = piece.firstIndex(of: ",") else { malformed += 1; continue }
                let version = piece[..<comma]
                let text = piece[piece.index(after: comma)...]
                if version == hmacVersion {
                    if let bytes = decode(text, length: macLength, with: encoding) {
                        parsed.entries.append(Entry(kind: .hmac, bytes: bytes))
                    } else {
                        malformed += 1
                    }
                } else if let ed25519Version, version == ed25519Version {
                    if let bytes = decode(text, length: 64, with: .base64) {
                        parsed.entries.append(Entry(kind: .ed25519, bytes: bytes))
                    } else {
                        malformed += 1
                    }
                } else {
                    otherVersions += 1
                }
            }
            if parsed.entries.isEmpty && otherVersions > 0 && malformed == 0 {
                throw Rejection(.invalidSignature, "no entry has a supported version (\(hmacVersion)\(ed25519Version.map { " or \($0)" } ?? ""))")
            }
        }
        if parsed.entries.isEmpty {
            throw Rejection(.malformedSignature, malformed == 0 ? "the signature header has no entries" : "no signature entry is well formed (\(malformed) malformed)")
        }
        return parsed
    }
}

/// Unix seconds as providers write them: 1 to 12 ASCII digits.
func parseUnixSeconds(_ text: Substring) -> Int64? {
    guard (1...12).contains(text.utf8.count), text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
    return Int64(text)
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs (HTTP's optional white space).
    func trimmingOWS() -> Substring {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice.removeLast() }
        return slice
    }
}
