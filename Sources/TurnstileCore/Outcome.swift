/// How one delivery ended. Names are fixed by the contract.
public enum Outcome: String, Sendable, Hashable, CaseIterable {
    /// Verified, new, durably enqueued.
    case accepted
    /// Verified, but its signature or its event was seen before: acknowledged, not dispatched again.
    case duplicate
    /// Refused, with one ``Reason``.
    case rejected
}

/// The reason code attached to a `duplicate` or `rejected` outcome, or to a dead letter.
public struct Reason: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    // Duplicates.
    public static let seenSignature = Reason(rawValue: "seen_signature")
    public static let seenEvent = Reason(rawValue: "seen_event")

    // Rejections.
    public static let missingSignature = Reason(rawValue: "missing_signature")
    public static let malformedSignature = Reason(rawValue: "malformed_signature")
    public static let invalidSignature = Reason(rawValue: "invalid_signature")
    public static let staleTimestamp = Reason(rawValue: "stale_timestamp")
    public static let futureTimestamp = Reason(rawValue: "future_timestamp")
    public static let malformedPayload = Reason(rawValue: "malformed_payload")
    public static let unknownProvider = Reason(rawValue: "unknown_provider")
    public static let bodyTooLarge = Reason(rawValue: "body_too_large")
    public static let storeUnavailable = Reason(rawValue: "store_unavailable")

    // Dead letters.
    public static let schemaViolation = Reason(rawValue: "schema_violation")

    /// Every rejection reason the contract names.
    public static let rejections: [Reason] = [
        .missingSignature, .malformedSignature, .invalidSignature, .staleTimestamp, .futureTimestamp,
        .malformedPayload, .unknownProvider, .bodyTooLarge, .storeUnavailable,
    ]

    /// Both duplicate reasons.
    public static let duplicates: [Reason] = [.seenSignature, .seenEvent]
}
