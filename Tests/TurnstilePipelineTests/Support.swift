#if canImport(Glibc)
import Glibc
#endif
import TurnstileSync
import Foundation
import Synchronization
import TurnstileCore
import TurnstileIngest
import TurnstilePipeline
import TurnstileSQLite

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

func temporaryFolder() throws -> String {
    let path = NSTemporaryDirectory() + "turnstile-pipeline-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

let signedAt = Instant(iso8601: "2026-01-15T19:04:06Z")!

/// A pipeline over a fresh SQLite file with one provider per built-in scheme.
struct Harness {
    let folder: String
    let config: TurnstileConfig
    let ingest: Ingest
    let store: SQLiteEventStore
    let pipeline: Pipeline

    init(retention: Int? = nil) throws {
        folder = try temporaryFolder()
        let secrets = ["synthflow": "sf_secret", "autify": "au_secret", "sync": "whsec_sync", "stripe": "whsec_stripe",
                       "github": "gh_secret", "standard-webhooks": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
        let providers = secrets.sorted { $0.key < $1.key }.map { scheme, secret in
            ProviderConfig(name: scheme, scheme: scheme, secrets: [Secret(reference: "env:X", value: Array(secret.utf8))],
                           retentionSeconds: scheme == "autify" ? nil : retention)
        }
        config = TurnstileConfig(file: folder + "/turnstile.json", store: .sqlite(path: folder + "/t.db"), providers: providers)
        ingest = try Ingest(config: config)
        store = try SQLiteEventStore(path: folder + "/t.db")
        pipeline = try Pipeline(config: config, ingest: ingest, store: store, catalog: try SchemaCatalog.shared())
    }

    /// A delivery for `provider` signed now-ish with its secret.
    func signed(_ provider: String, _ body: String, at instant: Instant = signedAt, id: String? = nil) throws -> Delivery {
        let headers = try ingest.scheme(for: provider)!.signatureHeaders(body: Array(body.utf8), at: instant, id: id, eventType: "push")
        return Delivery(provider: provider, receivedAt: instant.adding(seconds: 1), headers: headers, body: Array(body.utf8))
    }

    func process(_ deliveries: [Delivery], reprocess: Bool = false) -> [DeliveryVerdict] {
        pipeline.process(deliveries, reprocess: reprocess)
    }

    func dispatcher(_ registry: HandlerRegistry, maxAttempts: Int = 5, clock: any WallClock = SystemWallClock()) -> Dispatcher {
        var settings = DispatchSettings()
        settings.maxAttempts = maxAttempts
        settings.backoffBaseSeconds = 0.001
        settings.backoffMaxSeconds = 0.01
        settings.leaseSeconds = 30
        return Dispatcher(store: store, registry: registry, settings: settings, clock: clock)
    }
}

/// Records what a handler saw.
final class Recorder<Event: DispatchableEvent>: EventHandler, @unchecked Sendable {
    private let seen = Locked<[(Event, DispatchContext)]>([])
    /// Fail this many times before succeeding (per event id); -1 always fails.
    private let failures: Int
    private let delay: Double
    private let active = Locked<(now: [String: Int], peak: Int)>(([:], 0))

    init(failures: Int = 0, delay: Double = 0) {
        self.failures = failures
        self.delay = delay
    }

    func handle(_ event: Event, context: DispatchContext) async throws {
        let ordering = context.eventKey.split(separator: ":").prefix(2).joined(separator: ":")
        active.withLock { state in
            state.now[ordering, default: 0] += 1
            state.peak = max(state.peak, state.now[ordering]!)
        }
        defer { active.withLock { $0.now[ordering, default: 1] -= 1 } }
        if delay > 0 { try await Task.sleep(nanoseconds: UInt64(delay * 1e9)) }
        seen.withLock { $0.append((event, context)) }
        if failures < 0 || context.attempt <= failures { throw TestFailure(attempt: context.attempt) }
    }

    var contexts: [DispatchContext] { seen.withLock { $0.map(\.1) } }
    var events: [Event] { seen.withLock { $0.map(\.0) } }
    /// The most handler calls that ran at once for one ordering key.
    var peakPerOrderingKey: Int { active.withLock { $0.peak } }
}

struct TestFailure: Error, CustomStringConvertible {
    let attempt: Int
    var description: String { "injected failure on attempt \(attempt)" }
}

/// A thread-safe count.
final class Counter: Sendable {
    private let count = Locked(0)
    var value: Int { count.withLock { $0 } }
    func increment() { count.withLock { $0 += 1 } }
}

/// A sink that is unavailable (a full disk) for its first `failures` calls.
final class FlakySink: EventHandler, Sendable {
    private let failures: Int
    private let count = Locked(0)
    init(failures: Int) { self.failures = failures }
    var calls: Int { count.withLock { $0 } }

    func handle(_ event: GenericEvent, context: DispatchContext) async throws {
        let call = count.withLock { count -> Int in
            count += 1
            return count
        }
        if call <= failures { throw HandlerIOError(path: "/flaky", operation: "write", code: ENOSPC) }
    }
}

/// A store that fails every call while `failing` is set, as a locked or full SQLite file does.
final class SwitchableStore: EventStore, @unchecked Sendable {
    // `@unchecked`: the two counters are behind a mutex; `base` is itself Sendable.
    private let base: SQLiteEventStore
    private let state = Locked<(failing: Bool, failed: Int)>((false, 0))
    init(_ base: SQLiteEventStore) { self.base = base }

    var failing: Bool {
        get { state.withLock { $0.failing } }
        set { state.withLock { $0.failing = newValue } }
    }
    var failedCalls: Int { state.withLock { $0.failed } }

    private func gate() throws(StoreError) {
        let fail = state.withLock { state -> Bool in
            if state.failing { state.failed += 1 }
            return state.failing
        }
        if fail { throw StoreError(.unavailable, "database is locked") }
    }

    func admit(_ batch: [Admission], now: Instant) throws(StoreError) -> [AdmissionResult] { try gate(); return try base.admit(batch, now: now) }
    func route(limit: Int, now: Instant, _ route: (RoutableEvent) -> [String]) throws(StoreError) -> Int {
        try gate(); return try base.route(limit: limit, now: now, route)
    }
    func lease(handler: String, limit: Int, owner: String, now: Instant, leaseSeconds: Double) throws(StoreError) -> [QueuedEvent] {
        try gate(); return try base.lease(handler: handler, limit: limit, owner: owner, now: now, leaseSeconds: leaseSeconds)
    }
    func backlog() throws(StoreError) -> [String: Int] { try gate(); return try base.backlog() }
    func complete(_ leases: [Lease]) throws(StoreError) -> Int { try gate(); return try base.complete(leases) }
    func renew(_ leases: [Lease], until: Instant) throws(StoreError) -> Int { try gate(); return try base.renew(leases, until: until) }
    func retry(_ lease: Lease, at: Instant, error: String) throws(StoreError) -> Bool { try gate(); return try base.retry(lease, at: at, error: error) }
    func deadLetter(_ lease: Lease, reason: Reason, error: String, now: Instant) throws(StoreError) -> Bool {
        try gate(); return try base.deadLetter(lease, reason: reason, error: error, now: now)
    }
    func nextDue(handlers: [String]) throws(StoreError) -> Instant? { try gate(); return try base.nextDue(handlers: handlers) }
    func queueDepth() throws(StoreError) -> Int { try gate(); return try base.queueDepth() }
    func deadLetterCount() throws(StoreError) -> Int { try gate(); return try base.deadLetterCount() }
    func deadLetters(limit: Int) throws(StoreError) -> [DeadLetter] { try gate(); return try base.deadLetters(limit: limit) }
    func requeueDeadLetters(_ ids: [Int64]?, now: Instant) throws(StoreError) -> Int { try gate(); return try base.requeueDeadLetters(ids, now: now) }
    func keepAnswer(provider: String, eventKey: String, answer: String, now: Instant) throws(StoreError) -> String {
        try gate(); return try base.keepAnswer(provider: provider, eventKey: eventKey, answer: answer, now: now)
    }
    func keptAnswer(provider: String, eventKey: String) throws(StoreError) -> String? {
        try gate(); return try base.keptAnswer(provider: provider, eventKey: eventKey)
    }
    func checkWritable(now: Instant) throws(StoreError) { try gate(); try base.checkWritable(now: now) }
    func pruneNonces(now: Instant) throws(StoreError) -> Int { try gate(); return try base.pruneNonces(now: now) }
    func pruneArchive(receivedBefore cutoff: Instant) throws(StoreError) -> Int { try gate(); return try base.pruneArchive(receivedBefore: cutoff) }
    func forEachArchived(provider: String?, since: Instant?, _ body: (Delivery) throws -> Void) throws {
        try gate(); try base.forEachArchived(provider: provider, since: since, body)
    }
}
