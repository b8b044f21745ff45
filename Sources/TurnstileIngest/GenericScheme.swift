public import TurnstileCore
import TurnstileCrypto

extension SchemeSpec {
    /// Reads the generic `hmac` scheme from a provider's `hmac` object.
    ///
    /// - Parameter field: the object's key path, for errors (`providers.acme.hmac`).
    /// - Throws: ``InputError`` naming the key and what is wrong.
    public static func generic(_ object: JSONObject, file: String?, field: String) throws(InputError) -> SchemeSpec {
        func fail(_ key: String, _ message: String) -> InputError {
            InputError(.invalidValue, message, file: file, field: "\(field).\(key)")
        }
        func text(_ key: String) -> String? { object[key]?.stringValue }
        func source(_ key: String) throws(InputError) -> (header: String?, path: [String]?) {
            guard let value = text(key) else { return (nil, nil) }
            if value.hasPrefix("header:") {
                let name = String(value.dropFirst("header:".count))
                guard HTTPToken.isValidFieldName(name) else { throw fail(key, "\"\(name)\" is not a valid header name") }
                return (name, nil)
            }
            if value.hasPrefix("json:") {
                let path = String(value.dropFirst("json:".count)).split(separator: ".", omittingEmptySubsequences: false).map(String.init)
                guard !path.contains(where: \.isEmpty) else { throw fail(key, "\"\(value)\" is not a dotted key path") }
                return (nil, path)
            }
            throw fail(key, "expected header:NAME or json:PATH, got \"\(value)\"")
        }

        let signatureHeader = text("signature_header") ?? ""
        guard HTTPToken.isValidFieldName(signatureHeader) else {
            throw fail("signature_header", "\"\(signatureHeader)\" is not a valid header name")
        }
        let algorithm = HMACAlgorithm(rawValue: text("algorithm") ?? "sha256") ?? .sha256
        let encoding = SignatureEncoding(rawValue: text("encoding") ?? "hex") ?? .hex
        let signatureKey = text("signature_key") ?? "v1"
        let format: SignatureFormat
        switch text("format") ?? "plain" {
        case "key-value": format = .keyValue(signatureKey: signatureKey, timestampKey: text("timestamp_key") ?? "t")
        case "versioned": format = .versioned(hmacVersion: signatureKey, ed25519Version: nil)
        default: format = .plain(prefix: text("prefix") ?? "")
        }
        if text("prefix") != nil, case .plain = format {} else if text("prefix") != nil {
            throw fail("prefix", "prefix is only for format plain")
        }
        if text("timestamp_key") != nil, case .keyValue = format {} else if text("timestamp_key") != nil {
            throw fail("timestamp_key", "timestamp_key is only for format key-value")
        }

        var headers = HeaderSet(signature: signatureHeader)
        let timestamp: TimestampSource
        switch text("timestamp") {
        case nil: timestamp = .none
        case "signature":
            guard case .keyValue = format else {
                throw fail("timestamp", "\"signature\" reads the timestamp entry of a key-value header; set format to key-value")
            }
            timestamp = .signatureEntry
        default:
            let (header, path) = try source("timestamp")
            if let header { headers.timestamp = header; timestamp = .header } else { timestamp = .json(path ?? []) }
        }
        let (idHeader, idPath) = try source("event_id")
        headers.id = idHeader
        let (typeHeader, typePath) = try source("event_type")
        headers.eventType = typeHeader

        let signed: SignedContent
        switch text("signed") ?? "body" {
        case "body": signed = .body
        case "timestamp.body":
            guard timestamp == .header || timestamp == .signatureEntry else {
                throw fail("signed", "timestamp.body needs timestamp set to header:NAME or signature")
            }
            signed = .timestampDotBody
        case "id.timestamp.body":
            guard idHeader != nil, timestamp == .header || timestamp == .signatureEntry else {
                throw fail("signed", "id.timestamp.body needs event_id header:NAME and a header or signature timestamp")
            }
            signed = .idDotTimestampDotBody
        case let other where other.hasPrefix("json:"):
            let path = String(other.dropFirst(5)).split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard !path.contains(where: \.isEmpty) else { throw fail("signed", "\"\(other)\" is not a dotted key path") }
            signed = .jsonString([path])
        case let other:
            throw fail("signed", "expected body, timestamp.body, id.timestamp.body or json:PATH, got \"\(other)\"")
        }

        let key: KeyDerivation
        switch text("key_encoding") ?? "utf8" {
        case "base64": key = .base64(prefix: "whsec_", ed25519: false)
        case "hex": key = .hex
        default: key = .utf8
        }
        let identity: [IdentityPart] = idHeader != nil ? [.header] : idPath.map { [.json([$0])] } ?? []
        let kind: KindSource = typeHeader != nil ? .header : typePath.map { .json($0) } ?? .none
        return SchemeSpec(name: "hmac", headerSets: [headers], algorithm: algorithm, encoding: encoding, format: format,
                          signed: signed, timestamp: timestamp, kind: kind, identity: identity, key: key)
    }
}
