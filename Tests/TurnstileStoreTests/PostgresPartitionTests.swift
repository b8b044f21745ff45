import Foundation
import Testing
import TurnstileCore
import TurnstileTestSupport
import TurnstileSync
@testable import TurnstilePostgres

/// PostgreSQL only: expired nonces and old deliveries leave by whole day partitions (no row deletes, so no
/// bloat), pruning is safe from several instances at once, and a version 1 store is migrated with its rows.
@Suite struct PostgresPartitionTests {
    private func partitions(_ table: PostgresEventStore.PartitionedTable, of store: PostgresEventStore) throws -> Set<String> {
        try store.withConnection("test") { db in Set(try PostgresEventStore.partitions(of: table, in: db).map(\.name)) }
    }

    private func day(_ instant: Instant) -> String { "_d\(Int64(instant.secondsSince1970 / 86_400))" }

    @Test func expiredNoncesAndOldDeliveriesLeaveByDroppingTheirDay() throws {
        guard let (made, _) = try StoreKind.postgres.make(), let store = made as? PostgresEventStore else { return }
        let days = (0..<3).map { t0.adding(seconds: Double($0) * 86_400) }
        for (index, instant) in days.enumerated() {
            _ = try store.admit([admission("day-\(index)-a", at: instant), admission("day-\(index)-b", at: instant.adding(seconds: 60))])
        }
        let nonces = try partitions(.nonces, of: store)
        #expect(days.allSatisfy { nonces.contains("turnstile_nonces" + day($0)) })
        // Half way through the second day: the first day's nonces have all expired (600 s after arrival), the second's not yet.
        let removed = try store.pruneNonces(now: days[1].adding(seconds: 43_200))
        #expect(removed == 4, "the first day's two deliveries, two nonces each")
        let left = try partitions(.nonces, of: store)
        #expect(!left.contains("turnstile_nonces" + day(days[0])))
        #expect(left.contains("turnstile_nonces" + day(days[1])) && left.contains("turnstile_nonces" + day(days[2])))
        // The second day's nonces still stop a replay.
        #expect(try store.admit([admission("day-1-a", at: days[1].adding(seconds: 100))]) == [.duplicate(.seenSignature, requeuedEventID: nil)])

        // The archive keeps whole days younger than the cutoff.
        _ = try store.route(limit: 100, now: days[2]) { _ in [] }
        #expect(try store.pruneArchive(receivedBefore: days[2]) == 4)
        let archive = try partitions(.archive, of: store)
        #expect(!archive.contains("turnstile_archive" + day(days[0])) && !archive.contains("turnstile_archive" + day(days[1])))
        var bodies: [String] = []
        try store.forEachArchived(provider: nil, since: nil) { bodies.append(String(decoding: $0.body, as: UTF8.self)) }
        #expect(bodies == [#"{"id":"day-2-a"}"#, #"{"id":"day-2-b"}"#])
        // Nothing left the tables by row deletes.
        let deleted = try store.withConnection("test") { db in
            try db.query("SELECT COALESCE(SUM(n_tup_del), 0) FROM pg_stat_xact_user_tables WHERE relname LIKE 'turnstile_nonces%' OR relname LIKE 'turnstile_archive%'")
                .rows.first?.int64(0) ?? -1
        }
        #expect(deleted == 0)
    }

    @Test func severalInstancesPruningAtOnceRemoveEachPartitionOnce() throws {
        guard let stores = try StoreKind.postgres.makeShared(4) else { return }
        let first = stores[0]
        for index in 0..<40 {
            _ = try first.admit([admission("e\(index)", at: t0.adding(seconds: Double(index) * 86_400 / 10))])
        }
        let removed = Locked(0)
        let failures = onThreadsAtOnce(stores) { _, store in
            let count = try store.pruneNonces(now: t0.adding(seconds: 10 * 86_400))
            removed.withLock { $0 += count }
        }
        #expect(failures.isEmpty)
        // Pruning is skipped by whoever finds another instance at it, so repeat until nothing is left.
        var more = 0
        for store in stores { more += try store.pruneNonces(now: t0.adding(seconds: 10 * 86_400)) }
        #expect(removed.withLock { $0 } + more == 80)
        #expect(try first.pruneNonces(now: t0.adding(seconds: 10 * 86_400)) == 0)
    }

    @Test func aVersionOneStoreIsMigratedWithItsRows() throws {
        guard let server = TestPostgres.configured else {
            #expect(!TestPostgres.isRequired, "PostgreSQL is required here")
            return
        }
        let (url, password) = (server.url, server.password)
        let schema = TestPostgres.schemaName("migrate_")
        let scoped = server.url(inSchema: schema)
        try PostgresConnection(url: url, password: password).execute("CREATE SCHEMA \(schema)")
        defer { PostgresEventStore.dropSchema(schema, url: url, password: password) }
        // A store as version 1 left it: one delivery, its nonces, its archive row (headers as JSON) and queue row.
        let old = try PostgresConnection(url: scoped, password: password)
        try old.execute("CREATE TABLE turnstile_schema (version INTEGER NOT NULL); INSERT INTO turnstile_schema VALUES (1)")
        try PostgresEventStore.migrations[0](old)
        let received = t0.secondsSince1970
        try old.execute("""
            INSERT INTO turnstile_nonces VALUES ('sync', 0, 'generation', 'sig-1'::bytea, \(received + 600)), ('sync', 1, '', 'e1'::bytea, \(received + 600));
            INSERT INTO turnstile_archive (provider, received_at, path, headers, body)
                VALUES ('sync', \(received), '/webhooks/sync', '[["Sync-Signature","t=1,v1=x"],["Content-Type","application/json"]]', '{"id":"e1"}'::bytea);
            INSERT INTO turnstile_events (provider, event_type, event_key, ordering_key, received_at, available_at, archive_id)
                VALUES ('sync', 'sync.generation', 'e1', '', \(received), 0, 1);
            """)
        let store = try PostgresEventStore(url: scoped, password: password)
        #expect(try old.query("SELECT version FROM turnstile_schema").rows.first?.int64(0) == Int64(PostgresEventStore.migrations.count))
        #expect(try store.admit([admission("e1", signature: "sig-1")]) == [.duplicate(.seenSignature, requeuedEventID: nil)])
        #expect(try store.admit([admission("e1", signature: "sig-2")]) == [.duplicate(.seenEvent, requeuedEventID: nil)])
        var archived: [Delivery] = []
        try store.forEachArchived(provider: nil, since: nil) { archived.append($0) }
        #expect(archived.count == 1)
        #expect(archived.first?.headers["Sync-Signature"] == "t=1,v1=x" && archived.first?.headers["content-type"] == "application/json")
        #expect(archived.first?.path == "/webhooks/sync")
        _ = try store.route(limit: 10, now: t0) { _ in ["a"] }
        let leased = try store.lease(handler: "a", limit: 10, owner: "w", now: t0, leaseSeconds: 30)
        #expect(leased.map(\.payload) == [Array(#"{"id":"e1"}"#.utf8)])
        // New deliveries get ids after the migrated ones.
        guard case .accepted = try store.admit([admission("e2")])[0] else { Issue.record("e2 not accepted"); return }
        var ids = 0
        try store.forEachArchived(provider: nil, since: nil) { _ in ids += 1 }
        #expect(ids == 2)
    }
}
