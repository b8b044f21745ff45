import Foundation
import Testing
import TurnstileCore
import TurnstilePipeline
import TurnstileHandlers
import TurnstileSQLite

@Suite struct DispatchTests {
    @Test func typedHandlersReceiveTheirEvents() async throws {
        let harness = try Harness()
        _ = harness.process([
            try harness.signed("synthflow", #"{"status":"completed","call":{"call_id":"c1","status":"completed","duration":87}}"#),
            try harness.signed("sync", #"{"id":"gen_1","status":"COMPLETED","outputDuration":10.5}"#),
            try harness.signed("github", #"{"zen":"hi"}"#),
        ])
        let calls = Recorder<CallEvent>()
        let jobs = Recorder<GenerationJobEvent>()
        let everything = Recorder<GenericEvent>()
        var registry = HandlerRegistry()
        registry.register(calls, name: "calls", events: ["synthflow.post_call"])
        registry.register(jobs, name: "jobs", events: ["sync.*"])
        registry.register(everything, name: "all", events: ["*"])
        let stats = try await harness.dispatcher(registry).drain()
        // One delivery per (event, handler): synthflow to calls and all, sync to jobs and all, github to all.
        #expect(stats.dispatched == 5)
        #expect(calls.events.map(\.call.callID.value) == ["c1"])
        #expect(calls.events.first?.call.duration == 87)
        #expect(jobs.events.first?.status == .completed)
        #expect(jobs.events.first?.outputDuration == 10.5)
        #expect(Set(everything.contexts.map(\.eventType)) == ["synthflow.post_call", "sync.generation", "github.push"])
        #expect(try harness.store.queueDepth() == 0)
    }

    @Test func aHandlerThatFailsTwiceIsRetriedAndDoneOnce() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let flaky = Recorder<GenericEvent>(failures: 2)
        var registry = HandlerRegistry()
        registry.register(flaky, name: "flaky", events: ["*"])
        let stats = try await harness.dispatcher(registry).drain()
        #expect(flaky.contexts.map(\.attempt) == [1, 2, 3])
        #expect(stats.retried == 2)
        #expect(stats.dispatched == 1)
        #expect(stats.deadLettered == 0)
        #expect(try harness.store.queueDepth() == 0)
        #expect(try harness.store.deadLetters(limit: 10).isEmpty)
    }

    @Test func aHandlerThatAlwaysFailsIsDeadLetteredThenRetriedAfterAFix() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        var broken = HandlerRegistry()
        broken.register(Recorder<GenericEvent>(failures: -1), name: "broken", events: ["*"])
        let stats = try await harness.dispatcher(broken, maxAttempts: 3).drain()
        #expect(stats.deadLettered == 1)
        let letters = try harness.store.deadLetters(limit: 10)
        #expect(letters.count == 1)
        #expect(letters[0].reason == Dispatcher.handlerFailed)
        #expect(letters[0].attempts == 3)
        #expect(letters[0].lastError.contains("injected failure on attempt 3"))

        // The same handler, fixed: the retry re-runs it (the dead letter is its own).
        #expect(letters[0].handler == "broken")
        let fixed = Recorder<GenericEvent>()
        var registry = HandlerRegistry()
        registry.register(fixed, name: "broken", events: ["*"])
        #expect(try harness.store.requeueDeadLetters([letters[0].id], now: SystemWallClock().now()) == 1)
        let again = try await harness.dispatcher(registry).drain()
        #expect(again.dispatched == 1)
        #expect(fixed.contexts.first?.eventID == letters[0].id)
        #expect(fixed.contexts.first?.attempt == 1)
        #expect(try harness.store.deadLetters(limit: 10).isEmpty)
    }

    @Test func aPayloadOfTheWrongTypeIsDeadLetteredAtOnce() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"not":"a call"}"#)])
        var registry = HandlerRegistry()
        registry.register(Recorder<CallEvent>(), name: "calls", events: ["github.*"])
        let stats = try await harness.dispatcher(registry).drain()
        #expect(stats.deadLettered == 1)
        #expect(try harness.store.deadLetters(limit: 1).first?.reason == Dispatcher.handlerTypeMismatch)
    }

    @Test func anExpiredLeaseIsDeliveredAgain() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        // A worker routes the event to handler r, leases it and dies without finishing.
        #expect(try harness.store.route(limit: 10, now: SystemWallClock().now()) { _ in ["r"] } == 1)
        let crashed = try harness.store.lease(handler: "r", limit: 10, owner: "crashed", now: SystemWallClock().now(), leaseSeconds: 30)
        #expect(crashed.count == 1)
        #expect(try harness.store.lease(handler: "r", limit: 10, owner: "other", now: SystemWallClock().now(), leaseSeconds: 30).isEmpty)
        let later = FixedWallClock(SystemWallClock().now().adding(seconds: 31))
        let recorder = Recorder<GenericEvent>()
        var registry = HandlerRegistry()
        registry.register(recorder, name: "r", events: ["*"])
        let stats = try await harness.dispatcher(registry, clock: later).drain()
        #expect(stats.dispatched == 1)
        #expect(recorder.contexts.first?.attempt == 2)
    }

    @Test func statesOfOneJobAreDispatchedInOrderOneAtATime() async throws {
        let harness = try Harness()
        var deliveries: [Delivery] = []
        for job in 0..<4 {
            for status in ["PENDING", "PROCESSING", "COMPLETED"] {
                deliveries.append(try harness.signed("sync", #"{"id":"job\#(job)","status":"\#(status)"}"#))
            }
        }
        _ = harness.process(deliveries)
        let recorder = Recorder<GenerationJobEvent>(delay: 0.002)
        var registry = HandlerRegistry()
        registry.register(recorder, name: "r", events: ["sync.*"])
        _ = try await harness.dispatcher(registry).drain()
        #expect(recorder.events.count == 12)
        #expect(recorder.peakPerOrderingKey == 1)
        for job in 0..<4 {
            let states = recorder.events.filter { $0.id.value == "job\(job)" }.map(\.status.rawValue)
            #expect(states == ["PENDING", "PROCESSING", "COMPLETED"])
        }
    }

    @Test func reprocessedEventsAreFlagged() async throws {
        let harness = try Harness()
        let delivery = try harness.signed("github", #"{"a":1}"#)
        _ = harness.process([delivery])
        _ = harness.process([delivery], reprocess: true)
        let recorder = Recorder<GenericEvent>()
        var registry = HandlerRegistry()
        registry.register(recorder, name: "r", events: ["*"])
        _ = try await harness.dispatcher(registry).drain()
        // The original and its re-processed copy share an identity but no ordering: either may run first.
        #expect(recorder.contexts.map(\.isReprocess).sorted { !$0 && $1 } == [false, true])
    }

    @Test func jsonlHandlerWritesOneLinePerEvent() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#), try harness.signed("github", "not json")])
        let path = harness.folder + "/events.jsonl"
        let registry = try HandlerRegistry.configured(by: [HandlerConfig(name: "all", kind: .jsonl(path: path), events: ["*"])])
        _ = try await harness.dispatcher(registry).drain()
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2)
        let parsed = try lines.map { try JSONParser.parse(String($0)) }
        #expect(parsed.contains { $0["payload"]?["a"] == .number(JSONNumber(text: "1")) })
        #expect(parsed.contains { $0["body"]?.stringValue == "not json" && $0["payload"] == .null })
        #expect(parsed.allSatisfy { $0["handler"]?.stringValue == "all" && $0["event_type"]?.stringValue == "github.push" })
    }

    /// A full sink used to dead-letter its events after `max_attempts`; they were never retried when space
    /// came back. The long-running dispatcher now retries them for as long as the sink is down.
    @Test func aFullSinkIsRetriedAndNeverDeadLettered() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let registry = try HandlerRegistry.configured(by: [HandlerConfig(name: "full-disk", kind: .jsonl(path: "/dev/full"), events: ["*"])])
        let attempts = Counter()
        let stats = await harness.dispatcher(registry, maxAttempts: 2).run(idleSeconds: 0.001, shouldStop: { attempts.value >= 6 },
                                                                          progress: { _ in attempts.increment() })
        #expect(stats.retried >= 5)
        #expect(stats.deadLettered == 0)
        #expect(try harness.store.deadLetterCount() == 0)
        #expect(try harness.store.queueDepth() == 1)
    }

    @Test func aBatchRunDeadLettersAnUnavailableSinkAsSuch() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let registry = try HandlerRegistry.configured(by: [HandlerConfig(name: "full-disk", kind: .jsonl(path: "/dev/full"), events: ["*"])])
        let stats = try await harness.dispatcher(registry, maxAttempts: 2).drain()
        #expect(stats.deadLettered == 1)
        let letter = try #require(try harness.store.deadLetters(limit: 1).first)
        #expect(letter.reason == Dispatcher.sinkUnavailable)
        #expect(letter.lastError.contains("No space left on device"))
    }

    @Test func eventsOfAnUnavailableSinkGoThroughOnceItWorksAgain() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let sink = FlakySink(failures: 5)
        var registry = HandlerRegistry()
        registry.register(sink, name: "flaky", events: ["*"])
        let stats = await harness.dispatcher(registry, maxAttempts: 2).run(idleSeconds: 0.001, shouldStop: { sink.calls >= 6 })
        #expect(stats.dispatched == 1)
        #expect(stats.deadLettered == 0)
        #expect(sink.calls == 6)
    }

    /// The dispatcher's long-running form outlives a store that fails (locked, full): it keeps trying and
    /// dispatches once the store answers.
    @Test func runSurvivesStoreErrorsAndResumes() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let store = SwitchableStore(harness.store)
        store.failing = true
        let recorder = Recorder<GenericEvent>()
        var registry = HandlerRegistry()
        registry.register(recorder, name: "r", events: ["*"])
        let log = InMemoryLogHandler()
        var settings = DispatchSettings()
        settings.backoffBaseSeconds = 0.001
        let dispatcher = Dispatcher(store: store, registry: registry, settings: settings, logger: Logger(handler: log))
        let done = Counter()
        let running = Task { await dispatcher.run(idleSeconds: 0.01, shouldStop: { done.value > 0 }) }
        while store.failedCalls < 3 { try await Task.sleep(nanoseconds: 5_000_000) }
        #expect(recorder.events.isEmpty)
        store.failing = false
        while recorder.events.isEmpty { try await Task.sleep(nanoseconds: 5_000_000) }
        done.increment()
        _ = await running.value
        #expect(log.entries.contains { $0.message == "dispatch failed" })
        #expect(log.entries.contains { $0.message == "dispatch recovered" })
        // One line for the episode, not one per failed call.
        #expect(log.entries.filter { $0.message.hasPrefix("dispatch") }.count == 2)
    }

    @Test func patterns() {
        #expect(HandlerRegistry.matches("*", "sync.generation"))
        #expect(HandlerRegistry.matches("sync.*", "sync.generation"))
        #expect(!HandlerRegistry.matches("sync.*", "synthflow.post_call"))
        #expect(HandlerRegistry.matches("stripe.customer.*", "stripe.customer.created"))
        #expect(HandlerRegistry.matches("synthflow.post_call", "synthflow.post_call"))
        #expect(!HandlerRegistry.matches("synthflow.post_call", "synthflow.inbound_call"))
    }

    @Test func backoffGrowsAndIsCapped() throws {
        let harness = try Harness()
        var settings = DispatchSettings()
        settings.backoffBaseSeconds = 1
        settings.backoffMaxSeconds = 10
        let dispatcher = Dispatcher(store: harness.store, registry: HandlerRegistry(), settings: settings)
        for _ in 0..<20 {
            #expect((0.5...1).contains(dispatcher.backoff(attempt: 1)))
            #expect((2...4).contains(dispatcher.backoff(attempt: 3)))
            #expect((5...10).contains(dispatcher.backoff(attempt: 30)))
        }
    }
}

/// The jsonl handler on a disk that fills up part-way through a batch (a 3 MiB tmpfs, so root only).
@Suite(.serialized) struct JSONLDurabilityTests {
    private static func event(_ id: Int64, bytes: Int) -> (GenericEvent, DispatchContext) {
        let body = Array(("{\"pad\":\"" + String(repeating: "x", count: bytes) + "\"}").utf8)
        let queued = QueuedEvent(id: id, provider: "github", eventType: "github.push", eventKey: "k\(id)", payload: body,
                                 receivedAt: signedAt, attempt: 1, isReprocess: false)
        let context = DispatchContext(eventID: id, provider: "github", eventType: "github.push", eventKey: "k\(id)",
                                      receivedAt: signedAt, attempt: 1, isReprocess: false, handlerName: "sink")
        return (GenericEvent(queued: queued), context)
    }

    /// A process killed during its write leaves a torn last line (seen in the SIGKILL attack test as a line
    /// that did not parse): the next handler on the file cuts it away before it appends.
    @Test func aTornLastLineLeftByAKilledWriterIsCutAwayAtOpen() async throws {
        let path = try temporaryFolder() + "/events.jsonl"
        for (torn, kept) in [("{\"event_id\":7,\"provi", "{\"event_id\":6}\n"), (String(repeating: "x", count: 9_000), "")] {
            try (kept + torn).write(toFile: path, atomically: false, encoding: .utf8)
            let handler = try JSONLHandler(path: path)
            let (event, context) = Self.event(8, bytes: 100)
            try await handler.handle(event, context: context)
            try await handler.commit()
            let lines = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path))).split(separator: 0x0a)
            #expect(try lines.map { try JSONParser.parse(Array($0))["event_id"]?.numberValue?.text } == (kept.isEmpty ? ["8"] : ["6", "8"]))
        }
    }

    @Test(.enabled(if: getuid() == 0, "mounting a small tmpfs needs root; CI runs as root"))
    func aWriteThatRunsOutOfSpaceIsCutBackAndFailsOnlyItsEvents() async throws {
        let mount = try temporaryFolder()
        guard Process.run("/bin/mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", mount]) == 0 else {
            Issue.record("mount failed")
            return
        }
        defer { _ = Process.run("/bin/umount", [mount]) }
        let path = mount + "/events.jsonl"
        // Something else on the disk, which an operator removes later to make room.
        let filler = mount + "/filler"
        try Data(count: 1_200_000).write(to: URL(fileURLWithPath: filler))
        let handler = try JSONLHandler(path: path)
        // Event 1 is committed on its own; event 2 fills the handler's buffer and is written during the
        // batch; event 3's write runs out of space part-way.
        let (first, firstContext) = Self.event(1, bytes: 100)
        try await handler.handle(first, context: firstContext)
        try await handler.commit()
        let (second, secondContext) = Self.event(2, bytes: 1_100_000)
        try await handler.handle(second, context: secondContext)
        let (third, thirdContext) = Self.event(3, bytes: 1_100_000)
        try await handler.handle(third, context: thirdContext)
        do {
            try await handler.commit()
            Issue.record("the commit succeeded on a full disk")
        } catch let error as PartialCommitError {
            #expect(error.failedEventIDs == [3])
            #expect(String(describing: error).contains("No space left on device"))
        }
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(bytes.last == 0x0a, "no torn line is left")
        let lines = bytes.split(separator: 0x0a)
        #expect(lines.count == 2)
        #expect(try lines.map { try JSONParser.parse(Array($0))["event_id"]?.numberValue?.text } == ["1", "2"])
        // Space comes back: the failed event is written by its retry, after the two lines kept.
        try FileManager.default.removeItem(atPath: filler)
        try await handler.handle(third, context: thirdContext)
        try await handler.commit()
        let after = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path))).split(separator: 0x0a)
        #expect(try after.map { try JSONParser.parse(Array($0))["event_id"]?.numberValue?.text } == ["1", "2", "3"])
    }
}

extension Process {
    /// Runs `executable` with `arguments` and returns its exit status.
    static func run(_ executable: String, _ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        do { try process.run() } catch { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }
}
