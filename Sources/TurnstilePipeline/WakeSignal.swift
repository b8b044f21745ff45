public import TurnstileCore
import Dispatch
import TurnstileSync

/// Wakes one waiting loop: ``signal()`` from any thread ends the current or the next ``wait(seconds:)``
/// at once; otherwise the wait ends after its timeout. Signals that arrive while nobody waits collapse into one.
public final class WakeSignal: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>? = nil
        var generation = 0
    }
    private let state = Locked(State())

    public init() {}

    public func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns after a signal or after `seconds` (at most a day), whichever comes first.
    public func wait(seconds: Double) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let generation = state.withLock { state -> Int? in
                if state.pending {
                    state.pending = false
                    return nil
                }
                state.generation += 1
                state.waiter = continuation
                return state.generation
            }
            guard let generation else { return continuation.resume() }
            let nanoseconds = Int(min(max(seconds, 0), 86_400) * 1e9)
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(nanoseconds)) { [state] in
                let expired = state.withLock { state -> CheckedContinuation<Void, Never>? in
                    guard state.generation == generation, let waiter = state.waiter else { return nil }
                    state.waiter = nil
                    return waiter
                }
                expired?.resume()
            }
        }
    }
}

/// Runs blocking store calls on threads of their own, so that no SQLite call (which may wait on a lock or an
/// fsync) blocks the cooperative pool that every task shares.
public final class BlockingExecutor: Sendable {
    private let queue: DispatchQueue

    /// - Parameter label: names the threads, as `top -H` shows them.
    public init(label: String) {
        queue = DispatchQueue(label: label)
    }

    /// `body`'s result, computed on this executor's thread.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws(StoreError) -> T) async throws(StoreError) -> T {
        let result: Result<T, StoreError> = await withCheckedContinuation { continuation in
            queue.async {
                do throws(StoreError) { continuation.resume(returning: .success(try body())) } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}
