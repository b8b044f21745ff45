/// What the pipeline stores, behind protocols split by concern that the embedded SQLite store and the shared
/// PostgreSQL store implement with the same semantics (one conformance suite runs against both). The
/// pipeline's logic knows no SQL and no storage format.
///
/// Concurrency model: every method is one transaction and blocks until it is done. Implementations are safe
/// to call from any thread, but callers run them only on threads of their own (``BlockingExecutor``s), never
/// on Swift's cooperative pool: a store that waits for a disk or a server must not hold a pool thread.
///
/// Every mutation takes the instant it acts at (`now`), so tests drive time with a manual clock. Leases are
/// fenced: completing, retrying or dead-lettering names the ``Lease`` held, and does nothing when another
/// worker has taken the delivery since. Errors are ``StoreError``s saying whether a retry may succeed.
public typealias EventStore = AdmissionStore & QueueStore & DeadLetterStore & ArchiveStore & AnswerStore & MaintainedStore

/// Admission: the nonce table (the replay guard) and the queue and archive rows a new event adds.
public protocol AdmissionStore: Sendable {
    /// Admits verified deliveries in order, all in ONE transaction: for each, insert-if-absent its signature
    /// nonce and its event nonce (a nonce that expired before `now` counts as absent), then append the event to
    /// the queue (or to the dead letters when it is already known to be undeliverable) and the raw delivery to
    /// the archive. Nothing is acknowledged until this returns.
    func admit(_ batch: [Admission], now: Instant) throws(StoreError) -> [AdmissionResult]
}

/// The queue: events routed to their handlers, leased, completed, retried or given up on.
public protocol QueueStore: Sendable {
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
}

/// Dead letters: deliveries that will not be dispatched until someone re-queues them.
public protocol DeadLetterStore: Sendable {
    /// How many dead letters there are.
    func deadLetterCount() throws(StoreError) -> Int

    /// Dead letters, oldest first.
    func deadLetters(limit: Int) throws(StoreError) -> [DeadLetter]

    /// Puts dead letters back on the queue (all of them when `ids` is nil), with their attempts reset.
    /// Returns how many were re-queued.
    func requeueDeadLetters(_ ids: [Int64]?, now: Instant) throws(StoreError) -> Int
}

/// The archive: every admitted raw delivery, as received.
public protocol ArchiveStore: Sendable {
    /// Calls `body` with each archived raw delivery in arrival order, optionally only one provider's and
    /// only those received at or after `since`. Reads in pages, so memory stays flat.
    func forEachArchived(provider: String?, since: Instant?, _ body: (Delivery) throws -> Void) throws
}

/// Inbound answers: the first answer given to each request/response event.
public protocol AnswerStore: Sendable {
    /// Keeps the first answer given to a request/response event (Synthflow's inbound call) and returns the
    /// answer that is kept: `answer` when none was stored yet, else the stored one. Repeats of one request so
    /// get one answer, across restarts and receivers.
    func keepAnswer(provider: String, eventKey: String, answer: String, now: Instant) throws(StoreError) -> String

    /// The answer kept for an event, if any.
    func keptAnswer(provider: String, eventKey: String) throws(StoreError) -> String?
}

/// Maintenance: the health probe and retention. Safe to run from several instances at once.
public protocol MaintainedStore: Sendable {
    /// Proves the store takes writes now by committing a one-row write of its own: it fails, as an admission
    /// would, while the store is read-only, full or locked past its timeout. `/healthz` and start-up use it.
    func checkWritable(now: Instant) throws(StoreError)

    /// Removes nonces that expired before `now` (a store may keep some a little longer, until all of their
    /// time partition has expired); returns how many were removed.
    func pruneNonces(now: Instant) throws(StoreError) -> Int

    /// Removes archived deliveries received before `cutoff`; a queued event or a dead letter keeps its body.
    /// Returns how many were removed.
    func pruneArchive(receivedBefore cutoff: Instant) throws(StoreError) -> Int
}

/// One verified delivery to admit.
public struct Admission: Sendable {
    public var provider: String
    public var kind: String?
    public var eventType: String
    public var eventKey: String
    /// Events with the same ordering key are dispatched one at a time, in arrival order.
    public var orderingKey: String
    /// The signed message's nonce (see `VerifiedDelivery.signatureNonce`): what makes a replay `seen_signature`.
    public var signatureNonce: Nonce
    public var signatureExpiresAt: Instant
    public var eventExpiresAt: Instant
    /// The raw delivery, archived as received (each store keeps its headers in a format of its own).
    public let delivery: Delivery
    public var signedAt: Instant?
    /// When set, the event goes straight to the dead letters with this reason (a payload that breaks its schema).
    public var deadLetter: (reason: Reason, message: String)?
    /// `replay --reprocess`: a seen event is queued again (flagged as a reprocess) instead of only reported.
    public var reprocess: Bool
    /// The handlers the event goes to, when the admitting receiver routed it already (its body is at hand
    /// then, and routing later would read it back). A store may queue one delivery per handler at once, or
    /// keep the event for ``QueueStore/route(limit:now:_:)`` as when this is nil; the outcome is the same.
    public var handlers: [String]? = nil

    public init(provider: String, kind: String?, eventType: String, eventKey: String, orderingKey: String,
                signatureNonce: Nonce, signatureExpiresAt: Instant, eventExpiresAt: Instant, delivery: Delivery,
                signedAt: Instant?, deadLetter: (reason: Reason, message: String)? = nil, reprocess: Bool = false) {
        self.provider = provider
        self.kind = kind
        self.eventType = eventType
        self.eventKey = eventKey
        self.orderingKey = orderingKey
        self.signatureNonce = signatureNonce
        self.signatureExpiresAt = signatureExpiresAt
        self.eventExpiresAt = eventExpiresAt
        self.delivery = delivery
        self.signedAt = signedAt
        self.deadLetter = deadLetter
        self.reprocess = reprocess
    }

    /// The ordering key as stores keep it: empty for an event whose ordering key is its own identity (it has
    /// no order to keep with other events), so that it stays out of the ordering index. A re-processed copy
    /// of such an event may then run beside its original if that is still queued: at least once allows it.
    public var storedOrderingKey: String { orderingKey == eventKey ? "" : orderingKey }
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
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The store cannot be reached or written now (busy past its timeout, a serialization failure, a lost
        /// connection, disk full, I/O error): a later try may succeed.
        public static let unavailable = Code(rawValue: "store_unavailable")
        /// The store's files or schema are not what this version expects (a schema newer than this code).
        public static let incompatible = Code(rawValue: "store_incompatible")
        /// A bug: the store was used in a way it does not allow (a constraint broken, a statement refused).
        public static let misuse = Code(rawValue: "store_misuse")
    }

    public let code: Code
    /// What was being done and what went wrong, with no secret in it.
    public let message: String
    /// The engine's own error (a `SQLiteError`, a `PostgresError`), when there was one.
    public let cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// Whether trying again later may succeed: the sender gets a 503 with `Retry-After`, a loop tries again.
    public var isTransient: Bool { code == .unavailable }

    public var description: String { "\(code): \(message)" }
}
