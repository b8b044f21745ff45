public import TurnstileCore
import Foundation

extension SQLiteEventStore {
    /// Makes a store at `path` that looks like one that has run in production for a month: `nonces` live nonces
    /// (half signatures, half event identities, random 32-byte values, expiring between an hour and 30 days
    /// after `now`) and `archived` deliveries of 1 KB received over the 29 days before `now`, each with its
    /// headers. Rows go in by plain inserts in transactions of 50,000 with `synchronous=OFF` (a bench fixture,
    /// not data to keep), then the WAL is checkpointed into the file. `progress` hears rows written so far.
    ///
    /// The store must not exist yet.
    public static func fillLikeProduction(path: String, provider: String, nonces: Int, archived: Int, now: Instant,
                                          progress: (Int) -> Void) throws(StoreError) {
        guard !FileManager.default.fileExists(atPath: path) else {
            throw StoreError(.misuse, "\(path) exists already; a production-like store is made only in a new file")
        }
        let store = try SQLiteEventStore(path: path, options: Options(synchronous: .normal))
        try store.withConnection("fill like production") { db in
            try db.execute("PRAGMA synchronous = OFF")
            var generator = SystemRandomNumberGenerator()
            let insertNonce = try db.prepare("INSERT INTO nonce_log (hash, provider, category, scope, value, expires_at) VALUES (?, ?, ?, ?, ?, ?)")
            let insertArchive = try db.prepare("INSERT INTO archive (provider, received_at, path, headers, body) VALUES (?, ?, ?, ?, ?)")
            let filler = String(repeating: "x", count: 900)
            var written = 0
            let total = nonces + archived
            while written < total {
                try db.transaction {
                    for _ in 0..<min(50_000, total - written) {
                        if written < nonces {
                            let category = Int64(written % 2)
                            let value = (0..<4).flatMap { _ in withUnsafeBytes(of: generator.next()) { Array($0) } }
                            let nonce = Nonce(provider: provider, category: category, scope: category == 0 ? "event" : "", value: value)
                            try insertNonce.bind(.integer(Int64(bitPattern: nonce.stableHash)), .text(nonce.provider), .integer(category),
                                                 .text(nonce.scope), .blob(value),
                                                 .real(now.secondsSince1970 + Double.random(in: 3_600...(30 * 86_400), using: &generator))).run()
                        } else {
                            let index = written - nonces
                            let received = now.secondsSince1970 - 29 * 86_400 * Double(archived - index) / Double(archived)
                            var headers = HeaderFields()
                            headers.append(name: "Content-Type", value: "application/json")
                            headers.append(name: "X-Delivery", value: "archived-\(index)")
                            headers.append(name: "X-Signature", value: "sha256=" + String(repeating: "0", count: 64))
                            let body = Array(#"{"id":"archived-\#(index)","filler":"\#(filler)"}"#.utf8)
                            try insertArchive.bind(.text(provider), .real(received), .text("/webhooks/\(provider)"), .text(Self.archived(headers)),
                                                   .blob(body)).run()
                        }
                        written += 1
                    }
                }
                progress(written)
            }
            _ = try db.scalarText("PRAGMA wal_checkpoint(TRUNCATE)")
        }
    }
}
