public import TurnstileCore
import Foundation
import TurnstileSync

/// Stage 3: routes each queued event to its handlers, then leases each handler's deliveries and runs them.
///
/// - Per-handler state: each (event, handler) pair is a delivery of its own, with its own attempts, backoff,
///   error and dead letter. A failing handler never re-runs the handlers that already succeeded for that
///   event, and never holds them up.
/// - At least once: a delivery is marked done only after its handler returned and committed. A crash leaves
///   its lease to expire, and it is delivered again.
/// - Per-handler limits: at most `concurrency` calls of one handler at once (default `dispatch.concurrency`),
///   a token-bucket rate limit, and a circuit breaker that pauses a handler after a run of failures (its
///   deliveries stay queued, none is dead-lettered for it while it is open) and probes again after a cool-down.
/// - Failures retry with exponential backoff and full jitter; after `max_attempts` the delivery is
///   dead-lettered with its last error. A payload that does not decode as the handler's event type is
///   dead-lettered at once.
/// - Order per ordering key, per handler: the store leases only a handler's oldest queued delivery of each
///   ordering key (Sync: one job's states).
/// - Prompt: ``wake()`` (called when a commit enqueued work) starts a round at once instead of at the next poll.
///
/// Store calls run on a ``BlockingExecutor`` of the dispatcher's own, never on the cooperative pool.
public final class Dispatcher: Sendable {
    /// What a run did.
    public struct Stats: Sendable, Hashable {
        public var dispatched = 0
        public var retried = 0
        public var deadLettered = 0
        public init() {}

        static func + (lhs: Stats, rhs: Stats) -> Stats {
            var sum = lhs
            sum.dispatched += rhs.dispatched
            sum.retried += rhs.retried
            sum.deadLettered += rhs.deadLettered
            return sum
        }
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
    private let executor = BlockingExecutor(label: "ts-dispatch-store")
    private let wakeup = WakeSignal()
    /// Each handler's gate, and how many of its deliveries are leased and not finished.
    private let gates: Locked<(gates: [String: HandlerGate], inFlight: [String: Int])>

    /// - Parameter observer: told of every handler run (delivery, handler name, success, seconds), for metrics.
    public init(store: any EventStore, registry: HandlerRegistry, settings: DispatchSettings,
                clock: any WallClock = ForwardWallClock(), logger: Logger = .silent,
                observer: (@Sendable (QueuedEvent, String, Bool, Double) -> Void)? = nil) {
        self.store = store
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.logger = logger
        self.owner = "\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8))"
        self.observer = observer
        var gates: [String: HandlerGate] = [:]
        for entry in registry.entries { gates[entry.name] = HandlerGate(limits: entry.limits) }
        self.gates = Locked((gates, [:]))
    }

    /// Starts the next round at once: call it when a commit enqueued work.
    public func wake() { wakeup.signal() }

    /// Each handler's breaker: 0 closed, 1 open, 2 probing.
    public var breakerStates: [String: Int] { gates.withLock { $0.gates.mapValues(\.breakerGauge) } }

    /// Dispatches until the queue is empty, waiting for retries that are due later. Returns early, with what
    /// it did, when `shouldStop` turns true between rounds. A store error ends it (a batch job reports it).
    public func drain(shouldStop: @Sendable () -> Bool = { false },
                      progress: (Stats) -> Void = { _ in }) async throws(StoreError) -> Stats {
        var stats = Stats()
        while !shouldStop() {
            let round = try await runDue(retryingUnavailableSinks: false)
            stats = stats + round.stats
            if round.stats != Stats() { progress(stats) }
            if try await queuedForRegisteredHandlers() == 0 { return stats }
            guard round.stats == Stats() else { continue }
            let due = try await nextDue(startable: round.startable)
            let wait = due.map { $0.secondsSince1970 - clock.now().secondsSince1970 } ?? 1
            await wakeup.wait(seconds: min(max(wait, 0.001), 1))
        }
        return stats
    }

    /// Dispatches until `shouldStop` turns true: the long-running form for a server or a library host. It
    /// sleeps while nothing is due, up to `idleSeconds` or until ``wake()``. In-flight batches finish before
    /// it returns.
    ///
    /// A store error (locked past its timeout, a full disk, a lost file) never ends it: the error is logged
    /// once per episode, the loop backs off (50 ms doubling to 5 s) and carries on, and logs when the store
    /// answers again. Leases taken before the failure expire and their deliveries run again.
    /// - Parameter drainThenStop: once it turns true, the loop returns as soon as nothing is left queued for
    ///   its handlers (a graceful shutdown that drains).
    public func run(idleSeconds: Double = 1, shouldStop: @escaping @Sendable () -> Bool,
                    drainThenStop: @escaping @Sendable () -> Bool = { false },
                    progress: @escaping @Sendable (Stats) -> Void = { _ in }) async -> Stats {
        let total = Locked(Stats())
        var backoff = Backoff()
        let episode = FailureEpisode("dispatch", logger: logger)
        await withTaskGroup(of: Void.self) { group in
            while !shouldStop() {
                do {
                    let started = try await startRound { batch in
                        group.addTask {
                            let stats = await self.process(batch, retryingUnavailableSinks: true)
                            self.finished(batch)
                            progress(total.withLock { $0 = $0 + stats; return $0 })
                            self.wakeup.signal()
                        }
                    }
                    episode.succeeded()
                    backoff.reset()
                    if started.batches > 0 { continue }
                    if drainThenStop(), gates.withLock({ $0.inFlight.values.allSatisfy { $0 == 0 } }),
                       try await queuedForRegisteredHandlers() == 0 { break }
                    let due = try await nextDue(startable: started.startable)
                    let soonest = [due, started.nextGateOpening].compactMap { $0 }.min()
                    let wait = soonest.map { $0.secondsSince1970 - clock.now().secondsSince1970 } ?? idleSeconds
                    await wakeup.wait(seconds: min(max(wait, 0.001), idleSeconds))
                } catch {
                    episode.failed(error, "dispatch backs off and retries")
                    await wakeup.wait(seconds: backoff.next())
                }
            }
        }
        return total.withLock { $0 }
    }

    /// Deliveries waiting for this dispatcher's handlers, and events not routed yet. Those for a handler that
    /// is not registered (any more) wait for it; they do not keep a drain going.
    private func queuedForRegisteredHandlers() async throws(StoreError) -> Int {
        let backlog = try await executor.run { [store] () throws(StoreError) in try store.backlog() }
        let names = Set(registry.names + [""])
        return backlog.filter { names.contains($0.key) }.values.reduce(0, +)
    }

    /// One round, awaited to the end: routes what is waiting, then leases and runs every handler's due
    /// deliveries that its limits allow at the clock's `now`. Drive it with a manual clock to test limits and
    /// breakers without sleeping.
    public func runDue() async throws(StoreError) -> Stats {
        try await runDue(retryingUnavailableSinks: false).stats
    }

    private func runDue(retryingUnavailableSinks: Bool) async throws(StoreError) -> (stats: Stats, startable: [String]) {
        var work: [Batch] = []
        let started = try await startRound { work.append($0) }
        let stats = await withTaskGroup(of: Stats.self) { group in
            for batch in work {
                group.addTask {
                    let stats = await self.process(batch, retryingUnavailableSinks: retryingUnavailableSinks)
                    self.finished(batch)
                    return stats
                }
            }
            return await group.reduce(Stats(), +)
        }
        return (stats, started.startable)
    }

    /// Deliveries leased for one handler, run by `workers` calls at once.
    struct Batch: Sendable {
        let entry: HandlerRegistry.Entry
        let events: [QueuedEvent]
        let workers: Int
    }

    private func finished(_ batch: Batch) {
        gates.withLock { $0.inFlight[batch.entry.name, default: 0] -= batch.events.count }
    }

    private struct RoundStart {
        var batches = 0
        /// Handlers that could have started a delivery (not at their concurrency, not held by their gate).
        var startable: [String] = []
        /// The soonest a held handler may start again.
        var nextGateOpening: Instant? = nil
    }

    /// Routes waiting events, then leases a batch for every idle handler that its gate lets start, and hands
    /// each batch to `start`: up to `batch_size` deliveries, run by at most `concurrency` calls at once and
    /// committed together.
    private func startRound(_ start: (Batch) -> Void) async throws(StoreError) -> RoundStart {
        let registry = self.registry
        let limit = settings.batchSize
        while try await executor.run({ [store, clock] () throws(StoreError) in
            try store.route(limit: limit, now: clock.now()) { registry.route($0) }
        }) == limit {}
        var round = RoundStart()
        for entry in registry.entries {
            let now = clock.now()
            let concurrency = max(1, entry.limits.concurrency ?? settings.concurrency)
            let (allowance, room) = gates.withLock { state -> (Int, Int) in
                // One batch of a handler at a time: its commit (the jsonl handler's fsync) is the durability
                // barrier of the whole batch, and a second batch's commit would take the first one's lines.
                guard state.inFlight[entry.name, default: 0] == 0 else { return (-1, 0) }
                return (state.gates[entry.name, default: HandlerGate(limits: entry.limits)].allowance(now: now, batch: limit), concurrency)
            }
            if allowance < 0 { continue }
            if allowance == 0 {
                if let opening = gates.withLock({ $0.gates[entry.name]?.nextStart(after: now) }) {
                    round.nextGateOpening = min(round.nextGateOpening ?? opening, opening)
                }
                continue
            }
            round.startable.append(entry.name)
            let batch = try await executor.run { [store, owner, settings] () throws(StoreError) in
                try store.lease(handler: entry.name, limit: allowance, owner: owner, now: now, leaseSeconds: settings.leaseSeconds)
            }
            guard !batch.isEmpty else { continue }
            gates.withLock { state in
                state.gates[entry.name]?.started(batch.count)
                state.inFlight[entry.name, default: 0] += batch.count
            }
            round.batches += 1
            start(Batch(entry: entry, events: batch, workers: min(room, batch.count)))
        }
        return round
    }

    /// The earliest instant a delivery of one of `handlers` (or an unrouted event) becomes due: deliveries of
    /// handlers held by their gate do not count, or an open breaker's due deliveries would keep the loop from
    /// sleeping (the gate's own opening is waited for instead).
    private func nextDue(startable handlers: [String]) async throws(StoreError) -> Instant? {
        guard !handlers.isEmpty else { return nil }
        return try await executor.run { [store] () throws(StoreError) in try store.nextDue(handlers: handlers) }
    }

    /// Runs one handler's leased batch to the end: its calls (at most its concurrency at once), its commit,
    /// then done / retry / dead letter in the store.
    func process(_ leased: Batch, retryingUnavailableSinks: Bool) async -> Stats {
        let entry = leased.entry
        let batch = leased.events
        // While the calls run, the leases are renewed every third of their length, so a handler slower than a
        // lease keeps its deliveries; a worker that stops (a pause, a crash) stops renewing, and they move on.
        let renewal = Task { [store, clock, settings, executor, logger] in
            let every = max(settings.leaseSeconds / 3, 0.05)
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(every * 1e9))
                if Task.isCancelled { return }
                let until = clock.now().adding(seconds: settings.leaseSeconds)
                do {
                    _ = try await executor.run { () throws(StoreError) in try store.renew(batch.map(\.lease), until: until) }
                } catch {
                    logger.warning("lease renewal failed; the deliveries may run again elsewhere", ["handler": entry.name, "error": "\(error)"])
                }
            }
        }
        defer { renewal.cancel() }
        var failures = await runCalls(batch, entry: entry, workers: leased.workers)
        // Durability barrier: the handler commits before any of its deliveries is marked done.
        if failures.count < batch.count {
            do { try await entry.commit() } catch let error as PartialCommitError {
                for (index, event) in batch.enumerated() where failures[index] == nil && error.failedEventIDs.contains(event.id) {
                    failures[index] = error
                }
            } catch {
                for index in batch.indices where failures[index] == nil { failures[index] = error }
            }
        }
        // The breaker sees every run's result in order; a failure while it is open is put back, not counted.
        let now = clock.now()
        let held: [Int: Instant] = gates.withLock { state in
            var held: [Int: Instant] = [:]
            for index in batch.indices {
                if let error = failures[index], error is EventDecodingError { continue }
                let open = state.gates[entry.name]?.record(succeeded: failures[index] == nil, now: now) ?? false
                if open, failures[index] != nil, let until = state.gates[entry.name]?.reopensAt { held[index] = until }
            }
            return held
        }
        var stats = Stats()
        let done = batch.indices.filter { failures[$0] == nil }.map { batch[$0].lease }
        let plans = failures.sorted { $0.key < $1.key }.map { index, error in
            plan(for: batch[index], error: error, heldUntil: held[index], retryingUnavailableSinks: retryingUnavailableSinks, now: now)
        }
        do {
            let fenced = try await executor.run { [store] () throws(StoreError) -> Int in
                var lost = done.count - (try store.complete(done))
                for plan in plans {
                    let stillHeld = switch plan.action {
                    case .deadLetter(let reason): try store.deadLetter(plan.event.lease, reason: reason, error: plan.message, now: now)
                    case .retry(let at): try store.retry(plan.event.lease, at: at, error: plan.message)
                    }
                    if !stillHeld { lost += 1 }
                }
                return lost
            }
            if fenced > 0 {
                // These leases expired and another worker took the deliveries over: ours change nothing.
                logger.warning("leases lost before their results were stored; another worker has the deliveries", [
                    "handler": entry.name, "count": String(fenced)])
            }
            stats.dispatched = done.count
            for plan in plans {
                switch plan.action {
                case .deadLetter(let reason):
                    stats.deadLettered += 1
                    logger.error("dead-lettered", ["event": DispatchContext.eventIdentity(provider: plan.event.provider, eventKey: plan.event.eventKey),
                                                   "event_id": String(plan.event.id), "handler": entry.name, "event_type": plan.event.eventType,
                                                   "reason": reason.rawValue, "attempts": String(plan.event.attempt), "error": plan.message])
                case .retry(let at):
                    stats.retried += 1
                    logger.warning(held.isEmpty ? "handler failed; will retry" : "handler failed; its breaker is open", [
                        "event": DispatchContext.eventIdentity(provider: plan.event.provider, eventKey: plan.event.eventKey),
                        "event_id": String(plan.event.id), "handler": entry.name, "event_type": plan.event.eventType,
                        "attempt": String(plan.event.attempt),
                        "retry_in_s": String(format: "%.3f", max(0, at.secondsSince1970 - now.secondsSince1970)), "error": plan.message,
                    ])
                }
            }
        } catch {
            // The leases will expire and the deliveries will run again: at least once still holds.
            logger.error("store failed after dispatch; deliveries will run again", ["handler": entry.name, "error": error.description])
        }
        return stats
    }

    private struct Plan: Sendable {
        enum Action: Sendable {
            case retry(at: Instant)
            case deadLetter(Reason)
        }
        let event: QueuedEvent
        let message: String
        let action: Action
    }

    private func plan(for event: QueuedEvent, error: any Error, heldUntil: Instant?, retryingUnavailableSinks: Bool, now: Instant) -> Plan {
        let message = String(describing: error)
        if error is EventDecodingError { return Plan(event: event, message: message, action: .deadLetter(Self.handlerTypeMismatch)) }
        if let heldUntil { return Plan(event: event, message: message, action: .retry(at: heldUntil)) }
        let unavailable = Self.isSinkUnavailable(error)
        if event.attempt >= settings.maxAttempts && !(retryingUnavailableSinks && unavailable) {
            return Plan(event: event, message: message, action: .deadLetter(unavailable ? Self.sinkUnavailable : Self.handlerFailed))
        }
        return Plan(event: event, message: message, action: .retry(at: now.adding(seconds: backoff(attempt: event.attempt))))
    }

    /// Whether `error` says the handler's sink is down rather than the event is bad (never dead-lettered).
    static func isSinkUnavailable(_ error: any Error) -> Bool {
        if let partial = error as? PartialCommitError { return partial.underlying is any SinkUnavailable }
        return error is any SinkUnavailable
    }

    /// The wait before retry number `attempt`: `base × 2^(attempt-1)`, capped, with jitter in [50%, 100%].
    public func backoff(attempt: Int) -> Double {
        let exponential = settings.backoffBaseSeconds * pow(2, Double(min(max(0, attempt - 1), 60)))
        let capped = min(exponential, settings.backoffMaxSeconds)
        return capped * Double.random(in: 0.5...1.0)
    }

    /// Runs the batch's calls on `workers` workers, each taking the next delivery not yet taken; returns the
    /// failures by index.
    private func runCalls(_ batch: [QueuedEvent], entry: HandlerRegistry.Entry, workers: Int) async -> [Int: any Error] {
        let taken = Locked(0)
        return await withTaskGroup(of: [(Int, any Error)].self) { group in
            for _ in 0..<workers {
                group.addTask {
                    var failed: [(Int, any Error)] = []
                    while true {
                        let index = taken.withLock { count -> Int in defer { count += 1 }; return count }
                        guard index < batch.count else { return failed }
                        if let error = await self.call(entry, with: batch[index]) { failed.append((index, error)) }
                    }
                }
            }
            var failures: [Int: any Error] = [:]
            for await failed in group {
                for (index, error) in failed { failures[index] = error }
            }
            return failures
        }
    }

    private func call(_ entry: HandlerRegistry.Entry, with event: QueuedEvent) async -> (any Error)? {
        let context = DispatchContext(eventID: event.id, provider: event.provider, eventType: event.eventType, eventKey: event.eventKey,
                                      receivedAt: event.receivedAt, attempt: event.attempt, isReprocess: event.isReprocess,
                                      handlerName: entry.name)
        let start = DispatchTime.now().uptimeNanoseconds
        do {
            try await entry.handle(event, context)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            observer?(event, entry.name, true, seconds)
            // One event can be followed through the log: its delivery line, then each handler's attempts.
            logger.info("handler ran", ["event": context.eventIdentity, "delivery": context.deliveryIdentity, "handler": entry.name,
                                        "event_type": event.eventType, "attempt": String(event.attempt),
                                        "duration_ms": String(format: "%.2f", seconds * 1000)])
            return nil
        } catch {
            observer?(event, entry.name, false, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            return error
        }
    }
}

extension Dispatcher: Service {
    public var name: String { "dispatch" }

    /// Dispatches until shutdown is requested, then drains what is queued while the grace period lasts;
    /// what is left stays queued for the next start.
    public func run(until shutdown: GracefulShutdown) async {
        _ = await run(shouldStop: { shutdown.secondsLeft == 0 || Task.isCancelled }, drainThenStop: { shutdown.isRequested })
    }
}
