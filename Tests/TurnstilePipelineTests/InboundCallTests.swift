import Foundation
import Testing
import TurnstileCore
import TurnstilePipeline

struct FixedRouter: InboundCallResponder {
    let delay: Double
    func answer(_ event: InboundCallEvent, context: DispatchContext) async throws -> JSONValue {
        if delay > 0 { try await Task.sleep(nanoseconds: UInt64(delay * 1e9)) }
        return ["call_inbound": ["override_model_id": .string("agent-for-\(event.callInbound?.fromNumber ?? "?")")]]
    }
}

@Suite struct InboundCallTests {
    func inbound(_ harness: Harness, responder: (any InboundCallResponder)?, deadlineMilliseconds: Int = 500) throws -> InboundCallAnswers {
        var config = harness.config
        for index in config.providers.indices where config.providers[index].scheme == "synthflow" {
            config.providers[index].inboundAnswerDeadlineSeconds = Double(deadlineMilliseconds) / 1000
        }
        return InboundCallAnswers(store: harness.store, responder: responder, config: config)
    }

    @Test func theResponderAnswersAndRepeatsGetTheKeptAnswer() async throws {
        let harness = try Harness()
        let delivery = try harness.signed("synthflow", #"{"event":"call_inbound","call_id":"c-9","call_inbound":{"from_number":"+1555"}}"#)
        let answers = try inbound(harness, responder: FixedRouter(delay: 0))
        let verdicts = harness.process([delivery, delivery])
        #expect(answers.applies(to: verdicts[0], provider: "synthflow"))
        #expect(answers.applies(to: verdicts[1], provider: "synthflow"))
        let first = await answers.answer(provider: "synthflow", verdict: verdicts[0], body: delivery.body, receivedAt: signedAt)
        #expect(first == #"{"call_inbound":{"override_model_id":"agent-for-+1555"}}"#)
        let slowNow = try inbound(harness, responder: FixedRouter(delay: 5), deadlineMilliseconds: 10)
        #expect(await slowNow.answer(provider: "synthflow", verdict: verdicts[1], body: delivery.body, receivedAt: signedAt) == first)
    }

    @Test func aSlowResponderGivesTheDefault() async throws {
        let harness = try Harness()
        let delivery = try harness.signed("synthflow", #"{"event":"call_inbound","call_id":"c-10","call_inbound":{}}"#)
        let verdict = harness.process([delivery])[0]
        let answers = try inbound(harness, responder: FixedRouter(delay: 5), deadlineMilliseconds: 20)
        #expect(await answers.answer(provider: "synthflow", verdict: verdict, body: delivery.body, receivedAt: signedAt)
                == InboundCallAnswers.fallback.serialized())
    }

    @Test func postCallsAndOtherProvidersAreNotAnswered() throws {
        let harness = try Harness()
        let answers = try inbound(harness, responder: nil)
        let post = harness.process([try harness.signed("synthflow", #"{"call":{"call_id":"c-11"}}"#)])[0]
        #expect(!answers.applies(to: post, provider: "synthflow"))
        let github = harness.process([try harness.signed("github", #"{"a":1}"#)])[0]
        #expect(!answers.applies(to: github, provider: "github"))
    }
}
