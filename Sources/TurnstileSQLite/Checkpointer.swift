import Foundation
import Synchronization

/// Copies committed WAL pages back into the database file on a thread of its own, so that no writer pays
/// for a checkpoint inside its commit (SQLite's automatic checkpoint runs in the committing call).
///
/// Passive checkpoints never block writers or readers; one runs every ``interval`` while the store is open.
/// `@unchecked Sendable` is safe because the connection is used only by the checkpoint thread.
final class Checkpointer: @unchecked Sendable {
    static let interval: TimeInterval = 0.05

    private let connection: SQLiteConnection
    private let stopped = Mutex(false)
    private let finished = DispatchSemaphore(value: 0)

    init(path: String, synchronous: String, busyTimeoutMilliseconds: Int) throws(SQLiteError) {
        connection = try SQLiteConnection(path: path)
        connection.setBusyTimeout(milliseconds: busyTimeoutMilliseconds)
        try connection.execute("PRAGMA synchronous = \(synchronous)")
        let thread = Thread { [self] in loop() }
        thread.name = "turnstile-checkpoint"
        thread.start()
    }

    /// Runs a last checkpoint and ends the thread.
    func stop() {
        stopped.withLock { $0 = true }
        finished.wait()
    }

    private func loop() {
        while true {
            let done = stopped.withLock { $0 }
            // A failed passive checkpoint (busy, I/O) is retried at the next tick; the WAL keeps every page.
            try? connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            if done { break }
            Thread.sleep(forTimeInterval: Self.interval)
        }
        finished.signal()
    }
}
