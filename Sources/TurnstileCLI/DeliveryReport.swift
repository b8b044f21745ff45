import TurnstileCore
import TurnstileIngest
import TurnstilePipeline

/// The verdict on one stored delivery, written as the contract's JSON line and checked against `expect`.
struct DeliveryReport {
    let source: String
    let provider: String
    let outcome: Outcome
    let reason: Reason?
    let eventType: String?
    let eventKey: String?

    init(source: String, provider: String, result: Result<VerifiedDelivery, Rejection>) {
        self.source = source
        self.provider = provider
        switch result {
        case .success(let verified):
            outcome = .accepted
            reason = nil
            eventType = verified.eventType
            eventKey = verified.eventKey
        case .failure(let rejection):
            outcome = .rejected
            reason = rejection.reason
            eventType = nil
            eventKey = nil
        }
    }

    init(source: String, provider: String, verdict: DeliveryVerdict) {
        self.source = source
        self.provider = provider
        outcome = verdict.outcome
        reason = verdict.reason
        eventType = verdict.eventType
        eventKey = verdict.eventKey
    }

    /// `{"source":"FILE:LINE","provider":"...","outcome":"...","reason":null,"event_type":"...","event_key":"..."}`
    var jsonLine: String {
        var object = JSONObject()
        object["source"] = .string(source)
        object["provider"] = .string(provider)
        object["outcome"] = .string(outcome.rawValue)
        object["reason"] = reason.map { .string($0.rawValue) } ?? .null
        object["event_type"] = eventType.map(JSONValue.string) ?? .null
        object["event_key"] = eventKey.map(JSONValue.string) ?? .null
        return JSONValue.object(object).serialized()
    }

    /// Whether this verdict meets `expect`. Without a store, an expected `duplicate` is met by `accepted`.
    func meets(_ expect: Expectation, storeConsulted: Bool) -> Bool {
        if !storeConsulted && expect.outcome == .duplicate { return outcome == .accepted }
        guard expect.outcome == outcome else { return false }
        if let expected = expect.reason { return expected == reason }
        return true
    }

    var verdict: String { reason.map { "\(outcome.rawValue)/\($0.rawValue)" } ?? outcome.rawValue }
}

/// Counts of outcomes and reasons, for the summary line on stderr.
struct OutcomeTally {
    private(set) var total = 0
    private var counts: [String: Int] = [:]

    mutating func add(_ report: DeliveryReport) {
        total += 1
        counts[report.verdict, default: 0] += 1
    }

    var summary: String {
        counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }
}
