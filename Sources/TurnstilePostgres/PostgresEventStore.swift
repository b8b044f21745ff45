public import TurnstileCore
import TurnstileSync
import Foundation

/// The shared store: PostgreSQL, for several receivers behind one load balancer. The same semantics as the
/// embedded SQLite store, case for case (one conformance suite runs against both):
///
/// - Nonces are inserted if absent (`INSERT … ON CONFLICT`), so two instances admitting the same delivery at
///   once accept it exactly once: the second waits for the first's transaction and then sees its row.
/// - A batch of deliveries is one transaction (group commit), enqueue and archive included.
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
    /// The schema version this code writes.
    public static let schemaVersion = 1

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
            throw StoreError(code, "migrate: \(error)")
        } catch {
            throw StoreError(.misuse, "migrate: \(error)")
        }
        let safe = schema.unicodeScalars.filter { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_") }
        channel = "turnstile_" + String(String.UnicodeScalarView(safe).prefix(40))
        idle.withLock { state in
            state.connections.append(PostgresConnectionBox(first))
            state.open = 1
        }
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
            throw StoreError(.unavailable, "\(what): \(error)")
        }
        do {
            let value = try body(box.connection)
            checkIn(box)
            return value
        } catch let error as PostgresError {
            // A statement error leaves a healthy connection; a lost one is dropped and replaced on demand.
            if box.connection.isBroken { discard() } else { checkIn(box) }
            let code: StoreError.Code = error.isTransient ? .unavailable : (error.sqlState == "TS001" ? .incompatible : .misuse)
            throw StoreError(code, "\(what): \(error)")
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

    private static let migrations: [String] = [
        """
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
        """,
    ]

    /// The advisory lock keys of migrations (any instance may start at any time) and of routing; the second
    /// half of each key is the schema's, so stores in different schemas of one database do not wait on each other.
    private static let migrationLock: Int64 = 0x7475_0001
    private static let routingLock: Int64 = 0x7475_0002

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
                try db.execute(migrations[version])
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

    public func admit(_ batch: [Admission]) throws(StoreError) -> [AdmissionResult] {
        try withConnection("admit") { db in
            let results = try db.transaction { try batch.map { try admit($0, in: db) } }
            // Idle workers of every instance wake up: sent by the committing code after the commit, once per
            // batch (not by a trigger per row, which floods under load).
            if results.contains(where: { if case .duplicate(_, nil) = $0 { false } else { true } }) {
                _ = try? db.query("SELECT pg_notify($1, '')", [.text(channel)])
            }
            return results
        }
    }

    private func admit(_ admission: Admission, in db: PostgresConnection) throws -> AdmissionResult {
        let now = admission.delivery.receivedAt?.secondsSince1970 ?? 0
        // Insert-if-absent; an expired nonce that was not pruned yet counts as absent.
        let insertNonce = """
            INSERT INTO turnstile_nonces (provider, category, scope, value, expires_at) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (provider, category, scope, value) DO UPDATE SET expires_at = EXCLUDED.expires_at
            WHERE turnstile_nonces.expires_at < $6
            """
        var duplicate: Reason? = nil
        let signature = try db.query(insertNonce, [.text(admission.provider), .integer(0), .text(admission.kind ?? ""), .bytes(admission.signature),
                                                   .real(admission.signatureExpiresAt.secondsSince1970), .real(now)])
        if signature.changed == 0 {
            duplicate = .seenSignature
        } else {
            let event = try db.query(insertNonce, [.text(admission.provider), .integer(1), .text(""), .bytes(Array(admission.eventKey.utf8)),
                                                   .real(admission.eventExpiresAt.secondsSince1970), .real(now)])
            if event.changed == 0 { duplicate = .seenEvent }
        }
        if let duplicate {
            guard admission.reprocess else { return .duplicate(duplicate, requeuedEventID: nil) }
            return .duplicate(duplicate, requeuedEventID: try enqueue(admission, archiveID: nil, in: db))
        }
        let delivery = admission.delivery
        let archived = try db.query("""
            INSERT INTO turnstile_archive (provider, received_at, path, headers, body) VALUES ($1, $2, $3, $4, $5) RETURNING id
            """, [.text(admission.provider), .real(now), delivery.path.map(PostgresValue.text) ?? .null,
                  .text(admission.archivedHeaders), .bytes(delivery.body)])
        let archiveID = archived.rows.first?.int64(0) ?? 0
        return .accepted(eventID: try enqueue(admission, archiveID: archiveID, in: db))
    }

    private func enqueue(_ admission: Admission, archiveID: Int64?, in db: PostgresConnection) throws -> Int64 {
        let now = admission.delivery.receivedAt?.secondsSince1970 ?? 0
        // The body is written once: a queued event points at its archive row when it has one.
        let inserted = try db.query("""
            INSERT INTO turnstile_events (provider, event_type, event_key, ordering_key, payload, received_at, reprocess, available_at, archive_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8) RETURNING id
            """, [.text(admission.provider), .text(admission.eventType), .text(admission.eventKey), .text(admission.storedOrderingKey),
                  archiveID == nil ? .bytes(admission.delivery.body) : .null, .real(now), .text(admission.reprocess ? "true" : "false"),
                  archiveID.map(PostgresValue.integer) ?? .null])
        let id = inserted.rows.first?.int64(0) ?? 0
        if let (reason, message) = admission.deadLetter {
            try moveToDeadLetters(id, reason: reason, error: message, now: now, in: db)
        }
        return id
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
                    FROM turnstile_events e LEFT JOIN turnstile_archive a ON a.id = e.archive_id
                    WHERE e.handler = '' ORDER BY e.id LIMIT $1
                    """, [.integer(Int64(limit))])
                for row in waiting.rows {
                    let id = row.int64(0)
                    let event = RoutableEvent(provider: row.text(1) ?? "", eventType: row.text(2) ?? "", payload: row.bytes(3))
                    for handler in route(event) where !handler.isEmpty {
                        try db.query("""
                            INSERT INTO turnstile_events (handler, provider, event_type, event_key, ordering_key, payload, received_at, reprocess,
                                                          available_at, archive_id)
                            SELECT $1, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, available_at, archive_id
                            FROM turnstile_events WHERE id = $2
                            """, [.text(handler), .integer(id)])
                    }
                    try db.query("DELETE FROM turnstile_events WHERE id = $1", [.integer(id)])
                }
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
                    RETURNING t.id, t.provider, t.event_type, t.event_key, t.payload, t.archive_id, t.received_at, t.attempts, t.reprocess
                )
                SELECT taken.id, taken.provider, taken.event_type, taken.event_key, COALESCE(taken.payload, a.body), taken.received_at,
                       taken.attempts, taken.reprocess
                FROM taken LEFT JOIN turnstile_archive a ON a.id = taken.archive_id ORDER BY taken.id
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
                """, [.text(Self.array(leases.map(\.id))), .text(Self.textArray(leases.map(\.owner))),
                      .text(Self.array(leases.map { Int64($0.attempt) }))]).changed
        }
    }

    public func renew(_ leases: [Lease], until: Instant) throws(StoreError) -> Int {
        guard !leases.isEmpty else { return 0 }
        return try withConnection("renew") { db in
            try db.query("""
                UPDATE turnstile_events e SET lease_until = $4
                FROM unnest($1::BIGINT[], $2::TEXT[], $3::INTEGER[]) AS l(id, owner, attempt)
                WHERE e.id = l.id AND e.lease_owner = l.owner AND e.attempts = l.attempt
                """, [.text(Self.array(leases.map(\.id))), .text(Self.textArray(leases.map(\.owner))),
                      .text(Self.array(leases.map { Int64($0.attempt) })), .real(until.secondsSince1970)]).changed
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
                                                attempts, reason, last_error, dead_at, archive_id)
            SELECT id, handler, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, attempts, $1, $2, $3, archive_id
            FROM turnstile_events WHERE id = $4
            """, [.text(reason.rawValue), .text(error), .real(now), .integer(id)])
        try db.query("DELETE FROM turnstile_events WHERE id = $1", [.integer(id)])
    }

    public func nextDue(handlers: [String]) throws(StoreError) -> Instant? {
        try withConnection("next due") { db in
            let row = try db.query("""
                SELECT MIN(GREATEST(available_at, COALESCE(lease_until, 0))) FROM turnstile_events
                WHERE handler = '' OR handler = ANY($1::TEXT[])
                """, [.text(Self.textArray(handlers))]).rows.first
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
                if let ids { parameters.append(.text(Self.array(ids))) }
                let moved = try db.query("""
                    WITH moved AS (DELETE FROM turnstile_dead_letters \(filter) RETURNING *)
                    INSERT INTO turnstile_events (id, handler, provider, event_type, event_key, ordering_key, payload, received_at, reprocess,
                                                  attempts, available_at, last_error, archive_id)
                    SELECT id, handler, provider, event_type, event_key, ordering_key, payload, received_at, reprocess, 0, $1, last_error, archive_id
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

    public func pruneNonces(now: Instant) throws(StoreError) -> Int {
        try withConnection("prune") { db in
            try db.query("DELETE FROM turnstile_nonces WHERE expires_at < $1", [.real(now.secondsSince1970)]).changed
        }
    }

    public func pruneArchive(receivedBefore cutoff: Instant) throws(StoreError) -> Int {
        try withConnection("prune archive") { db in
            try db.query("""
                DELETE FROM turnstile_archive a WHERE a.received_at < $1
                  AND NOT EXISTS (SELECT 1 FROM turnstile_events e WHERE e.archive_id = a.id)
                  AND NOT EXISTS (SELECT 1 FROM turnstile_dead_letters d WHERE d.archive_id = a.id)
                """, [.real(cutoff.secondsSince1970)]).changed
        }
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
                    let headers = HeaderFields(archived: row.text(4) ?? "[]")
                    return Delivery(provider: row.text(1) ?? "", receivedAt: Instant(secondsSince1970: row.double(2)), headers: headers,
                                    body: row.bytes(5), path: row.isNull(3) ? nil : row.text(3))
                }
            }
            if page.isEmpty { return }
            for delivery in page { try body(delivery) }
        }
    }

    /// `{1,2,3}`: an id list as one text parameter cast to `BIGINT[]`.
    private static func array(_ ids: [Int64]) -> String { "{" + ids.map(String.init).joined(separator: ",") + "}" }

    /// `{"a","b"}`: texts as one parameter cast to `TEXT[]`, each quoted and escaped.
    private static func textArray(_ values: [String]) -> String {
        "{" + values.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
            .joined(separator: ",") + "}"
    }
}

/// A pooled connection: used by one call at a time, handed between threads by the pool's lock.
final class PostgresConnectionBox: @unchecked Sendable {
    // `@unchecked`: the connection is only used by the call that checked the box out of the pool.
    let connection: PostgresConnection
    init(_ connection: PostgresConnection) { self.connection = connection }
}
