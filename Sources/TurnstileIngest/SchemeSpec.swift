import TurnstileCore
public import TurnstileCrypto

/// Everything about a signature scheme that is data: where the signature is, how it is written, what
/// bytes it covers, which key it uses, and where the event's kind, identity and timestamp come from.
///
/// Every built-in scheme is a ``SchemePresets`` value of this type, and the generic `hmac` scheme is one
/// read from config, so a new HMAC provider is a config entry, not code.
public struct SchemeSpec: Sendable {
    /// The scheme's name in config (`sync`, `stripe`, `hmac`, …).
    public var name: String
    /// Header groups tried in order; the first whose signature header is present is used.
    public var headerSets: [HeaderSet]
    public var algorithm: HMACAlgorithm
    public var encoding: SignatureEncoding
    public var format: SignatureFormat
    public var signed: SignedContent
    public var timestamp: TimestampSource
    public var kind: KindSource
    /// Parts of the event identity, joined with `:` into the event key. Empty: the body's SHA-256.
    public var identity: [IdentityPart]
    public var key: KeyDerivation
    /// How many leading identity parts name the thing whose states arrive in order (Sync: kind and id,
    /// not status); events sharing them are dispatched one at a time. Nil: the whole identity.
    public var orderingPartCount: Int? = nil
    /// Sync only: when the raw bytes fail, try once more over JavaScript's `JSON.stringify` form of the body.
    public var stringifyFallback: Bool = false
    /// The future skew allowed when config does not say.
    public var defaultFutureSkewSeconds: Int = 60
    /// The window for timestamps in the body (``TimestampSource/json(_:)``): `max_age_seconds` rather than
    /// `tolerance_seconds`.
    public var timestampIsPayloadAge: Bool = false
}

/// The headers one delivery's signature is read from.
public struct HeaderSet: Sendable, Hashable {
    public var signature: String
    public var id: String?
    public var timestamp: String?
    public var eventType: String?

    public init(signature: String, id: String? = nil, timestamp: String? = nil, eventType: String? = nil) {
        self.signature = signature
        self.id = id
        self.timestamp = timestamp
        self.eventType = eventType
    }
}

public enum SignatureEncoding: String, Sendable, Hashable {
    case hex, base64
}

/// How the signature header is written.
public enum SignatureFormat: Sendable, Hashable {
    /// One signature after a fixed prefix: `sha256=<hex>`, or a bare base64 string.
    case plain(prefix: String)
    /// Comma-separated `key=value` entries: `t=1767225600,v1=<hex>,v1=<hex>`.
    case keyValue(signatureKey: String, timestampKey: String)
    /// Space-separated `version,signature` entries: `v1,<base64> v1a,<base64>`.
    case versioned(hmacVersion: String, ed25519Version: String?)
}

/// The bytes the signature covers.
public enum SignedContent: Sendable, Hashable {
    case body
    /// `<timestamp>.<body>`
    case timestampDotBody
    /// `<id>.<timestamp>.<body>`
    case idDotTimestampDotBody
    /// The UTF-8 of a string field of the body; the first path present is used.
    case jsonString([[String]])
}

/// Where the signed timestamp comes from.
public enum TimestampSource: Sendable, Hashable {
    case none
    /// The header set's `timestamp` header, unix seconds.
    case header
    /// The key-value header's timestamp entry, unix seconds.
    case signatureEntry
    /// A body field: unix seconds (number) or an RFC 3339 string.
    case json([String])
}

/// Where the event's kind comes from.
public enum KindSource: Sendable, Hashable {
    /// No kind: event types are `<provider>.event`.
    case none
    /// The header set's `eventType` header.
    case header
    /// A string body field; absent means `event`.
    case json([String])
    /// The first rule that matches; none matching is `malformed_payload`.
    case rules([KindRule])
}

/// One shape test that names a kind.
public struct KindRule: Sendable, Hashable {
    public enum Test: Sendable, Hashable {
        case present([String])
        case object([String])
        case equals([String], String)
        case hasPrefix([String], String)
        case always
    }
    public var kind: String
    public var test: Test

    public init(_ kind: String, when test: Test) {
        self.kind = kind
        self.test = test
    }
}

/// One part of the event identity.
public enum IdentityPart: Sendable, Hashable {
    case kind
    /// The header set's `id` header.
    case header
    /// A string or number body field; the first path present is used.
    case json([[String]])
}

/// How a configured secret string becomes key bytes.
public enum KeyDerivation: Sendable, Hashable {
    /// The whole string as UTF-8 (Synthflow, Autify, Sync, Stripe, GitHub).
    case utf8
    /// Base64 of what follows an optional prefix (Standard Webhooks: `whsec_`). With `ed25519`,
    /// `whpk_` secrets are Ed25519 public keys and `whsk_` secrets Ed25519 seeds (for signing).
    case base64(prefix: String, ed25519: Bool)
    /// Hex digits.
    case hex
}
