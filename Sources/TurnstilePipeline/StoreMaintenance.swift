public import TurnstileCore

/// The store's upkeep while a receiver runs, as a ``Service``: the gauges (queue depth and each handler's
/// backlog every 250 ms, for `queue_bound` and `/metrics`; dead letters every second), the write check
/// `/healthz` answers from (every second), and pruning of expired nonces and of archived deliveries older
/// than the archive retention (every minute). Store errors are logged once
/// per episode and tried again on the next round; store calls run on an executor of their own.
public struct StoreMaintenance: Service {
    /// What the last round read.
    public struct Gauges: Sendable {
        public var queueDepth: Int
        public var backlog: [String: Int]
        /// Nil in the rounds that do not count them.
        public var deadLetters: Int?
    }

    public var name: String { "store maintenance" }
    private let store: any EventStore
    private let health: StoreHealth
    private let logger: Logger
    private let gauges: @Sendable (Gauges) -> Void
    private let archiveRetentionSeconds: Int?
    private let executor = BlockingExecutor(label: "ts-maintenance")

    /// - Parameter archiveRetentionSeconds: archived deliveries older than this are pruned (nil: kept forever).
    public init(store: any EventStore, health: StoreHealth, logger: Logger, archiveRetentionSeconds: Int? = nil,
                gauges: @escaping @Sendable (Gauges) -> Void = { _ in }) {
        self.archiveRetentionSeconds = archiveRetentionSeconds
        self.store = store
        self.health = health
        self.logger = logger
        self.gauges = gauges
    }

    /// Reads the gauges once, now (before a server answers its first request).
    public func readGauges() throws(StoreError) -> Gauges {
        let backlog = try store.backlog()
        return Gauges(queueDepth: backlog.values.reduce(0, +), backlog: backlog, deadLetters: try store.deadLetterCount())
    }

    public func run(until shutdown: GracefulShutdown) async {
        let reading = FailureEpisode("reading the queue gauges", logger: logger)
        let writes = FailureEpisode("the store write check", logger: logger)
        let pruning = FailureEpisode("nonce pruning", logger: logger)
        var lastPrune = 0.0
        var lastCheck = 0.0
        let store = self.store
        let health = self.health
        while !shutdown.isRequested && !Task.isCancelled {
            let now = SystemWallClock().now()
            let everySecond = now.secondsSince1970 - lastCheck >= 1
            do {
                let read = try await executor.run { () throws(StoreError) -> Gauges in
                    let backlog = try store.backlog()
                    return Gauges(queueDepth: backlog.values.reduce(0, +), backlog: backlog,
                                  deadLetters: everySecond ? try store.deadLetterCount() : nil)
                }
                gauges(read)
                reading.succeeded()
            } catch {
                reading.failed(error, "the last values are kept")
            }
            if everySecond {
                lastCheck = now.secondsSince1970
                let status = try? await executor.run { () throws(StoreError) in health.check(store, now: now) }
                switch status {
                case .writable?: writes.succeeded()
                case .unwritable(let reason)?:
                    writes.failed(StoreError(.unavailable, reason), "/healthz answers 503 until a write succeeds")
                case nil: break
                }
            }
            if now.secondsSince1970 - lastPrune > 60 {
                lastPrune = now.secondsSince1970
                let retention = archiveRetentionSeconds
                do {
                    let pruned = try await executor.run { () throws(StoreError) in try store.pruneNonces(now: now) }
                    if pruned > 0 { logger.info("pruned nonces", ["count": String(pruned)]) }
                    if let retention {
                        let archived = try await executor.run { () throws(StoreError) in
                            try store.pruneArchive(receivedBefore: now.adding(seconds: -Double(retention)))
                        }
                        if archived > 0 { logger.info("pruned the archive", ["count": String(archived), "retention_s": String(retention)]) }
                    }
                    pruning.succeeded()
                } catch {
                    pruning.failed(error, "retried in a minute")
                }
            }
            try? await Task.sleep(nanoseconds: 250_000_000)
        }
    }
}
