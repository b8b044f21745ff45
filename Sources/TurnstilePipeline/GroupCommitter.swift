public import TurnstileCore
import TurnstileSync
import Foundation

/// Group commit: callers verify in parallel, then hand their admissions to ONE writer thread, which commits
/// whatever has queued up in a single transaction and then wakes every caller of that batch. A caller hears
/// its verdict only after its transaction committed, and durability costs one fsync per batch, not per request.
public final class GroupCommitter: Sendable {
    /// Receives a verdict: on the caller's thread when the delivery needs no store, otherwise on the writer
    /// thread right after the commit, so it must be quick (hand the answer to another thread).
    public typealias Completion = @Sendable (DeliveryVerdict) -> Void

    private struct Waiting {
        let prepared: PreparedDelivery
        let completion: Completion
    }

    private let pipeline: Pipeline
    private let maximumBatch: Int
    private let state = Locked<(queue: [Waiting], stopped: Bool, writerIdle: Bool, started: Bool)>(([], false, true, false))
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    /// The writer thread starts with ``run(until:)``, or with the first ``submit(_:now:completion:)``.
    public init(pipeline: Pipeline, maximumBatch: Int = 512) {
        self.pipeline = pipeline
        self.maximumBatch = maximumBatch
    }

    /// Starts the writer thread (once; later calls do nothing).
    public func start() {
        let first = state.withLock { state -> Bool in
            defer { state.started = true }
            return !state.started
        }
        if first { spawnWriter() }
    }

    private func spawnWriter() {
        // Named from inside: Foundation on Linux names the OS thread (as `top -H` and perf show it) only then.
        Thread { [self] in
            Thread.current.name = "ts-commit"
            writerLoop()
        }.start()
    }

    /// Verifies `delivery` on the caller's task and, when it passes, waits for the batch that stores it.
    public func submit(_ delivery: Delivery, now: Instant? = nil) async -> DeliveryVerdict {
        await withCheckedContinuation { continuation in
            submit(delivery, now: now) { continuation.resume(returning: $0) }
        }
    }

    /// Verifies `delivery` on the calling thread; a rejection is reported at once, a delivery that passes is
    /// reported after the transaction that stores it has committed.
    public func submit(_ delivery: Delivery, now: Instant? = nil, completion: @escaping Completion) {
        let prepared = pipeline.prepare(delivery, now: now)
        guard prepared.admission != nil else { return completion(prepared.verdict) }
        let (accepted, wakeWriter, startWriter) = state.withLock { state -> (Bool, Bool, Bool) in
            guard !state.stopped else { return (false, false, false) }
            // The first submission starts the writer when no service did (a library host calling receive).
            let first = !state.started
            state.started = true
            state.queue.append(Waiting(prepared: prepared, completion: completion))
            // The writer takes the whole queue after each commit, so only a writer that sleeps needs waking.
            defer { state.writerIdle = false }
            return (true, state.writerIdle, first)
        }
        if startWriter { spawnWriter() }
        if wakeWriter { wake.signal() }
        if !accepted {
            var verdict = prepared.verdict
            verdict.outcome = .rejected
            verdict.reason = .storeUnavailable
            verdict.detail = "shutting down"
            completion(verdict)
        }
    }

    /// Commits what is queued, then stops the writer. Blocks until it has.
    public func stop() {
        let (wakeWriter, running) = state.withLock { state -> (Bool, Bool) in
            state.stopped = true
            guard state.started else { return (false, false) }
            defer { state.writerIdle = false }
            return (state.writerIdle, true)
        }
        guard running else { return }
        if wakeWriter { wake.signal() }
        finished.wait()
    }

    private func writerLoop() {
        while true {
            wake.wait()
            while true {
                let (batch, stopped) = state.withLock { state -> ([Waiting], Bool) in
                    let count = min(maximumBatch, state.queue.count)
                    let batch = Array(state.queue.prefix(count))
                    state.queue.removeFirst(count)
                    if count == 0 { state.writerIdle = true }
                    return (batch, state.stopped && state.queue.isEmpty)
                }
                if !batch.isEmpty {
                    let verdicts = pipeline.admit(batch.map(\.prepared))
                    for (waiting, verdict) in zip(batch, verdicts) { waiting.completion(verdict) }
                }
                if stopped {
                    finished.signal()
                    return
                }
                if batch.isEmpty { break }
            }
        }
    }
}

/// Starts the thread at ``run(until:)``; at shutdown ``stop()`` commits what is queued (new submissions get 503).
extension GroupCommitter: ThreadedService {
    public var name: String { "group commit" }
}
