public import TurnstileCore
import Foundation

/// Answers Synthflow's inbound-call webhook, which is request/response: the answer routes the call.
///
/// ```swift
/// struct Router: InboundCallResponder {
///     func answer(_ event: InboundCallEvent, context: DispatchContext) async throws -> JSONValue {
///         ["call_inbound": ["override_model_id": "9a8b7c6d-…"]]
///     }
/// }
/// ```
/// Return the whole answer (`{"call_inbound":{…}}`). When no answer comes within the deadline, or the
/// responder throws, the provider's `inbound_default_answer` is sent. The first answer is kept, and
/// Synthflow's repeats of the same request get it again.
public protocol InboundCallResponder: Sendable {
    func answer(_ event: InboundCallEvent, context: DispatchContext) async throws -> JSONValue
}

/// Computes, keeps and repeats answers to inbound calls.
public struct InboundCallAnswers: Sendable {
    /// Sent when no responder answers in time: keep the agent that received the call.
    public static let fallback: JSONValue = .object(JSONObject(["call_inbound": .object(JSONObject(["override_model_id": ""]))]))

    private let store: any EventStore
    private let responder: (any InboundCallResponder)?
    private let deadlines: [String: Double]
    private let defaults: [String: JSONValue]
    /// The store's answers table is read and written here, never on the cooperative pool.
    private let executor = BlockingExecutor(label: "ts-inbound")

    public init(store: any EventStore, responder: (any InboundCallResponder)?, config: TurnstileConfig) {
        self.store = store
        self.responder = responder
        var defaults: [String: JSONValue] = [:]
        var deadlines: [String: Double] = [:]
        for provider in config.providers where provider.scheme == "synthflow" {
            defaults[provider.name] = provider.inboundDefaultAnswer ?? Self.fallback
            deadlines[provider.name] = provider.inboundAnswerDeadlineSeconds ?? 3
        }
        self.defaults = defaults
        self.deadlines = deadlines
    }

    /// True when `verdict` is a verified inbound call of a Synthflow provider.
    public func applies(to verdict: DeliveryVerdict, provider: String) -> Bool {
        defaults[provider] != nil && verdict.outcome != .rejected && verdict.eventType == "\(provider).inbound_call"
    }

    /// The answer for the inbound call `verdict` describes: the kept one for a repeat, else the responder's
    /// (within the deadline) or the provider's default, which is then kept.
    public func answer(provider: String, verdict: DeliveryVerdict, body: [UInt8], receivedAt: Instant) async -> String {
        let key = verdict.eventKey ?? ""
        let store = self.store
        if let kept = try? await executor.run({ () throws(StoreError) in try store.keptAnswer(provider: provider, eventKey: key) }) {
            return kept
        }
        var answer = defaults[provider] ?? Self.fallback
        if let responder, let event = try? InboundCallEvent(queued: QueuedEvent(
            id: verdict.eventID ?? 0, provider: provider, eventType: verdict.eventType ?? "", eventKey: key, payload: body,
            receivedAt: receivedAt, attempt: 1, isReprocess: false)) {
            let context = DispatchContext(eventID: verdict.eventID ?? 0, provider: provider, eventType: verdict.eventType ?? "",
                                          eventKey: key, receivedAt: receivedAt, attempt: 1, isReprocess: false, handlerName: "inbound-responder")
            if let computed = await Self.withDeadline(deadlines[provider] ?? 3, { try await responder.answer(event, context: context) }) {
                answer = computed
            }
        }
        let text = answer.serialized()
        let now = SystemWallClock().now()
        return (try? await executor.run { () throws(StoreError) in
            try store.keepAnswer(provider: provider, eventKey: key, answer: text, now: now)
        }) ?? text
    }

    /// The value of `work`, or nil when it throws or does not finish within `seconds`.
    static func withDeadline(_ seconds: Double, _ work: @escaping @Sendable () async throws -> JSONValue) async -> JSONValue? {
        await withTaskGroup(of: JSONValue?.self) { group in
            group.addTask { try? await work() }
            group.addTask {
                try? await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1e9))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}
