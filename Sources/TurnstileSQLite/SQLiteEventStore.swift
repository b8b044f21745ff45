#if canImport(Glibc)
import Glibc
#endif
public import TurnstileCore
internal import CSQLite
import TurnstileSync
import Foundation

/// The embedded store: SQLite in WAL mode with `synchronous=FULL` by default, so a commit survives a
/// power cut before any sender hears 2xx.
///
/// One connection, serialised by a mutex: SQLite allows one writer at a time anyway, and batching
/// (``admit(_:)`` takes many deliveries per transaction) is what makes durability cheap.
///
/// `@unchecked Sendable` is safe because the non-Sendable connection is touched only inside
/// `lock.withLock`, so exactly one thread uses it at a time, and it never escapes this class.
///
/// Related SQLite documentation: <https://www.sqlite.org/wal.html>, <https://www.sqlite.org/pragma.html#pragma_synchronous>
public final class SQLiteEventStore: EventStore, @unchecked Sendable {
    /// How durable a commit is.
    public enum Synchronous: String, Sendable {
        /// fsync at every commit (the default): survives power loss.
        case full
        /// fsync at checkpoints only: survives a crash of the process, not of the machine.
        case normal
    }

    public struct Options: Sendable {
        public var synchronous: Synchronous = .full
        /// How long a writer waits for another process's lock before the store counts as unavailable.
        public var busyTimeoutMilliseconds: Int = 5_000

        public init(synchronous: Synchronous = .full, busyTimeoutMilliseconds: Int = 5_000) {
            self.synchronous = synchronous
            self.busyTimeoutMilliseconds = busyTimeoutMilliseconds
        }
    }

    /// The schema version this code writes; older stores are migrated at open.
    public static let schemaVersion = 7
    /// The SQLite library in use.
    public static var libraryVersion: String { SQLiteConnection.libraryVersion }

    public let path: String
    /// Serialises use of `connection` (also taken by ``WALCheckpointer`` for the last step of a checkpoint).
    let lock = Lock()
    private let connection: SQLiteConnection
    /// The rows of `nonce_log`, in memory (guarded by `lock`); caught up with other processes' rows in every
    /// admission. Loaded by the first admission or ``loadNonceIndex()``: a connection that only dispatches or
    /// runs a store command never holds it.
    private var nonceIndex = NonceIndex()
    private var nonceIndexLoaded = false
    /// The highest `nonce_log` id ``nonceIndex`` has taken in (guarded by `lock`).
    private var nonceLogSeen: Int64 = 0
    /// The WAL's length in frames after this connection's last commit, once ``checkpointElsewhere()`` ran.
    private let walFrames = UnsafeMutablePointer<Int32>.allocate(capacity: 1)

    /// Opens (creating if needed) the store at `path` (`:memory:` for a private in-memory store),
    /// checks the library, sets WAL and the pragmas and checks that they took effect, and migrates.
    public init(path: String, options: Options = Options()) throws(StoreError) {
        let opened: SQLiteConnection
        do throws(SQLiteError) {
            try SQLiteConnection.checkLibrary()
            opened = try SQLiteConnection(path: path)
            opened.setBusyTimeout(milliseconds: options.busyTimeoutMilliseconds)
            if path != ":memory:" {
                let mode = try opened.scalarText("PRAGMA journal_mode = WAL")
                guard mode?.lowercased() == "wal" else {
                    throw SQLiteError(code: 1, extendedCode: 1, message: "journal_mode is \(mode ?? "unknown"), not wal", sql: nil)
                }
            }
            try opened.execute("PRAGMA synchronous = \(options.synchronous.rawValue.uppercased())")
            let synchronous = try opened.scalarText("PRAGMA synchronous")
            let expected = options.synchronous == .full ? "2" : "1"
            guard synchronous == expected else {
                throw SQLiteError(code: 1, extendedCode: 1, message: "synchronous is \(synchronous ?? "unknown"), not \(options.synchronous.rawValue)", sql: nil)
            }
            try opened.execute("PRAGMA foreign_keys = ON")
            try opened.execute("PRAGMA cache_size = -32768")
            try Self.migrate(opened)
        } catch {
            // A schema newer than this code is not an outage: retrying will not help, a newer binary will.
            let code: StoreError.Code = error.isSchemaTooNew ? .incompatible : .unavailable
            throw StoreError(code, "cannot open the SQLite store \(path): \(error.isSchemaTooNew ? error.message : "\(error)")", cause: error)
        }
        self.path = path
        self.connection = opened
        self.fileIdentity = Self.identity(of: path)
        walFrames.initialize(to: 0)
    }

    /// The device and inode of the file the store opened (nil in memory).
    private let fileIdentity: FileIdentity?

    struct FileIdentity: Equatable {
        let device: UInt64
        let inode: UInt64
    }

    static func identity(of path: String) -> FileIdentity? {
        guard path != ":memory:", !path.hasPrefix("file:") else { return nil }
        var status = stat()
        guard stat(path, &status) == 0 else { return nil }
        return FileIdentity(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
    }

    /// Refuses to go on when the store's path no longer names the file that is open (deleted, or replaced by
    /// another file): writes would go into a file nobody will open again, and their events be lost at the
    /// next start. Checked before every admission and by the write check behind `/healthz`.
    private func checkFileIsStillThere() throws(StoreError) {
        guard let fileIdentity else { return }
        guard let now = Self.identity(of: path) else {
            throw StoreError(.unavailable, "the store file \(path) was deleted while open; nothing more is acknowledged until serve restarts on a store at that path")
        }
        guard now == fileIdentity else {
            throw StoreError(.unavailable, "the store file \(path) was replaced while open (another file is at that path now); nothing more is acknowledged until serve restarts")
        }
    }

    deinit {
        connection.unwatchWAL()
        walFrames.deallocate()
    }

    /// Turns off SQLite's automatic checkpoint on this connection (it runs inside the commit that crosses
    /// 1000 WAL frames) and records the WAL's length after each commit instead, for a ``WALCheckpointer``.
    func checkpointElsewhere() {
        lock.withLock { connection.watchWAL(frames: walFrames) }
    }

    /// The WAL's length after this connection's last commit (0 until ``checkpointElsewhere()``).
    var recordedWALFrames: Int {
        get { Int(CSQLite_wal_frames(walFrames)) }
        set { CSQLite_set_wal_frames(walFrames, Int32(clamping: newValue)) }
    }

    // MARK: Schema

    static let migrations: [String] = [
        // Version 1.
        """
        CREATE TABLE nonces (
            provider TEXT NOT NULL,
            category INTEGER NOT NULL,          -- 0: signature (scope = event kind), 1: event identity
            scope TEXT NOT NULL,
            value BLOB NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (provider, category, scope, value)
        ) WITHOUT ROWID;
        CREATE INDEX nonces_expiry ON nonces (expires_at);
        CREATE TABLE archive (
            id INTEGER PRIMARY KEY,
            provider TEXT NOT NULL,
            received_at REAL NOT NULL,
            path TEXT,
            headers TEXT NOT NULL,              -- JSON array of [name, value] pairs, in order
            body BLOB NOT NULL
        );
        CREATE INDEX archive_provider ON archive (provider, received_at);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            provider TEXT NOT NULL,
            event_type TEXT NOT NULL,
            event_key TEXT NOT NULL,
            ordering_key TEXT NOT NULL,
            payload BLOB,                       -- NULL: the body is the archive row's (stored once)
            received_at REAL NOT NULL,
            reprocess INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            available_at REAL NOT NULL,
            lease_owner TEXT,
            lease_until REAL,
            last_error TEXT,
            archive_id INTEGER
        );
        CREATE INDEX events_due ON events (available_at);
        CREATE INDEX events_order ON events (ordering_key, id);
        CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY,
            provider TEXT NOT NULL,
            event_type TEXT NOT NULL,
            event_key TEXT NOT NULL,
            ordering_key TEXT NOT NULL,
            payload BLOB,
            received_at REAL NOT NULL,
            reprocess INTEGER NOT NULL,
            attempts INTEGER NOT NULL,
            reason TEXT NOT NULL,
            last_error TEXT NOT NULL,
            dead_at REAL NOT NULL,
            archive_id INTEGER
        );
        """,
        // Version 2: answers of request/response webhooks.
        """
        CREATE TABLE answers (
            provider TEXT NOT NULL,
            event_key TEXT NOT NULL,
            answer TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (provider, event_key)
        ) WITHOUT ROWID;
        """,
        // Version 3: events without an ordering constraint (their ordering key is their own identity) store
        // an empty ordering key and stay out of the ordering index, which random keys would make costly.
        """
        DROP INDEX events_order;
        UPDATE events SET ordering_key = '' WHERE ordering_key = event_key;
        UPDATE dead_letters SET ordering_key = '' WHERE ordering_key = event_key;
        CREATE INDEX events_order ON events (ordering_key, id) WHERE ordering_key <> '';
        """,
        // Version 4: the one row ``checkWritable(now:)`` writes to prove the store takes writes.
        """
        CREATE TABLE health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at REAL NOT NULL);
        """,
        // Version 5: per-handler delivery state. A queue row is one (event, handler) delivery with its own
        // attempts, backoff, error and dead letter; an admitted event waits under handler '' until it is
        // routed to its handlers. Order per ordering key is kept per handler.
        """
        ALTER TABLE events ADD COLUMN handler TEXT NOT NULL DEFAULT '';
        ALTER TABLE dead_letters ADD COLUMN handler TEXT NOT NULL DEFAULT '';
        DROP INDEX events_order;
        CREATE INDEX events_order ON events (ordering_key, handler, id) WHERE ordering_key <> '';
        CREATE INDEX events_handler ON events (handler, id);
        """,
        // Version 6: nonces in an append-only log, found through an in-memory index of their hashes (`NonceIndex`).
        // Rows go in id order, so a batch's nonces fill the last page or two instead of dirtying a B-tree page
        // each (the random keys of the old primary key cost a 4 KB page per nonce in the WAL and again at the
        // checkpoint). A row is never updated: a nonce seen again after it expired gets a row of its own.
        // `fillNonceLog` moves the old table's rows.
        """
        CREATE TABLE nonce_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            hash INTEGER NOT NULL,              -- Nonce.stableHash as a signed 64-bit integer
            provider TEXT NOT NULL,
            category INTEGER NOT NULL,          -- 0: signature (scope = event kind), 1: event identity
            scope TEXT NOT NULL,
            value BLOB NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE INDEX nonce_log_expiry ON nonce_log (expires_at);
        """,
        // Version 7: indexes that cost a page in every commit and served no query. Archive pruning
        // (`received_at < ?`) could not use `archive_provider` (provider first) and scanned the whole archive
        // every round; it gets an index of its own, which arrivals append to. Leases find due rows through
        // `events_handler`, so `events_due` only cost writes.
        """
        DROP INDEX archive_provider;
        CREATE INDEX archive_received ON archive (received_at);
        DROP INDEX events_due;
        """,
    ]

    /// Work of a migration that SQL alone cannot do, run after its SQL in the same transaction, by version.
    private static let migrationSteps: [Int: @Sendable (SQLiteConnection) throws(SQLiteError) -> Void] = [6: fillNonceLog]

    /// Version 6: moves the nonces of the old table into the log, with their hashes.
    private static func fillNonceLog(_ db: SQLiteConnection) throws(SQLiteError) {
        let select = try db.prepare("SELECT provider, category, scope, value, expires_at FROM nonces ORDER BY expires_at")
        let insert = try db.prepare("INSERT INTO nonce_log (hash, provider, category, scope, value, expires_at) VALUES (?, ?, ?, ?, ?, ?)")
        while try select.step() {
            let nonce = Nonce(provider: select.text(0) ?? "", category: select.int64(1), scope: select.text(2) ?? "", value: select.blob(3))
            try insert.bind(.integer(Int64(bitPattern: nonce.stableHash)), .text(nonce.provider), .integer(nonce.category), .text(nonce.scope),
                            .blob(nonce.value), .real(select.double(4))).run()
        }
        select.reset()
        try db.execute("DROP TABLE nonces")
    }

    private static func migrate(_ connection: SQLiteConnection) throws(SQLiteError) {
        let current = Int(try connection.scalarText("PRAGMA user_version") ?? "0") ?? 0
        guard current <= migrations.count else {
            throw SQLiteError(code: 1, extendedCode: 1,
                              message: "the store has schema version \(current); this Turnstile knows up to \(migrations.count)", sql: nil,
                              isSchemaTooNew: true)
        }
        for version in current..<migrations.count {
            do {
                try connection.execute("BEGIN IMMEDIATE; \(migrations[version]) PRAGMA user_version = \(version + 1);")
                try migrationSteps[version + 1]?(connection)
                try connection.execute("COMMIT")
            } catch {
                try? connection.execute("ROLLBACK")
                throw SQLiteError(code: error.code, extendedCode: error.extendedCode,
                                  message: "cannot migrate the store to schema version \(version + 1): \(error.message)", sql: nil)
            }
        }
    }

    // MARK: Access

    func withConnection<T>(_ what: String, _ body: (SQLiteConnection) throws -> T) throws(StoreError) -> T {
        do {
            return try lock.withLock {
                do { return try body(connection) } catch let error as SQLiteError where error.isFull {
                    reclaimWALSpace()
                    throw error
                }
            }
        } catch let error as SQLiteError {
            throw StoreError(.unavailable, "\(what): \(error)", cause: error)
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.misuse, "\(what): \(error)")
        }
    }

    /// After a write failed for lack of space: copies the WAL into the database and truncates it to zero
    /// bytes, so the space it held is free again for the next write (a WAL that is only reset keeps its
    /// length, and writes regrow into the space just freed). Best effort: a reader may keep it from
    /// completing, and the next failure tries again. Called with the lock held.
    private func reclaimWALSpace() {
        guard path != ":memory:" else { return }
        _ = try? connection.scalarText("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    // MARK: Health

    public func checkWritable(now: Instant) throws(StoreError) {
        try checkFileIsStillThere()
        try withConnection("write check") { db in
            try db.transaction {
                try db.prepare("INSERT INTO health (id, checked_at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at")
                    .bind(.real(now.secondsSince1970)).run()
            }
        }
    }

    func withConnectionForBaseline<T>(_ body: (SQLiteConnection) throws -> T) throws(StoreError) -> T {
        try withConnection("baseline", body)
    }

    // MARK: Admission

    public func admit(_ batch: [Admission], now: Instant) throws(StoreError) -> [AdmissionResult] {
        // The header text and the nonces' hashes are made before the write lock is taken.
        let headers = batch.map { Self.archived($0.delivery.headers) }
        let nonces = batch.map { (signature: LoggedNonce($0.signatureNonce), event: LoggedNonce($0.eventNonce)) }
        try checkFileIsStillThere()
        return try withConnection("admit") { db in
            var logged: [(hash: UInt64, row: Int64)] = []
            do {
                let results = try db.transaction {
                    try catchUpNonceLog(db)
                    return try batch.indices.map {
                        try admit(batch[$0], nonces: nonces[$0], headers: headers[$0], now: now.secondsSince1970, logged: &logged, in: db)
                    }
                }
                nonceLogSeen = logged.last?.row ?? nonceLogSeen
                return results
            } catch {
                // The rows are gone with the transaction (and their ids may be handed out again): so are their entries.
                for entry in logged { nonceIndex.remove(hash: entry.hash, row: entry.row) }
                throw error
            }
        }
    }

    /// Entries in the nonce index: the log's rows, less those pruned.
    public var indexedNonces: Int { lock.withLock { nonceIndex.count } }

    /// A nonce with its hash, made outside the lock.
    private struct LoggedNonce {
        var nonce: Nonce
        var hash: UInt64
        init(_ nonce: Nonce) {
            self.nonce = nonce
            hash = nonce.stableHash
        }
    }

    /// Loads the nonce index now instead of at the first admission (`serve` does before it listens: 5 million
    /// nonces take about 4 s and 134 MB).
    public func loadNonceIndex() throws(StoreError) {
        try withConnection("load the nonce index") { db in try catchUpNonceLog(db) }
    }

    /// Takes into the index the rows other processes logged since this one last wrote (at first, every row:
    /// expired ones too, since a replay may admit as of an earlier instant, and pruning removes them). Called
    /// inside the write transaction, which `BEGIN IMMEDIATE` makes the only writer, so no row can come in
    /// between; or alone, when any row missed is caught up by the next admission.
    private func catchUpNonceLog(_ db: SQLiteConnection) throws {
        if !nonceIndexLoaded {
            let count = try db.prepare("SELECT COUNT(*) FROM nonce_log")
            let rows = try count.step() ? Int(count.int64(0)) : 0
            count.reset()
            nonceIndex = NonceIndex(capacity: rows)
            nonceLogSeen = 0
            nonceIndexLoaded = true
        }
        let select = try db.prepare("SELECT id, hash, expires_at FROM nonce_log WHERE id > ? ORDER BY id")
        try select.bind(.integer(nonceLogSeen))
        defer { select.reset() }
        while try select.step() {
            nonceIndex.insert(hash: UInt64(bitPattern: select.int64(1)), row: select.int64(0), expiresAt: select.double(2))
            nonceLogSeen = select.int64(0)
        }
    }

    /// Whether a row of the log bears `nonce` and is live at `now`: the index's candidates, each checked against its row.
    private func isLive(_ nonce: LoggedNonce, now: Double, in db: SQLiteConnection) throws -> Bool {
        let row = try db.prepare("SELECT provider, category, scope, value, expires_at FROM nonce_log WHERE id = ?")
        return try nonceIndex.firstRow(hash: nonce.hash, liveAt: now) { id in
            try row.bind(.integer(id))
            defer { row.reset() }
            guard try row.step() else { return false }
            return row.double(4) >= now && row.int64(1) == nonce.nonce.category && row.text(0) == nonce.nonce.provider
                && row.text(2) == nonce.nonce.scope && row.blob(3) == nonce.nonce.value
        }
    }

    /// Logs `nonce` unless it is live; says whether it was logged.
    private func logIfAbsent(_ nonce: LoggedNonce, expiresAt: Instant, now: Double, logged: inout [(hash: UInt64, row: Int64)],
                             in db: SQLiteConnection) throws -> Bool {
        guard try !isLive(nonce, now: now, in: db) else { return false }
        try db.prepare("INSERT INTO nonce_log (hash, provider, category, scope, value, expires_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(.integer(Int64(bitPattern: nonce.hash)), .text(nonce.nonce.provider), .integer(nonce.nonce.category),
                  .text(nonce.nonce.scope), .blob(nonce.nonce.value), .real(expiresAt.secondsSince1970)).run()
        let row = db.lastInsertRowID
        nonceIndex.insert(hash: nonce.hash, row: row, expiresAt: expiresAt.secondsSince1970)
        logged.append((nonce.hash, row))
        return true
    }

    private func admit(_ admission: Admission, nonces: (signature: LoggedNonce, event: LoggedNonce), headers: String, now: Double,
                       logged: inout [(hash: UInt64, row: Int64)], in db: SQLiteConnection) throws -> AdmissionResult {
        // An expired nonce that was not pruned yet counts as absent.
        var duplicate: Reason? = nil
        if try !logIfAbsent(nonces.signature, expiresAt: admission.signatureExpiresAt, now: now, logged: &logged, in: db) {
            duplicate = .seenSignature
        } else if try !logIfAbsent(nonces.event, expiresAt: admission.eventExpiresAt, now: now, logged: &logged, in: db) {
            duplicate = .seenEvent
        }
        if let duplicate {
            guard admission.reprocess else { return .duplicate(duplicate, requeuedEventID: nil) }
            return .duplicate(duplicate, requeuedEventID: try enqueue(admission, archiveID: nil, now: now, in: db))
        }
        let archive = try db.prepare("INSERT INTO archive (provider, received_at, path, headers, body) VALUES (?, ?, ?, ?, ?)")
        let delivery = admission.delivery
        try archive.bind(.text(admission.provider), .real(delivery.receivedAt?.secondsSince1970 ?? now), delivery.path.map(SQLiteValue.text) ?? .null,
                         .text(headers), .blob(delivery.body)).run()
        let archiveID = db.lastInsertRowID
        return .accepted(eventID: try enqueue(admission, archiveID: archiveID, now: now, in: db))
    }

    /// Queues the event: one delivery per handler when the admission was routed already, else one row for
    /// ``route(limit:now:_:)`` (handler ''). Returns the first row's id.
    private func enqueue(_ admission: Admission, archiveID: Int64?, now: Double, in db: SQLiteConnection) throws -> Int64 {
        let received = admission.delivery.receivedAt?.secondsSince1970 ?? now
        let insert = try db.prepare("""
            INSERT INTO events (provider, event_type, event_key, ordering_key, payload, received_at, reprocess, available_at, archive_id, handler)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        let routed = admission.deadLetter == nil ? admission.handlers?.filter { !$0.isEmpty } ?? [] : []
        // The body is written once: a queued event points at its archive row when it has one.
        let ids = try (routed.isEmpty ? [""] : routed).map { handler in
            try insert.bind(.text(admission.provider), .text(admission.eventType), .text(admission.eventKey), .text(admission.storedOrderingKey),
                            archiveID == nil ? .blob(admission.delivery.body) : .null, .real(received), .integer(admission.reprocess ? 1 : 0),
                            .real(0), archiveID.map(SQLiteValue.integer) ?? .null, .text(handler)).run()
            return db.lastInsertRowID
        }
        let id = ids[0]
        if let (reason, message) = admission.deadLetter {
            try moveToDeadLetters(id, reason: reason, error: message, now: now, in: db)
        }
        return id
    }

    // MARK: Queue

    public func route(limit: Int, now: Instant, _ route: (RoutableEvent) -> [String]) throws(StoreError) -> Int {
        try withConnection("route") { db in
            try db.transaction {
                // In id order, so the deliveries of one ordering key get ids in arrival order for every handler.
                let select = try db.prepare("""
                    SELECT e.id, e.provider, e.event_type, COALESCE(e.payload, a.body)
                    FROM events e LEFT JOIN archive a ON a.id = e.archive_id
                    WHERE e.handler = '' ORDER BY e.id LIMIT ?
                    """)
                try select.bind(.integer(Int64(limit)))
                var waiting: [(Int64, RoutableEvent)] = []
                while try select.step() {
                    waiting.append((select.int64(0), RoutableEvent(provider: select.text(1) ?? "", eventType: select.text(2) ?? "",
                                                                   payload: select.blob(3))))
                }
                select.reset()
                let fanOut = try db.prepare("""
                    INSERT INTO events (provider, event_type, event_key, ordering_key, payload, received_at, reprocess, available_at,
                                        archive_id, handler)
                    SELECT provider, event_type, event_key, ordering_key, payload, received_at, reprocess, available_at, archive_id, ?
                    FROM events WHERE id = ?
                    """)
                let delete = try db.prepare("DELETE FROM events WHERE id = ?")
                for (id, event) in waiting {
                    for handler in route(event) where !handler.isEmpty {
                        try fanOut.bind(.text(handler), .integer(id)).run()
                    }
                    try delete.bind(.integer(id)).run()
                }
                return waiting.count
            }
        }
    }

    public func lease(handler: String, limit: Int, owner: String, now: Instant, leaseSeconds: Double) throws(StoreError) -> [QueuedEvent] {
        try withConnection("lease") { db in
            try db.transaction {
                let select = try db.prepare("""
                    SELECT e.id, e.provider, e.event_type, e.event_key, COALESCE(e.payload, a.body), e.received_at, e.attempts, e.reprocess
                    FROM events e LEFT JOIN archive a ON a.id = e.archive_id
                    WHERE e.handler = ?3 AND e.available_at <= ?1 AND (e.lease_until IS NULL OR e.lease_until < ?1)
                      AND (e.ordering_key = ''
                           OR NOT EXISTS (SELECT 1 FROM events p WHERE p.ordering_key <> '' AND p.ordering_key = e.ordering_key
                                          AND p.handler IN (?3, '') AND p.id < e.id))
                    ORDER BY e.id LIMIT ?2
                    """)
                try select.bind(.real(now.secondsSince1970), .integer(Int64(limit)), .text(handler))
                var events: [QueuedEvent] = []
                while try select.step() {
                    events.append(QueuedEvent(
                        id: select.int64(0), handler: handler, provider: select.text(1) ?? "", eventType: select.text(2) ?? "",
                        eventKey: select.text(3) ?? "", payload: select.blob(4), receivedAt: Instant(secondsSince1970: select.double(5)),
                        attempt: Int(select.int64(6)) + 1, isReprocess: select.int64(7) != 0, owner: owner))
                }
                select.reset()
                let take = try db.prepare("UPDATE events SET lease_owner = ?, lease_until = ?, attempts = attempts + 1 WHERE id = ?")
                for event in events {
                    try take.bind(.text(owner), .real(now.secondsSince1970 + leaseSeconds), .integer(event.id)).run()
                }
                return events
            }
        }
    }

    public func backlog() throws(StoreError) -> [String: Int] {
        try withConnection("backlog") { db in
            let select = try db.prepare("SELECT handler, COUNT(*) FROM events GROUP BY handler")
            var counts: [String: Int] = [:]
            while try select.step() { counts[select.text(0) ?? ""] = Int(select.int64(1)) }
            select.reset()
            return counts
        }
    }

    public func complete(_ leases: [Lease]) throws(StoreError) -> Int {
        guard !leases.isEmpty else { return 0 }
        return try withConnection("complete") { db in
            try db.transaction {
                let delete = try db.prepare("DELETE FROM events WHERE id = ? AND lease_owner = ? AND attempts = ?")
                var removed = 0
                for lease in leases {
                    try delete.bind(.integer(lease.id), .text(lease.owner), .integer(Int64(lease.attempt))).run()
                    removed += db.changes
                }
                return removed
            }
        }
    }

    public func renew(_ leases: [Lease], until: Instant) throws(StoreError) -> Int {
        guard !leases.isEmpty else { return 0 }
        return try withConnection("renew") { db in
            try db.transaction {
                let update = try db.prepare("UPDATE events SET lease_until = ? WHERE id = ? AND lease_owner = ? AND attempts = ?")
                var renewed = 0
                for lease in leases {
                    try update.bind(.real(until.secondsSince1970), .integer(lease.id), .text(lease.owner), .integer(Int64(lease.attempt))).run()
                    renewed += db.changes
                }
                return renewed
            }
        }
    }

    public func retry(_ lease: Lease, at: Instant, error: String) throws(StoreError) -> Bool {
        try withConnection("retry") { db in
            try db.prepare("""
                UPDATE events SET available_at = ?, lease_owner = NULL, lease_until = NULL, last_error = ?
                WHERE id = ? AND lease_owner = ? AND attempts = ?
                """).bind(.real(at.secondsSince1970), .text(error), .integer(lease.id), .text(lease.owner), .integer(Int64(lease.attempt))).run()
            return db.changes == 1
        }
    }

    public func deadLetter(_ lease: Lease, reason: Reason, error: String, now: Instant) throws(StoreError) -> Bool {
        try withConnection("dead-letter") { db in
            try db.transaction {
                let held = try db.prepare("SELECT 1 FROM events WHERE id = ? AND lease_owner = ? AND attempts = ?")
                try held.bind(.integer(lease.id), .text(lease.owner), .integer(Int64(lease.attempt)))
                defer { held.reset() }
                guard try held.step() else { return false }
                held.reset()
                try moveToDeadLetters(lease.id, reason: reason, error: error, now: now.secondsSince1970, in: db)
                return true
            }
        }
    }

    private func moveToDeadLetters(_ id: Int64, reason: Reason, error: String, now: Double, in db: SQLiteConnection) throws {
        try db.prepare("""
            INSERT INTO dead_letters (id, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, attempts,
                                      reason, last_error, dead_at, archive_id, handler)
            SELECT id, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, attempts, ?, ?, ?, archive_id, handler
            FROM events WHERE id = ?
            """).bind(.text(reason.rawValue), .text(error), .real(now), .integer(id)).run()
        try db.prepare("DELETE FROM events WHERE id = ?").bind(.integer(id)).run()
    }

    public func nextDue(handlers: [String]) throws(StoreError) -> Instant? {
        try withConnection("next due") { db in
            let select = try db.prepare("""
                SELECT MIN(MAX(available_at, COALESCE(lease_until, 0))) FROM events
                WHERE handler = '' OR handler IN (SELECT value FROM json_each(?))
                """)
            try select.bind(.text(JSONValue.array(handlers.map(JSONValue.string)).serialized()))
            defer { select.reset() }
            guard try select.step(), !select.isNull(0) else { return nil }
            return Instant(secondsSince1970: select.double(0))
        }
    }

    public func queueDepth() throws(StoreError) -> Int {
        try withConnection("queue depth") { db in
            let select = try db.prepare("SELECT COUNT(*) FROM events")
            defer { select.reset() }
            return try select.step() ? Int(select.int64(0)) : 0
        }
    }

    // MARK: Dead letters

    public func deadLetterCount() throws(StoreError) -> Int {
        try withConnection("dead letter count") { db in
            let select = try db.prepare("SELECT COUNT(*) FROM dead_letters")
            defer { select.reset() }
            return try select.step() ? Int(select.int64(0)) : 0
        }
    }

    public func deadLetters(limit: Int) throws(StoreError) -> [DeadLetter] {
        try withConnection("dead letters") { db in
            let select = try db.prepare("""
                SELECT id, provider, event_type, event_key, reason, last_error, attempts, dead_at, handler FROM dead_letters ORDER BY id LIMIT ?
                """)
            try select.bind(.integer(Int64(limit)))
            var letters: [DeadLetter] = []
            while try select.step() {
                letters.append(DeadLetter(id: select.int64(0), handler: select.text(8) ?? "", provider: select.text(1) ?? "", eventType: select.text(2) ?? "",
                                          eventKey: select.text(3) ?? "", reason: Reason(rawValue: select.text(4) ?? ""),
                                          lastError: select.text(5) ?? "", attempts: Int(select.int64(6)),
                                          deadAt: Instant(secondsSince1970: select.double(7))))
            }
            select.reset()
            return letters
        }
    }

    public func requeueDeadLetters(_ ids: [Int64]?, now: Instant) throws(StoreError) -> Int {
        try withConnection("re-queue dead letters") { db in
            try db.transaction {
                let targets: [Int64]
                if let ids {
                    targets = ids
                } else {
                    let select = try db.prepare("SELECT id FROM dead_letters ORDER BY id")
                    var all: [Int64] = []
                    while try select.step() { all.append(select.int64(0)) }
                    select.reset()
                    targets = all
                }
                var moved = 0
                let insert = try db.prepare("""
                    INSERT INTO events (id, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, attempts,
                                        available_at, last_error, archive_id, handler)
                    SELECT id, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, 0, ?, last_error, archive_id,
                           handler
                    FROM dead_letters WHERE id = ?
                    """)
                let delete = try db.prepare("DELETE FROM dead_letters WHERE id = ?")
                for id in targets {
                    try insert.bind(.real(now.secondsSince1970), .integer(id)).run()
                    if db.changes == 1 {
                        try delete.bind(.integer(id)).run()
                        moved += 1
                    }
                }
                return moved
            }
        }
    }

    // MARK: Answers

    public func keepAnswer(provider: String, eventKey: String, answer: String, now: Instant) throws(StoreError) -> String {
        try withConnection("keep answer") { db in
            try db.transaction {
                try db.prepare("INSERT INTO answers (provider, event_key, answer, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
                    .bind(.text(provider), .text(eventKey), .text(answer), .real(now.secondsSince1970)).run()
                let select = try db.prepare("SELECT answer FROM answers WHERE provider = ? AND event_key = ?")
                try select.bind(.text(provider), .text(eventKey))
                defer { select.reset() }
                return try select.step() ? select.text(0) ?? answer : answer
            }
        }
    }

    public func keptAnswer(provider: String, eventKey: String) throws(StoreError) -> String? {
        try withConnection("kept answer") { db in
            let select = try db.prepare("SELECT answer FROM answers WHERE provider = ? AND event_key = ?")
            try select.bind(.text(provider), .text(eventKey))
            defer { select.reset() }
            return try select.step() ? select.text(0) : nil
        }
    }

    // MARK: Nonces and archive

    public func pruneNonces(now: Instant) throws(StoreError) -> Int {
        try withConnection("prune") { db in
            try db.prepare("DELETE FROM nonce_log WHERE expires_at < ?").bind(.real(now.secondsSince1970)).run()
            let pruned = db.changes
            if nonceIndexLoaded { nonceIndex.removeExpired(before: now.secondsSince1970) }
            return pruned
        }
    }

    /// Deletes archived deliveries received before `cutoff`; first the bodies that queued events and dead
    /// letters still read from them are copied into those rows.
    public func pruneArchive(receivedBefore cutoff: Instant) throws(StoreError) -> Int {
        try withConnection("prune archive") { db in
            try db.transaction {
                for kept in ["events", "dead_letters"] {
                    try db.prepare("""
                        UPDATE \(kept) SET payload = (SELECT a.body FROM archive a WHERE a.id = \(kept).archive_id), archive_id = NULL
                        WHERE archive_id IN (SELECT id FROM archive WHERE received_at < ?)
                        """).bind(.real(cutoff.secondsSince1970)).run()
                }
                try db.prepare("DELETE FROM archive WHERE received_at < ?").bind(.real(cutoff.secondsSince1970)).run()
                return db.changes
            }
        }
    }

    public func forEachArchived(provider: String?, since: Instant?, _ body: (Delivery) throws -> Void) throws {
        var after: Int64 = 0
        while true {
            let page: [Delivery] = try withConnection("export") { db in
                let select = try db.prepare("""
                    SELECT id, provider, received_at, path, headers, body FROM archive
                    WHERE id > ? AND (?2 IS NULL OR provider = ?2) AND received_at >= ? ORDER BY id LIMIT 500
                    """)
                try select.bind(.integer(after), provider.map(SQLiteValue.text) ?? .null, .real(since?.secondsSince1970 ?? -.infinity))
                var deliveries: [Delivery] = []
                while try select.step() {
                    after = select.int64(0)
                    let headers = Self.headers(archived: select.text(4) ?? "[]")
                    deliveries.append(Delivery(provider: select.text(1) ?? "", receivedAt: Instant(secondsSince1970: select.double(2)),
                                               headers: headers, body: select.blob(5), path: select.isNull(3) ? nil : select.text(3)))
                }
                select.reset()
                return deliveries
            }
            if page.isEmpty { return }
            for delivery in page { try body(delivery) }
        }
    }

    // MARK: Archived headers

    /// Headers as the archive keeps them: a JSON array of `[name, value]` pairs, in order.
    static func archived(_ headers: HeaderFields) -> String {
        var text: [UInt8] = [UInt8(ascii: "[")]
        text.reserveCapacity(headers.reduce(2) { $0 + $1.name.utf8.count + $1.value.utf8.count + 8 })
        for (index, field) in headers.enumerated() {
            text += index == 0 ? [UInt8(ascii: "[")] : [UInt8(ascii: ","), UInt8(ascii: "[")]
            JSONWriter.appendString(field.name, to: &text)
            text.append(UInt8(ascii: ","))
            JSONWriter.appendString(field.value, to: &text)
            text.append(UInt8(ascii: "]"))
        }
        text.append(UInt8(ascii: "]"))
        return String(decoding: text, as: UTF8.self)
    }

    /// Headers read back from ``archived(_:)``'s text; anything else in it is skipped.
    static func headers(archived text: String) -> HeaderFields {
        var headers = HeaderFields()
        for pair in (try? JSONParser.parse(text))?.arrayValue ?? [] {
            if let items = pair.arrayValue, items.count == 2 {
                headers.append(name: items[0].stringValue ?? "", value: items[1].stringValue ?? "")
            }
        }
        return headers
    }
}
