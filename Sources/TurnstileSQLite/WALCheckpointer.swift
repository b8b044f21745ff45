public import TurnstileCore
import TurnstileSync
import Foundation
import Synchronization

/// Checkpoints a store's WAL on a thread of its own, so that no commit pays for copying pages back into the
/// database file. (SQLite's automatic checkpoint runs inside the commit that crosses 1000 WAL frames, and
/// every answer waiting on that commit waits for the copy and the database's fsync too.)
///
/// A round starts once the WAL holds `thresholdFrames`. It copies what the WAL holds while writers go on
/// (`PASSIVE`), again and again while they append faster than a short tail, then copies that tail while
/// holding the stores' locks (the admission store's last, so its writer waits only for the copy), so that
/// the next commit starts the WAL from its beginning. Without that last step a WAL that writers never stop
/// appending to is never reset and grows without bound. Durability does not depend on checkpoints: a commit
/// is durable once its WAL frames are synced.
///
/// Related SQLite documentation: <https://www.sqlite.org/wal.html#ckpt>, <https://www.sqlite.org/c3ref/wal_checkpoint_v2.html>
public final class WALCheckpointer: Sendable {
    private let stores: [SQLiteEventStore]
    /// Used only on the checkpoint thread; the mutex makes the class `Sendable`.
    private let connection: Locked<SQLiteConnection>
    private let thresholdFrames: Int
    private let logger: Logger
    private let stopped = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    /// Takes over checkpoints for `store` and `others` (connections of this process to the same file, such
    /// as the dispatch workers'), which stop checkpointing in their commits.
    public init(store: SQLiteEventStore, others: [SQLiteEventStore] = [], thresholdFrames: Int = 1000,
                logger: Logger = .silent) throws(StoreError) {
        let connection: SQLiteConnection
        do {
            connection = try SQLiteConnection(path: store.path)
            connection.setBusyTimeout(milliseconds: 5_000)
        } catch {
            throw StoreError(.unavailable, "cannot open a checkpoint connection to \(store.path): \(error)")
        }
        // The admission store last: its writer, which senders wait on, is held back only for the copy itself,
        // not while this thread waits for the other connections' transactions to end.
        self.stores = others.filter { $0 !== store } + [store]
        self.connection = Locked(connection)
        self.thresholdFrames = thresholdFrames
        self.logger = logger
        for each in stores { each.checkpointElsewhere() }
    }

    private let started = Locked(false)

    /// Starts the checkpoint thread (once; later calls do nothing).
    public func start() {
        let first = started.withLock { started -> Bool in
            defer { started = true }
            return !started
        }
        guard first else { return }
        Thread { [self] in
            Thread.current.name = "ts-checkpoint"  // From inside, so that the OS thread has the name too.
            run()
        }.start()
    }

    /// Ends the thread after its current round. The stores keep checkpointing off; closing the last
    /// connection checkpoints what is left.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
        if started.withLock({ $0 }) { finished.wait() }
    }

    private func run() {
        var pause: UInt32 = 2_000
        var lastFrames = 0
        while !stopped.load(ordering: .relaxed) {
            usleep(pause)
            let frames = recordedWALFrames
            // Every 2 ms while commits come in; up to every 200 ms on an idle store.
            pause = frames == lastFrames ? min(pause * 2, 200_000) : 2_000
            lastFrames = frames
            guard frames >= thresholdFrames else { continue }
            do {
                // A WAL that a reader (of another process) keeps from being reset is retried less eagerly.
                if try !round() { usleep(50_000) }
            } catch {
                logger.error("checkpoint failed; the next round retries", ["error": String(describing: error)])
                usleep(100_000)
            }
        }
        finished.signal()
    }

    /// One checkpoint: most frames copied beside the writers, the rest with the writers held. True when
    /// the whole WAL is in the database (as with SQLite's own checkpoints, a reader of an older snapshot can
    /// keep the last frames from being copied; the WAL is then reset by a later round).
    private func round() throws -> Bool {
        try connection.withLock { connection -> Bool in
            // Each pass copies what was committed when it began; repeat while the writers keep appending, so
            // that the step that holds them back has only a short tail to copy.
            var checkpointed = try connection.checkpointPassively().checkpointed
            for _ in 1..<Self.maximumUnlockedPasses {
                let tail = recordedWALFrames - checkpointed
                guard tail > Self.shortTailFrames else { break }
                checkpointed = try connection.checkpointPassively().checkpointed
            }
            let (walFrames, copied) = try withAllLocks { try connection.checkpointPassively() }
            guard walFrames == copied else { return false }
            // Everything is in the database: the next commit rewrites the WAL from its start.
            for store in stores { store.recordedWALFrames = 0 }
            return true
        }
    }

    /// The WAL's length after the last commit of any of the stores' connections.
    private var recordedWALFrames: Int { stores.map(\.recordedWALFrames).max() ?? 0 }

    /// Passes beside the writers before the one that holds them back.
    private static let maximumUnlockedPasses = 8
    /// A tail short enough to copy while the writers wait (about one busy commit's pages).
    private static let shortTailFrames = 64

    /// Runs `body` while every store's connection is held (in a fixed order: only this thread takes more
    /// than one of these locks).
    private func withAllLocks<T: Sendable>(_ body: () throws -> T, from index: Int = 0) throws -> T {
        guard index < stores.count else { return try body() }
        return try stores[index].lock.withLock { try withAllLocks(body, from: index + 1) }
    }
}

/// Starts the thread at ``run(until:)``; at shutdown ``stop()`` ends it.
extension WALCheckpointer: ThreadedService {
    public var name: String { "WAL checkpoints" }
}
