#if canImport(Glibc)
import Glibc
#endif
import CRMHandlers
import Foundation
import Testing
import Turnstile
import TurnstileHTTP
import TurnstileTesting

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
let secret = "example-synthflow-secret"

/// A folder with a config for this package's binary: Synthflow only, the secret from an env file.
func makeConfig(listen: String = "127.0.0.1:0") throws -> (folder: String, config: String) {
    let folder = NSTemporaryDirectory() + "crm-turnstile-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    try "SYNTHFLOW_WEBHOOK_SECRET=\(secret)\n".write(toFile: folder + "/secrets.env", atomically: true, encoding: .utf8)
    try """
        {"store":"sqlite:\(folder)/t.db","listen":"\(listen)","env_file":"secrets.env",
         "providers":{"synthflow":{"scheme":"synthflow","secrets":["env:SYNTHFLOW_WEBHOOK_SECRET"]}},
         "handlers":[{"name":"notify-crm","type":"swift","concurrency":2}]}
        """.write(toFile: folder + "/turnstile.json", atomically: true, encoding: .utf8)
    return (folder, folder + "/turnstile.json")
}

func signedHeaders(_ body: String, config: String) throws -> HeaderFields {
    let ingest = try Ingest(config: TurnstileConfig.load(path: config))
    return try #require(ingest.scheme(for: "synthflow")).signatureHeaders(body: Array(body.utf8), at: SystemWallClock().now())
}

let postCall = #"{"status":"completed","lead":{"name":"Ada","phone_number":"+15555550123"},"call":{"call_id":"call-1","status":"completed","duration":87,"end_call_reason":"human_goodbye"}}"#
let inboundCall = #"{"event":"call_inbound","call_id":"in-1","call_inbound":{"model_id":"0b6e7c2a","from_number":"+15555550123","to_number":"+15555550199"}}"#

/// Records calls in memory.
final class MemoryCRM: CRM, @unchecked Sendable {
    private let lock = NSLock()
    private var records: [(CallRecord, String)] = []
    var calls: [(CallRecord, String)] { lock.withLock { records } }
    func logCall(_ record: CallRecord, idempotencyKey: String) async throws { lock.withLock { records.append((record, idempotencyKey)) } }
}

@Suite struct HandlerTests {
    @Test func aFinishedCallBecomesOneCRMRecordEvenWhenRedelivered() async throws {
        let (_, config) = try makeConfig()
        let crm = MemoryCRM()
        let harness = try HandlerHarness(configPath: config) { registry in
            registry.register(NotifyCRM(crm: crm), name: "notify-crm", events: ["synthflow.post_call"])
        }
        let delivery = Delivery(provider: "synthflow", receivedAt: SystemWallClock().now(), headers: try signedHeaders(postCall, config: config),
                                body: Array(postCall.utf8))
        let run = try await harness.deliver([delivery, delivery])
        #expect(run.verdicts.map(\.outcome) == [.accepted, .duplicate])
        #expect(crm.calls.count == 1)
        #expect(crm.calls.first?.0 == CallRecord(callID: "call-1", status: "completed", durationSeconds: 87, phone: "+15555550123",
                                                 endedBecause: "human_goodbye"))
        // The typed event a handler gets, from the same delivery, without running anything.
        let event = try harness.event(CallEvent.self, from: delivery)
        #expect(event.call.duration == 87)
    }

    @Test func theRouterAnswersFromTheCallersNumber() {
        let router = InboundRouter(accountAgents: ["+15550001": "acct-agent"], ukAgent: "uk-agent")
        #expect(router.agent(for: "+15550001") == "acct-agent")
        #expect(router.agent(for: "+447700900123") == "uk-agent")
        #expect(router.agent(for: "+15550002") == "")
        #expect(router.agent(for: nil) == "")
    }
}

/// This package's own `crm-turnstile` binary, run as `serve`, over HTTP on 127.0.0.1.
@Suite struct BinaryTests {
    @Test func theBinaryServesPostCallsToTheCRMAndAnswersInboundCalls() async throws {
        let (folder, config) = try makeConfig()
        let outbox = folder + "/outbox.jsonl"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: packageRoot + "/.build/debug/crm-turnstile")
        process.arguments = ["serve", "--config", config]
        process.environment = ["PATH": "/usr/bin:/bin", "CRM_OUTBOX": outbox]
        let stderr = Pipe()
        process.standardError = stderr
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        let port = try #require(Self.port(from: stderr.fileHandleForReading))

        let client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 10)
        func post(_ body: String) throws -> HTTPResponse {
            var headers = HTTPHeaders()
            headers.append(name: "Content-Type", value: "application/json")
            for field in try signedHeaders(body, config: config) { headers.append(name: field.name, value: field.value) }
            return try client.send(HTTPRequest(method: "POST", target: "/webhooks/synthflow", headers: headers, body: Array(body.utf8)))
        }
        let accepted = try post(postCall)
        #expect(accepted.status == 200)
        #expect(String(decoding: accepted.body, as: UTF8.self).contains(#""outcome":"accepted""#))

        let answer = try post(inboundCall)
        #expect(answer.status == 200)
        let routed = try JSONParser.parse(answer.body)
        #expect(routed["call_inbound"]?["override_model_id"]?.stringValue == "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
                "the router sends the known caller to the account team's agent")
        // Synthflow repeats the request when it gets no answer in time: the repeat gets the same answer.
        #expect(try post(inboundCall).body == answer.body)

        // The post-call handler ran in the binary and reached the CRM.
        var lines: [String] = []
        for _ in 0..<500 where lines.isEmpty {
            lines = ((try? String(contentsOfFile: outbox, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            if lines.isEmpty { usleep(20_000) }
        }
        #expect(lines.count == 1)
        #expect(lines.first?.contains(#""call_id":"call-1""#) == true)

        process.terminate()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }

    /// The port of the "listening" log line.
    static func port(from handle: FileHandle) -> Int? {
        var buffer = ""
        while let chunk = try? handle.read(upToCount: 1), let byte = chunk.first {
            if byte != 0x0a { buffer.append(Character(UnicodeScalar(byte))); continue }
            if buffer.contains(#""msg":"listening""#), let address = (try? JSONParser.parse(buffer))?["address"]?.stringValue,
               let colon = address.lastIndex(of: ":") {
                return Int(address[address.index(after: colon)...])
            }
            buffer = ""
        }
        return nil
    }
}
