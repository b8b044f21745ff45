import Dispatch
import TurnstileSync

/// A long-running part of Turnstile (the HTTP server, the group-commit writer, the dispatcher, store
/// maintenance, WAL checkpoints), run by a ``ServiceGroup`` as swift-service-lifecycle runs its services.
///
/// Its work happens in ``run(until:)``, never in an `init`: no thread is started before the group runs it.
public protocol Service: Sendable {
    /// Names the service in log lines.
    var name: String { get }
    /// Does the service's work until `shutdown` is requested, then finishes what is in flight (within
    /// ``GracefulShutdown/secondsLeft``) and returns. Returns at once when its task is cancelled.
    func run(until shutdown: GracefulShutdown) async
}

/// A service whose work runs on a thread of its own (the group-commit writer, WAL checkpoints): ``start()``
/// starts the thread, ``stop()`` finishes its work and blocks until the thread has ended. ``run(until:)``
/// starts it and, at shutdown, stops it on a thread outside the cooperative pool.
public protocol ThreadedService: Service {
    func start()
    func stop()
}

extension ThreadedService {
    public func run(until shutdown: GracefulShutdown) async {
        start()
        await shutdown.wait()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                self.stop()
                continuation.resume()
            }
        }
    }
}

/// One service's shutdown request: whether it was asked to stop, and by when it must have.
public final class GracefulShutdown: Sendable {
    private struct State {
        var deadline: UInt64? = nil
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Locked(State())

    public init() {}

    /// True once the service should stop.
    public var isRequested: Bool { state.withLock { $0.deadline != nil } }

    /// Seconds until the grace period ends (0 once it has; infinity before shutdown is requested).
    public var secondsLeft: Double {
        guard let deadline = state.withLock({ $0.deadline }) else { return .infinity }
        let now = DispatchTime.now().uptimeNanoseconds
        return now >= deadline ? 0 : Double(deadline - now) / 1e9
    }

    /// Asks the service to stop, finishing its work within `graceSeconds`.
    public func request(graceSeconds: Double) {
        let nanoseconds = UInt64(min(max(graceSeconds, 0), 86_400) * 1e9)
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard state.deadline == nil else { return [] }
            state.deadline = DispatchTime.now().uptimeNanoseconds + nanoseconds
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once shutdown is requested.
    public func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.deadline != nil { return true }
                state.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }
}

/// Runs services together and shuts them down in one place: each runs on a task of its own; one that
/// returns before shutdown is logged and started again after a back-off (100 ms doubling to 5 s), so none
/// can stop silently. When the trigger fires, the services are asked to stop in reverse order (the last
/// one listed, the HTTP front, first), each waited for in turn, all within one grace period; whatever still
/// runs at its end is cancelled.
public struct ServiceGroup: Sendable {
    public let services: [any Service]
    public let gracePeriodSeconds: Double
    private let logger: Logger

    public init(_ services: [any Service], gracePeriodSeconds: Double, logger: Logger = .silent) {
        self.services = services
        self.gracePeriodSeconds = gracePeriodSeconds
        self.logger = logger
    }

    /// Runs every service until `trigger` returns, then shuts them down as described above.
    public func run(until trigger: @escaping @Sendable () async -> Void) async {
        let requests = services.map { _ in GracefulShutdown() }
        let finished = services.map { _ in Latch() }
        await withTaskGroup(of: Void.self) { group in
            for (index, service) in services.enumerated() {
                let shutdown = requests[index]
                let done = finished[index]
                group.addTask { [logger] in
                    defer { done.open() }
                    var backoff = Backoff(initial: 0.1, maximum: 5)
                    while true {
                        await service.run(until: shutdown)
                        if shutdown.isRequested || Task.isCancelled { return }
                        let wait = backoff.next()
                        logger.error("\(service.name) ended unexpectedly; restarting it", ["restart_in_s": String(wait)])
                        try? await Task.sleep(nanoseconds: UInt64(wait * 1e9))
                    }
                }
            }
            await trigger()
            let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(min(max(gracePeriodSeconds, 0), 86_400) * 1e9)
            for index in services.indices.reversed() {
                let now = DispatchTime.now().uptimeNanoseconds
                let left = now >= deadline ? 0 : Double(deadline - now) / 1e9
                requests[index].request(graceSeconds: left)
                if await !finished[index].wait(seconds: left + 0.05) {
                    logger.warning("\(services[index].name) did not stop within the grace period; cancelling it", [
                        "grace_period_s": String(gracePeriodSeconds)])
                }
            }
            group.cancelAll()
        }
    }
}

/// Opens once; waiters return when it does (or after their timeout).
final class Latch: Sendable {
    private let state = Locked<(open: Bool, waiters: [UInt64: CheckedContinuation<Bool, Never>], next: UInt64)>((false, [:], 0))

    func open() {
        let waiters = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            state.open = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: true) }
    }

    /// True when it opened within `seconds`.
    func wait(seconds: Double) async -> Bool {
        await withCheckedContinuation { continuation in
            let ticket = state.withLock { state -> UInt64? in
                if state.open { return nil }
                state.next += 1
                state.waiters[state.next] = continuation
                return state.next
            }
            guard let ticket else { return continuation.resume(returning: true) }
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(min(max(seconds, 0), 86_400) * 1e9))) { [state] in
                let expired = state.withLock { $0.waiters.removeValue(forKey: ticket) }
                expired?.resume(returning: false)
            }
        }
    }
}
