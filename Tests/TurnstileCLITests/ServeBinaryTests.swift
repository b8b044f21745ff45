#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TurnstileTestSupport
import Testing
import TurnstileCore

@Suite(.serialized) struct ServeBinaryTests {
    @Test func everyRowOfTheHTTPTable() throws {
        let config = try TemporaryConfig(extra: #","listen":"127.0.0.1:0""#)
        let server = try RunningServer(config: config)
        let delivery = try signedGitHub(1, folder: config.folder)
        let client = try RawClient(port: server.port)

        // Pipelined requests are handled concurrently; the repeat is sent once the first is answered.
        client.send(httpRequest(for: delivery))
        #expect(client.responses(1).count == 1)
        client.send(httpRequest(for: delivery))
        var tampered = httpRequest(for: delivery)
        tampered = tampered.replacingOccurrences(of: #""n":1"#, with: #""n":2"#)
        client.send(tampered)
        client.send("POST /webhooks/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        client.send("GET /webhooks/github HTTP/1.1\r\nHost: x\r\n\r\n")
        client.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        // Pipelined requests are answered in order but handled concurrently: ask for the metrics after the rest.
        #expect(client.responses(6).count == 6)
        client.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        client.send("GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")
        let answers = client.responses(8)
        #expect(answers.map(\.status) == [200, 200, 401, 404, 405, 200, 200, 404])
        #expect(answers[0].body == #"{"outcome":"accepted","event_key":"delivery-1"}"#)
        #expect(answers[1].body == #"{"outcome":"duplicate","reason":"seen_signature"}"#)
        #expect(answers[2].body == #"{"outcome":"rejected","reason":"invalid_signature"}"#)
        #expect(answers[3].body == #"{"outcome":"rejected","reason":"unknown_provider"}"#)
        #expect(answers[4].header("Allow") == "POST")
        #expect(answers[6].body.contains(#"turnstile_deliveries_total{provider="github",outcome="accepted",reason=""} 1"#))
        #expect(answers[6].body.contains("turnstile_queue_depth"))
        #expect(answers[6].body.contains("turnstile_open_connections"))

        // Signed (the published Synthflow vector), but neither a post-call nor an inbound-call body.
        let malformedPayload = try RawClient(port: server.port)
        let shapeless = #"{"call_id":"c0ffee00-1234-4abc-8def-0123456789ab"}"#
        malformedPayload.send("POST /webhooks/synthflow HTTP/1.1\r\nHost: x\r\nSynthflow-Signature: sErW5j8e+ISH7oKt2s3AmzN9xZBIyER+VahXJlxGPUw=\r\n"
                              + "Content-Length: \(shapeless.utf8.count)\r\n\r\n" + shapeless)
        let malformed = malformedPayload.responses(1).first
        #expect(malformed?.status == 400)
        #expect(malformed?.body == #"{"outcome":"rejected","reason":"malformed_payload"}"#)

        let large = try RawClient(port: server.port)
        large.send("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n")
        let tooLarge = large.responses(1)
        #expect(tooLarge.first?.status == 413)
        #expect(tooLarge.first?.body == #"{"outcome":"rejected","reason":"body_too_large"}"#)
        #expect(large.closedByPeer())

        #expect(server.stop() == 0)
        let lines = try server.log().filter { $0.contains(#""msg":"delivery""#) }
        #expect(lines.count >= 5)
        #expect(lines.allSatisfy { $0.contains(#""provider""#) && $0.contains(#""outcome""#) && $0.contains(#""latency_ms""#) })
        for secret in ["It's a Secret to Everybody", "sf_test_secret_key"] {
            #expect(try !server.log().joined().contains(secret))
        }
    }

    @Test func keepAlivePipeliningAndChunkedBodies() throws {
        let config = try TemporaryConfig(extra: #","listen":"127.0.0.1:0""#)
        let server = try RunningServer(config: config)
        defer { _ = server.stop() }
        let client = try RawClient(port: server.port)
        // Three pipelined deliveries in one write, answered in order on one connection.
        let batch = try (10..<13).map { httpRequest(for: try signedGitHub($0, folder: config.folder)) }.joined()
        client.send(batch)
        let answers = client.responses(3)
        #expect(answers.map(\.body) == (10..<13).map { #"{"outcome":"accepted","event_key":"delivery-\#($0)"}"# })

        // A chunked body on the same connection.
        let delivery = try signedGitHub(20, folder: config.folder)
        let body = delivery["body"]!.stringValue!
        var head = "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        for (name, value) in delivery["headers"]!.objectValue! { head += "\(name): \(value.stringValue!)\r\n" }
        let split = body.utf8.count / 2
        let first = String(body.prefix(split)), second = String(body.dropFirst(split))
        client.send(head + "\r\n" + String(first.utf8.count, radix: 16) + "\r\n" + first + "\r\n"
                    + String(second.utf8.count, radix: 16) + ";ext=1\r\n" + second + "\r\n0\r\n\r\n")
        #expect(client.responses(4).last?.body == #"{"outcome":"accepted","event_key":"delivery-20"}"#)

        // Expect: 100-continue gets an interim answer before the body is sent.
        let expecting = try RawClient(port: server.port)
        let third = try signedGitHub(21, folder: config.folder)
        let full = httpRequest(for: third)
        let parts = full.components(separatedBy: "\r\n\r\n")
        expecting.send(parts[0].replacingOccurrences(of: "Host: 127.0.0.1", with: "Host: 127.0.0.1\r\nExpect: 100-continue") + "\r\n\r\n")
        var poller = pollfd(fd: expecting.fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&poller, 1, 5_000) == 1)
        var interim = [UInt8](repeating: 0, count: 64)
        let count = interim.withUnsafeMutableBytes { read(expecting.fd, $0.baseAddress, 25) }
        #expect(String(decoding: interim[0..<max(0, count)], as: UTF8.self) == "HTTP/1.1 100 Continue\r\n\r\n")
        expecting.send(parts[1])
        #expect(expecting.responses(1).first?.status == 200)
    }

    @Test(arguments: [
        ("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", 400),
        ("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", 400),
        ("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: two\r\n\r\n{}", 400),
        ("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
        ("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", 400),
        ("POST /webhooks/github HTTP/1.1\nHost: x\r\nContent-Length: 0\r\n\r\n", 400),
        ("POST /webhooks/github HTTP/1.1\r\nHost: x\rX: y\r\nContent-Length: 0\r\n\r\n", 400),
        ("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nBad Name: y\r\nContent-Length: 0\r\n\r\n", 400),
        ("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX: a\u{01}b\r\nContent-Length: 0\r\n\r\n", 400),
        ("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n", 400),
        ("GET /" + String(repeating: "a", count: 9_000) + " HTTP/1.1\r\nHost: x\r\n\r\n", 431),
        ("GET / HTTP/1.1\r\nHost: x\r\n" + (0..<120).map { "X-\($0): v\r\n" }.joined() + "\r\n", 431),
        ("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "v", count: 20_000) + "\r\n\r\n", 431),
    ])
    func malformedRequestsAreRefusedAndTheConnectionClosed(request: String, status: Int) throws {
        let server = try RunningServer(config: try TemporaryConfig(extra: #","listen":"127.0.0.1:0""#))
        defer { _ = server.stop() }
        let client = try RawClient(port: server.port)
        client.send(request)
        let answers = client.responses(1)
        #expect(answers.first?.status == status, "\(request.prefix(80))")
        #expect(client.closedByPeer())
    }

    @Test func aClientThatNeverFinishesItsHeadersIsDroppedWhileOthersAreServed() throws {
        let config = try TemporaryConfig(extra: #","listen":"127.0.0.1:0","http":{"header_timeout_seconds":1}"#)
        let server = try RunningServer(config: config)
        defer { _ = server.stop() }
        let slow = try RawClient(port: server.port)
        slow.send("POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for index in 0..<5 {
            // Signed before connecting: the header timeout runs from the connection's opening.
            let request = httpRequest(for: try signedGitHub(30 + index, folder: config.folder))
            let other = try RawClient(port: server.port)
            other.send(request)
            #expect(other.responses(1).first?.status == 200)
        }
        #expect(slow.closedByPeer(timeout: 10))
    }

    @Test func fiftyConcurrentIdenticalDeliveriesGiveOneAccepted() async throws {
        let config = try TemporaryConfig(extra: #","listen":"127.0.0.1:0""#)
        let server = try RunningServer(config: config)
        defer { _ = server.stop() }
        let request = httpRequest(for: try signedGitHub(40, folder: config.folder), keepAlive: false)
        let port = server.port
        let bodies = await withTaskGroup(of: String.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    guard let client = try? RawClient(port: port) else { return "connect failed" }
                    client.send(request)
                    return client.responses(1).first?.body ?? "no answer"
                }
            }
            return await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(bodies.filter { $0.contains(#""outcome":"accepted""#) }.count == 1)
        #expect(bodies.filter { $0.contains(#""outcome":"duplicate""#) }.count == 49)
    }

    @Test func sigtermUnderLoadLosesNoAcknowledgedEvent() async throws {
        let config = try TemporaryConfig(extra: #","listen":"127.0.0.1:0""#)
        let server = try RunningServer(config: config)
        let deliveries = config.folder + "/load.ndjson"
        try makeSignedDeliveries(count: 300, into: deliveries)
        let requests = try String(contentsOfFile: deliveries, encoding: .utf8).split(separator: "\n").map { try JSONParser.parse(String($0)) }
        let port = server.port
        let acknowledged = Acknowledged()
        // Four clients send as fast as they can; SIGTERM arrives in the middle.
        let senders = Task {
            await withTaskGroup(of: Void.self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        guard let client = try? RawClient(port: port) else { return }
                        for index in stride(from: worker, to: requests.count, by: 4) {
                            client.send(httpRequest(for: requests[index]))
                            let expected = 1 + acknowledged.count(for: worker)
                            let answers = client.responses(expected, timeout: 5)
                            guard answers.count == expected, let answer = answers.last else { return }
                            acknowledged.add(answer, worker: worker)
                        }
                    }
                }
            }
        }
        let deadline = Date().addingTimeInterval(60)
        while acknowledged.total < 40 && Date() < deadline { try await Task.sleep(nanoseconds: 5_000_000) }
        #expect(acknowledged.total >= 40)
        let status = server.stop()
        await senders.value
        #expect(status == 0)
        let keys = acknowledged.acceptedKeys
        #expect(!keys.isEmpty)
        // After a restart (dispatch only), every 200 "accepted" is in the jsonl sink.
        let restart = try run(["dispatch", "--config", config.path])
        #expect(restart.status == 0)
        let delivered = Set(try config.eventLines().compactMap { $0["event_key"]?.stringValue })
        #expect(keys.isSubset(of: delivered), "missing: \(keys.subtracting(delivered))")
    }

}

/// What the load test's clients were told, per worker.
final class Acknowledged: @unchecked Sendable {
    private let lock = NSLock()
    private var answers: [Int: [RawResponse]] = [:]

    func add(_ answer: RawResponse, worker: Int) {
        lock.lock(); defer { lock.unlock() }
        answers[worker, default: []].append(answer)
    }

    func count(for worker: Int) -> Int {
        lock.lock(); defer { lock.unlock() }
        return answers[worker]?.count ?? 0
    }

    var total: Int {
        lock.lock(); defer { lock.unlock() }
        return answers.values.map(\.count).reduce(0, +)
    }

    var acceptedKeys: Set<String> {
        lock.lock(); defer { lock.unlock() }
        return Set(answers.values.flatMap { $0 }.filter { $0.status == 200 }.compactMap {
            try? JSONParser.parse($0.body)["event_key"]?.stringValue
        })
    }
}

@Suite(.serialized) struct InboundCallServeTests {
    @Test func synthflowInboundCallGetsTheDefaultAnswerAndItsRepeatTheSameOne() throws {
        let config = try TemporaryConfig(extra: #","listen":"127.0.0.1:0""#)
        // The fixtures' synthflow provider, with a default answer.
        var text = try String(contentsOfFile: config.path, encoding: .utf8)
        text = text.replacingOccurrences(of: #""synthflow":{"scheme":"synthflow","secrets":["env:SYNTHFLOW_WEBHOOK_SECRET","env:SYNTHFLOW_WEBHOOK_SECRET_OLD"]}"#,
                                         with: #""synthflow":{"scheme":"synthflow","secrets":["env:SYNTHFLOW_WEBHOOK_SECRET","env:SYNTHFLOW_WEBHOOK_SECRET_OLD"],"inbound_default_answer":{"call_inbound":{"override_model_id":"agent-default"}}}"#)
        try text.write(toFile: config.path, atomically: true, encoding: .utf8)
        #expect(text.contains("agent-default"))
        let server = try RunningServer(config: config)
        defer { _ = server.stop() }
        let signed = try JSONParser.parse(try run(["sign", "--config", "fixtures/turnstile.json", "--provider", "synthflow",
                                                    "--body-file", "fixtures/payloads/synthflow/inbound-call.body"]).stdout)
        let client = try RawClient(port: server.port)
        client.send(httpRequest(for: signed))
        client.send(httpRequest(for: signed))
        let answers = client.responses(2)
        #expect(answers.map(\.status) == [200, 200])
        #expect(answers.map(\.body) == Array(repeating: #"{"call_inbound":{"override_model_id":"agent-default"}}"#, count: 2))
    }
}

@Suite(.serialized) struct SendTests {
    @Test func sendPostsStoredDeliveriesAndPrintsEachStatus() throws {
        let config = try TemporaryConfig(extra: #","listen":"127.0.0.1:0""#)
        let server = try RunningServer(config: config)
        defer { _ = server.stop() }
        let result = try run(["send", "--url", "http://127.0.0.1:\(server.port)", "fixtures/deliveries/github.ndjson"])
        #expect(result.status == 0, "\(result.stderr)")
        let statuses = try result.lines.map { try JSONParser.parse($0)["status"]?.numberValue?.int64Value ?? 0 }
        #expect(statuses == [200, 200, 200, 401, 401, 401, 401, 400, 413])
        #expect(try run(["send", "--url", "https://127.0.0.1:1", "fixtures/deliveries/github.ndjson"]).status == 2)
    }
}

@Suite(.serialized) struct HTTPReferenceBenchTests {
    /// The reference server of `Benchmarks/http-load.sh`: our HTTP server with a fixed answer, stopped by SIGTERM.
    @Test func answersEveryRequestWithAFixed200AndExitsZeroOnSIGTERM() throws {
        let process = Process()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let port = try launchTurnstile(process, ["bench", "http-reference", "--listen", "127.0.0.1:0"],
                                       logPath: try temporaryFolder() + "/reference.log") { line in
            line.range(of: #"127\.0\.0\.1:[0-9]+"#, options: .regularExpression).flatMap { Int(line[$0].split(separator: ":").last ?? "") }
        }
        let client = try RawClient(port: port)
        client.send("POST /webhooks/anything HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        let responses = client.responses(2)
        #expect(responses.map(\.status) == [200, 200])
        #expect(responses.allSatisfy { $0.body == #"{"outcome":"accepted"}"# })
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }
}
