public import TurnstileCore
import TurnstileCrypto
import Foundation

extension SchemeVerifier {
    /// The headers a provider would send with `body` at `instant`, signed with the first secret:
    /// the sender simulator behind `turnstile sign`.
    ///
    /// - Parameters:
    ///   - id: the delivery id for schemes that send one in a header (`webhook-id`, `X-GitHub-Delivery`);
    ///     a fresh one when nil.
    ///   - eventType: the event header for schemes that send one (`X-GitHub-Event`); `ping` when nil.
    /// - Throws: ``Rejection`` with `malformed_payload` when the body lacks the field a scheme signs, or
    ///   `invalid_signature` when the first secret cannot sign (an Ed25519 public key).
    public func signatureHeaders(body: [UInt8], at instant: Instant, id: String? = nil,
                                 eventType: String? = nil) throws(Rejection) -> HeaderFields {
        let set = spec.headerSets[0]
        let timestamp = String(instant.unixSeconds)
        var headers = HeaderFields()
        var deliveryID: String? = nil
        if let idHeader = set.id {
            let value = id ?? (spec.name == "standard-webhooks" ? "msg_" : "") + UUID().uuidString.lowercased()
            headers.append(name: idHeader, value: value)
            deliveryID = value
        }
        if let typeHeader = set.eventType { headers.append(name: typeHeader, value: eventType ?? "ping") }
        if spec.timestamp == .header, let timestampHeader = set.timestamp {
            headers.append(name: timestampHeader, value: timestamp)
        }
        var field: String? = nil
        if case .jsonString(let paths) = spec.signed {
            field = try body.withBytes { raw throws(Rejection) in
                var view = BodyView(raw: raw, topLevelKeys: [], bodyIsSigned: false)
                return try view.firstScalar(paths, what: "the signed value").value
            }
        }
        let message = SignedMessage(content: spec.signed, timestamp: timestamp, id: deliveryID, field: field)
        let signature: String
        switch keys[0] {
        case .hmac(let key):
            let code = body.withUnsafeBytes { raw in key.authenticationCode { message.feed(into: &$0, body: raw) } }
            let encoded = spec.encoding == .hex ? Hex.encode(code) : Base64.encode(code)
            switch spec.format {
            case .plain(let prefix): signature = prefix + encoded
            case .keyValue(let signatureKey, let timestampKey): signature = "\(timestampKey)=\(timestamp),\(signatureKey)=\(encoded)"
            case .versioned(let version, _): signature = "\(version),\(encoded)"
            }
        case .ed25519(_, let signing):
            guard let signing, case .versioned(_, let version?) = spec.format else {
                throw Rejection(.invalidSignature, "the first secret is an Ed25519 public key (whpk_); signing needs a whsec_ secret or a whsk_ seed")
            }
            let bytes = body.withUnsafeBytes { message.bytes(body: $0) }
            guard let code = try? signing.signature(for: bytes) else {
                throw Rejection(.invalidSignature, "Ed25519 signing failed")
            }
            signature = "\(version),\(Base64.encode(code))"
        }
        headers.append(name: set.signature, value: signature)
        return headers
    }
}
