public import TurnstileCore
import TurnstileCrypto

/// Stage 1 of the pipeline: routes a delivery to its provider's verifier, after the size limit.
///
/// Built once from config; every secret is derived and every window checked at that moment, so a bad
/// config fails at start-up and not on the first delivery.
public struct Ingest: Sendable {
    public let maxBodyBytes: Int
    /// In config order. A linear search over a few short names beats hashing them on every delivery.
    private let schemes: [SchemeVerifier]
    private let index: [String: Int]
    /// Provider names in config order.
    public let providerNames: [String]

    /// - Throws: ``InputError`` for a secret that cannot be right, an unknown scheme, or a nonce retention
    ///   shorter than the window a delivery can still pass the timestamp checks.
    public init(config: TurnstileConfig) throws(InputError) {
        try CryptoLibraryCheck.run()
        var schemes: [SchemeVerifier] = []
        for provider in config.providers {
            let verifier = try SchemeVerifier(config: provider, file: config.file)
            try Ingest.checkRetention(provider, verifier: verifier, file: config.file)
            schemes.append(verifier)
        }
        self.schemes = Ingest.groupedByKey(schemes)
        self.index = Dictionary(schemes.enumerated().map { ($1.provider, $0) }, uniquingKeysWith: { first, _ in first })
        self.providerNames = config.providers.map(\.name)
        self.maxBodyBytes = config.maxBodyBytes
    }

    /// The verifier of `provider`, if configured.
    public func scheme(for provider: String) -> SchemeVerifier? {
        if schemes.count <= 16 {
            for scheme in schemes where scheme.provider == provider { return scheme }
            return nil
        }
        return index[provider].map { schemes[$0] }
    }

    /// Verifies one delivery at `now`: `unknown_provider`, `body_too_large`, or the scheme's verdict.
    public func verify(provider: String, headers: HeaderFields, body: [UInt8], now: Instant) -> Result<VerifiedDelivery, Rejection> {
        guard let scheme = scheme(for: provider) else {
            return .failure(Rejection(.unknownProvider, "no provider named \"\(provider)\" is configured"))
        }
        guard body.count <= maxBodyBytes else {
            return .failure(Rejection(.bodyTooLarge, "the body is \(body.count) bytes; max_body_bytes is \(maxBodyBytes)"))
        }
        return scheme.verify(headers: headers, body: body, now: now)
    }

    /// Verifies a stored delivery, at its `received_at` unless `now` is given.
    public func verify(_ delivery: Delivery, now: Instant? = nil, clock: any WallClock = SystemWallClock()) -> Result<VerifiedDelivery, Rejection> {
        verify(provider: delivery.provider, headers: delivery.headers, body: delivery.body,
               now: now ?? delivery.receivedAt ?? clock.now())
    }

    /// Each verifier placed in its nonce group: providers that share a secret (directly or through another
    /// provider) keep their signature nonces under one name, the first of them in config order, so that one
    /// signed delivery replayed to another route under the same secret is a seen signature there too.
    static func groupedByKey(_ schemes: [SchemeVerifier]) -> [SchemeVerifier] {
        var group = Array(schemes.indices)
        func root(_ index: Int) -> Int {
            var index = index
            while group[index] != index { index = group[index] }
            return index
        }
        var owner: [[UInt8]: Int] = [:]
        for (index, scheme) in schemes.enumerated() {
            for fingerprint in scheme.keyFingerprints {
                if let first = owner[fingerprint] {
                    let (a, b) = (root(first), root(index))
                    group[max(a, b)] = min(a, b)
                } else {
                    owner[fingerprint] = index
                }
            }
        }
        return schemes.enumerated().map { index, scheme in
            let name = schemes[root(index)].provider
            return name == scheme.provider ? scheme : scheme.inNonceGroup(name)
        }
    }

    /// The shortest `retention_seconds` accepted for a scheme that signs no timestamp (GitHub, Synthflow): its
    /// nonces are the only replay defence, and providers retry and re-deliver for up to days.
    public static let untimedRetentionFloorSeconds = 7 * 86_400

    /// Refuses a retention shorter than the time a delivery bearing a nonce could still pass the timestamp checks.
    static func checkRetention(_ provider: ProviderConfig, verifier: SchemeVerifier, file: String) throws(InputError) {
        let retention = provider.retentionSeconds ?? ProviderConfig.defaultRetentionSeconds
        if let window = verifier.replayWindowSeconds, retention < window {
            let parts = verifier.spec.timestampIsPayloadAge
                ? "max_age_seconds \(verifier.maxAgeSeconds) + max_future_skew_seconds \(verifier.maxFutureSkewSeconds)"
                : "tolerance_seconds \(verifier.toleranceSeconds) + max_future_skew_seconds \(verifier.maxFutureSkewSeconds)"
            throw InputError(
                .retentionTooShort,
                "provider \(provider.name): retention_seconds \(retention) is shorter than the \(window) seconds a delivery can still pass the timestamp checks (\(parts))",
                file: file, field: "\(provider.fieldPath).retention_seconds")
        }
        if verifier.replayWindowSeconds == nil, retention < untimedRetentionFloorSeconds {
            throw InputError(
                .retentionTooShort,
                "provider \(provider.name): scheme \(provider.scheme) signs no timestamp, so nonces are its only replay defence; retention_seconds \(retention) is below the floor of \(untimedRetentionFloorSeconds) (7 days)",
                file: file, field: "\(provider.fieldPath).retention_seconds")
        }
    }
}

enum CryptoLibraryCheck {
    static func run() throws(InputError) {
        do { try CryptoLibrary.checkVersion() } catch {
            throw InputError(.invalidValue, error.message)
        }
    }
}
