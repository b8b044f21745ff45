import Foundation
import Testing
import TurnstileCore
import TurnstilePipeline

private func queued(_ body: [UInt8], type: String = "x.y") -> QueuedEvent {
    QueuedEvent(id: 1, provider: "p", eventType: type, eventKey: "k", payload: body, receivedAt: Instant(secondsSince1970: 0),
                attempt: 1, isReprocess: false)
}

private func payload(_ provider: String, _ name: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(repositoryRoot)/fixtures/payloads/\(provider)/\(name).body")))
}

@Suite struct EventTypeTests {
    @Test func callEventFromTheComposedPostCall() throws {
        let event = try CallEvent(queued: queued(try payload("synthflow", "post-call")))
        #expect(event.call.callID.value == "c0ffee00-1234-4abc-8def-0123456789ab")
        #expect(event.call.status == .completed)
        #expect(event.call.endCallReason == .humanGoodbye)
        #expect(event.call.startTime?.text == "2026-01-15T14:03:27.512349-05:00")
        #expect(event.call.startTime?.instant == Instant(iso8601: "2026-01-15T19:03:27.512349Z"))
        #expect(event.lead?.phoneNumber == "+15555550123")
        #expect(event.executedActions?["extract_info_1"]?.actionType == "extract_info_action_type")
        #expect(event.analysis?["call_completion"] == "partial")
        #expect(event.collectedVariables.map(\.name) == ["user_name"])
        #expect(event.call.recordingURL == "https://example.invalid/recordings/c0ffee00.wav")
    }

    @Test func callEventKeepsUnknownEnumsAndBothVariableShapes() throws {
        let body = #"{"call":{"call_id":1711646262471,"status":"transferred","end_call_reason":"new_reason","analysis":{"goal":"true"}},"collected_variables":{"agent-1":{"plan":{"value":"pro","collected":false}},"name":{"value":"Jo","collected":true}}}"#
        let event = try CallEvent(queued: queued(Array(body.utf8)))
        #expect(event.call.callID.value == "1711646262471")
        #expect(event.call.status?.rawValue == "transferred")
        #expect(event.call.status?.isKnown == false)
        #expect(event.call.endCallReason?.rawValue == "new_reason")
        #expect(event.analysis?["goal"] == "true")
        let variables = event.collectedVariables.sorted { $0.name < $1.name }
        #expect(variables.map(\.name) == ["name", "plan"])
        #expect(variables[1].agentID == "agent-1")
        #expect(variables[1].collected == false)
    }

    @Test func inboundCallEvent() throws {
        let event = try InboundCallEvent(queued: queued(try payload("synthflow", "inbound-call")))
        #expect(event.event == "call_inbound")
        #expect(event.callID?.value == "c0ffee00-1234-4abc-8def-0123456789ab")
        #expect(event.callInbound?.toNumber == "+15555550199")
    }

    @Test func testRunEventsForPlansAndCases() throws {
        let plan = try TestRunEvent(queued: queued(try payload("autify", "test-plan-result")))
        #expect(plan.kind == .testPlanResult)
        #expect(plan.id.value == "90210")
        #expect(plan.status == .failed)
        #expect(plan.scenarios?.first?.kind == .testCaseResult)
        #expect(plan.scenarios?.first?.capability?.device == nil)
        #expect(plan.finishedAt?.instant == Instant(iso8601: "2026-01-15T09:04:12.875Z"))
        let testCase = try TestRunEvent(queued: queued(try payload("autify", "test-case-result")))
        #expect(testCase.kind == .testCaseResult)
        #expect(testCase.scenarioID?.value == "1201")
        #expect(testCase.reviewNeeded == true)
    }

    @Test func generationJobEventsForGenerationsAndBatches() throws {
        let generation = try GenerationJobEvent(queued: queued(try payload("sync", "generation-completed")))
        #expect(generation.kind == .generation)
        #expect(generation.status == .completed)
        #expect(generation.outputDuration == 10.5)
        #expect(generation.createdAt?.instant == Instant(iso8601: "2026-01-15T19:04:05.123Z"))
        let failed = try GenerationJobEvent(queued: queued(try payload("sync", "generation-failed")))
        #expect(failed.errorCode == "generation_audio_length_exceeded")
        #expect(failed.createdAt?.instant == Instant(iso8601: "2026-01-15T19:10:00Z"))
        let batch = try GenerationJobEvent(queued: queued(try payload("sync", "batch-completed")))
        #expect(batch.kind == .batch)
        #expect(batch.metrics?.failedCount == 1)
        let snake = try GenerationJobEvent(queued: queued(Array(#"{"id":"b2","status":"REJECTED","created_at":"2026-01-15T18:00:00Z","metrics":{"success_count":4}}"#.utf8)))
        #expect(snake.kind == .batch)
        #expect(snake.metrics?.successCount == 4)
        #expect(snake.status.isKnown)
    }

    @Test func genericEventKeepsTheBody() throws {
        let event = GenericEvent(queued: queued(Array(#"{"b":1.50,"a":[1]}"#.utf8), type: "stripe.customer.created"))
        #expect(event.type == "stripe.customer.created")
        #expect(event.payload?["b"]?.numberValue?.text == "1.50")
        #expect(GenericEvent(queued: queued(Array("Hello".utf8))).payload == nil)
    }

    @Test func shippedEventSchemasAcceptTheShippedPayloads() throws {
        let catalog = try SchemaCatalog.shared()
        let cases: [(String, String, String)] = [
            ("synthflow/post_call", "synthflow", "post-call"), ("synthflow/post_call", "synthflow", "post-call-bubble-id"),
            ("synthflow/inbound_call", "synthflow", "inbound-call"), ("autify/test_plan_result", "autify", "test-plan-result"),
            ("autify/test_case_result", "autify", "test-case-result"), ("sync/generation", "sync", "generation-completed"),
            ("sync/generation", "sync", "generation-failed"), ("sync/batch", "sync", "batch-completed"),
        ]
        for (schema, provider, name) in cases {
            let violations = try catalog.schema(schema).violations(of: try JSONParser.parse(try payload(provider, name)))
            #expect(violations.isEmpty, "\(schema) \(name): \(violations)")
        }
    }
}
