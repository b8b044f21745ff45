public import TurnstileCore
import TurnstileSync
import Foundation

/// The shared store: PostgreSQL, for several receivers behind one load balancer. The same semantics as the
/// embedded SQLite store, case for case (one conformance suite runs against both):
///
/// - A batch of deliveries is one transaction (group commit), enqueue and archive included, in a constant number
///   of statements whatever its size: each column of the batch is bound as one array and unnested.
/// - Nonces are inserted if absent. Admission first takes a transaction-scoped advisory lock per nonce (in
///   one sorted order, so two batches never deadlock; a batch of more than 64 deliveries takes one exclusive
///   lock instead), then looks for live nonces in a statement of its own, so two instances admitting the same
///   delivery at once accept it exactly once: the second waits for the first's commit and then sees its row.
/// - Nonces and the archive are partitioned by day (nonces by expiry, the archive by arrival), so expired
///   nonces and old deliveries leave by dropping whole partitions, not by row deletes that bloat the tables;
///   partitions are made ahead by maintenance and on demand by admission.
/// - Workers lease with `FOR UPDATE SKIP LOCKED`, so instances never take the same delivery; an expired
///   lease is taken over by any instance. Routing to handlers is serialised by an advisory lock, so every
///   handler's deliveries of one ordering key keep their arrival order whichever instance routed them.
/// - Migrations run under an advisory lock, so instances may start at once; a schema newer than this code is
///   `store_incompatible`.
///
/// Concurrency: every method blocks on its own pooled connection; callers run them on their executors
/// (threads of their own), never on the cooperative pool. A lost connection is dropped from the pool and a
/// new one is opened by the next call, so service resumes by itself once PostgreSQL is back.
///
/// Tables are prefixed `turnstile_`, so the store can live in a database the team already runs.
public final class PostgresEventStore: EventStore, Sendable {
    /// The schema version this code writes: one per migration, so it cannot fall behind them.
    public static var schemaVersion: Int { migrations.count }

    private let url: String
    private let password: String?
    private let maximumConnections: Int
    private let idle = Locked<(connections: [PostgresConnectionBox], open: Int)>(([], 0))
    /// The channel commits that enqueue work notify, and ``PostgresListener`` listens on: one per schema.
    public let channel: String

    /// Connects (checking the server is reachable) and migrates.
    /// - Parameters:
    ///   - url: a `postgres://` URL; TLS (`sslmode`) and other libpq settings pass through.
    ///   - password: from the config's `env:`/`file:` reference, never from the URL or argv.
    public init(url: String, password: String? = nil, maximumConnections: Int = 8) throws(StoreError) {
        self.url = url
        self.password = password
        self.maximumConnections = max(1, maximumConnections)
        // The first connection migrates and learns the schema (the channel's name), then joins the pool.
        let first: PostgresConnection
        let schema: String
        do {
            first = try PostgresConnection(url: url, password: password)
            try Self.migrate(first)
            schema = try first.query("SELECT current_schema()").rows.first?.text(0) ?? "public"
        } catch let error as PostgresError {
            let code: StoreError.Code = error.sqlState == "TS001" ? .incompatible : (error.isTransient ? .unavailable : .misuse)
            throw StoreError(code, "migrate: \(error)", cause: error)
        } catch {
            throw StoreError(.misuse, "migrate: \(error)")
        }
        let safe = schema.unicodeScalars.filter { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_") }
        channel = "turnstile_" + String(String.UnicodeScalarView(safe).prefix(40))
        idle.withLock { state in
            state.connections.append(PostgresConnectionBox(first))
            state.open = 1
        }
        try preparePartitions(now: Instant(secondsSince1970: Date().timeIntervalSince1970))
    }

    /// A listener that calls `wake` whenever an instance (this one included) commits work to the queue.
    public func listener(logger: Logger, wake: @escaping @Sendable () -> Void) -> PostgresListener {
        PostgresListener(url: url, password: password, channel: channel, logger: logger, wake: wake)
    }

    /// Where the store is, with any password left out (for log lines and errors).
    public var description: String { StoreLocation.postgres(url: url).description }

    // MARK: Connections

    @discardableResult
    func withConnection<T>(_ what: String, _ body: (PostgresConnection) throws -> T) throws(StoreError) -> T {
        let box: PostgresConnectionBox
        do { box = try checkOut() } catch {
            throw StoreError(.unavailable, "\(what): \(error)", cause: error)
        }
        do {
            let value = try body(box.connection)
            checkIn(box)
            return value
        } catch let error as PostgresError {
            // A statement error leaves a healthy connection; a lost one is dropped and replaced on demand.
            if box.connection.isBroken { discard() } else { checkIn(box) }
            let code: StoreError.Code = error.isTransient ? .unavailable : (error.sqlState == "TS001" ? .incompatible : .misuse)
            throw StoreError(code, "\(what): \(error)", cause: error)
        } catch let error as StoreError {
            checkIn(box)
            throw error
        } catch {
            checkIn(box)
            throw StoreError(.misuse, "\(what): \(error)")
        }
    }

    private func checkOut() throws(PostgresError) -> PostgresConnectionBox {
        let reused = idle.withLock { state -> PostgresConnectionBox? in
            if let box = state.connections.popLast() { return box }
            state.open += 1
            return nil
        }
        if let reused { return reused }
        do {
            return PostgresConnectionBox(try PostgresConnection(url: url, password: password))
        } catch {
            idle.withLock { $0.open -= 1 }
            throw error
        }
    }

    private func checkIn(_ box: PostgresConnectionBox) {
        // Beyond the pool's size the connection is closed (when the box is released).
        idle.withLock { state in
            if state.connections.count < maximumConnections { state.connections.append(box) } else { state.open -= 1 }
        }
    }

    private func discard() {
        idle.withLock { $0.open -= 1 }
    }

    // MARK: Schema

    static let migrations: [@Sendable (PostgresConnection) throws -> Void] = [
        { db in try db.execute("""
        CREATE TABLE turnstile_nonces (
            provider TEXT NOT NULL,
            category SMALLINT NOT NULL,
            scope TEXT NOT NULL,
            value BYTEA NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (provider, category, scope, value)
        );
        CREATE INDEX turnstile_nonces_expiry ON turnstile_nonces (expires_at);
        CREATE TABLE turnstile_archive (
            id BIGSERIAL PRIMARY KEY,
            provider TEXT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            path TEXT,
            headers TEXT NOT NULL,
            body BYTEA NOT NULL
        );
        CREATE INDEX turnstile_archive_provider ON turnstile_archive (provider, received_at);
        CREATE TABLE turnstile_events (
            id BIGSERIAL PRIMARY KEY,
            handler TEXT NOT NULL DEFAULT '',
            provider TEXT NOT NULL,
            event_type TEXT NOT NULL,
            event_key TEXT NOT NULL,
            ordering_key TEXT NOT NULL,
            payload BYTEA,
            received_at DOUBLE PRECISION NOT NULL,
            reprocess BOOLEAN NOT NULL DEFAULT false,
            attempts INTEGER NOT NULL DEFAULT 0,
            available_at DOUBLE PRECISION NOT NULL,
            lease_owner TEXT,
            lease_until DOUBLE PRECISION,
            last_error TEXT,
            archive_id BIGINT
        );
        CREATE INDEX turnstile_events_order ON turnstile_events (ordering_key, handler, id) WHERE ordering_key <> '';
        CREATE INDEX turnstile_events_handler ON turnstile_events (handler, id);
        CREATE TABLE turnstile_dead_letters (
            id BIGINT PRIMARY KEY,
            handler TEXT NOT NULL DEFAULT '',
            provider TEXT NOT NULL,
            event_type TEXT NOT NULL,
            event_key TEXT NOT NULL,
            ordering_key TEXT NOT NULL,
            payload BYTEA,
            received_at DOUBLE PRECISION NOT NULL,
            reprocess BOOLEAN NOT NULL,
            attempts INTEGER NOT NULL,
            reason TEXT NOT NULL,
            last_error TEXT NOT NULL,
            dead_at DOUBLE PRECISION NOT NULL,
            archive_id BIGINT
        );
        CREATE TABLE turnstile_answers (
            provider TEXT NOT NULL,
            event_key TEXT NOT NULL,
            answer TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (provider, event_key)
        );
        CREATE TABLE turnstile_health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at DOUBLE PRECISION NOT NULL);
        """) },
        { db in try migrateToPartitions(db) },
    ]

    /// Version 2: nonces and the archive become day-partitioned tables (their rows copied over), archived
    /// headers a `TEXT[]` of names and values, and queue rows learn their archive row's arrival (its partition).
    private static func migrateToPartitions(_ db: PostgresConnection) throws {
        try db.execute("""
            ALTER TABLE turnstile_nonces RENAME TO turnstile_nonces_v1;
            ALTER INDEX turnstile_nonces_pkey RENAME TO turnstile_nonces_v1_pkey;
            ALTER INDEX turnstile_nonces_expiry RENAME TO turnstile_nonces_v1_expiry;
            CREATE TABLE turnstile_nonces (
                provider TEXT NOT NULL,
                category SMALLINT NOT NULL,
                scope TEXT NOT NULL,
                value BYTEA NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL
            ) PARTITION BY RANGE (expires_at);
            CREATE INDEX turnstile_nonces_key ON turnstile_nonces (value, provider, category, scope);
            ALTER TABLE turnstile_archive RENAME TO turnstile_archive_v1;
            ALTER INDEX turnstile_archive_pkey RENAME TO turnstile_archive_v1_pkey;
            ALTER INDEX turnstile_archive_provider RENAME TO turnstile_archive_v1_provider;
            ALTER TABLE turnstile_archive_v1 ALTER COLUMN id DROP DEFAULT;
            ALTER SEQUENCE turnstile_archive_id_seq OWNED BY NONE;
            CREATE TABLE turnstile_archive (
                id BIGINT NOT NULL DEFAULT nextval('turnstile_archive_id_seq'),
                provider TEXT NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                path TEXT,
                headers TEXT[] NOT NULL,
                body BYTEA NOT NULL,
                PRIMARY KEY (id, received_at)
            ) PARTITION BY RANGE (received_at);
            ALTER SEQUENCE turnstile_archive_id_seq OWNED BY turnstile_archive.id;
            CREATE INDEX turnstile_archive_provider ON turnstile_archive (provider, received_at);
            ALTER TABLE turnstile_events ADD COLUMN archived_at DOUBLE PRECISION;
            ALTER TABLE turnstile_dead_letters ADD COLUMN archived_at DOUBLE PRECISION;
            UPDATE turnstile_events e SET archived_at = a.received_at FROM turnstile_archive_v1 a WHERE a.id = e.archive_id;
            UPDATE turnstile_dead_letters d SET archived_at = a.received_at FROM turnstile_archive_v1 a WHERE a.id = d.archive_id;
            ALTER TABLE turnstile_events SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
            """)
        let nonceDays = try db.query("SELECT DISTINCT expires_at FROM turnstile_nonces_v1").rows.map { $0.double(0) }
        let archiveDays = try db.query("SELECT DISTINCT received_at FROM turnstile_archive_v1").rows.map { $0.double(0) }
        try createPartitions(covering: nonceDays, of: .nonces, in: db)
        try createPartitions(covering: archiveDays, of: .archive, in: db)
        try db.execute("""
            INSERT INTO turnstile_nonces SELECT provider, category, scope, value, expires_at FROM turnstile_nonces_v1;
            INSERT INTO turnstile_archive (id, provider, received_at, path, headers, body)
            SELECT a.id, a.provider, a.received_at, a.path,
                   ARRAY(SELECT field FROM json_array_elements(a.headers::json) WITH ORDINALITY AS pair(item, position),
                         LATERAL (VALUES (1, item->>0), (2, item->>1)) AS half(side, field) ORDER BY position, side),
                   a.body
            FROM turnstile_archive_v1 a;
            DROP TABLE turnstile_nonces_v1;
            DROP TABLE turnstile_archive_v1;
            """)
    }

    /// The advisory lock keys of migrations (any instance may start at any time) and of routing; the second
    /// half of each key is the schema's, so stores in different schemas of one database do not wait on each other.
    private static let migrationLock: Int64 = 0x7475_0001
    private static let routingLock: Int64 = 0x7475_0002
    private static let partitionLock: Int64 = 0x7475_0003
    private static let pruningLock: Int64 = 0x7475_0004
    /// Held shared with the nonce locks of a small batch, exclusively (alone) by a large one.
    private static let admissionLock: Int64 = 0x7475_0005
    /// Nonce locks one admission takes at most: a batch with more takes ``admissionLock`` exclusively.
    static let nonceLocksPerBatch = 128

    // MARK: Partitions

    /// The two day-partitioned tables.
    enum PartitionedTable: String, CaseIterable {
        /// By `expires_at`: a partition leaves once every nonce in it has expired.
        case nonces = "turnstile_nonces"
        /// By `received_at`: a partition leaves once all of it is older than the archive's retention.
        case archive = "turnstile_archive"
    }

    /// One partition: a UTC day, or the open ranges before 2000 and from 2200 on (so that no value, however
    /// far out, lacks a partition or makes a day number overflow).
    struct Partition: Hashable {
        static let daySeconds = 86_400.0
        static let firstDayStart = 946_684_800.0 // 2000-01-01T00:00:00Z
        static let farStart = 7_258_118_400.0 // 2200-01-01T00:00:00Z

        enum Span: Hashable { case past, day(Int64), far }
        let table: PartitionedTable
        let span: Span

        init(table: PartitionedTable, holding value: Double) {
            self.table = table
            if value < Self.firstDayStart { span = .past }
            else if value >= Self.farStart || value.isNaN { span = .far }
            else { span = .day(Int64((value / Self.daySeconds).rounded(.down))) }
        }

        /// From the table's partitions' names as ``name`` makes them; nil for any other table.
        init?(table: PartitionedTable, named name: String) {
            self.table = table
            let suffix = name.dropFirst(table.rawValue.count)
            guard name.hasPrefix(table.rawValue) else { return nil }
            switch suffix {
            case "_past": span = .past
            case "_far": span = .far
            default:
                guard suffix.hasPrefix("_d"), let day = Int64(suffix.dropFirst(2)) else { return nil }
                span = .day(day)
            }
        }

        var name: String {
            switch span {
            case .past: table.rawValue + "_past"
            case .day(let day): table.rawValue + "_d\(day)"
            case .far: table.rawValue + "_far"
            }
        }

        /// Where its range ends (exclusive); nil for the open end.
        var end: Double? {
            switch span {
            case .past: Self.firstDayStart
            case .day(let day): Double(day + 1) * Self.daySeconds
            case .far: nil
            }
        }

        var bounds: String {
            switch span {
            case .past: "FROM (MINVALUE) TO (\(Self.firstDayStart))"
            case .day(let day): "FROM (\(Double(day) * Self.daySeconds)) TO (\(Double(day + 1) * Self.daySeconds))"
            case .far: "FROM (\(Self.farStart)) TO (MAXVALUE)"
            }
        }
    }

    /// Creates the partitions of `table` that hold `values`, where missing, in the caller's transaction; one
    /// instance at a time (a lock per schema), so instances that start a day at once do not collide.
    static func createPartitions(covering values: some Sequence<Double>, of table: PartitionedTable, in db: PostgresConnection) throws {
        let needed = Set(values.map { Partition(table: table, holding: $0) })
        guard !needed.isEmpty else { return }
        try db.query("SELECT pg_advisory_xact_lock($1::INTEGER, hashtext(current_schema()))", [.integer(partitionLock)])
        let existing = Set(try partitions(of: table, in: db))
        for partition in needed.subtracting(existing) {
            try db.execute("CREATE TABLE \(partition.name) PARTITION OF \(table.rawValue) FOR VALUES \(partition.bounds)")
        }
    }

    /// The partitions `table` has now.
    static func partitions(of table: PartitionedTable, in db: PostgresConnection) throws -> [Partition] {
        try db.query("""
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::TEXT::regclass
            """, [.text(table.rawValue)]).rows.compactMap { Partition(table: table, named: $0.text(0) ?? "") }
    }

    /// Makes today's and tomorrow's partitions of both tables ahead of need (admission makes any other it needs).
    private func preparePartitions(now: Instant) throws(StoreError) {
        let days = [now.secondsSince1970, now.secondsSince1970 + Partition.daySeconds]
        try withConnection("make partitions") { db in
            try db.transaction {
                for table in PartitionedTable.allCases { try Self.createPartitions(covering: days, of: table, in: db) }
            }
        }
    }

    /// Whether the database (in the URL's schema) holds a Turnstile store already, without creating anything:
    /// store commands (`dead-letters`, `export`, …) refuse to run on one that does not.
    public static func storeExists(url: String, password: String?) throws(StoreError) -> Bool {
        do {
            let db = try PostgresConnection(url: url, password: password)
            return try db.query("SELECT to_regclass('turnstile_schema') IS NOT NULL").rows.first?.text(0) == "t"
        } catch {
            throw StoreError(error.isTransient ? .unavailable : .misuse, "cannot look for the store: \(error)", cause: error)
        }
    }

    private static func migrate(_ db: PostgresConnection) throws {
        try db.transaction {
            try db.query("SELECT pg_advisory_xact_lock($1::INTEGER, hashtext(current_schema()))", [.integer(migrationLock)])
            try db.execute("CREATE TABLE IF NOT EXISTS turnstile_schema (version INTEGER NOT NULL)")
            let current = Int(try db.query("SELECT COALESCE(MAX(version), 0) FROM turnstile_schema").rows.first?.int64(0) ?? 0)
            guard current <= migrations.count else {
                throw PostgresError(sqlState: "TS001",
                                    message: "the store has schema version \(current); this Turnstile knows up to \(migrations.count)")
            }
            for version in current..<migrations.count {
                try migrations[version](db)
                try db.query("DELETE FROM turnstile_schema")
                try db.query("INSERT INTO turnstile_schema (version) VALUES ($1)", [.integer(Int64(version + 1))])
            }
        }
    }

    // MARK: Health

    public func checkWritable(now: Instant) throws(StoreError) {
        try withConnection("write check") { db in
            try db.query("""
                INSERT INTO turnstile_health (id, checked_at) VALUES (1, $1)
                ON CONFLICT (id) DO UPDATE SET checked_at = EXCLUDED.checked_at
                """, [.real(now.secondsSince1970)])
        }
    }

    // MARK: Admission

    public func admit(_ batch: [Admission], now: Instant) throws(StoreError) -> [AdmissionResult] {
        guard !batch.isEmpty else { return [] }
        let nonces = batch.map(NonceKeys.init)
        let locks = Array(Set(nonces.flatMap { [Self.lockKey($0.signature), Self.lockKey($0.event)] })).sorted()
        return try withConnection("admit") { db in
            do {
                return try db.transaction { try admit(batch, nonces: nonces, locks: locks, now: now, in: db) }
            } catch let error as PostgresError where error.sqlState == "23514" {
                // A row had no partition (a new day, or an unusual expiry): make the partitions the batch needs, then
                // admit it once more. Nothing of the first try was kept.
                try db.transaction {
                    try Self.createPartitions(covering: batch.flatMap { [$0.signatureExpiresAt.secondsSince1970, $0.eventExpiresAt.secondsSince1970] },
                                              of: .nonces, in: db)
                    try Self.createPartitions(covering: batch.map { $0.delivery.receivedAt?.secondsSince1970 ?? now.secondsSince1970 },
                                              of: .archive, in: db)
                }
                return try db.transaction { try admit(batch, nonces: nonces, locks: locks, now: now, in: db) }
            }
        }
    }

    /// The advisory lock that serialises admissions of a nonce (the same on every instance). Two nonces that
    /// share a key only wait for each other.
    static func lockKey(_ nonce: Nonce) -> Int64 { Int64(bitPattern: nonce.stableHash) }

    /// An admission's two nonces.
    struct NonceKeys {
        var signature: Nonce
        var event: Nonce

        init(_ admission: Admission) {
            signature = admission.signatureNonce
            event = admission.eventNonce
        }
    }

    /// The batch in five statements: the nonces' locks; the live nonces among the batch's (with ids for its rows);
    /// then every new nonce, archive row, queue row and dead letter in one statement, with the wake-up of idle
    /// workers, which PostgreSQL delivers when the transaction commits.
    private func admit(_ batch: [Admission], nonces: [NonceKeys], locks: [Int64], now: Instant, in db: PostgresConnection) throws -> [AdmissionResult] {
        if locks.count > Self.nonceLocksPerBatch {
            // A large batch takes the schema's admission lock alone, exclusively, instead of a lock per nonce: the
            // locks of one transaction stay few (PostgreSQL's lock table is shared and small, 64 per connection).
            try db.query("SELECT pg_advisory_xact_lock($1::INTEGER, hashtext(current_schema()))", [.integer(Self.admissionLock)])
        } else {
            try db.query("""
                SELECT pg_advisory_xact_lock_shared($2::INTEGER, hashtext(current_schema())),
                       (SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock(k)
                                              FROM (SELECT k FROM unnest($1::BIGINT[]) WITH ORDINALITY AS u(k, o) ORDER BY o) AS sorted) AS taken)
                """, [.text(PostgresArray.literal(locks)), .integer(Self.admissionLock)])
        }
        // A new statement, so a new snapshot: it sees every nonce committed by whoever held a lock before us.
        let all = nonces.flatMap { [$0.signature, $0.event] }
        let found = try db.query("""
            SELECT ARRAY(SELECT u.position FROM unnest($1::TEXT[], $2::SMALLINT[], $3::TEXT[], $4::BYTEA[]) WITH ORDINALITY
                                                AS u(provider, category, scope, value, position)
                         WHERE EXISTS (SELECT 1 FROM turnstile_nonces n WHERE n.value = u.value AND n.provider = u.provider
                                       AND n.category = u.category AND n.scope = u.scope AND n.expires_at >= $5)),
                   ARRAY(SELECT nextval('turnstile_events_id_seq') FROM generate_series(1, $6)),
                   ARRAY(SELECT nextval('turnstile_archive_id_seq') FROM generate_series(1, $6))
            """, [.text(PostgresArray.literal(all.map { Optional($0.provider) })), .text(PostgresArray.literal(all.map(\.category))),
                  .text(PostgresArray.literal(all.map { Optional($0.scope) })), .text(PostgresArray.literal(bytes: all.map { Optional($0.value) })),
                  .real(now.secondsSince1970), .integer(Int64(batch.count))])
        guard let row = found.rows.first else { throw PostgresError(sqlState: nil, message: "the nonce lookup returned no row") }
        var taken = Set(PostgresArray.parse(row.text(0) ?? "{}").compactMap { $0.flatMap(Int.init) }.map { all[$0 - 1] })
        let eventIDs = PostgresArray.parse(row.text(1) ?? "{}").compactMap { $0.flatMap(Int64.init) }.sorted()
        let archiveIDs = PostgresArray.parse(row.text(2) ?? "{}").compactMap { $0.flatMap(Int64.init) }.sorted()
        guard eventIDs.count == batch.count, archiveIDs.count == batch.count else {
            throw PostgresError(sqlState: nil, message: "the id allocation returned \(eventIDs.count) and \(archiveIDs.count) ids for \(batch.count)")
        }

        var rows = AdmissionRows()
        var results: [AdmissionResult] = []
        for (index, admission) in batch.enumerated() {
            let keys = nonces[index]
            var duplicate: Reason? = nil
            if taken.contains(keys.signature) {
                duplicate = .seenSignature
            } else {
                taken.insert(keys.signature)
                rows.addNonce(keys.signature, expiresAt: admission.signatureExpiresAt)
                if taken.contains(keys.event) {
                    duplicate = .seenEvent
                } else {
                    taken.insert(keys.event)
                    rows.addNonce(keys.event, expiresAt: admission.eventExpiresAt)
                }
            }
            let received = admission.delivery.receivedAt ?? now
            if let duplicate {
                guard admission.reprocess else {
                    results.append(.duplicate(duplicate, requeuedEventID: nil))
                    continue
                }
                rows.addEvent(admission, id: eventIDs[index], received: received, archive: nil)
                results.append(.duplicate(duplicate, requeuedEventID: eventIDs[index]))
            } else {
                rows.addArchive(admission, id: archiveIDs[index], received: received)
                rows.addEvent(admission, id: eventIDs[index], received: received, archive: (archiveIDs[index], received))
                results.append(.accepted(eventID: eventIDs[index]))
            }
        }
        guard !rows.isEmpty else { return results }
        try db.query(Self.writeAdmissions, rows.parameters(now: now, channel: channel))
        return results
    }

    /// Every row an admission batch adds, in one statement (each data-modifying part runs once, in full).
    private static let writeAdmissions = """
        WITH nonces AS (
            INSERT INTO turnstile_nonces (provider, category, scope, value, expires_at)
            SELECT * FROM unnest($1::TEXT[], $2::SMALLINT[], $3::TEXT[], $4::BYTEA[], $5::FLOAT8[])
        ), archived AS (
            INSERT INTO turnstile_archive (id, provider, received_at, path, headers, body)
            SELECT id, provider, received_at, path, headers::TEXT[], body
            FROM unnest($6::BIGINT[], $7::TEXT[], $8::FLOAT8[], $9::TEXT[], $10::TEXT[], $11::BYTEA[])
                 AS a(id, provider, received_at, path, headers, body)
        ), queued AS (
            INSERT INTO turnstile_events (id, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, available_at,
                                          archive_id, archived_at)
            SELECT id, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, 0, archive_id, archived_at
            FROM unnest($12::BIGINT[], $13::TEXT[], $14::TEXT[], $15::TEXT[], $16::TEXT[], $17::BYTEA[], $18::FLOAT8[], $19::BOOLEAN[],
                        $20::BIGINT[], $21::FLOAT8[], $22::TEXT[])
                 AS e(id, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, archive_id, archived_at, dead_reason)
            WHERE dead_reason IS NULL
        ), dead AS (
            INSERT INTO turnstile_dead_letters (id, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, attempts,
                                                reason, last_error, dead_at, archive_id, archived_at)
            SELECT id, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, 0, dead_reason, dead_error, $24,
                   archive_id, archived_at
            FROM unnest($12::BIGINT[], $13::TEXT[], $14::TEXT[], $15::TEXT[], $16::TEXT[], $17::BYTEA[], $18::FLOAT8[], $19::BOOLEAN[],
                        $20::BIGINT[], $21::FLOAT8[], $22::TEXT[], $23::TEXT[])
                 AS e(id, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, archive_id, archived_at, dead_reason,
                      dead_error)
            WHERE dead_reason IS NOT NULL
        )
        SELECT CASE WHEN $25 THEN pg_notify($26, '') END
        """

    /// The columns of an admission batch's new rows, bound as arrays.
    private struct AdmissionRows {
        var nonceProviders: [String?] = [], nonceCategories: [Int64] = [], nonceScopes: [String?] = []
        var nonceValues: [[UInt8]?] = [], nonceExpiries: [Double] = []
        var archiveIDs: [Int64] = [], archiveProviders: [String?] = [], archiveReceived: [Double] = []
        var archivePaths: [String?] = [], archiveHeaders: [String?] = [], archiveBodies: [[UInt8]?] = []
        var eventIDs: [Int64] = [], eventProviders: [String?] = [], eventTypes: [String?] = [], eventKeys: [String?] = []
        var orderingKeys: [String?] = [], payloads: [[UInt8]?] = [], eventReceived: [Double] = [], reprocess: [String?] = []
        var archiveRefs: [String?] = [], archivedAt: [String?] = [], deadReasons: [String?] = [], deadErrors: [String?] = []

        var isEmpty: Bool { nonceValues.isEmpty && eventIDs.isEmpty }

        mutating func addNonce(_ nonce: Nonce, expiresAt: Instant) {
            nonceProviders.append(nonce.provider)
            nonceCategories.append(nonce.category)
            nonceScopes.append(nonce.scope)
            nonceValues.append(nonce.value)
            nonceExpiries.append(expiresAt.secondsSince1970)
        }

        mutating func addArchive(_ admission: Admission, id: Int64, received: Instant) {
            archiveIDs.append(id)
            archiveProviders.append(admission.provider)
            archiveReceived.append(received.secondsSince1970)
            archivePaths.append(admission.delivery.path)
            // Headers as a TEXT[] of names and values in turn, each array a literal inside the batch's array.
            archiveHeaders.append(PostgresArray.literal(admission.delivery.headers.flatMap { [Optional($0.name), Optional($0.value)] }))
            archiveBodies.append(admission.delivery.body)
        }

        /// The body is written once: a queued event points at its archive row when it has one.
        mutating func addEvent(_ admission: Admission, id: Int64, received: Instant, archive: (id: Int64, receivedAt: Instant)?) {
            eventIDs.append(id)
            eventProviders.append(admission.provider)
            eventTypes.append(admission.eventType)
            eventKeys.append(admission.eventKey)
            orderingKeys.append(admission.storedOrderingKey)
            payloads.append(archive == nil ? admission.delivery.body : nil)
            eventReceived.append(received.secondsSince1970)
            reprocess.append(admission.reprocess ? "true" : "false")
            archiveRefs.append(archive.map { String($0.id) })
            archivedAt.append(archive.map { "\($0.receivedAt.secondsSince1970)" })
            deadReasons.append(admission.deadLetter?.reason.rawValue)
            deadErrors.append(admission.deadLetter?.message)
        }

        func parameters(now: Instant, channel: String) -> [PostgresValue] {
            let wakes = deadReasons.contains { $0 == nil }
            return [
                .text(PostgresArray.literal(nonceProviders)), .text(PostgresArray.literal(nonceCategories)),
                .text(PostgresArray.literal(nonceScopes)), .text(PostgresArray.literal(bytes: nonceValues)),
                .text(PostgresArray.literal(nonceExpiries)),
                .text(PostgresArray.literal(archiveIDs)), .text(PostgresArray.literal(archiveProviders)),
                .text(PostgresArray.literal(archiveReceived)), .text(PostgresArray.literal(archivePaths)),
                .text(PostgresArray.literal(archiveHeaders)), .text(PostgresArray.literal(bytes: archiveBodies)),
                .text(PostgresArray.literal(eventIDs)), .text(PostgresArray.literal(eventProviders)), .text(PostgresArray.literal(eventTypes)),
                .text(PostgresArray.literal(eventKeys)), .text(PostgresArray.literal(orderingKeys)), .text(PostgresArray.literal(bytes: payloads)),
                .text(PostgresArray.literal(eventReceived)), .text(PostgresArray.literal(reprocess)), .text(PostgresArray.literal(archiveRefs)),
                .text(PostgresArray.literal(archivedAt)), .text(PostgresArray.literal(deadReasons)), .text(PostgresArray.literal(deadErrors)),
                .real(now.secondsSince1970), .text(wakes ? "true" : "false"), .text(channel),
            ]
        }
    }

    // MARK: Queue

    public func route(limit: Int, now: Instant, _ route: (RoutableEvent) -> [String]) throws(StoreError) -> Int {
        try withConnection("route") { db in
            try db.transaction {
                // One router at a time across instances: deliveries of one ordering key then get ids in arrival
                // order for every handler (routing is short; the others wait for it).
                try db.query("SELECT pg_advisory_xact_lock($1::INTEGER, hashtext(current_schema()))", [.integer(Self.routingLock)])
                let waiting = try db.query("""
                    SELECT e.id, e.provider, e.event_type, COALESCE(e.payload, a.body)
                    FROM turnstile_events e LEFT JOIN turnstile_archive a ON a.id = e.archive_id AND a.received_at = e.archived_at
                    WHERE e.handler = '' ORDER BY e.id LIMIT $1
                    """, [.integer(Int64(limit))])
                // Each event becomes one delivery per handler, in two statements for the batch: new ids in arrival order,
                // then one that deletes the routed rows and inserts their deliveries from what it deleted.
                var routed: [Int64] = [], sources: [Int64] = [], handlers: [String?] = []
                for row in waiting.rows {
                    let id = row.int64(0)
                    routed.append(id)
                    let event = RoutableEvent(provider: row.text(1) ?? "", eventType: row.text(2) ?? "", payload: row.bytes(3))
                    for handler in route(event) where !handler.isEmpty {
                        sources.append(id)
                        handlers.append(handler)
                    }
                }
                guard !routed.isEmpty else { return 0 }
                var ids: [Int64] = []
                if !sources.isEmpty {
                    let allocated = try db.query("SELECT ARRAY(SELECT nextval('turnstile_events_id_seq') FROM generate_series(1, $1))",
                                                 [.integer(Int64(sources.count))])
                    ids = PostgresArray.parse(allocated.rows.first?.text(0) ?? "{}").compactMap { $0.flatMap(Int64.init) }.sorted()
                    guard ids.count == sources.count else {
                        throw PostgresError(sqlState: nil, message: "the id allocation returned \(ids.count) ids for \(sources.count)")
                    }
                }
                try db.query("""
                    WITH routed AS (DELETE FROM turnstile_events WHERE id = ANY($1::BIGINT[]) RETURNING *)
                    INSERT INTO turnstile_events (id, handler, provider, event_type, event_key, ordering_key, payload, received_at, reprocess,
                                                  available_at, archive_id, archived_at)
                    SELECT d.id, d.handler, r.provider, r.event_type, r.event_key, r.ordering_key, r.payload, r.received_at, r.reprocess,
                           r.available_at, r.archive_id, r.archived_at
                    FROM unnest($2::BIGINT[], $3::BIGINT[], $4::TEXT[]) AS d(id, source, handler) JOIN routed r ON r.id = d.source
                    """, [.text(PostgresArray.literal(routed)), .text(PostgresArray.literal(ids)), .text(PostgresArray.literal(sources)),
                          .text(PostgresArray.literal(handlers))])
                return waiting.rows.count
            }
        }
    }

    /// Tells the listeners that work was queued other than by admission (dead letters put back).
    private func notify(_ db: PostgresConnection) {
        _ = try? db.query("SELECT pg_notify($1, '')", [.text(channel)])
    }

    public func lease(handler: String, limit: Int, owner: String, now: Instant, leaseSeconds: Double) throws(StoreError) -> [QueuedEvent] {
        try withConnection("lease") { db in
            let taken = try db.query("""
                WITH picked AS (
                    SELECT e.id FROM turnstile_events e
                    WHERE e.handler = $1 AND e.available_at <= $2 AND (e.lease_until IS NULL OR e.lease_until < $2)
                      AND (e.ordering_key = ''
                           OR NOT EXISTS (SELECT 1 FROM turnstile_events p WHERE p.ordering_key <> '' AND p.ordering_key = e.ordering_key
                                          AND p.handler IN ($1, '') AND p.id < e.id))
                    ORDER BY e.id LIMIT $3 FOR UPDATE SKIP LOCKED
                ), taken AS (
                    UPDATE turnstile_events t SET lease_owner = $4, lease_until = $5, attempts = t.attempts + 1
                    FROM picked WHERE t.id = picked.id
                    RETURNING t.id, t.provider, t.event_type, t.event_key, t.payload, t.archive_id, t.archived_at, t.received_at, t.attempts,
                              t.reprocess
                )
                SELECT taken.id, taken.provider, taken.event_type, taken.event_key, COALESCE(taken.payload, a.body), taken.received_at,
                       taken.attempts, taken.reprocess
                FROM taken LEFT JOIN turnstile_archive a ON a.id = taken.archive_id AND a.received_at = taken.archived_at ORDER BY taken.id
                """, [.text(handler), .real(now.secondsSince1970), .integer(Int64(limit)), .text(owner), .real(now.secondsSince1970 + leaseSeconds)])
            return taken.rows.map { row in
                QueuedEvent(id: row.int64(0), handler: handler, provider: row.text(1) ?? "", eventType: row.text(2) ?? "",
                            eventKey: row.text(3) ?? "", payload: row.bytes(4), receivedAt: Instant(secondsSince1970: row.double(5)),
                            attempt: Int(row.int64(6)), isReprocess: row.text(7) == "t", owner: owner)
            }
        }
    }

    public func backlog() throws(StoreError) -> [String: Int] {
        try withConnection("backlog") { db in
            var counts: [String: Int] = [:]
            for row in try db.query("SELECT handler, COUNT(*) FROM turnstile_events GROUP BY handler").rows {
                counts[row.text(0) ?? ""] = Int(row.int64(1))
            }
            return counts
        }
    }

    public func complete(_ leases: [Lease]) throws(StoreError) -> Int {
        guard !leases.isEmpty else { return 0 }
        return try withConnection("complete") { db in
            // One statement for the batch: (id, owner, attempt) triples unnested from three arrays.
            try db.query("""
                DELETE FROM turnstile_events e USING unnest($1::BIGINT[], $2::TEXT[], $3::INTEGER[]) AS l(id, owner, attempt)
                WHERE e.id = l.id AND e.lease_owner = l.owner AND e.attempts = l.attempt
                """, [.text(PostgresArray.literal(leases.map(\.id))), .text(PostgresArray.literal(leases.map { Optional($0.owner) })),
                      .text(PostgresArray.literal(leases.map { Int64($0.attempt) }))]).changed
        }
    }

    public func renew(_ leases: [Lease], until: Instant) throws(StoreError) -> Int {
        guard !leases.isEmpty else { return 0 }
        return try withConnection("renew") { db in
            try db.query("""
                UPDATE turnstile_events e SET lease_until = $4
                FROM unnest($1::BIGINT[], $2::TEXT[], $3::INTEGER[]) AS l(id, owner, attempt)
                WHERE e.id = l.id AND e.lease_owner = l.owner AND e.attempts = l.attempt
                """, [.text(PostgresArray.literal(leases.map(\.id))), .text(PostgresArray.literal(leases.map { Optional($0.owner) })),
                      .text(PostgresArray.literal(leases.map { Int64($0.attempt) })), .real(until.secondsSince1970)]).changed
        }
    }

    public func retry(_ lease: Lease, at: Instant, error: String) throws(StoreError) -> Bool {
        try withConnection("retry") { db in
            try db.query("""
                UPDATE turnstile_events SET available_at = $1, lease_owner = NULL, lease_until = NULL, last_error = $2
                WHERE id = $3 AND lease_owner = $4 AND attempts = $5
                """, [.real(at.secondsSince1970), .text(error), .integer(lease.id), .text(lease.owner), .integer(Int64(lease.attempt))]).changed == 1
        }
    }

    public func deadLetter(_ lease: Lease, reason: Reason, error: String, now: Instant) throws(StoreError) -> Bool {
        try withConnection("dead-letter") { db in
            try db.transaction {
                let held = try db.query("SELECT 1 FROM turnstile_events WHERE id = $1 AND lease_owner = $2 AND attempts = $3 FOR UPDATE",
                                        [.integer(lease.id), .text(lease.owner), .integer(Int64(lease.attempt))])
                guard !held.rows.isEmpty else { return false }
                try moveToDeadLetters(lease.id, reason: reason, error: error, now: now.secondsSince1970, in: db)
                return true
            }
        }
    }

    private func moveToDeadLetters(_ id: Int64, reason: Reason, error: String, now: Double, in db: PostgresConnection) throws {
        try db.query("""
            INSERT INTO turnstile_dead_letters (id, handler, provider, event_type, event_key, ordering_key, payload, received_at, reprocess,
                                                attempts, reason, last_error, dead_at, archive_id, archived_at)
            SELECT id, handler, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, attempts, $1, $2, $3, archive_id,
                   archived_at
            FROM turnstile_events WHERE id = $4
            """, [.text(reason.rawValue), .text(error), .real(now), .integer(id)])
        try db.query("DELETE FROM turnstile_events WHERE id = $1", [.integer(id)])
    }

    public func nextDue(handlers: [String]) throws(StoreError) -> Instant? {
        try withConnection("next due") { db in
            let row = try db.query("""
                SELECT MIN(GREATEST(available_at, COALESCE(lease_until, 0))) FROM turnstile_events
                WHERE handler = '' OR handler = ANY($1::TEXT[])
                """, [.text(PostgresArray.literal(handlers.map { Optional($0) }))]).rows.first
            guard let row, !row.isNull(0) else { return nil }
            return Instant(secondsSince1970: row.double(0))
        }
    }

    public func queueDepth() throws(StoreError) -> Int {
        try withConnection("queue depth") { db in Int(try db.query("SELECT COUNT(*) FROM turnstile_events").rows.first?.int64(0) ?? 0) }
    }

    // MARK: Dead letters

    public func deadLetterCount() throws(StoreError) -> Int {
        try withConnection("dead letter count") { db in
            Int(try db.query("SELECT COUNT(*) FROM turnstile_dead_letters").rows.first?.int64(0) ?? 0)
        }
    }

    public func deadLetters(limit: Int) throws(StoreError) -> [DeadLetter] {
        try withConnection("dead letters") { db in
            try db.query("""
                SELECT id, provider, event_type, event_key, reason, last_error, attempts, dead_at, handler
                FROM turnstile_dead_letters ORDER BY id LIMIT $1
                """, [.integer(Int64(min(limit, Int(Int64.max))))]).rows.map { row in
                DeadLetter(id: row.int64(0), handler: row.text(8) ?? "", provider: row.text(1) ?? "", eventType: row.text(2) ?? "",
                           eventKey: row.text(3) ?? "", reason: Reason(rawValue: row.text(4) ?? ""), lastError: row.text(5) ?? "",
                           attempts: Int(row.int64(6)), deadAt: Instant(secondsSince1970: row.double(7)))
            }
        }
    }

    public func requeueDeadLetters(_ ids: [Int64]?, now: Instant) throws(StoreError) -> Int {
        let moved = try requeue(ids, now: now)
        if moved > 0 { try? withConnection("notify") { db in notify(db) } }
        return moved
    }

    private func requeue(_ ids: [Int64]?, now: Instant) throws(StoreError) -> Int {
        try withConnection("re-queue dead letters") { db in
            try db.transaction {
                let filter = ids == nil ? "" : "WHERE id = ANY($2::BIGINT[])"
                var parameters: [PostgresValue] = [.real(now.secondsSince1970)]
                if let ids { parameters.append(.text(PostgresArray.literal(ids))) }
                let moved = try db.query("""
                    WITH moved AS (DELETE FROM turnstile_dead_letters \(filter) RETURNING *)
                    INSERT INTO turnstile_events (id, handler, provider, event_type, event_key, ordering_key, payload, received_at, reprocess,
                                                  attempts, available_at, last_error, archive_id, archived_at)
                    SELECT id, handler, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, 0, $1, last_error, archive_id,
                           archived_at
                    FROM moved
                    """, parameters)
                return moved.changed
            }
        }
    }

    // MARK: Answers

    public func keepAnswer(provider: String, eventKey: String, answer: String, now: Instant) throws(StoreError) -> String {
        try withConnection("keep answer") { db in
            try db.query("""
                INSERT INTO turnstile_answers (provider, event_key, answer, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING
                """, [.text(provider), .text(eventKey), .text(answer), .real(now.secondsSince1970)])
            return try db.query("SELECT answer FROM turnstile_answers WHERE provider = $1 AND event_key = $2",
                                [.text(provider), .text(eventKey)]).rows.first?.text(0) ?? answer
        }
    }

    public func keptAnswer(provider: String, eventKey: String) throws(StoreError) -> String? {
        try withConnection("kept answer") { db in
            try db.query("SELECT answer FROM turnstile_answers WHERE provider = $1 AND event_key = $2",
                         [.text(provider), .text(eventKey)]).rows.first?.text(0)
        }
    }

    // MARK: Nonces and archive

    /// Drops the nonce partitions whose whole day has expired (a nonce can so outlive its expiry by up to a day,
    /// counted as absent meanwhile), and makes the next partitions ahead of need.
    public func pruneNonces(now: Instant) throws(StoreError) -> Int {
        try preparePartitions(now: now)
        return try dropPartitions(of: .nonces, endingBy: now)
    }

    /// Drops the archive partitions whose whole day is older than `cutoff`; first the bodies that queued
    /// events and dead letters still read from them are copied into those rows. A delivery can so outlive the
    /// retention by up to a day.
    public func pruneArchive(receivedBefore cutoff: Instant) throws(StoreError) -> Int {
        try dropPartitions(of: .archive, endingBy: cutoff)
    }

    /// Drops each partition of `table` that ends by `instant`, one transaction each, while no other instance
    /// prunes (they skip the round). Returns how many rows left with them.
    private func dropPartitions(of table: PartitionedTable, endingBy instant: Instant) throws(StoreError) -> Int {
        let ended = try withConnection("list partitions") { db in
            try Self.partitions(of: table, in: db).filter { ($0.end ?? .infinity) <= instant.secondsSince1970 }
        }
        var removed = 0
        for partition in ended.sorted(by: { ($0.end ?? 0) < ($1.end ?? 0) }) {
            removed += try withConnection("prune \(partition.name)") { db in
                try db.transaction {
                    let held = try db.query("SELECT pg_try_advisory_xact_lock($1::INTEGER, hashtext(current_schema()))", [.integer(Self.pruningLock)])
                    guard held.rows.first?.text(0) == "t" else { return 0 }
                    // Dropping takes the parent table's lock: wait for it briefly, never queue admissions behind a long wait.
                    try db.execute("SET LOCAL lock_timeout = '2s'")
                    guard try Self.partitions(of: table, in: db).contains(partition) else { return 0 } // another instance was first
                    if table == .archive {
                        for kept in ["turnstile_events", "turnstile_dead_letters"] {
                            try db.execute("""
                                UPDATE \(kept) k SET payload = a.body, archive_id = NULL, archived_at = NULL FROM \(partition.name) a
                                WHERE k.archive_id = a.id AND k.archived_at = a.received_at
                                """)
                        }
                    }
                    let rows = Int(try db.query("SELECT COUNT(*) FROM \(partition.name)").rows.first?.int64(0) ?? 0)
                    try db.execute("DROP TABLE \(partition.name)")
                    return rows
                }
            }
        }
        return removed
    }

    public func forEachArchived(provider: String?, since: Instant?, _ body: (Delivery) throws -> Void) throws {
        var after: Int64 = 0
        while true {
            let page: [Delivery] = try withConnection("export") { db in
                try db.query("""
                    SELECT id, provider, received_at, path, headers, body FROM turnstile_archive
                    WHERE id > $1 AND ($2::TEXT IS NULL OR provider = $2) AND received_at >= $3 ORDER BY id LIMIT 500
                    """, [.integer(after), provider.map(PostgresValue.text) ?? .null, .real(since?.secondsSince1970 ?? -Double.greatestFiniteMagnitude)])
                .rows.map { row in
                    after = row.int64(0)
                    var headers = HeaderFields()
                    let fields = PostgresArray.parse(row.text(4) ?? "{}")
                    for pair in stride(from: 0, to: fields.count - 1, by: 2) { headers.append(name: fields[pair] ?? "", value: fields[pair + 1] ?? "") }
                    return Delivery(provider: row.text(1) ?? "", receivedAt: Instant(secondsSince1970: row.double(2)), headers: headers,
                                    body: row.bytes(5), path: row.isNull(3) ? nil : row.text(3))
                }
            }
            if page.isEmpty { return }
            for delivery in page { try body(delivery) }
        }
    }
}

/// A pooled connection: used by one call at a time, handed between threads by the pool's lock.
final class PostgresConnectionBox: @unchecked Sendable {
    // `@unchecked`: the connection is only used by the call that checked the box out of the pool.
    let connection: PostgresConnection
    init(_ connection: PostgresConnection) { self.connection = connection }
}
