import Turnstile

/// Answers Synthflow's inbound-call webhook from the caller's number: known customers go to their account
/// team's agent, callers from the UK to the UK agent, everyone else stays with the agent that took the call.
public struct InboundRouter: InboundCallResponder {
    /// Caller number → agent id.
    public var accountAgents: [String: String]
    public var ukAgent: String

    public init(accountAgents: [String: String] = ["+15555550123": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"],
                ukAgent: String = "44aa44aa-0000-4000-8000-000000000044") {
        self.accountAgents = accountAgents
        self.ukAgent = ukAgent
    }

    /// The agent for `caller`; "" keeps the agent that received the call.
    public func agent(for caller: String?) -> String {
        guard let caller else { return "" }
        if let agent = accountAgents[caller] { return agent }
        if caller.hasPrefix("+44") { return ukAgent }
        return ""
    }

    public func answer(_ event: InboundCallEvent, context: DispatchContext) async throws -> JSONValue {
        .object(JSONObject(["call_inbound": .object(JSONObject([
            "override_model_id": .string(agent(for: event.callInbound?.fromNumber)),
        ]))]))
    }
}
