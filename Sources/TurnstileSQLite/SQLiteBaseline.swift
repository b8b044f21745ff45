public import TurnstileCore
import Foundation

extension SQLiteEventStore {
    /// The reference for `turnstile bench pipeline`: plain INSERTs of the rows an admission writes (two nonce
    /// rows, one archive row holding the body, one queue row pointing at it), into the same tables with the same pragmas and the
    /// same transaction batching, with none of the pipeline's work (no verification, no conflict handling,
    /// no duplicate checks). Returns rows per second.
    ///
    /// Call it on a fresh store.
    public func plainInsertRate(_ admissions: [Admission], batchSize: Int) throws(StoreError) -> Double {
        try withConnectionForBaseline { db in
            let nonce = try db.prepare("INSERT INTO nonce_log (hash, provider, category, scope, value, expires_at) VALUES (?, ?, ?, ?, ?, ?)")
            let archive = try db.prepare("INSERT INTO archive (provider, received_at, path, headers, body) VALUES (?, ?, ?, ?, ?)")
            let event = try db.prepare("""
                INSERT INTO events (provider, event_type, event_key, ordering_key, payload, received_at, reprocess, available_at, archive_id)
                VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?)
                """)
            // Header text is made up front, as the rows are "given".
            let headers = admissions.map { Self.archived($0.delivery.headers) }
            let start = DispatchTime.now().uptimeNanoseconds
            var index = 0
            while index < admissions.count {
                let end = min(index + batchSize, admissions.count)
                try db.transaction {
                    for position in index..<end {
                        let admission = admissions[position]
                        let received = admission.delivery.receivedAt?.secondsSince1970 ?? 0
                        for (key, expiry) in [(admission.signatureNonce, admission.signatureExpiresAt), (admission.eventNonce, admission.eventExpiresAt)] {
                            try nonce.bind(.integer(0), .text(key.provider), .integer(key.category), .text(key.scope), .blob(key.value),
                                           .real(expiry.secondsSince1970)).run()
                        }
                        try archive.bind(.text(admission.provider), .real(received), .null, .text(headers[position]),
                                         .blob(admission.delivery.body)).run()
                        try event.bind(.text(admission.provider), .text(admission.eventType), .text(admission.eventKey),
                                       .text(admission.storedOrderingKey), .null, .real(received), .integer(db.lastInsertRowID)).run()
                    }
                }
                index = end
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            return Double(admissions.count) / seconds
        }
    }
}
