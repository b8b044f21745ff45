public import Turnstile
import TurnstileSQLite
import Foundation

/// Runs a registry's handlers against deliveries with no server: the real pipeline (verification, dedup,
/// routing, per-handler state) over a private in-memory store, on a ``ManualClock``. For a team's unit tests:
///
/// ```swift
/// @Test func postCallsReachTheCRM() async throws {
///     let crm = FakeCRM()
///     let harness = try HandlerHarness(configPath: "fixtures/turnstile.json") { registry in
///         registry.register(NotifyCRM(crm: crm), name: "notify-crm", events: ["synthflow.post_call"])
///     }
///     let run = try await harness.deliver(fixtures: "fixtures/deliveries/synthflow.ndjson")
///     #expect(run.stats.deadLettered == 0)
///     #expect(crm.calls.count == run.accepted)
/// }
/// ```
public struct HandlerHarness: Sendable {
    public let receiver: Receiver
    public let clock: ManualClock
    public let dispatcher: Dispatcher

    /// What one ``deliver(_:)`` did.
    public struct Run: Sendable {
        /// Each delivery's verdict, in order.
        public var verdicts: [DeliveryVerdict]
        /// The handler calls that ran, retries included.
        public var stats: Dispatcher.Stats
        public var accepted: Int { verdicts.filter { $0.outcome == .accepted }.count }
    }

    /// Loads `configPath` (its providers and secrets, and its handlers), replaces its store with a private
    /// in-memory one, and registers `configure`'s handlers.
    /// - Parameter now: the clock's start; deliveries are judged at their `received_at` unless `now` is later.
    public init(configPath: String, now: Instant? = nil, configure: (inout HandlerRegistry) -> Void) throws {
        var config = try TurnstileConfig.load(path: configPath)
        config.store = .sqlite(path: ":memory:")
        let registry = try HandlerRegistry.configured(by: config.handlers, file: config.file, configure: configure)
        receiver = try Receiver(config: config, registry: registry)
        clock = ManualClock(now ?? SystemWallClock().now())
        var settings = config.dispatch
        settings.backoffBaseSeconds = min(settings.backoffBaseSeconds, 0.001)
        settings.backoffMaxSeconds = min(settings.backoffMaxSeconds, 0.01)
        dispatcher = Dispatcher(store: receiver.dispatchStore, registry: registry, settings: settings, clock: SystemWallClock())
    }

    /// The deliveries of a fixture file or folder (`.json` / `.ndjson`, the contract's delivery format).
    public static func fixtures(_ path: String) throws -> [Delivery] {
        var deliveries: [Delivery] = []
        try DeliverySource(paths: [path], schema: try SchemaCatalog.shared().schema("delivery")).forEach { item in
            if case .delivery(let delivery, _) = item { deliveries.append(delivery) }
        }
        return deliveries
    }

    /// Admits `deliveries` (each judged at its own arrival time), then dispatches until the queue is empty,
    /// retries included.
    public func deliver(_ deliveries: [Delivery]) async throws -> Run {
        let verdicts = receiver.pipeline.process(deliveries)
        let stats = try await dispatcher.drain()
        return Run(verdicts: verdicts, stats: stats)
    }

    /// ``deliver(_:)`` for the deliveries of a fixture file or folder.
    public func deliver(fixtures path: String) async throws -> Run {
        try await deliver(try Self.fixtures(path))
    }

    /// The typed event a handler of `Event` would get for `delivery`, without running anything: decode a
    /// shipped fixture as `CallEvent`, `TestRunEvent`, `GenerationJobEvent`, … in a test.
    public func event<Event: DispatchableEvent>(_ type: Event.Type, from delivery: Delivery) throws -> Event {
        let prepared = receiver.pipeline.prepare(delivery, now: delivery.receivedAt)
        guard let admission = prepared.admission else {
            throw HarnessError(message: "the delivery is not accepted: \(prepared.verdict.reason?.rawValue ?? "unknown")")
        }
        let queued = QueuedEvent(id: 0, provider: admission.provider, eventType: admission.eventType, eventKey: admission.eventKey,
                                 payload: delivery.body, receivedAt: delivery.receivedAt ?? clock.now(), attempt: 1, isReprocess: false)
        return try Event(queued: queued)
    }
}

public struct HarnessError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
