import TurnstileSync
import Foundation
import Synchronization
import Testing
import TurnstileCore
import TurnstileIngest
import TurnstilePipeline
import TurnstileSQLite

@Suite struct PipelineTests {
    @Test func acceptedThenDuplicateBySignatureAndByEvent() throws {
        let harness = try Harness()
        let body = #"{"id":"gen_1","status":"COMPLETED"}"#
        let first = try harness.signed("sync", body)
        let retry = try harness.signed("sync", body, at: signedAt.adding(seconds: 40))
        let verdicts = harness.process([first, first, retry])
        #expect(verdicts.map(\.outcome) == [.accepted, .duplicate, .duplicate])
        #expect(verdicts.map(\.reason) == [nil, .seenSignature, .seenEvent])
        #expect(verdicts[0].eventKey == "generation:gen_1:COMPLETED")
        #expect(try harness.store.queueDepth() == 1)
        // Across transactions too.
        #expect(harness.process([retry]).first?.reason == .seenSignature)
    }

    @Test func largeBatchesAreVerifiedInParallelAndAnsweredInInputOrder() throws {
        let harness = try Harness()
        var deliveries: [Delivery] = []
        for index in 0..<300 {
            var delivery = try harness.signed("github", #"{"ref":"refs/heads/main","n":\#(index)}"#, id: "delivery-\(index)")
            if index % 3 == 1 { delivery.body[2] = UInt8(ascii: "R") }   // tampered: "ref" becomes "Ref"
            deliveries.append(delivery)
        }
        let verdicts = harness.process(deliveries)
        #expect(verdicts.count == 300)
        for (index, verdict) in verdicts.enumerated() {
            #expect(verdict.outcome == (index % 3 == 1 ? .rejected : .accepted), "delivery \(index)")
            if index % 3 != 1 { #expect(verdict.eventKey == "delivery-\(index)", "delivery \(index)") }
        }
        #expect(try harness.store.queueDepth() == 200)
    }

    @Test func nextStateOfTheSameJobIsANewEvent() throws {
        let harness = try Harness()
        let verdicts = harness.process([try harness.signed("sync", #"{"id":"gen_2","status":"PROCESSING"}"#),
                                        try harness.signed("sync", #"{"id":"gen_2","status":"COMPLETED"}"#)])
        #expect(verdicts.map(\.outcome) == [.accepted, .accepted])
    }

    @Test func synthflowInboundAndPostCallForOneCallEachPassOnce() throws {
        let harness = try Harness()
        let post = try harness.signed("synthflow", #"{"status":"completed","call":{"call_id":"c-77","status":"completed"}}"#)
        let inbound = try harness.signed("synthflow", #"{"event":"call_inbound","call_id":"c-77","call_inbound":{"from_number":"+15555550123"}}"#)
        #expect(post.headers["Synthflow-Signature"] == inbound.headers["Synthflow-Signature"])
        let verdicts = harness.process([post, inbound, post, inbound])
        #expect(verdicts.map(\.outcome) == [.accepted, .accepted, .duplicate, .duplicate])
        #expect(verdicts.map(\.eventType) == ["synthflow.post_call", "synthflow.inbound_call", "synthflow.post_call", "synthflow.inbound_call"])
    }

    @Test func rejectionsNeverReachTheStore() throws {
        let harness = try Harness()
        var tampered = try harness.signed("github", #"{"zen":"x"}"#)
        tampered.body = Array(#"{"zen":"y"}"#.utf8)
        var stale = try harness.signed("stripe", #"{"id":"evt_1","type":"a"}"#)
        stale.receivedAt = signedAt.adding(seconds: 301)
        let unknown = Delivery(provider: "nope", receivedAt: signedAt, headers: HeaderFields(), body: [])
        let verdicts = harness.process([tampered, stale, unknown])
        #expect(verdicts.map(\.reason) == [.invalidSignature, .staleTimestamp, .unknownProvider])
        #expect(try harness.store.queueDepth() == 0)
        var exported = 0
        try harness.store.forEachArchived(provider: nil, since: nil) { _ in exported += 1 }
        #expect(exported == 0)
    }

    @Test func schemaViolationIsAcceptedAndDeadLettered() throws {
        let harness = try Harness()
        let verdict = harness.process([try harness.signed("sync", #"{"id":"g9","status":"COMPLETED","outputDuration":"long"}"#)])[0]
        #expect(verdict.outcome == .accepted)
        #expect(verdict.deadLettered)
        #expect(try harness.store.queueDepth() == 0)
        let letters = try harness.store.deadLetters(limit: 10)
        #expect(letters.count == 1)
        #expect(letters.first?.reason == .schemaViolation)
        #expect(letters.first?.lastError.contains("outputDuration") == true)
    }

    @Test func fiftyConcurrentIdenticalDeliveriesGiveOneAccepted() async throws {
        let harness = try Harness()
        let delivery = try harness.signed("standard-webhooks", #"{"type":"invoice.paid"}"#, id: "msg_concurrent")
        // Several connections to the same file, as several receivers would have.
        let stores = try (0..<5).map { _ in try SQLiteEventStore(path: harness.folder + "/t.db") }
        let pipelines = try stores.map {
            try Pipeline(config: harness.config, ingest: harness.ingest, store: $0, catalog: try SchemaCatalog.shared())
        }
        let outcomes = await withTaskGroup(of: DeliveryVerdict.self) { group in
            for index in 0..<50 {
                group.addTask { pipelines[index % pipelines.count].process([delivery])[0] }
            }
            return await group.reduce(into: [DeliveryVerdict]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0.outcome == .accepted }.count == 1)
        #expect(outcomes.filter { $0.outcome == .duplicate }.count == 49)
        #expect(try harness.store.queueDepth() == 1)
    }

    @Test func storeFailureRejectsTheBatchAsStoreUnavailable() throws {
        let harness = try Harness()
        let broken = try Pipeline(config: harness.config, ingest: harness.ingest, store: FailingStore(), catalog: try SchemaCatalog.shared())
        let verdicts = broken.process([try harness.signed("github", #"{"a":1}"#), try harness.signed("github", #"{"a":2}"#)])
        #expect(verdicts.allSatisfy { $0.outcome == .rejected && $0.reason == .storeUnavailable })
    }

    @Test func reprocessQueuesSeenEventsAgain() throws {
        let harness = try Harness()
        let delivery = try harness.signed("github", #"{"a":1}"#)
        _ = harness.process([delivery])
        let again = harness.process([delivery], reprocess: true)[0]
        #expect(again.outcome == .duplicate)
        #expect(again.eventID != nil)
        #expect(try harness.store.queueDepth() == 2)
    }

    @Test func expiredNoncesArePrunedAndNoLongerBlock() throws {
        let week = 604_800.0
        let harness = try Harness(retention: Int(week))
        let delivery = try harness.signed("github", #"{"a":1}"#)
        _ = harness.process([delivery])
        #expect(try harness.store.pruneNonces(now: signedAt.adding(seconds: 60)) == 0)
        #expect(try harness.store.pruneNonces(now: signedAt.adding(seconds: week + 3600)) == 2)
        #expect(harness.process([delivery])[0].outcome == .accepted)
    }

    @Test func signatureNoncesOfTimestampedSchemesExpireWithTheirWindow() throws {
        let harness = try Harness(retention: 604_800)
        _ = harness.process([try harness.signed("sync", #"{"id":"g","status":"COMPLETED"}"#)])
        // The signature nonce lives until t + tolerance (300 s); the event nonce the full retention.
        #expect(try harness.store.pruneNonces(now: signedAt.adding(seconds: 302)) == 1)
        #expect(try harness.store.pruneNonces(now: signedAt.adding(seconds: 604_802)) == 1)
    }

    @Test func archiveKeepsRawBytesAndHeaders() throws {
        let harness = try Harness()
        let delivery = try harness.signed("github", "{\"odd\":\"bytes\\u00e9\" }")
        _ = harness.process([delivery])
        var archived: [Delivery] = []
        try harness.store.forEachArchived(provider: "github", since: nil) { archived.append($0) }
        #expect(archived.count == 1)
        #expect(archived[0].body == delivery.body)
        #expect(Array(archived[0].headers.map(\.name)) == Array(delivery.headers.map(\.name)))
        #expect(archived[0].receivedAt == delivery.receivedAt)
        var none = 0
        try harness.store.forEachArchived(provider: "sync", since: nil) { _ in none += 1 }
        try harness.store.forEachArchived(provider: nil, since: signedAt.adding(seconds: 3600)) { _ in none += 1 }
        #expect(none == 0)
    }

    @Test func storeUsesWALAndFullSync() throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        #expect(FileManager.default.fileExists(atPath: harness.folder + "/t.db-wal"))
        // Reopening runs no migration twice.
        _ = try SQLiteEventStore(path: harness.folder + "/t.db")
    }
}

/// A store whose every write fails, as a full or vanished disk would.
struct FailingStore: EventStore {
    func admit(_ batch: [Admission], now: Instant) throws(StoreError) -> [AdmissionResult] { throw StoreError(.unavailable, "disk I/O error") }
    func route(limit: Int, now: Instant, _ route: (RoutableEvent) -> [String]) throws(StoreError) -> Int { throw StoreError(.unavailable, "x") }
    func lease(handler: String, limit: Int, owner: String, now: Instant, leaseSeconds: Double) throws(StoreError) -> [QueuedEvent] { throw StoreError(.unavailable, "x") }
    func backlog() throws(StoreError) -> [String: Int] { throw StoreError(.unavailable, "x") }
    func complete(_ leases: [Lease]) throws(StoreError) -> Int { throw StoreError(.unavailable, "x") }
    func renew(_ leases: [Lease], until: Instant) throws(StoreError) -> Int { throw StoreError(.unavailable, "x") }
    func retry(_ lease: Lease, at: Instant, error: String) throws(StoreError) -> Bool { throw StoreError(.unavailable, "x") }
    func deadLetter(_ lease: Lease, reason: Reason, error: String, now: Instant) throws(StoreError) -> Bool { throw StoreError(.unavailable, "x") }
    func nextDue(handlers: [String]) throws(StoreError) -> Instant? { throw StoreError(.unavailable, "x") }
    func queueDepth() throws(StoreError) -> Int { throw StoreError(.unavailable, "x") }
    func deadLetters(limit: Int) throws(StoreError) -> [DeadLetter] { throw StoreError(.unavailable, "x") }
    func deadLetterCount() throws(StoreError) -> Int { throw StoreError(.unavailable, "x") }
    func keepAnswer(provider: String, eventKey: String, answer: String, now: Instant) throws(StoreError) -> String { throw StoreError(.unavailable, "x") }
    func keptAnswer(provider: String, eventKey: String) throws(StoreError) -> String? { throw StoreError(.unavailable, "x") }
    func requeueDeadLetters(_ ids: [Int64]?, now: Instant) throws(StoreError) -> Int { throw StoreError(.unavailable, "x") }
    func checkWritable(now: Instant) throws(StoreError) { throw StoreError(.unavailable, "disk I/O error") }
    func pruneNonces(now: Instant) throws(StoreError) -> Int { throw StoreError(.unavailable, "x") }
    func pruneArchive(receivedBefore cutoff: Instant) throws(StoreError) -> Int { throw StoreError(.unavailable, "x") }
    func forEachArchived(provider: String?, since: Instant?, _ body: (Delivery) throws -> Void) throws { throw StoreError(.unavailable, "x") }
}

/// The group-commit writer through its completion API, as `serve` uses it.
@Suite struct GroupCommitterTests {
    @Test func concurrentSubmissionsAreEachAnsweredOnceAfterTheirCommit() async throws {
        let harness = try Harness()
        let committer = GroupCommitter(pipeline: harness.pipeline)
        let verdicts = await withTaskGroup(of: DeliveryVerdict.self) { group in
            for index in 0..<200 {
                let delivery = try! harness.signed("github", #"{"n":\#(index % 100)}"#, id: "d-\(index)")
                group.addTask { await committer.submit(delivery) }
            }
            return await group.reduce(into: [DeliveryVerdict]()) { $0.append($1) }
        }
        committer.stop()
        // Every second delivery repeats an earlier body, so its signature was seen (whichever came first).
        #expect(verdicts.count == 200)
        #expect(verdicts.filter { $0.outcome == .accepted }.count == 100)
        #expect(verdicts.filter { $0.reason == .seenSignature }.count == 100)
        // Answered after the commit: every accepted event is in the store by now.
        #expect(try harness.store.queueDepth() == 100)
    }

    @Test func aRejectionIsAnsweredOnTheCallingThreadBeforeSubmitReturns() throws {
        let harness = try Harness()
        let committer = GroupCommitter(pipeline: harness.pipeline)
        defer { committer.stop() }
        var tampered = try harness.signed("github", #"{"a":1}"#)
        tampered.body = Array(#"{"a":2}"#.utf8)
        let answered = Locked<DeliveryVerdict?>(nil)
        committer.submit(tampered) { verdict in answered.withLock { $0 = verdict } }
        let verdict = answered.withLock { $0 }
        #expect(verdict?.outcome == .rejected)
        #expect(verdict?.reason == .invalidSignature)
    }

    @Test func afterStopADeliveryIsRefusedAsShuttingDown() async throws {
        let harness = try Harness()
        let committer = GroupCommitter(pipeline: harness.pipeline)
        committer.stop()
        let verdict = await committer.submit(try harness.signed("github", #"{"late":true}"#))
        #expect(verdict.outcome == .rejected)
        #expect(verdict.reason == .storeUnavailable)
        #expect(try harness.store.queueDepth() == 0)
    }
}

/// Checkpoints on their own thread (as `serve` runs them): the WAL stays bounded and nothing is lost.
@Suite struct WALCheckpointerTests {
    @Test func theWALStaysBoundedAndEveryEventSurvivesReopening() throws {
        let harness = try Harness()
        let checkpointer = try WALCheckpointer(store: harness.store, thresholdFrames: 200)
        checkpointer.start()
        let padding = String(repeating: "x", count: 1000)
        for round in 0..<100 {
            let batch = try (0..<40).map { index in
                try harness.signed("github", #"{"r":\#(round),"i":\#(index),"pad":"\#(padding)"}"#, id: "d-\(round)-\(index)")
            }
            #expect(harness.process(batch).allSatisfy { $0.outcome == .accepted })
            usleep(2_000)  // Deliveries arrive with gaps, as a receiver's do.
        }
        checkpointer.stop()
        // The store no longer checkpoints in its commits: 4,000 events of 1 KB would leave about 12,000
        // frames (48 MB) in the WAL if the checkpointer did not copy and reset it.
        let wal = try FileManager.default.attributesOfItem(atPath: harness.folder + "/t.db-wal")[.size] as? Int ?? 0
        #expect(wal < 16 * 1024 * 1024, "WAL is \(wal) bytes")
        let reopened = try SQLiteEventStore(path: harness.folder + "/t.db")
        #expect(try reopened.queueDepth() == 4_000)
    }
}
