public import TurnstileCore
import Foundation

extension PostgresEventStore {
    /// A store in a new schema of its own in the database `url` names (for benchmarks and tests); drop it with
    /// ``dropSchema(_:url:password:)``.
    public static func inFreshSchema(url: String, password: String?, prefix: String = "bench") throws(StoreError) -> (store: PostgresEventStore, schema: String) {
        let schema = prefix + "_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        do { try PostgresConnection(url: url, password: password).execute("CREATE SCHEMA \(schema)") } catch {
            throw StoreError(error.isTransient ? .unavailable : .misuse, "create schema: \(error)")
        }
        let scoped = url + (url.contains("?") ? "&" : "?") + "options=-csearch_path%3D\(schema)"
        return (try PostgresEventStore(url: scoped, password: password), schema)
    }

    /// Drops a schema ``inFreshSchema(url:password:prefix:)`` made, with everything in it.
    public static func dropSchema(_ schema: String, url: String, password: String?) {
        _ = try? PostgresConnection(url: url, password: password).execute("DROP SCHEMA \(schema) CASCADE")
    }

    /// The reference for `turnstile bench pipeline --store postgres://…`: plain INSERTs of the rows an admission
    /// writes (two nonce rows, one archive row holding the body, one queue row pointing at it) into the same
    /// tables with the same transaction batching and the same multi-row statements (each column one array
    /// parameter), and none of the pipeline's work (no verification, no nonce locks or lookups, no duplicate
    /// checks). Returns rows per second.
    ///
    /// Call it on a fresh store.
    public func plainInsertRate(_ admissions: [Admission], batchSize: Int) throws(StoreError) -> Double {
        try withConnection("baseline") { db in
            // The partitions exist before the clock starts, as they would on a store in use.
            try db.transaction {
                try Self.createPartitions(covering: admissions.flatMap { [$0.signatureExpiresAt.secondsSince1970, $0.eventExpiresAt.secondsSince1970] },
                                          of: .nonces, in: db)
                try Self.createPartitions(covering: admissions.map { $0.delivery.receivedAt?.secondsSince1970 ?? 0 }, of: .archive, in: db)
            }
            let start = DispatchTime.now().uptimeNanoseconds
            var index = 0
            while index < admissions.count {
                let batch = admissions[index..<min(index + batchSize, admissions.count)]
                try db.transaction {
                    let received = batch.map { $0.delivery.receivedAt?.secondsSince1970 ?? 0 }
                    try db.query("""
                        INSERT INTO turnstile_nonces (provider, category, scope, value, expires_at)
                        SELECT * FROM unnest($1::TEXT[], $2::SMALLINT[], $3::TEXT[], $4::BYTEA[], $5::FLOAT8[])
                        """, [.text(PostgresArray.literal(batch.flatMap { [Optional($0.provider), Optional($0.provider)] })),
                              .text(PostgresArray.literal(batch.flatMap { _ in [Int64(0), 1] })),
                              .text(PostgresArray.literal(batch.flatMap { [Optional($0.kind ?? ""), Optional("")] })),
                              .text(PostgresArray.literal(bytes: batch.flatMap { [Optional($0.signatureNonce.value), Optional(Array($0.eventKey.utf8))] })),
                              .text(PostgresArray.literal(batch.flatMap { [$0.signatureExpiresAt.secondsSince1970, $0.eventExpiresAt.secondsSince1970] }))])
                    let archived = try db.query("""
                        INSERT INTO turnstile_archive (provider, received_at, path, headers, body)
                        SELECT provider, received_at, NULL, headers::TEXT[], body FROM unnest($1::TEXT[], $2::FLOAT8[], $3::TEXT[], $4::BYTEA[])
                             AS a(provider, received_at, headers, body)
                        RETURNING id
                        """, [.text(PostgresArray.literal(batch.map { Optional($0.provider) })), .text(PostgresArray.literal(received)),
                              .text(PostgresArray.literal(batch.map { Optional(PostgresArray.literal($0.delivery.headers.flatMap { [Optional($0.name), Optional($0.value)] })) })),
                              .text(PostgresArray.literal(bytes: batch.map { Optional($0.delivery.body) }))])
                    try db.query("""
                        INSERT INTO turnstile_events (provider, event_type, event_key, ordering_key, received_at, reprocess, available_at, archive_id, archived_at)
                        SELECT provider, event_type, event_key, ordering_key, received_at, false, 0, archive_id, received_at
                        FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::FLOAT8[], $6::BIGINT[])
                             AS e(provider, event_type, event_key, ordering_key, received_at, archive_id)
                        """, [.text(PostgresArray.literal(batch.map { Optional($0.provider) })), .text(PostgresArray.literal(batch.map { Optional($0.eventType) })),
                              .text(PostgresArray.literal(batch.map { Optional($0.eventKey) })),
                              .text(PostgresArray.literal(batch.map { Optional($0.storedOrderingKey) })), .text(PostgresArray.literal(received)),
                              .text(PostgresArray.literal(archived.rows.map { $0.int64(0) }.sorted()))])
                }
                index += batch.count
            }
            return Double(admissions.count) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
    }
}
