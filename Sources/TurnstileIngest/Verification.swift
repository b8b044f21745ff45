public import TurnstileCore

/// A delivery whose signature checked out: what the later stages need to know about it.
public struct VerifiedDelivery: Sendable, Hashable {
    /// The provider's route name.
    public var provider: String
    /// The event kind (`post_call`, `generation`, `customer.created`, …), or nil when the scheme has none.
    public var kind: String?
    /// `<provider>.<kind>`, or `<provider>.event` without a kind. Computed when asked: verification itself
    /// does not need the joined string.
    public var eventType: String { provider + "." + (kind ?? "event") }
    /// The event identity (the dedup key within the provider), e.g. `generation:6f1c…:COMPLETED`.
    public var eventKey: String
    /// Events with the same ordering key are dispatched in order, one at a time (Sync: one job's states).
    public var orderingKey: String
    /// The signed timestamp, when the scheme signs one.
    public var signedAt: Instant?
    /// Which configured secret matched (0-based, in config order).
    public var secretIndex: Int
    /// The replay guard's nonce for this signed message: a digest of exactly the bytes the signature covers,
    /// kept under the provider's nonce group and scoped by the kind only where the signature covers the kind
    /// (or the kind is one of a fixed set of shapes). Nothing outside the signature changes it.
    public var signatureNonce: Nonce
    /// The header the signature was read from, as the provider spelled it.
    public var signatureHeader: String
    /// Sync only: the raw bytes failed and the `JSON.stringify` form of the body matched.
    public var usedStringifyFallback: Bool
}

/// Why a delivery was refused: exactly one contract reason code, and a human explanation that never
/// contains a secret, an expected signature or the body.
public struct Rejection: Error, Hashable, Sendable, CustomStringConvertible {
    public let reason: Reason
    public let detail: String

    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    public var description: String { "\(reason): \(detail)" }
}

/// Verifies deliveries for one provider.
///
/// Conforming types are value types or otherwise `Sendable`; the built-in schemes are all
/// ``SchemeVerifier``s configured by a ``SchemeSpec``.
///
/// ```swift
/// switch verifier.verify(headers: request.headers, body: request.body, now: clock.now()) {
/// case .success(let verified): enqueue(verified)
/// case .failure(let rejection): respond(401, rejection.reason)
/// }
/// ```
public protocol SignatureScheme: Sendable {
    /// The provider's route name.
    var provider: String { get }
    /// Checks the signature over the raw `body`, then the timestamps against `now`.
    func verify(headers: HeaderFields, body: [UInt8], now: Instant) -> Result<VerifiedDelivery, Rejection>
}
