/// What the pipeline stores, behind one protocol that the embedded SQLite store and the shared
/// PostgreSQL store implement with the same semantics. The pipeline's logic knows no SQL.
///
/// Every method is one transaction. Implementations are safe to call from any thread.
public protocol EventStore: Sendable {
    /// Admits verified deliveries in order, all in ONE transaction: for each, insert-if-absent its signature
    /// nonce and its event nonce, then append the event to the queue (or to the dead letters when it is
    /// already known to be undeliverable) and the raw delivery to the archive. Nothing is acknowledged
    /// until this returns.
    func admit(_ batch: [Admission]) throws(StoreError) -> [AdmissionResult]

    /// Routes up to `limit` due events that have not met their handlers yet, oldest first and in order per
    /// ordering key: each becomes one delivery per handler name `route` returns (none: it is done), each
    /// with its own attempts, backoff, error and dead letter. Returns how many events were routed.
    func route(limit: Int, now: Instant, _ route: (RoutableEvent) -> [String]) throws(StoreError) -> Int

    /// Leases up to `limit` of `handler`'s deliveries that are due, keeping order per ordering key for that
    /// handler: a delivery is not leased while an earlier one of the same key is still queued for it (or not
    /// routed yet). Each lease bumps the delivery's attempt count.
    func lease(handler: String, limit: Int, owner: String, now: Instant, leaseSeconds: Double) throws(StoreError) -> [QueuedEvent]

    /// Deliveries waiting or leased, by handler name (`""`: events not routed to their handlers yet).
    func backlog() throws(StoreError) -> [String: Int]

    /// Removes deliveries whose handler succeeded, each only while `lease` still holds it: a worker whose
    /// lease expired and was taken over (a rescue) changes nothing. Returns how many were removed.
    @discardableResult
    func complete(_ leases: [Lease]) throws(StoreError) -> Int

    /// Extends leases still held to `until` (a worker whose handler runs longer than a lease keeps its
    /// deliveries); returns how many were extended. A lease another worker has taken over is not.
    @discardableResult
    func renew(_ leases: [Lease], until: Instant) throws(StoreError) -> Int

    /// Releases a failed delivery's lease and makes it due again at `at`; false (and nothing changed) when
    /// the lease is no longer held.
    @discardableResult
    func retry(_ lease: Lease, at: Instant, error: String) throws(StoreError) -> Bool

    /// Moves a delivery from the queue to the dead letters; false (and nothing changed) when the lease is no
    /// longer held.
    @discardableResult
    func deadLetter(_ lease: Lease, reason: Reason, error: String, now: Instant) throws(StoreError) -> Bool

    /// The earliest instant a delivery of one of `handlers`, or an event not routed yet, becomes due (nil when
    /// there is none). Deliveries of other handlers (held by a breaker or a rate limit) do not count.
    func nextDue(handlers: [String]) throws(StoreError) -> Instant?

    /// Deliveries to handlers waiting or leased, plus events not routed yet.
    func queueDepth() throws(StoreError) -> Int

    /// How many dead letters there are.
    func deadLetterCount() throws(StoreError) -> Int

    /// Dead letters, oldest first.
    func deadLetters(limit: Int) throws(StoreError) -> [DeadLetter]

    /// Puts dead letters back on the queue (all of them when `ids` is nil), with their attempts reset.
    /// Returns how many were re-queued.
    func requeueDeadLetters(_ ids: [Int64]?, now: Instant) throws(StoreError) -> Int

    /// Keeps the first answer given to a request/response event (Synthflow's inbound call) and returns the
    /// answer that is kept: `answer` when none was stored yet, else the stored one. Repeats of one request so
    /// get one answer, across restarts and receivers.
    func keepAnswer(provider: String, eventKey: String, answer: String, now: Instant) throws(StoreError) -> String

    /// The answer kept for an event, if any.
    func keptAnswer(provider: String, eventKey: String) throws(StoreError) -> String?

    /// Proves the store takes writes now by committing a one-row write of its own: it fails, as an admission
    /// would, while the store is read-only, full or locked past its timeout. `/healthz` and start-up use it.
    func checkWritable(now: Instant) throws(StoreError)

    /// Deletes nonces that expired before `now`; returns how many.
    func pruneNonces(now: Instant) throws(StoreError) -> Int

    /// Deletes archived deliveries received before `cutoff`, except those a queued event or a dead letter
    /// still reads its body from; returns how many.
    func pruneArchive(receivedBefore cutoff: Instant) throws(StoreError) -> Int

    /// Calls `body` with each archived raw delivery in arrival order, optionally only one provider's and
    /// only those received at or after `since`. Reads in pages, so memory stays flat.
    func forEachArchived(provider: String?, since: Instant?, _ body: (Delivery) throws -> Void) throws
}

/// One verified delivery to admit.
public struct Admission: Sendable {
    public var provider: String
    public var kind: String?
    public var eventType: String
    public var eventKey: String
    /// Events with the same ordering key are dispatched one at a time, in arrival order.
    public var orderingKey: String
    /// The signature that matched: the signature nonce, scoped by provider and kind.
    public var signature: [UInt8]
    public var signatureExpiresAt: Instant
    public var eventExpiresAt: Instant
    /// The raw delivery, archived as received.
    public let delivery: Delivery
    /// The delivery's headers as the archive keeps them: a JSON array of `[name, value]` pairs, in order.
    /// Made with the admission (on the caller's task), not inside the store's write transaction.
    public let archivedHeaders: String
    public var signedAt: Instant?
    /// When set, the event goes straight to the dead letters with this reason (a payload that breaks its schema).
    public var deadLetter: (reason: Reason, message: String)?
    /// `replay --reprocess`: a seen event is queued again (flagged as a reprocess) instead of only reported.
    public var reprocess: Bool

    public init(provider: String, kind: String?, eventType: String, eventKey: String, orderingKey: String,
                signature: [UInt8], signatureExpiresAt: Instant, eventExpiresAt: Instant, delivery: Delivery,
                signedAt: Instant?, deadLetter: (reason: Reason, message: String)? = nil, reprocess: Bool = false) {
        self.provider = provider
        self.kind = kind
        self.eventType = eventType
        self.eventKey = eventKey
        self.orderingKey = orderingKey
        self.signature = signature
        self.signatureExpiresAt = signatureExpiresAt
        self.eventExpiresAt = eventExpiresAt
        self.delivery = delivery
        self.archivedHeaders = JSONValue.array(delivery.headers.map { .array([.string($0.name), .string($0.value)]) }).serialized()
        self.signedAt = signedAt
        self.deadLetter = deadLetter
        self.reprocess = reprocess
    }

    /// The ordering key as stores keep it: empty for an event whose ordering key is its own identity (it has
    /// no order to keep with other events), so that it stays out of the ordering index. A re-processed copy
    /// of such an event may then run beside its original if that is still queued: at least once allows it.
    public var storedOrderingKey: String { orderingKey == eventKey ? "" : orderingKey }
}

extension HeaderFields {
    /// Headers as ``Admission/archivedHeaders`` keeps them (a JSON array of `[name, value]` pairs); anything
    /// else in the text is skipped.
    public init(archived text: String) {
        self.init()
        for pair in (try? JSONParser.parse(text))?.arrayValue ?? [] {
            if let items = pair.arrayValue, items.count == 2 {
                append(name: items[0].stringValue ?? "", value: items[1].stringValue ?? "")
            }
        }
    }
}

/// How the store took one admission.
public enum AdmissionResult: Sendable, Hashable {
    /// New: queued (or dead-lettered) as event `eventID`.
    case accepted(eventID: Int64)
    /// Seen before (`seen_signature` or `seen_event`); `requeuedEventID` is set when `reprocess` queued it again.
    case duplicate(Reason, requeuedEventID: Int64?)
}

/// An event waiting to be routed to its handlers.
public struct RoutableEvent: Sendable {
    public var provider: String
    public var eventType: String
    public var payload: [UInt8]

    public init(provider: String, eventType: String, payload: [UInt8]) {
        self.provider = provider
        self.eventType = eventType
        self.payload = payload
    }
}

/// A worker's hold on one leased delivery: fenced by the owner and the attempt it was leased at, so that a
/// late completion after the lease expired and another worker took it over changes nothing.
public struct Lease: Sendable, Hashable {
    public var id: Int64
    public var owner: String
    public var attempt: Int

    public init(id: Int64, owner: String, attempt: Int) {
        self.id = id
        self.owner = owner
        self.attempt = attempt
    }
}

/// An event leased from the queue for one handler.
public struct QueuedEvent: Sendable, Hashable {
    /// The queue's id of this (event, handler) delivery, stable across its retries.
    public var id: Int64
    /// The handler it is for.
    public var handler: String
    public var provider: String
    public var eventType: String
    public var eventKey: String
    public var payload: [UInt8]
    public var receivedAt: Instant
    /// 1 on the first delivery to handlers.
    public var attempt: Int
    public var isReprocess: Bool
    /// Who leased it (empty for an event that was not leased from a store).
    public var owner: String

    /// The hold this lease gives on the delivery.
    public var lease: Lease { Lease(id: id, owner: owner, attempt: attempt) }

    public init(id: Int64, handler: String = "", provider: String, eventType: String, eventKey: String, payload: [UInt8],
                receivedAt: Instant, attempt: Int, isReprocess: Bool, owner: String = "") {
        self.id = id
        self.owner = owner
        self.handler = handler
        self.provider = provider
        self.eventType = eventType
        self.eventKey = eventKey
        self.payload = payload
        self.receivedAt = receivedAt
        self.attempt = attempt
        self.isReprocess = isReprocess
    }
}

/// An event that will not be dispatched until someone retries it.
public struct DeadLetter: Sendable, Hashable {
    public var id: Int64
    /// The handler that gave up on it (`""`: dead-lettered before routing, such as a payload that breaks its schema).
    public var handler: String
    public var provider: String
    public var eventType: String
    public var eventKey: String
    public var reason: Reason
    public var lastError: String
    public var attempts: Int
    public var deadAt: Instant

    public init(id: Int64, handler: String = "", provider: String, eventType: String, eventKey: String, reason: Reason, lastError: String,
                attempts: Int, deadAt: Instant) {
        self.id = id
        self.handler = handler
        self.provider = provider
        self.eventType = eventType
        self.eventKey = eventKey
        self.reason = reason
        self.lastError = lastError
        self.attempts = attempts
        self.deadAt = deadAt
    }
}

/// A store failure: the sender must not be told its delivery was kept.
public struct StoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The store cannot be reached or written (busy past its timeout, disk full, I/O error).
        public static let unavailable = Code(rawValue: "store_unavailable")
        /// The store's files or schema are not what this version expects.
        public static let incompatible = Code(rawValue: "store_incompatible")
        /// A bug: the store was used in a way it does not allow.
        public static let misuse = Code(rawValue: "store_misuse")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
