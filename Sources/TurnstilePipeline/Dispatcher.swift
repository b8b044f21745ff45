public import TurnstileCore
import Foundation
import Synchronization

/// Stage 3: workers that lease events from the durable queue and run their handlers.
///
/// - At least once: an event is marked done only after every matching handler returned and was committed.
///   A crash leaves its lease to expire, and the event is delivered again.
/// - Bounded concurrency: at most `concurrency` handler calls run at once.
/// - Failures retry with exponential backoff and full jitter; after `max_attempts` the event is dead-lettered
///   with its last error. A payload that does not decode as the handler's event type is dead-lettered at once.
/// - Order per ordering key: the store leases only the oldest queued event of each ordering key (Sync: one
///   job's states). Events whose ordering key is their own identity keep no order among themselves.
public final class Dispatcher: Sendable {
    /// What a run did.
    public struct Stats: Sendable, Hashable {
        public var dispatched = 0
        public var retried = 0
        public var deadLettered = 0
        public init() {}
    }

    /// Reason codes of dead letters written by the dispatcher.
    public static let handlerFailed = Reason(rawValue: "handler_failed")
    public static let handlerTypeMismatch = Reason(rawValue: "handler_type_mismatch")
    /// A batch run (``drain(shouldStop:progress:)``) gave up on a sink that stayed unavailable (a full disk):
    /// retry the dead letters once it works. The long-running ``run(idleSeconds:shouldStop:progress:)``
    /// never dead-letters for that reason; it keeps retrying with back-off.
    public static let sinkUnavailable = Reason(rawValue: "sink_unavailable")

    private let store: any EventStore
    private let registry: HandlerRegistry
    private let settings: DispatchSettings
    private let clock: any WallClock
    private let logger: Logger
    /// Names this worker's leases.
    public let owner: String
    private let observer: (@Sendable (QueuedEvent, String, Bool, Double) -> Void)?

    /// - Parameter observer: told of every handler run (event, handler name, success, seconds), for metrics.
    public init(store: any EventStore, registry: HandlerRegistry, settings: DispatchSettings,
                clock: any WallClock = SystemWallClock(), logger: Logger = .silent,
                observer: (@Sendable (QueuedEvent, String, Bool, Double) -> Void)? = nil) {
        self.store = store
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.logger = logger
        self.owner = "\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8))"
        self.observer = observer
    }

    /// Dispatches until the queue is empty, waiting for retries that are due later. Returns early, with what
    /// it did, when `shouldStop` turns true between batches. A store error ends it (a batch job reports it).
    public func drain(shouldStop: @Sendable () -> Bool = { false },
                      progress: (Stats) -> Void = { _ in }) async throws(StoreError) -> Stats {
        try await loop(stopWhenEmpty: true, idleSeconds: 1, longRunning: false, shouldStop: shouldStop, progress: progress)
    }

    /// Dispatches until `shouldStop` turns true, polling an empty queue every `idleSeconds`: the
    /// long-running form for a server or a library host. In-flight batches finish before it returns.
    ///
    /// A store error (locked past its timeout, a full disk, a lost file) never ends it: the error is logged
    /// once per episode, the loop backs off (50 ms doubling to 5 s) and carries on, and logs when the store
    /// answers again. Leases taken before the failure expire and their events are dispatched again.
    public func run(idleSeconds: Double = 0.2, shouldStop: @Sendable () -> Bool,
                    progress: (Stats) -> Void = { _ in }) async -> Stats {
        do {
            return try await loop(stopWhenEmpty: false, idleSeconds: idleSeconds, longRunning: true,
                                  shouldStop: shouldStop, progress: progress)
        } catch {
            // Unreachable: a long-running loop catches every store error itself.
            logger.error("dispatch stopped", ["error": error.description])
            return Stats()
        }
    }

    /// - Parameter longRunning: store errors are waited out instead of thrown, and events of an unavailable
    ///   sink are retried for as long as it lasts instead of dead-lettered after `max_attempts`.
    private func loop(stopWhenEmpty: Bool, idleSeconds: Double, longRunning: Bool, shouldStop: @Sendable () -> Bool,
                      progress: (Stats) -> Void) async throws(StoreError) -> Stats {
        var stats = Stats()
        var backoff = Backoff()
        let episode = FailureEpisode("dispatch", logger: logger)
        while !shouldStop() {
            let batch: [QueuedEvent]
            var due: Instant? = nil
            do {
                batch = try store.lease(limit: settings.batchSize, owner: owner, now: clock.now(), leaseSeconds: settings.leaseSeconds)
                if batch.isEmpty { due = try store.nextDue() }
            } catch {
                guard longRunning else { throw error }
                episode.failed(error, "dispatch backs off and retries")
                await Self.pause(backoff.next(), shouldStop: shouldStop)
                continue
            }
            episode.succeeded()
            backoff.reset()
            if batch.isEmpty {
                if due == nil && stopWhenEmpty { return stats }
                let until = due.map { $0.secondsSince1970 - clock.now().secondsSince1970 } ?? idleSeconds
                await Self.pause(min(max(until, 0.001), idleSeconds), shouldStop: shouldStop)
                continue
            }
            let outcome = await process(batch, retryingUnavailableSinks: longRunning)
            stats.dispatched += outcome.dispatched
            stats.retried += outcome.retried
            stats.deadLettered += outcome.deadLettered
            progress(stats)
        }
        return stats
    }

    /// Sleeps `seconds` (at most a day), in steps of at most 200 ms so that a stop is noticed quickly.
    private static func pause(_ seconds: Double, shouldStop: @Sendable () -> Bool) async {
        var left = min(max(seconds, 0), 86_400)
        while left > 0, !shouldStop() {
            let step = min(left, 0.2)
            try? await Task.sleep(nanoseconds: UInt64(step * 1e9))
            left -= step
        }
    }

    /// Runs one leased batch to the end: handlers, commits, then done / retry / dead letter in the store.
    func process(_ batch: [QueuedEvent], retryingUnavailableSinks: Bool) async -> Stats {
        let results = await runHandlers(batch)
        var failures: [Int: any Error] = [:]
        var committed: [String: (any Error)?] = [:]
        var partial: [String: PartialCommitError] = [:]
        for (index, result) in results.enumerated() {
            if let error = result.error { failures[index] = error }
        }
        // Durability barrier: every handler that succeeded on some event of the batch commits before any of
        // those events is marked done.
        for entry in registry.entries {
            let used = results.indices.contains { failures[$0] == nil && results[$0].handlers.contains(entry.name) }
            guard used else { continue }
            do { try await entry.commit(); committed[entry.name] = .some(nil) }
            catch let error as PartialCommitError { partial[entry.name] = error }
            catch { committed[entry.name] = error }
        }
        for (index, result) in results.enumerated() where failures[index] == nil {
            let id = batch[index].id
            let failedCommit = result.handlers.lazy.compactMap { name -> (any Error)? in
                if let error = partial[name] { return error.failedEventIDs.contains(id) ? error : nil }
                return committed[name] ?? nil
            }.first
            if let failedCommit { failures[index] = failedCommit }
        }
        var stats = Stats()
        let done = batch.indices.filter { failures[$0] == nil }.map { batch[$0].id }
        do {
            try store.complete(done)
            stats.dispatched = done.count
            for (index, error) in failures.sorted(by: { $0.key < $1.key }) {
                let event = batch[index]
                let message = String(describing: error)
                if error is EventDecodingError {
                    try store.deadLetter(event.id, reason: Self.handlerTypeMismatch, error: message, now: clock.now())
                    stats.deadLettered += 1
                    logger.error("dead-lettered", ["event_id": String(event.id), "event_type": event.eventType, "reason": Self.handlerTypeMismatch.rawValue, "error": message])
                } else if event.attempt >= settings.maxAttempts && !(retryingUnavailableSinks && Self.isSinkUnavailable(error)) {
                    let reason = Self.isSinkUnavailable(error) ? Self.sinkUnavailable : Self.handlerFailed
                    try store.deadLetter(event.id, reason: reason, error: message, now: clock.now())
                    stats.deadLettered += 1
                    logger.error("dead-lettered", ["event_id": String(event.id), "event_type": event.eventType, "reason": reason.rawValue,
                                                   "attempts": String(event.attempt), "error": message])
                } else {
                    let delay = backoff(attempt: event.attempt)
                    try store.retry(event.id, at: clock.now().adding(seconds: delay), error: message)
                    stats.retried += 1
                    logger.warning("handler failed; will retry", ["event_id": String(event.id), "event_type": event.eventType,
                                                                  "attempt": String(event.attempt), "retry_in_s": String(format: "%.3f", delay), "error": message])
                }
            }
        } catch {
            // The leases will expire and the events will be delivered again: at least once still holds.
            logger.error("store failed after dispatch; events will be redelivered", ["error": error.description])
        }
        return stats
    }

    /// Whether `error` says the handler's sink is down rather than the event is bad (never dead-lettered).
    static func isSinkUnavailable(_ error: any Error) -> Bool {
        if let partial = error as? PartialCommitError { return partial.underlying is any SinkUnavailable }
        return error is any SinkUnavailable
    }

    /// The wait before retry number `attempt`: `base × 2^(attempt-1)`, capped, with jitter in [50%, 100%].
    public func backoff(attempt: Int) -> Double {
        let exponential = settings.backoffBaseSeconds * pow(2, Double(max(0, attempt - 1)))
        let capped = min(exponential, settings.backoffMaxSeconds)
        return capped * Double.random(in: 0.5...1.0)
    }

    private struct HandlerResult: Sendable {
        var handlers: [String] = []
        var error: (any Error)? = nil
    }

    /// Runs the batch on `concurrency` workers, each taking the next event not yet taken: at most that many
    /// handler calls at once, and one task per worker rather than per event.
    private func runHandlers(_ batch: [QueuedEvent]) async -> [HandlerResult] {
        let workers = min(max(1, settings.concurrency), batch.count)
        let taken = TakenCount()
        return await withTaskGroup(of: [(Int, HandlerResult)].self) { group in
            for _ in 0..<workers {
                group.addTask {
                    var finished: [(Int, HandlerResult)] = []
                    while true {
                        let index = taken.next()
                        guard index < batch.count else { return finished }
                        finished.append((index, await self.run(batch[index])))
                    }
                }
            }
            var results = [HandlerResult](repeating: HandlerResult(), count: batch.count)
            for await finished in group {
                for (index, result) in finished { results[index] = result }
            }
            return results
        }
    }

    /// Hands out 0, 1, 2, … to the workers of one batch.
    private final class TakenCount: Sendable {
        private let count = Atomic<Int>(0)
        func next() -> Int { count.add(1, ordering: .relaxed).oldValue }
    }

    private func run(_ event: QueuedEvent) async -> HandlerResult {
        var result = HandlerResult()
        for entry in registry.handlers(for: event.eventType) {
            let context = DispatchContext(eventID: event.id, provider: event.provider, eventType: event.eventType, eventKey: event.eventKey,
                                          receivedAt: event.receivedAt, attempt: event.attempt, isReprocess: event.isReprocess,
                                          handlerName: entry.name)
            let start = DispatchTime.now().uptimeNanoseconds
            do {
                try await entry.handle(event, context)
                observer?(event, entry.name, true, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                result.handlers.append(entry.name)
            } catch {
                observer?(event, entry.name, false, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                result.error = error
                return result
            }
        }
        return result
    }
}
