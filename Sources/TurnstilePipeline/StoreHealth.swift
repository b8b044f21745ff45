public import TurnstileCore
import TurnstileSync

/// Whether the store takes writes, as the latest write told: an admission transaction, or the write check
/// `serve` commits every second (``EventStore/checkWritable(now:)``). It is what `/healthz` answers, so a
/// load balancer stops sending deliveries to a receiver whose store is read-only, full or locked, and
/// sends them again once a write succeeds, without a restart.
public final class StoreHealth: Sendable {
    /// What the latest write found.
    public enum Status: Sendable, Hashable {
        case writable
        /// The latest write failed, for `reason` (the store's error, which names no secret).
        case unwritable(reason: String)
    }

    private let state = Locked<Status>(.writable)

    public init() {}

    public var status: Status { state.withLock { $0 } }

    public func recordSuccess() {
        state.withLock { $0 = .writable }
    }

    public func recordFailure(_ error: StoreError) {
        state.withLock { $0 = .unwritable(reason: error.message) }
    }

    /// Commits a write check now and records what it found.
    @discardableResult
    public func check(_ store: any EventStore, now: Instant) -> Status {
        do {
            try store.checkWritable(now: now)
            recordSuccess()
        } catch {
            recordFailure(error)
        }
        return status
    }
}
