import Foundation
import Testing
import TurnstileCore
import TurnstileSQLite
import TurnstileSync
import TurnstileTestSupport
@testable import TurnstilePostgres

/// The stores every conformance test runs against, with the same expectations.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqliteFile = "SQLite file"
    case sqliteMemory = "SQLite in memory"
    case postgres = "PostgreSQL"

    var testDescription: String { rawValue }

    /// A fresh, empty store of this kind; nil for PostgreSQL when no server is configured (outside CI).
    /// - Parameter shared: the place a second store of the same kind should open (same file or schema).
    func make(sharing shared: String? = nil) throws -> (store: any EventStore, place: String)? {
        switch self {
        case .sqliteFile:
            let path = shared ?? NSTemporaryDirectory() + "turnstile-conformance-" + UUID().uuidString + ".db"
            return (try SQLiteEventStore(path: path), path)
        case .sqliteMemory:
            return (try SQLiteEventStore(path: ":memory:"), ":memory:")
        case .postgres:
            guard let server = TestPostgres.configured else {
                #expect(!TestPostgres.isRequired, "PostgreSQL is required here: TURNSTILE_TEST_POSTGRES_URL is not set")
                print(TestPostgres.skipNote)
                return nil
            }
            let schema = shared ?? TestPostgres.schemaName("conformance_")
            if shared == nil {
                try PostgresConnection(url: server.url, password: server.password).execute("CREATE SCHEMA \(schema)")
            }
            return (try PostgresEventStore(url: server.url(inSchema: schema), password: server.password), schema)
        }
    }
}

let t0 = Instant(secondsSince1970: 1_767_225_600)

/// An admission as the pipeline makes it: signature and event nonces, an ordering key, the raw delivery.
func admission(_ key: String, provider: String = "sync", signature: String? = nil, ordering: String? = nil, at instant: Instant = t0,
               keepFor: Double = 600, reprocess: Bool = false, deadLetter: (Reason, String)? = nil) -> Admission {
    let body = Array(#"{"id":"\#(key)"}"#.utf8)
    var headers = HeaderFields()
    headers.append(name: "Sync-Signature", value: "t=1,v1=\(signature ?? key)")
    let delivery = Delivery(provider: provider, receivedAt: instant, headers: headers, body: body, path: "/webhooks/\(provider)")
    return Admission(provider: provider, kind: "generation", eventType: "\(provider).generation", eventKey: key,
                     orderingKey: ordering ?? key, signatureNonce: Nonce(provider: provider, category: 0, scope: "generation", value: Array((signature ?? key).utf8)),
                     signatureExpiresAt: instant.adding(seconds: keepFor),
                     eventExpiresAt: instant.adding(seconds: keepFor), delivery: delivery, signedAt: instant,
                     deadLetter: deadLetter.map { (reason: $0.0, message: $0.1) }, reprocess: reprocess)
}

func everyone(_ event: RoutableEvent) -> [String] { ["a", "b"] }

extension StoreKind {
    /// `count` stores of this kind on one place (connections of several instances to one shared store).
    func makeShared(_ count: Int) throws -> [any EventStore]? {
        guard let (first, place) = try make() else { return nil }
        var stores: [any EventStore] = [first]
        for _ in 1..<count { stores.append(try #require(try make(sharing: place)).store) }
        return stores
    }
}

/// Runs `body` for each store on a thread of its own, all at once, and returns the errors they threw.
func onThreadsAtOnce(_ stores: [any EventStore], _ body: @escaping @Sendable (Int, any EventStore) throws -> Void) -> [String] {
    let failures = Locked<[String]>([])
    let group = DispatchGroup()
    for (index, store) in stores.enumerated() {
        group.enter()
        Thread {
            defer { group.leave() }
            do { try body(index, store) } catch { failures.withLock { $0.append("\(error)") } }
        }.start()
    }
    group.wait()
    return failures.withLock { $0 }
}

extension AdmissionStore {
    /// Admits `batch` at the latest instant it was received at, as the pipeline does.
    func admit(_ batch: [Admission]) throws(StoreError) -> [AdmissionResult] {
        try admit(batch, now: batch.compactMap(\.delivery.receivedAt).max() ?? t0)
    }
}

@Suite struct StoreConformanceTests {
    @Test(arguments: StoreKind.allCases)
    func admissionAcceptsOnceThenReportsWhichNonceWasSeen(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        let results = try store.admit([admission("e1"), admission("e1"), admission("e1", signature: "other")])
        guard case .accepted = results[0] else { Issue.record("first not accepted: \(results[0])"); return }
        #expect(results[1] == .duplicate(.seenSignature, requeuedEventID: nil))
        #expect(results[2] == .duplicate(.seenEvent, requeuedEventID: nil))
        #expect(try store.queueDepth() == 1)
        // A later batch sees the nonces committed by an earlier one.
        #expect(try store.admit([admission("e1")]) == [.duplicate(.seenSignature, requeuedEventID: nil)])
    }

    @Test(arguments: StoreKind.allCases)
    func anExpiredNonceCountsAsAbsentAndPruningRemovesOnlyExpiredOnes(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        _ = try store.admit([admission("e1", keepFor: 10)])
        let later = t0.adding(seconds: 20)
        guard case .accepted = try store.admit([admission("e1", at: later, keepFor: 10)])[0] else {
            Issue.record("an expired nonce still counted"); return
        }
        _ = try store.admit([admission("e2", keepFor: 10), admission("long", keepFor: 3 * 86_400)])
        // Pruning while e1 (until t0+30) and long (three days) live removes neither: both are still duplicates.
        _ = try store.pruneNonces(now: t0.adding(seconds: 25))
        #expect(try store.admit([admission("e1", at: t0.adding(seconds: 26), keepFor: 10)]) == [.duplicate(.seenSignature, requeuedEventID: nil)])
        // Two days on, every nonce but long's has expired: they go (a store may keep them until their whole day
        // has), and long's stays.
        #expect(try store.pruneNonces(now: t0.adding(seconds: 2 * 86_400)) >= 2)
        #expect(try store.pruneNonces(now: t0.adding(seconds: 2 * 86_400)) == 0)
        #expect(try store.admit([admission("long", at: t0.adding(seconds: 2 * 86_400), keepFor: 10)])
                == [.duplicate(.seenSignature, requeuedEventID: nil)])
    }

    @Test(arguments: StoreKind.allCases)
    func reprocessQueuesASeenEventAgain(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        _ = try store.admit([admission("e1")])
        let again = try store.admit([admission("e1", reprocess: true)])
        guard case .duplicate(.seenSignature, let requeued?) = again[0] else { Issue.record("not re-queued: \(again[0])"); return }
        #expect(requeued > 0)
        #expect(try store.route(limit: 10, now: t0, everyone) == 2)
        let leased = try store.lease(handler: "a", limit: 10, owner: "w", now: t0, leaseSeconds: 30)
        #expect(leased.map(\.isReprocess).sorted { !$0 && $1 } == [false, true])
    }

    @Test(arguments: StoreKind.allCases)
    func routingGivesEachHandlerItsOwnDeliveries(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        _ = try store.admit([admission("e1"), admission("e2"), admission("e3")])
        #expect(try store.backlog() == ["": 3])
        #expect(try store.route(limit: 2, now: t0) { $0.payload.count > 0 ? ["a", "b"] : [] } == 2)
        #expect(try store.route(limit: 10, now: t0) { _ in ["a"] } == 1)
        #expect(try store.backlog() == ["a": 3, "b": 2])
        let leased = try store.lease(handler: "a", limit: 10, owner: "w", now: t0, leaseSeconds: 30)
        #expect(leased.map(\.eventKey) == ["e1", "e2", "e3"])
        #expect(leased.allSatisfy { $0.handler == "a" && $0.attempt == 1 && $0.payload == Array(#"{"id":"\#($0.eventKey)"}"#.utf8) })
        try store.complete(leased.map(\.lease))
        #expect(try store.backlog() == ["b": 2])
        // An event no handler wants is done once routed.
        _ = try store.admit([admission("e4")])
        #expect(try store.route(limit: 10, now: t0) { _ in [] } == 1)
        #expect(try store.backlog() == ["b": 2])
    }

    @Test(arguments: StoreKind.allCases)
    func anEventRoutedAtAdmissionReachesEachOfItsHandlersOnce(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        var routed = admission("r1", ordering: "order-1")
        routed.handlers = ["a", "b"]
        var second = admission("r2", ordering: "order-1")
        second.handlers = ["a"]
        _ = try store.admit([routed, second, admission("plain")])
        // A store may have queued them per handler already, or kept them for routing: after routing, each
        // handler holds its own deliveries once, in arrival order per ordering key.
        while try store.route(limit: 10, now: t0, { _ in ["a", "b"] }) == 10 {}
        let a = try store.lease(handler: "a", limit: 10, owner: "w", now: t0, leaseSeconds: 30)
        #expect(a.map(\.eventKey) == ["r1", "plain"], "r2 waits behind r1, which has the same ordering key")
        let b = try store.lease(handler: "b", limit: 10, owner: "w", now: t0, leaseSeconds: 30)
        #expect(b.map(\.eventKey) == ["r1", "plain"])
        #expect((a + b).allSatisfy { $0.payload == Array(#"{"id":"\#($0.eventKey)"}"#.utf8) })
        try store.complete(a.map(\.lease))
        #expect(try store.lease(handler: "a", limit: 10, owner: "w", now: t0, leaseSeconds: 30).map(\.eventKey) == ["r2"])
        #expect(try store.lease(handler: "b", limit: 10, owner: "w", now: t0, leaseSeconds: 30).isEmpty)
    }

    @Test(arguments: StoreKind.allCases)
    func aLeaseKeepsOthersOffUntilItExpires(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        _ = try store.admit([admission("e1")])
        _ = try store.route(limit: 10, now: t0, everyone)
        let first = try store.lease(handler: "a", limit: 10, owner: "crashed", now: t0, leaseSeconds: 30)
        #expect(first.count == 1)
        #expect(try store.lease(handler: "a", limit: 10, owner: "other", now: t0.adding(seconds: 29), leaseSeconds: 30).isEmpty)
        // Other handlers' deliveries of the same event are not held by it.
        #expect(try store.lease(handler: "b", limit: 10, owner: "other", now: t0, leaseSeconds: 30).count == 1)
        let rescued = try store.lease(handler: "a", limit: 10, owner: "other", now: t0.adding(seconds: 31), leaseSeconds: 30)
        #expect(rescued.map(\.id) == first.map(\.id))
        #expect(rescued.first?.attempt == 2)
        #expect(try store.nextDue(handlers: ["a"]) == t0.adding(seconds: 61))
        // Only the handlers asked about count: b's delivery is leased until t0+30.
        #expect(try store.nextDue(handlers: ["b"]) == t0.adding(seconds: 30))
        #expect(try store.nextDue(handlers: ["c"]) == nil, "other handlers' deliveries do not count")
    }

    /// A worker paused past its lease (a GC pause, SIGSTOP) comes back after another took the delivery over:
    /// its late completion, retry or dead letter changes nothing (River once let a rescue overwrite a done job).
    @Test(arguments: StoreKind.allCases)
    func aLateResultOfAnExpiredLeaseIsFencedOff(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        _ = try store.admit([admission("e1"), admission("e2")])
        _ = try store.route(limit: 10, now: t0) { _ in ["a"] }
        let paused = try store.lease(handler: "a", limit: 10, owner: "paused", now: t0, leaseSeconds: 30)
        #expect(paused.count == 2)
        let rescuer = try store.lease(handler: "a", limit: 10, owner: "rescuer", now: t0.adding(seconds: 31), leaseSeconds: 30)
        #expect(rescuer.map(\.id) == paused.map(\.id))
        #expect(try store.complete(paused.map(\.lease)) == 0)
        #expect(try !store.retry(paused[0].lease, at: t0, error: "late"))
        #expect(try !store.deadLetter(paused[1].lease, reason: Reason(rawValue: "handler_failed"), error: "late", now: t0))
        #expect(try store.deadLetterCount() == 0)
        #expect(try store.backlog() == ["a": 2], "the rescuer still holds both")
        // The rescuer's own results count.
        #expect(try store.retry(rescuer[0].lease, at: t0.adding(seconds: 40), error: "once more"))
        #expect(try store.complete([rescuer[1].lease]) == 1)
        // The same owner leasing again after its lease expired holds a new attempt: the old one is fenced too.
        let first = try store.lease(handler: "a", limit: 10, owner: "rescuer", now: t0.adding(seconds: 41), leaseSeconds: 1)
        let second = try store.lease(handler: "a", limit: 10, owner: "rescuer", now: t0.adding(seconds: 43), leaseSeconds: 30)
        #expect(first.map(\.id) == second.map(\.id))
        #expect(try store.complete(first.map(\.lease)) == 0)
        #expect(try store.complete(second.map(\.lease)) == 1)
        #expect(try store.queueDepth() == 0)
    }

    /// A worker whose handler runs longer than a lease renews it and keeps the delivery; a renewal of a lease
    /// that was taken over changes nothing.
    @Test(arguments: StoreKind.allCases)
    func renewedLeasesAreKeptAndStaleOnesAreNot(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        _ = try store.admit([admission("e1"), admission("e2")])
        _ = try store.route(limit: 10, now: t0) { _ in ["a"] }
        let held = try store.lease(handler: "a", limit: 1, owner: "slow", now: t0, leaseSeconds: 10)
        #expect(try store.renew(held.map(\.lease), until: t0.adding(seconds: 60)) == 1)
        #expect(try store.lease(handler: "a", limit: 10, owner: "other", now: t0.adding(seconds: 30), leaseSeconds: 10).map(\.eventKey) == ["e2"])
        let rescued = try store.lease(handler: "a", limit: 1, owner: "other", now: t0.adding(seconds: 61), leaseSeconds: 10)
        #expect(rescued.map(\.id) == held.map(\.id))
        #expect(try store.renew(held.map(\.lease), until: t0.adding(seconds: 120)) == 0)
        #expect(try store.lease(handler: "a", limit: 1, owner: "third", now: t0.adding(seconds: 72), leaseSeconds: 10).map(\.id) == held.map(\.id),
                "the stale renewal did not extend the rescuer's lease")
    }

    @Test(arguments: StoreKind.allCases)
    func orderPerOrderingKeyHoldsPerHandler(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        _ = try store.admit([admission("s1", ordering: "job-1"), admission("s2", ordering: "job-1"), admission("x", ordering: "job-2")])
        _ = try store.route(limit: 10, now: t0, everyone)
        let a = try store.lease(handler: "a", limit: 10, owner: "w", now: t0, leaseSeconds: 30)
        #expect(a.map(\.eventKey) == ["s1", "x"], "the second state of job-1 waits for the first")
        let b = try store.lease(handler: "b", limit: 10, owner: "w", now: t0, leaseSeconds: 30)
        #expect(b.map(\.eventKey) == ["s1", "x"])
        try store.complete(a.map(\.lease))
        #expect(try store.lease(handler: "a", limit: 10, owner: "w", now: t0, leaseSeconds: 30).map(\.eventKey) == ["s2"])
        // B's first state is still leased: its second waits, whatever A did.
        #expect(try store.lease(handler: "b", limit: 10, owner: "w", now: t0, leaseSeconds: 30).isEmpty)
    }

    @Test(arguments: StoreKind.allCases)
    func retriesDeadLettersAndRequeue(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        _ = try store.admit([admission("e1")])
        _ = try store.route(limit: 10, now: t0, everyone)
        let leased = try store.lease(handler: "b", limit: 10, owner: "w", now: t0, leaseSeconds: 30)
        try store.retry(leased[0].lease, at: t0.adding(seconds: 5), error: "boom")
        #expect(try store.lease(handler: "b", limit: 10, owner: "w", now: t0.adding(seconds: 4), leaseSeconds: 30).isEmpty)
        let again = try store.lease(handler: "b", limit: 10, owner: "w", now: t0.adding(seconds: 5), leaseSeconds: 30)
        #expect(again.first?.attempt == 2)
        try store.deadLetter(again[0].lease, reason: Reason(rawValue: "handler_failed"), error: "boom twice", now: t0.adding(seconds: 6))
        #expect(try store.deadLetterCount() == 1)
        let letter = try #require(try store.deadLetters(limit: 10).first)
        #expect(letter.handler == "b" && letter.eventKey == "e1" && letter.attempts == 2 && letter.lastError == "boom twice")
        #expect(letter.reason == Reason(rawValue: "handler_failed"))
        #expect(try store.backlog() == ["a": 1])
        #expect(try store.requeueDeadLetters([letter.id + 1_000], now: t0) == 0)
        #expect(try store.requeueDeadLetters(nil, now: t0.adding(seconds: 7)) == 1)
        let requeued = try store.lease(handler: "b", limit: 10, owner: "w", now: t0.adding(seconds: 7), leaseSeconds: 30)
        #expect(requeued.map(\.id) == [letter.id])
        #expect(requeued.first?.attempt == 1)
        #expect(try store.deadLetterCount() == 0)
    }

    @Test(arguments: StoreKind.allCases)
    func aPayloadThatBreaksItsSchemaIsDeadLetteredAtAdmissionAndRoutedWhenRetried(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        let results = try store.admit([admission("bad", deadLetter: (.malformedPayload, "status is missing"))])
        guard case .accepted = results[0] else { Issue.record("not accepted: \(results[0])"); return }
        let letter = try #require(try store.deadLetters(limit: 10).first)
        #expect(letter.handler == "" && letter.lastError == "status is missing")
        #expect(try store.queueDepth() == 0)
        #expect(try store.requeueDeadLetters(nil, now: t0) == 1)
        #expect(try store.route(limit: 10, now: t0, everyone) == 1)
        #expect(try store.backlog() == ["a": 1, "b": 1])
    }

    @Test(arguments: StoreKind.allCases)
    func archivePruningRemovesOldDeliveriesAndQueuedEventsAndDeadLettersKeepTheirBodies(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        let recent = t0.adding(seconds: 3 * 86_400)
        _ = try store.admit([admission("done", at: t0), admission("queued", at: t0.adding(seconds: 1)),
                             admission("dead", at: t0.adding(seconds: 2))])
        _ = try store.admit([admission("recent", at: recent)])
        _ = try store.route(limit: 10, now: t0) { _ in ["a"] }
        let leased = try store.lease(handler: "a", limit: 10, owner: "w", now: recent, leaseSeconds: 30)
        try store.complete(leased.filter { $0.eventKey == "done" || $0.eventKey == "recent" }.map(\.lease))
        let dead = try #require(leased.first { $0.eventKey == "dead" })
        try store.deadLetter(dead.lease, reason: Reason(rawValue: "handler_failed"), error: "x", now: recent)
        // Two days before recent: done, queued and dead leave the archive (a store may keep them until their whole
        // day is older than the cutoff: here it is).
        #expect(try store.pruneArchive(receivedBefore: t0.adding(seconds: 2 * 86_400)) == 3)
        #expect(try store.pruneArchive(receivedBefore: t0.adding(seconds: 2 * 86_400)) == 0)
        var left: [String] = []
        try store.forEachArchived(provider: nil, since: nil) { left.append(String(decoding: $0.body, as: UTF8.self)) }
        #expect(left == [#"{"id":"recent"}"#])
        // The queued event and the dead letter still have their bodies.
        let queued = try store.lease(handler: "a", limit: 10, owner: "w", now: recent.adding(seconds: 100), leaseSeconds: 1_000)
        #expect(queued.map(\.payload) == [Array(#"{"id":"queued"}"#.utf8)])
        #expect(try store.requeueDeadLetters(nil, now: recent) == 1)
        let requeued = try store.lease(handler: "a", limit: 10, owner: "w", now: recent.adding(seconds: 200), leaseSeconds: 30)
        #expect(requeued.map(\.payload) == [Array(#"{"id":"dead"}"#.utf8)])
    }

    @Test(arguments: StoreKind.allCases)
    func theFirstAnswerIsKept(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        #expect(try store.keptAnswer(provider: "synthflow", eventKey: "inbound:c1") == nil)
        #expect(try store.keepAnswer(provider: "synthflow", eventKey: "inbound:c1", answer: "first", now: t0) == "first")
        #expect(try store.keepAnswer(provider: "synthflow", eventKey: "inbound:c1", answer: "second", now: t0) == "first")
        #expect(try store.keptAnswer(provider: "synthflow", eventKey: "inbound:c1") == "first")
        try store.checkWritable(now: t0)
    }

    @Test(arguments: StoreKind.allCases)
    func theArchivePagesInArrivalOrderWithItsFilters(_ kind: StoreKind) throws {
        guard let (store, _) = try kind.make() else { return }
        let batch = (0..<1_100).map { index in
            admission("e\(index)", provider: index % 2 == 0 ? "sync" : "other", at: t0.adding(seconds: Double(index)))
        }
        _ = try store.admit(batch)
        var all: [Delivery] = []
        try store.forEachArchived(provider: nil, since: nil) { all.append($0) }
        #expect(all.count == 1_100)
        #expect(all.map { String(decoding: $0.body, as: UTF8.self) } == batch.map { String(decoding: $0.delivery.body, as: UTF8.self) })
        #expect(all.first?.headers["Sync-Signature"] == "t=1,v1=e0")
        #expect(all.first?.path == "/webhooks/sync")
        var other = 0
        try store.forEachArchived(provider: "other", since: t0.adding(seconds: 1_000)) { delivery in
            #expect(delivery.provider == "other")
            other += 1
        }
        #expect(other == 50)
    }

    /// Several connections (other instances, on a shared store) admit the same delivery at once: it is
    /// accepted exactly once in total, every round.
    @Test(arguments: [StoreKind.sqliteFile, .postgres])
    func concurrentAdmissionOfOneDeliveryAcceptsItOnce(_ kind: StoreKind) throws {
        guard let stores = try kind.makeShared(4) else { return }
        let accepted = Locked(0)
        var failures: [String] = []
        for round in 0..<25 {
            failures += onThreadsAtOnce(stores) { _, store in
                if case .accepted = try store.admit([admission("round-\(round)")])[0] { accepted.withLock { $0 += 1 } }
            }
        }
        #expect(failures.isEmpty)
        #expect(accepted.withLock { $0 } == 25)
        #expect(try stores[0].queueDepth() == 25)
    }

    /// Large batches (which a shared store may admit under one lock) and single deliveries from them, admitted
    /// at once by several connections: each delivery is accepted exactly once in total.
    @Test(arguments: [StoreKind.sqliteFile, .postgres])
    func concurrentLargeAndSmallBatchesAcceptEachDeliveryOnce(_ kind: StoreKind) throws {
        guard let stores = try kind.makeShared(4) else { return }
        let keys = (0..<150).map { "big-\($0)" }
        let accepted = Locked<[String: Int]>([:])
        let failures = onThreadsAtOnce(stores) { index, store in
            // Two connections admit the whole set in one batch (in opposite orders), two one by one.
            let order = index % 2 == 0 ? keys : keys.reversed()
            let batches = index < 2 ? [order] : order.map { [$0] }
            for batch in batches {
                for (key, result) in zip(batch, try store.admit(batch.map { admission($0) })) {
                    if case .accepted = result { accepted.withLock { $0[key, default: 0] += 1 } }
                }
            }
        }
        #expect(failures.isEmpty)
        #expect(accepted.withLock { $0 } == Dictionary(uniqueKeysWithValues: keys.map { ($0, 1) }))
        #expect(try stores[0].queueDepth() == keys.count)
    }
}

/// PostgreSQL only: commits that queue work wake the workers of every instance.
@Suite struct PostgresListenerTests {
    @Test func aCommitOfAnotherInstanceWakesTheListener() async throws {
        guard let (store, schema) = try StoreKind.postgres.make(), let shared = store as? PostgresEventStore else { return }
        let other = try #require(try StoreKind.postgres.make(sharing: schema)).store
        let wakes = Locked(0)
        let listener = shared.listener(logger: .silent) { wakes.withLock { $0 += 1 } }
        let shutdown = GracefulShutdown()
        let listening = Task { await listener.run(until: shutdown) }
        // It wakes once on connecting (work may have been queued before it listened).
        for _ in 0..<200 where wakes.withLock({ $0 }) == 0 { try await Task.sleep(nanoseconds: 25_000_000) }
        #expect(wakes.withLock { $0 } == 1)
        _ = try other.admit([admission("from-the-other-instance")])
        for _ in 0..<200 where wakes.withLock({ $0 }) == 1 { try await Task.sleep(nanoseconds: 25_000_000) }
        #expect(wakes.withLock { $0 } == 2, "the other instance's commit was heard")
        shutdown.request(graceSeconds: 1)
        await listening.value
    }
}
