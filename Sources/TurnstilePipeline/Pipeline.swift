public import TurnstileCore
public import TurnstileIngest
import Foundation

/// What became of one delivery after the whole admission path.
public struct DeliveryVerdict: Sendable, Hashable {
    public var outcome: Outcome
    public var reason: Reason?
    public var eventType: String?
    public var eventKey: String?
    /// The queued event's id, for accepted deliveries (and re-queued duplicates under `--reprocess`).
    public var eventID: Int64?
    /// Why it was rejected, or why the accepted event went to the dead letters. Never contains secrets.
    public var detail: String?
    /// Accepted, but dead-lettered at once (its payload breaks its schema).
    public var deadLettered: Bool = false
    /// Sync only: verified through the `JSON.stringify` fallback.
    public var usedStringifyFallback: Bool = false
    /// Which of the provider's configured secrets matched (0 is the first), for a verified delivery: an
    /// operator rotating secrets sees from the log and the metrics when the old one is no longer used.
    public var secretIndex: Int? = nil

    public init(outcome: Outcome, reason: Reason? = nil, eventType: String? = nil, eventKey: String? = nil, eventID: Int64? = nil,
                detail: String? = nil, deadLettered: Bool = false, usedStringifyFallback: Bool = false) {
        self.outcome = outcome
        self.reason = reason
        self.eventType = eventType
        self.eventKey = eventKey
        self.eventID = eventID
        self.detail = detail
        self.deadLettered = deadLettered
        self.usedStringifyFallback = usedStringifyFallback
    }
}

/// Stages 1 and 2: verification, then the replay guard and the durable enqueue, for batches of deliveries
/// admitted in one transaction.
///
/// A verified event whose payload breaks its schema (`schemas/<scheme>/<kind>.schema.json`) is still
/// `accepted`: it is stored in the dead letters with `schema_violation`, never dropped.
public struct Pipeline: Sendable {
    public let ingest: Ingest
    public let store: any EventStore
    private let schemas: [String: JSONSchema]
    private let retention: [String: Double]
    /// Told of every admission transaction's outcome, when set (`serve`'s `/healthz` reads it).
    public var health: StoreHealth? = nil
    /// Routes each verified event to its handlers while its body is at hand, when set (the receiver sets its
    /// registry's); otherwise the dispatcher routes it after admission.
    public var router: (@Sendable (RoutableEvent) -> [String])? = nil

    /// - Throws: ``InputError`` when an event schema is missing from `catalog`.
    public init(config: TurnstileConfig, ingest: Ingest, store: any EventStore, catalog: SchemaCatalog) throws(InputError) {
        // Everything that can throw happens before any stored property is set.
        var schemas: [String: JSONSchema] = [:]
        var retention: [String: Double] = [:]
        for provider in config.providers {
            retention[provider.name] = Double(provider.retentionSeconds ?? ProviderConfig.defaultRetentionSeconds)
            for kind in EventSchemas.kinds[provider.scheme] ?? [] {
                schemas["\(provider.name).\(kind)"] = try catalog.schema("\(provider.scheme)/\(kind)")
            }
        }
        self.ingest = ingest
        self.store = store
        self.schemas = schemas
        self.retention = retention
    }

    /// Verifies each delivery, then admits the verified ones (see ``admit(_:)`` for how they are grouped into transactions).
    ///
    /// - Parameters:
    ///   - now: judge timestamps at this instant; each delivery's `received_at` (else the clock) when nil.
    ///   - reprocess: queue already-seen events again, flagged as reprocesses.
    /// - Returns: one verdict per delivery, in order. When the store fails, every verified delivery from the
    ///   failed transaction on is `rejected`/`store_unavailable`, and none of them was kept.
    public func process(_ deliveries: [Delivery], now: Instant? = nil, reprocess: Bool = false,
                        clock: any WallClock = SystemWallClock()) -> [DeliveryVerdict] {
        admit(prepareAll(deliveries, now: now, reprocess: reprocess, clock: clock))
    }

    /// ``prepare(_:now:reprocess:clock:)`` for every delivery, in order; large batches are verified on every
    /// core at once (verification is CPU work and shares nothing but the keys' context pools).
    public func prepareAll(_ deliveries: [Delivery], now: Instant? = nil, reprocess: Bool = false,
                           clock: any WallClock = SystemWallClock()) -> [PreparedDelivery] {
        let chunk = 64
        guard deliveries.count >= 2 * chunk, ProcessInfo.processInfo.activeProcessorCount > 1 else {
            return deliveries.map { prepare($0, now: now, reprocess: reprocess, clock: clock) }
        }
        var prepared = [PreparedDelivery?](repeating: nil, count: deliveries.count)
        prepared.withUnsafeMutableBufferPointer { buffer in
            // Each iteration writes its own disjoint slice of the buffer.
            nonisolated(unsafe) let slots = buffer
            DispatchQueue.concurrentPerform(iterations: (deliveries.count + chunk - 1) / chunk) { index in
                for position in index * chunk..<min((index + 1) * chunk, deliveries.count) {
                    slots[position] = prepare(deliveries[position], now: now, reprocess: reprocess, clock: clock)
                }
            }
        }
        return prepared.map { $0! }
    }

    /// Stores the admissions of `prepared` deliveries and returns every verdict, in order: one transaction per
    /// run of deliveries judged within a second of each other (all of a `serve` batch). Rejected ones pass
    /// through untouched. When the store fails, every verified delivery from the failed transaction on
    /// is `rejected`/`store_unavailable`, and none of them was kept.
    public func admit(_ prepared: [PreparedDelivery]) -> [DeliveryVerdict] {
        var verdicts = prepared.map(\.verdict)
        var admissions: [Admission] = []
        var positions: [Int] = []
        var instants: [Instant] = []
        for (index, item) in prepared.enumerated() {
            if let admission = item.admission {
                admissions.append(admission)
                positions.append(index)
                instants.append(item.judgedAt)
            }
        }
        guard !admissions.isEmpty else { return verdicts }
        // One transaction per run of deliveries judged within a second of each other (all of a `serve` batch;
        // a replay of fixtures recorded at different times becomes several), each admitted at the run's latest
        // instant, so that a nonce's expiry is judged at the time its delivery was.
        var start = 0
        while start < admissions.count {
            var end = start + 1
            var latest = instants[start]
            while end < admissions.count, instants[end] >= instants[start], instants[end].secondsSince1970 - instants[start].secondsSince1970 <= 1 {
                latest = max(latest, instants[end])
                end += 1
            }
            do {
                let results = try store.admit(Array(admissions[start..<end]), now: latest)
                for (position, result) in zip(positions[start..<end], results) {
                    switch result {
                    case .accepted(let eventID):
                        verdicts[position].eventID = eventID
                    case .duplicate(let reason, let requeued):
                        verdicts[position].outcome = .duplicate
                        verdicts[position].reason = reason
                        verdicts[position].eventID = requeued
                        verdicts[position].deadLettered = false
                        verdicts[position].detail = nil
                    }
                }
            } catch {
                // Nothing of this run or of any later one was kept.
                for position in positions[start...] {
                    verdicts[position] = DeliveryVerdict(outcome: .rejected, reason: .storeUnavailable, eventType: verdicts[position].eventType,
                                                         eventKey: verdicts[position].eventKey, detail: error.message)
                }
                health?.recordFailure(error)
                return verdicts
            }
            start = end
        }
        health?.recordSuccess()
        return verdicts
    }

    /// The admissions the verified ones of `deliveries` would make, without storing anything (for benchmarks).
    public func admissions(for deliveries: [Delivery], now: Instant? = nil) -> [Admission] {
        deliveries.compactMap { prepare($0, now: now).admission }
    }

    /// Verifies one delivery and, when it passes, builds its admission (nothing is stored yet). This is the
    /// part that can run in parallel; ``admit(_:)`` is the part a single writer batches.
    public func prepare(_ original: Delivery, now: Instant? = nil, reprocess: Bool = false,
                        clock: any WallClock = SystemWallClock()) -> PreparedDelivery {
        let instant = now ?? original.receivedAt ?? clock.now()
        switch ingest.verify(original, now: instant) {
        case .failure(let rejection):
            return PreparedDelivery(verdict: DeliveryVerdict(outcome: .rejected, reason: rejection.reason, detail: rejection.detail),
                                    admission: nil, judgedAt: instant)
        case .success(let verified):
            var delivery = original
            if delivery.receivedAt == nil { delivery.receivedAt = instant }
            // The archive keeps what the provider sent, not a client's or a proxy's credentials.
            delivery.headers = delivery.headers.withoutCredentials
            let eventType = verified.eventType
            let deadLetter = schemaViolation(eventType: eventType, body: delivery.body)
            let keep = retention[verified.provider] ?? Double(ProviderConfig.defaultRetentionSeconds)
            let signatureExpiry = ingest.scheme(for: verified.provider)?.signatureNonceExpiry(signedAt: verified.signedAt)
            var admission = Admission(
                provider: verified.provider, kind: verified.kind, eventType: eventType, eventKey: verified.eventKey,
                orderingKey: verified.orderingKey, signatureNonce: verified.signatureNonce,
                signatureExpiresAt: signatureExpiry ?? instant.adding(seconds: keep),
                eventExpiresAt: instant.adding(seconds: keep), delivery: delivery, signedAt: verified.signedAt,
                deadLetter: deadLetter, reprocess: reprocess)
            // A dead letter is routed when it is retried, not now.
            if deadLetter == nil, let router {
                admission.handlers = router(RoutableEvent(provider: verified.provider, eventType: eventType, payload: delivery.body))
            }
            var verdict = DeliveryVerdict(outcome: .accepted, eventType: eventType, eventKey: verified.eventKey,
                                          detail: deadLetter?.message, deadLettered: deadLetter != nil,
                                          usedStringifyFallback: verified.usedStringifyFallback)
            verdict.secretIndex = verified.secretIndex
            return PreparedDelivery(verdict: verdict, admission: admission, judgedAt: instant)
        }
    }

    private func schemaViolation(eventType: String, body: [UInt8]) -> (reason: Reason, message: String)? {
        guard let schema = schemas[eventType] else { return nil }
        let document: JSONValue
        do { document = try JSONParser.parse(body) } catch {
            return (.schemaViolation, "the body is not valid JSON: \(error)")
        }
        guard let first = schema.violations(of: document).first else { return nil }
        return (.schemaViolation, "\(eventType) payload breaks its schema: \(first)")
    }
}

/// A delivery after verification: its provisional verdict and, when it passed, what to store.
public struct PreparedDelivery: Sendable {
    public var verdict: DeliveryVerdict
    public var admission: Admission?
    /// The instant its timestamps were judged at; the store admits it at this instant (or within a second after).
    public var judgedAt: Instant
}

/// Which event kinds of a scheme have a schema in `schemas/<scheme>/<kind>.schema.json`.
public enum EventSchemas {
    public static let kinds: [String: [String]] = [
        "synthflow": ["post_call", "inbound_call"],
        "autify": ["test_plan_result", "test_case_result"],
        "sync": ["generation", "batch"],
    ]
}
