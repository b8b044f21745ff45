public import TurnstileCore
import Foundation
import Synchronization

/// Group commit: callers verify in parallel, then hand their admissions to ONE writer thread, which commits
/// whatever has queued up in a single transaction and then wakes every caller of that batch. A caller hears
/// its verdict only after its transaction committed, and durability costs one fsync per batch, not per request.
public final class GroupCommitter: Sendable {
    private struct Waiting {
        let prepared: PreparedDelivery
        let continuation: CheckedContinuation<DeliveryVerdict, Never>
    }

    private let pipeline: Pipeline
    private let maximumBatch: Int
    private let state = Mutex<(queue: [Waiting], stopped: Bool)>(([], false))
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    /// Starts the writer thread.
    public init(pipeline: Pipeline, maximumBatch: Int = 512) {
        self.pipeline = pipeline
        self.maximumBatch = maximumBatch
        let thread = Thread { [self] in writerLoop() }
        thread.name = "turnstile-group-commit"
        thread.start()
    }

    /// Verifies `delivery` on the caller's task and, when it passes, waits for the batch that stores it.
    public func submit(_ delivery: Delivery, now: Instant? = nil) async -> DeliveryVerdict {
        let prepared = pipeline.prepare(delivery, now: now)
        guard prepared.admission != nil else { return prepared.verdict }
        return await withCheckedContinuation { continuation in
            let accepted = state.withLock { state -> Bool in
                guard !state.stopped else { return false }
                state.queue.append(Waiting(prepared: prepared, continuation: continuation))
                return true
            }
            if accepted {
                wake.signal()
            } else {
                var verdict = prepared.verdict
                verdict.outcome = .rejected
                verdict.reason = .storeUnavailable
                verdict.detail = "shutting down"
                continuation.resume(returning: verdict)
            }
        }
    }

    /// Commits what is queued, then stops the writer.
    public func stop() {
        state.withLock { $0.stopped = true }
        wake.signal()
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
                    return (batch, state.stopped && state.queue.isEmpty)
                }
                if !batch.isEmpty {
                    let verdicts = pipeline.admit(batch.map(\.prepared))
                    for (waiting, verdict) in zip(batch, verdicts) { waiting.continuation.resume(returning: verdict) }
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
