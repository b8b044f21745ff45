#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import TurnstileSync

/// SIGTERM and SIGINT, watched from the moment this is made: the first one is kept until ``first()`` asks,
/// a second one ends the process at once.
public final class ShutdownSignals: Sendable {
    private final class State: Sendable {
        let lock = Locked<(count: Int, first: Int32?, waiter: CheckedContinuation<Int32, Never>?)>((0, nil, nil))
    }
    private let state = State()
    /// The dispatch sources, kept alive as long as this is (only held, never touched again).
    private let sources: Locked<[any DispatchSourceSignal]>

    public init() {
        var sources: [any DispatchSourceSignal] = []
        let state = self.state
        for signo in [SIGTERM, SIGINT] {
            Glibc.signal(signo, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signo, queue: .global())
            source.setEventHandler {
                let waiter = state.lock.withLock { state -> CheckedContinuation<Int32, Never>? in
                    state.count += 1
                    if state.count > 1 { _exit(128 + signo) }
                    state.first = signo
                    defer { state.waiter = nil }
                    return state.waiter
                }
                waiter?.resume(returning: signo)
            }
            source.resume()
            sources.append(source)
        }
        self.sources = Locked(sources)
    }

    /// The first signal, once it has arrived.
    public func first() async -> Int32 {
        await withCheckedContinuation { continuation in
            let arrived = state.lock.withLock { state -> Int32? in
                if let first = state.first { return first }
                state.waiter = continuation
                return nil
            }
            if let arrived { continuation.resume(returning: arrived) }
        }
    }
}
