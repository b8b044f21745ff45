#if canImport(Glibc)
import Glibc
#endif
public import TurnstileCore
import Foundation

/// Wakes this instance's idle workers when any instance commits work to the queue: a connection of its own
/// that `LISTEN`s on the store's channel, on a thread of its own, as a ``Service``. A lost connection is
/// reopened with back-off; meanwhile the workers' one-second poll is the backstop, so nothing waits for it.
public final class PostgresListener: Service, Sendable {
    public var name: String { "PostgreSQL listener" }
    private let url: String
    private let password: String?
    private let channel: String
    private let logger: Logger
    private let wake: @Sendable () -> Void

    init(url: String, password: String?, channel: String, logger: Logger, wake: @escaping @Sendable () -> Void) {
        self.url = url
        self.password = password
        self.channel = channel
        self.logger = logger
        self.wake = wake
    }

    public func run(until shutdown: GracefulShutdown) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread { [self] in
                Thread.current.name = "ts-pg-listen"
                listen(until: shutdown)
                continuation.resume()
            }.start()
        }
    }

    /// Listens until shutdown, reconnecting after failures.
    private func listen(until shutdown: GracefulShutdown) {
        let episode = FailureEpisode("listening for queued work", logger: logger)
        var backoff = Backoff(initial: 0.1, maximum: 5)
        while !shutdown.isRequested {
            do {
                let connection = try PostgresConnection(url: url, password: password)
                try connection.execute("LISTEN \"\(channel)\"")
                episode.succeeded()
                backoff.reset()
                // Work may have been queued while no one listened.
                wake()
                while !shutdown.isRequested {
                    var descriptor = pollfd(fd: connection.socket, events: Int16(POLLIN), revents: 0)
                    let ready = poll(&descriptor, 1, 250)
                    if ready < 0 && errno == EINTR { continue }
                    if ready == 0 { continue }
                    if try !connection.notifications().isEmpty { wake() }
                    if connection.isBroken { throw PostgresError(sqlState: nil, message: "the listening connection was lost") }
                }
            } catch {
                episode.failed(error, "workers poll every second meanwhile; reconnecting")
                let wait = backoff.next()
                var waited = 0.0
                while waited < wait && !shutdown.isRequested {
                    usleep(50_000)
                    waited += 0.05
                }
            }
        }
    }
}
