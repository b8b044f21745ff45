import TurnstileSync
import Foundation
import Synchronization
import Testing
import Turnstile

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// The README's library example, compiled and run: a typed handler registered from Swift, and `receive`
/// called the way a web framework's route would call it.
struct NotifyCRM: EventHandler {
    let calls: Calls

    func handle(_ event: CallEvent, context: DispatchContext) async throws {
        calls.record(event.call.callID.value, ended: event.call.endCallReason?.rawValue ?? "-")
    }
}

final class Calls: Sendable {
    private let seen = Locked<[String]>([])
    func record(_ id: String, ended: String) { seen.withLock { $0.append("\(id) \(ended)") } }
    var all: [String] { seen.withLock { $0 } }
}

@Suite struct ReceiverTests {
    func makeConfig() throws -> String {
        let folder = NSTemporaryDirectory() + "turnstile-receiver-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let fixtures = try JSONParser.parse(try String(contentsOfFile: repositoryRoot + "/fixtures/turnstile.json", encoding: .utf8))
        try """
            {"store":"sqlite:\(folder)/t.db","env_file":"\(repositoryRoot)/fixtures/secrets.env","max_body_bytes":65536,
             "providers":\(fixtures["providers"]!.serialized()),"handlers":[]}
            """.write(toFile: folder + "/turnstile.json", atomically: true, encoding: .utf8)
        return folder + "/turnstile.json"
    }

    @Test func aRouteCallsReceiveAndAHandlerGetsTheTypedEvent() async throws {
        let calls = Calls()
        let receiver = try Receiver.load(configPath: try makeConfig()) { registry in
            registry.register(NotifyCRM(calls: calls), name: "notify-crm", events: ["synthflow.post_call"])
        }
        let body = Array(#"{"call":{"call_id":"c-1","status":"completed","end_call_reason":"human_goodbye"}}"#.utf8)
        let headers = HeaderFields([("Synthflow-Signature", try signature(callID: "c-1"))])

        let first = await receiver.receive(provider: "synthflow", headers: headers, body: body)
        #expect(first.status == 200)
        #expect(first.body == #"{"outcome":"accepted","event_key":"post_call:c-1"}"#)
        let again = await receiver.receive(provider: "synthflow", headers: headers, body: body)
        #expect(again.status == 200)
        #expect(again.body == #"{"outcome":"duplicate","reason":"seen_signature"}"#)

        let stats = try await receiver.batchDispatcher().drain()
        #expect(stats.dispatched == 1)
        #expect(calls.all == ["c-1 human_goodbye"])
    }

    @Test func statusesFollowTheContract() async throws {
        let receiver = try Receiver.load(configPath: try makeConfig())
        let body = Array(#"{"call":{"call_id":"c-2"}}"#.utf8)
        #expect(await receiver.receive(provider: "synthflow", headers: HeaderFields(), body: body).status == 401)
        #expect(await receiver.receive(provider: "synthflow", headers: HeaderFields([("Synthflow-Signature", "AAAA")]), body: body).status == 401)
        #expect(await receiver.receive(provider: "nope", headers: HeaderFields(), body: body).status == 404)
        #expect(await receiver.receive(provider: "github", headers: HeaderFields(), body: [UInt8](repeating: 0x20, count: 70_000)).status == 413)
        let shapeless = Array(#"{"call_id":"c-3"}"#.utf8)
        let signed = HeaderFields([("Synthflow-Signature", try signature(callID: "c-3"))])
        let malformed = await receiver.receive(provider: "synthflow", headers: signed, body: shapeless)
        #expect(malformed.status == 400)
        #expect(malformed.body == #"{"outcome":"rejected","reason":"malformed_payload"}"#)
        #expect(ReceiveResponse.status(for: DeliveryVerdict(outcome: .rejected, reason: .storeUnavailable)) == 503)
        #expect(ReceiveResponse.status(for: DeliveryVerdict(outcome: .rejected, reason: .staleTimestamp)) == 401)
    }

    /// A host framework gets serve's inbound-call answers: the registry's responder answers, and a repeat of the
    /// same request gets the answer kept for the first.
    @Test func inboundCallsAreAnsweredByTheRegisteredResponder() async throws {
        let receiver = try Receiver.load(configPath: try makeConfig()) { registry in
            registry.answerInboundCalls(with: ByCaller())
        }
        let body = Array(#"{"call_inbound":{"call_id":"in-1","from_number":"+15550100","to_number":"+15550199"}}"#.utf8)
        let scheme = try #require(receiver.ingest.scheme(for: "synthflow"))
        let headers = try scheme.signatureHeaders(body: body, at: SystemWallClock().now())
        let first = await receiver.receive(provider: "synthflow", headers: headers, body: body)
        #expect(first.status == 200)
        #expect(try JSONParser.parse(first.body)["call_inbound"]?["override_model_id"]?.stringValue == "agent-for-+15550100")
        let repeated = await receiver.receive(provider: "synthflow", headers: headers, body: body)
        #expect(repeated.body == first.body)
    }

    private func signature(callID: String) throws -> String {
        let scheme = try #require(try Ingest(config: TurnstileConfig.load(path: repositoryRoot + "/fixtures/turnstile.json")).scheme(for: "synthflow"))
        return try #require(try scheme.signatureHeaders(body: Array(#"{"call_id":"\#(callID)"}"#.utf8), at: Instant(secondsSince1970: 0))["Synthflow-Signature"])
    }
}

/// Answers an inbound call from the caller's number.
struct ByCaller: InboundCallResponder {
    func answer(_ event: InboundCallEvent, context: DispatchContext) async throws -> JSONValue {
        .object(JSONObject(["call_inbound": .object(JSONObject(["override_model_id": .string("agent-for-\(event.callInbound?.fromNumber ?? "unknown")")]))]))
    }
}
