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
    /// tables with the same transaction batching, prepared statements and parameters, and none of the
    /// pipeline's work (no verification, no conflict handling, no duplicate checks). Returns rows per second.
    ///
    /// Call it on a fresh store.
    public func plainInsertRate(_ admissions: [Admission], batchSize: Int) throws(StoreError) -> Double {
        try withConnection("baseline") { db in
            let start = DispatchTime.now().uptimeNanoseconds
            var index = 0
            while index < admissions.count {
                let end = min(index + batchSize, admissions.count)
                try db.transaction {
                    for admission in admissions[index..<end] {
                        let received = admission.delivery.receivedAt?.secondsSince1970 ?? 0
                        try db.query("INSERT INTO turnstile_nonces (provider, category, scope, value, expires_at) VALUES ($1, $2, $3, $4, $5)",
                                     [.text(admission.provider), .integer(0), .text(admission.kind ?? ""), .bytes(admission.signature),
                                      .real(admission.signatureExpiresAt.secondsSince1970)])
                        try db.query("INSERT INTO turnstile_nonces (provider, category, scope, value, expires_at) VALUES ($1, $2, $3, $4, $5)",
                                     [.text(admission.provider), .integer(1), .text(""), .bytes(Array(admission.eventKey.utf8)),
                                      .real(admission.eventExpiresAt.secondsSince1970)])
                        let archived = try db.query("""
                            INSERT INTO turnstile_archive (provider, received_at, path, headers, body) VALUES ($1, $2, $3, $4, $5) RETURNING id
                            """, [.text(admission.provider), .real(received), .null, .text(admission.archivedHeaders), .bytes(admission.delivery.body)])
                        try db.query("""
                            INSERT INTO turnstile_events (provider, event_type, event_key, ordering_key, payload, received_at, reprocess, available_at, archive_id)
                            VALUES ($1, $2, $3, $4, NULL, $5, false, 0, $6)
                            """, [.text(admission.provider), .text(admission.eventType), .text(admission.eventKey), .text(admission.storedOrderingKey),
                                  .real(received), .integer(archived.rows.first?.int64(0) ?? 0)])
                    }
                }
                index = end
            }
            return Double(admissions.count) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
    }
}
