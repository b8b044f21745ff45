import Foundation
import Testing
import TurnstileCore
@testable import TurnstileSQLite

/// SQLite keeps nonces in an append-only log found through an in-memory index of their hashes: what must hold
/// for that to be as exact as a unique key.
@Suite struct SQLiteNonceLogTests {
    private func temporaryPath() -> String { NSTemporaryDirectory() + "turnstile-nonce-log-" + UUID().uuidString + ".db" }

    @Test func theIndexListsEveryRowOfAHashAndAFalseCandidateIsPassedOver() {
        var index = NonceIndex()
        for row in 1...5 { index.insert(hash: 42, row: Int64(row), expiresAt: 100) }
        var seen: [Int64] = []
        #expect(index.firstRow(hash: 42, liveAt: 50) { seen.append($0); return $0 == 4 })
        #expect(seen == [1, 2, 3, 4], "candidates are offered in turn until one is confirmed")
        #expect(!index.firstRow(hash: 42, liveAt: 50) { _ in false }, "no confirmed row: absent, whatever the hash says")
        #expect(!index.firstRow(hash: 42, liveAt: 101) { _ in true }, "expired entries are not offered")
        index.remove(hash: 42, row: 2)
        seen = []
        _ = index.firstRow(hash: 42, liveAt: 50) { seen.append($0); return false }
        #expect(seen == [1, 3, 4, 5])
    }

    @Test func theIndexKeepsEveryEntryAcrossGrowthAndSweeps() {
        var index = NonceIndex()
        var generator = SystemRandomNumberGenerator()
        let hashes = (0..<50_000).map { _ in UInt64.random(in: .min ... .max, using: &generator) }
        for (row, hash) in hashes.enumerated() { index.insert(hash: hash, row: Int64(row), expiresAt: row.isMultiple(of: 2) ? 100 : 200) }
        #expect(index.count == 50_000)
        #expect(hashes.enumerated().allSatisfy { row, hash in index.firstRow(hash: hash, liveAt: 50) { $0 == Int64(row) } })
        #expect(index.removeExpired(before: 150) == 25_000)
        #expect(index.count == 25_000)
        for (row, hash) in hashes.enumerated() where row < 20_000 { index.insert(hash: hash, row: Int64(100_000 + row), expiresAt: 300) }
        #expect(hashes.enumerated().allSatisfy { row, hash in
            let kept = !row.isMultiple(of: 2) && index.firstRow(hash: hash, liveAt: 150) { $0 == Int64(row) }
            let added = row >= 20_000 || index.firstRow(hash: hash, liveAt: 150) { $0 == Int64(100_000 + row) }
            return (row.isMultiple(of: 2) || kept) && added
        })
    }

    @Test func anExpiryOutOfRangeIsClampedNotTrapped() {
        #expect(NonceIndex.seconds(.nan) == 0 || NonceIndex.seconds(.nan) == .max)
        #expect(NonceIndex.seconds(-1e300) == 0)
        #expect(NonceIndex.seconds(1e300) == .max)
        #expect(NonceIndex.seconds(.infinity) == .max)
        #expect(NonceIndex.seconds(10.2) == 11)
    }

    @Test func aStoreOpenedLaterAndAStoreOpenAlongsideBothSeeEveryNonce() throws {
        let path = temporaryPath()
        let first = try SQLiteEventStore(path: path)
        let second = try SQLiteEventStore(path: path)
        _ = try first.admit([admission("e1")])
        // The second store's index was loaded before e1: it catches up from the log inside its transaction.
        #expect(try second.admit([admission("e1")]) == [.duplicate(.seenSignature, requeuedEventID: nil)])
        #expect(try second.admit([admission("e2", signature: "s-e1")]).first.map { if case .accepted = $0 { true } else { false } } == true)
        #expect(try first.admit([admission("e2", signature: "s-other")]) == [.duplicate(.seenEvent, requeuedEventID: nil)])
        let third = try SQLiteEventStore(path: path)
        #expect(try third.admit([admission("e1"), admission("e2", signature: "s-e1")])
                == [.duplicate(.seenSignature, requeuedEventID: nil), .duplicate(.seenSignature, requeuedEventID: nil)])
    }

    @Test func aBatchThatFailsLeavesNoNonceBehind() throws {
        let store = try SQLiteEventStore(path: temporaryPath())
        // A trigger that fails the archive write of one delivery, after both of its nonces and the batch's first
        // delivery were logged.
        try store.withConnectionForBaseline { db in
            try db.execute("CREATE TRIGGER refuse BEFORE INSERT ON archive WHEN NEW.body = CAST('{\"id\":\"bad\"}' AS BLOB) BEGIN SELECT RAISE(ABORT, 'refused'); END")
        }
        #expect(throws: StoreError.self) { try store.admit([admission("good"), admission("bad")]) }
        #expect(store.indexedNonces == 0, "the rolled-back rows' entries went with them")
        try store.withConnectionForBaseline { db in try db.execute("DROP TRIGGER refuse") }
        let results = try store.admit([admission("good"), admission("bad")])
        #expect(results.allSatisfy { if case .accepted = $0 { true } else { false } }, "\(results)")
        #expect(try store.queueDepth() == 2)
        #expect(store.indexedNonces == 4)
    }

    @Test func aVersion5StoreKeepsItsNoncesThroughTheMigration() throws {
        let path = temporaryPath()
        let old = try SQLiteConnection(path: path)
        try old.execute("PRAGMA journal_mode = WAL")
        for version in 0..<5 { try old.execute(SQLiteEventStore.migrations[version]) }
        try old.execute("""
            PRAGMA user_version = 5;
            INSERT INTO nonces VALUES ('sync', 0, 'generation', CAST('old' AS BLOB), \(t0.secondsSince1970 + 600));
            INSERT INTO nonces VALUES ('sync', 1, '', CAST('old' AS BLOB), \(t0.secondsSince1970 + 600));
            INSERT INTO nonces VALUES ('sync', 1, '', CAST('gone' AS BLOB), \(t0.secondsSince1970 - 600));
            """)
        let store = try SQLiteEventStore(path: path)
        #expect(try store.admit([admission("old")]) == [.duplicate(.seenSignature, requeuedEventID: nil)])
        #expect(try store.admit([admission("old", signature: "new")]) == [.duplicate(.seenEvent, requeuedEventID: nil)])
        #expect(try store.admit([admission("gone")]).first.map { if case .accepted = $0 { true } else { false } } == true)
        #expect(try store.pruneNonces(now: t0) == 1, "the expired one came across too, and pruning removes it")
        #expect(store.indexedNonces == 5, "the two old live ones, and gone's two and its signature's")
    }

    @Test func sqliteQueuesARoutedEventPerHandlerAtAdmissionWithNoRoutingStep() throws {
        let store = try SQLiteEventStore(path: temporaryPath())
        var routed = admission("r1")
        routed.handlers = ["a", "b"]
        var nowhere = admission("r2")
        nowhere.handlers = []
        var broken = admission("r3", deadLetter: (.schemaViolation, "broken"))
        broken.handlers = ["a"]
        _ = try store.admit([routed, nowhere, broken])
        #expect(try store.backlog() == ["a": 1, "b": 1, "": 1], "r2, which no handler wants, waits for routing to drop it")
        #expect(try store.deadLetterCount() == 1, "a dead letter is not routed at admission")
        #expect(try store.lease(handler: "b", limit: 10, owner: "w", now: t0, leaseSeconds: 30).map(\.eventKey) == ["r1"])
    }
}
