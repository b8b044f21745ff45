import Foundation
import Testing
import TurnstileCore
import TurnstilePipeline
import TurnstileSQLite
import TurnstileSync
import TurnstileTesting

/// A handler that fails while `failing` is set.
final class Switch: EventHandler, Sendable {
    private let state = Locked<(failing: Bool, calls: [String])>((true, []))
    init(failing: Bool) { state.withLock { $0.failing = failing } }
    var failing: Bool {
        get { state.withLock { $0.failing } }
        set { state.withLock { $0.failing = newValue } }
    }
    var calls: [String] { state.withLock { $0.calls } }

    func handle(_ event: GenericEvent, context: DispatchContext) async throws {
        let fail = state.withLock { state -> Bool in
            state.calls.append(event.key)
            return state.failing
        }
        if fail { throw TestFailure(attempt: context.attempt) }
    }
}

/// Per-handler delivery state, limits and breakers, driven by a manual clock: every round is one
/// `runDue()`, and time moves only when the test moves it.
@Suite struct PerHandlerTests {
    func dispatcher(_ harness: Harness, _ registry: HandlerRegistry, clock: ManualClock, maxAttempts: Int = 5) -> Dispatcher {
        var settings = DispatchSettings()
        settings.maxAttempts = maxAttempts
        settings.backoffBaseSeconds = 0.5
        settings.backoffMaxSeconds = 0.5
        return Dispatcher(store: harness.store, registry: registry, settings: settings, clock: clock)
    }

    @Test func aFailingHandlerNeitherReRunsNorHoldsUpTheOthers() async throws {
        let harness = try Harness()
        let clock = ManualClock(signedAt.adding(seconds: 10))
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let a = Recorder<GenericEvent>()
        let b = Recorder<GenericEvent>(failures: 2)
        var registry = HandlerRegistry()
        registry.register(a, name: "a", events: ["*"])
        registry.register(b, name: "b", events: ["*"])
        let dispatcher = dispatcher(harness, registry, clock: clock)

        let first = try await dispatcher.runDue()
        // A is done in the first round, while B has just failed.
        #expect(a.contexts.count == 1)
        #expect(b.contexts.count == 1)
        #expect(first.dispatched == 1 && first.retried == 1)
        #expect(try harness.store.backlog() == ["b": 1])
        // Nothing is due until B's backoff has passed.
        #expect(try await dispatcher.runDue() == Dispatcher.Stats())
        clock.advance(by: 1)
        _ = try await dispatcher.runDue()
        clock.advance(by: 1)
        let last = try await dispatcher.runDue()
        #expect(last.dispatched == 1)
        #expect(a.contexts.map(\.attempt) == [1])
        #expect(b.contexts.map(\.attempt) == [1, 2, 3])
        #expect(try harness.store.queueDepth() == 0)
    }

    @Test func orderPerOrderingKeyHoldsPerHandler() async throws {
        let harness = try Harness()
        let clock = ManualClock(signedAt.adding(seconds: 10))
        // Two states of one Sync job: one ordering key.
        _ = harness.process([
            try harness.signed("sync", #"{"id":"gen_1","status":"PROCESSING"}"#),
            try harness.signed("sync", #"{"id":"gen_1","status":"COMPLETED"}"#, at: signedAt.adding(seconds: 1)),
        ])
        let a = Switch(failing: false)
        let b = Switch(failing: true)
        var registry = HandlerRegistry()
        registry.register(a, name: "a", events: ["*"])
        registry.register(b, name: "b", events: ["*"])
        let dispatcher = dispatcher(harness, registry, clock: clock, maxAttempts: 100)
        for _ in 0..<3 {
            _ = try await dispatcher.runDue()
            clock.advance(by: 1)
        }
        // A has both states, in order, while B is still stuck on the first; B never saw the second.
        #expect(a.calls.count == 2)
        #expect(a.calls[0].hasSuffix("PROCESSING") && a.calls[1].hasSuffix("COMPLETED"))
        #expect(b.calls.count == 3 && b.calls.allSatisfy { $0.hasSuffix("PROCESSING") })
        b.failing = false
        _ = try await dispatcher.runDue()
        clock.advance(by: 1)
        _ = try await dispatcher.runDue()
        #expect(b.calls.suffix(2).map { String($0.suffix(9)) } == ["ROCESSING", "COMPLETED"])
        #expect(try harness.store.queueDepth() == 0)
    }

    @Test func theRateLimitSpacesStartsByTheClock() async throws {
        let harness = try Harness()
        let clock = ManualClock(signedAt.adding(seconds: 10))
        _ = harness.process((0..<5).map { try! harness.signed("github", #"{"n":\#($0)}"#) })
        let limited = Recorder<GenericEvent>()
        var registry = HandlerRegistry()
        registry.register(limited, name: "limited", events: ["*"], limits: HandlerLimits(ratePerSecond: 2, burst: 2))
        let dispatcher = dispatcher(harness, registry, clock: clock)
        #expect(try await dispatcher.runDue().dispatched == 2)
        #expect(try await dispatcher.runDue().dispatched == 0)
        clock.advance(by: 0.5)
        #expect(try await dispatcher.runDue().dispatched == 1)
        clock.advance(by: 0.25)
        #expect(try await dispatcher.runDue().dispatched == 0)
        clock.advance(by: 10)
        // The bucket holds at most its burst, however long it was idle.
        #expect(try await dispatcher.runDue().dispatched == 2)
        #expect(limited.contexts.count == 5)
    }

    @Test func theBreakerOpensAfterARunOfFailuresKeepsEventsQueuedAndProbesAfterTheCoolDown() async throws {
        let harness = try Harness()
        let clock = ManualClock(signedAt.adding(seconds: 10))
        _ = harness.process((0..<5).map { try! harness.signed("github", #"{"n":\#($0)}"#) })
        let crm = Switch(failing: true)
        var registry = HandlerRegistry()
        registry.register(crm, name: "crm", events: ["*"],
                          limits: HandlerLimits(concurrency: 1, breakerFailures: 3, breakerCooldownSeconds: 10))
        // Two attempts only: without the breaker, every event would be dead-lettered by the second round.
        let dispatcher = dispatcher(harness, registry, clock: clock, maxAttempts: 2)
        _ = try await dispatcher.runDue()
        #expect(crm.calls.count == 5)
        #expect(dispatcher.breakerStates["crm"] == 1)
        for _ in 0..<3 {
            clock.advance(by: 3)
            #expect(try await dispatcher.runDue() == Dispatcher.Stats(), "no call while the breaker is open")
        }
        #expect(crm.calls.count == 5)
        // After the cool-down one probe runs; it fails, so the breaker opens again.
        clock.advance(by: 2)
        _ = try await dispatcher.runDue()
        #expect(crm.calls.count == 6)
        #expect(dispatcher.breakerStates["crm"] == 1)
        #expect(try harness.store.deadLetterCount() == 0, "nothing is dead-lettered for it while the breaker is open")
        // The downstream recovers: the next probe closes the breaker, and the rest follow.
        crm.failing = false
        clock.advance(by: 10)
        _ = try await dispatcher.runDue()
        #expect(dispatcher.breakerStates["crm"] == 0)
        _ = try await dispatcher.runDue()
        #expect(try harness.store.queueDepth() == 0)
        #expect(try harness.store.deadLetterCount() == 0)
    }

    @Test func concurrencyIsPerHandler() async throws {
        let harness = try Harness()
        _ = harness.process((0..<8).map { try! harness.signed("github", #"{"n":\#($0)}"#) })
        let slow = Peak()
        let fast = Peak()
        var registry = HandlerRegistry()
        registry.register(slow, name: "slow", events: ["*"], limits: HandlerLimits(concurrency: 1))
        registry.register(fast, name: "fast", events: ["*"], limits: HandlerLimits(concurrency: 4))
        _ = try await harness.dispatcher(registry).drain()
        #expect(slow.peak == 1)
        #expect(fast.peak > 1 && fast.peak <= 4)
    }

    @Test func filtersSelectEventsByTheirPayload() async throws {
        let harness = try Harness()
        _ = harness.process([
            try harness.signed("sync", #"{"id":"gen_1","status":"FAILED","error":"boom"}"#),
            try harness.signed("sync", #"{"id":"gen_2","status":"COMPLETED"}"#),
            try harness.signed("sync", #"{"id":"gen_3","status":"REJECTED"}"#),
        ])
        let failures = Recorder<GenericEvent>()
        let withError = Recorder<GenericEvent>()
        var registry = HandlerRegistry()
        let statusPath = try JSONPath("status")
        registry.register(failures, name: "failures", events: ["sync.*"],
                          filter: PayloadFilter([.init(path: statusPath, test: .isIn([.string("FAILED"), .string("REJECTED")]))]))
        registry.register(withError, name: "with-error", events: ["*"],
                          filter: PayloadFilter([.init(path: try JSONPath("error"), test: .exists(true)),
                                                 .init(path: statusPath, test: .equals(.string("FAILED")))]))
        _ = try await harness.dispatcher(registry).drain()
        #expect(Set(failures.events.compactMap { $0.payload?["id"]?.stringValue }) == ["gen_1", "gen_3"])
        #expect(withError.events.compactMap { $0.payload?["id"]?.stringValue } == ["gen_1"])
    }

    @Test func predicatesAreCheckedAtLoadWithTheKeyPath() throws {
        func error(_ filter: String) -> InputError? {
            do { _ = try PayloadFilter.read(try JSONParser.parse(filter), field: "handlers[0].filter"); return nil } catch { return error as? InputError }
        }
        #expect(error(#"[{"path":"a..b","equals":1}]"#)?.field == "handlers[0].filter[0].path")
        #expect(error(#"[{"path":"a","equals":1},{"path":"tags[x]","exists":true}]"#)?.field == "handlers[0].filter[1].path")
        #expect(error(#"[{"path":"a","equals":1,"in":[1]}]"#)?.field == "handlers[0].filter[0]")
        #expect(error(#"[{"path":"a","in":[]}]"#)?.field == "handlers[0].filter[0].in")
        #expect(error(#"[{"path":"a","exists":"yes"}]"#)?.field == "handlers[0].filter[0].exists")
        #expect(error(#"[{"path":"a","matches":"x"}]"#)?.field == "handlers[0].filter[0]")
        #expect(error(#"{"path":"a"}"#)?.field == "handlers[0].filter")
        let filter = try PayloadFilter.read(try JSONParser.parse(#"[{"path":"call.tags[1]","equals":"vip"},{"path":"n","in":[1,2]}]"#), field: "f")
        #expect(filter.passes(try JSONParser.parse(#"{"call":{"tags":["a","vip"]},"n":2.0}"#)))
        #expect(!filter.passes(try JSONParser.parse(#"{"call":{"tags":["vip"]},"n":2}"#)))
        #expect(!filter.passes(nil), "a body that is not JSON passes no filter")
    }
}

/// Records the most calls that ran at once.
final class Peak: EventHandler, Sendable {
    private let state = Locked<(now: Int, peak: Int)>((0, 0))
    var peak: Int { state.withLock { $0.peak } }
    func handle(_ event: GenericEvent, context: DispatchContext) async throws {
        state.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) }
        try await Task.sleep(nanoseconds: 20_000_000)
        state.withLock { $0.now -= 1 }
    }
}
