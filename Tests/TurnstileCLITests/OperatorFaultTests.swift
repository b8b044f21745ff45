#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TurnstileCore
import TurnstileTestSupport

/// Faults of the surroundings that once stalled or exposed `serve`, through the real binary.
@Suite(.serialized) struct OperatorFaultTests {
    /// Standard error that nobody reads (a stuck log shipper): the receiver keeps answering, and the lines
    /// that do not fit its buffer are dropped and counted. Logging used to write from the event loop once
    /// 64 KiB had gathered, so a full pipe stalled every answer (`/healthz` took 6 s with a slow reader).
    @Test func aLogNobodyReadsNeverStallsTheReceiver() throws {
        let config = try TemporaryConfig(extra: #","listen":"127.0.0.1:0""#)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: turnstileBinary)
        process.arguments = ["serve", "--config", config.path]
        process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
        process.standardOutput = FileHandle.nullDevice
        let pipe = Pipe()
        process.standardError = pipe
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // Read up to the `listening` line, then never again: the pipe's 64 KiB fill up.
        var head = ""
        while !head.contains(#""msg":"listening""#) {
            let chunk = pipe.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            head += String(decoding: chunk, as: UTF8.self)
        }
        let line = try #require(head.split(separator: "\n").first { $0.contains(#""msg":"listening""#) })
        let address = try #require(try JSONParser.parse(String(line))["address"]?.stringValue)
        let port = try #require(Int(address.split(separator: ":").last ?? ""))
        // Each refused delivery logs a line of about 250 bytes: 3,000 are far past the pipe's 64 KiB, 30,000 past
        // the 4 MiB buffer. A fresh connection per 500 keeps the client's own parsing short.
        let forged = "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=\(String(repeating: "0", count: 64))\r\nContent-Length: 2\r\n\r\n{}"
        func send(batches: Int) throws -> Int {
            var answered = 0
            for _ in 0..<batches {
                let client = try RawClient(port: port)
                client.send(String(repeating: forged, count: 500))
                answered += client.responses(500, timeout: 20).count
            }
            return answered
        }
        #expect(try send(batches: 6) == 3000, "every request is answered while standard error is not read")
        #expect(try healthStatus(port).status == 200)
        let answered = try send(batches: 54) + 3000
        let metrics = try RawClient(port: port)
        metrics.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        let dropped = metrics.responses(1).first?.body.split(separator: "\n").first { $0.hasPrefix("turnstile_log_lines_dropped_total ") }
            .flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        print("log: \(answered) requests answered with standard error unread; \(dropped) log lines dropped")
        #expect(answered == 30_000)
        #expect(dropped > 0)
        kill(process.processIdentifier, SIGTERM)
        // Reading again lets the drain finish.
        _ = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }

    /// The store, its WAL and the jsonl sink hold every body received: created 0600 (they were 0644). A
    /// delivery's `Authorization`, `Cookie` and `Proxy-Authorization` are not archived, so `export` never
    /// prints them.
    @Test func filesArePrivateAndCredentialsAreNotArchived() throws {
        let config = try TemporaryConfig(extra: #","listen":"127.0.0.1:0""#)
        let server = try RunningServer(config: config)
        var delivery = try signedGitHub(7, folder: config.folder)
        var headers = delivery["headers"]?.objectValue ?? JSONObject()
        headers["Authorization"] = .string("Bearer proxy-token-123")
        headers["Cookie"] = .string("session=cookie-456")
        headers["Proxy-Authorization"] = .string("Basic cHJveHk6Nzg5")
        var object = try #require(delivery.objectValue)
        object["headers"] = .object(headers)
        delivery = .object(object)
        let client = try RawClient(port: server.port)
        client.send(httpRequest(for: delivery))
        #expect(client.responses(1).first?.status == 200)
        for _ in 0..<200 where (try? config.eventLines().count) ?? 0 < 1 { usleep(20_000) }
        #expect(server.stop() == 0)
        for file in [config.store, config.store + "-wal", config.events] where FileManager.default.fileExists(atPath: file) {
            let mode = ((try FileManager.default.attributesOfItem(atPath: file))[.posixPermissions] as? Int) ?? 0o777
            #expect(mode & 0o077 == 0, "\(file) is \(String(mode, radix: 8))")
        }
        let export = try run(["export", "--config", config.path])
        #expect(export.status == 0, "\(export.stderr)")
        #expect(export.stdout.contains("X-Hub-Signature-256"))
        for secret in ["proxy-token-123", "cookie-456", "cHJveHk6Nzg5", "Authorization", "Cookie"] {
            #expect(!export.stdout.contains(secret), "export shows \(secret)")
        }
    }

    /// The store file deleted, or replaced by another, while `serve` runs: deliveries were acknowledged into
    /// the unlinked file and lost at the next start. Now they are answered 503 and `/healthz` says why.
    @Test(arguments: ["deleted", "replaced"])
    func aStoreFileDeletedOrReplacedWhileServingIsNotWrittenTo(how: String) throws {
        let config = try TemporaryConfig(extra: #","listen":"127.0.0.1:0""#)
        let server = try RunningServer(config: config)
        defer { _ = server.stop() }
        func post(_ index: Int) throws -> Int {
            let client = try RawClient(port: server.port)
            client.send(httpRequest(for: try signedGitHub(index, folder: config.folder)))
            return client.responses(1).first?.status ?? 0
        }
        #expect(try post(1) == 200)
        try FileManager.default.removeItem(atPath: config.store)
        if how == "replaced" { try Data("not the store".utf8).write(to: URL(fileURLWithPath: config.store)) }
        #expect(try post(2) == 503)
        let health = try healthStatus(server.port)
        #expect(health.status == 503)
        #expect(health.body.contains(how), "\(health.body)")
    }

    /// One event followed through serve's log: a refused delivery's line explains why (as `verify` does) with
    /// a request id and the peer; an accepted one names the event, and each handler run logs the same event
    /// with its duration.
    @Test func theLogExplainsRefusalsAndFollowsAnEventThroughItsHandlers() throws {
        let config = try TemporaryConfig(extra: #","listen":"127.0.0.1:0""#)
        let server = try RunningServer(config: config)
        defer { _ = server.stop() }
        let stale = try signedDelivery("stripe", #"{"id":"evt_stale","type":"x"}"#)
        var object = try #require(stale.objectValue)
        var headers = try #require(object["headers"]?.objectValue)
        let signature = try #require(headers["Stripe-Signature"]?.stringValue)
        headers["Stripe-Signature"] = .string(signature.replacingOccurrences(of: "v1=", with: "v1=00"))
        object["headers"] = .object(headers)
        let client = try RawClient(port: server.port)
        client.send(httpRequest(for: .object(object)))
        #expect(client.responses(1).first?.status == 401)
        let accepted = try RawClient(port: server.port)
        accepted.send(httpRequest(for: try signedGitHub(3, folder: config.folder)))
        #expect(accepted.responses(1).first?.status == 200)
        var lines: [JSONValue] = []
        for _ in 0..<200 {
            lines = try server.log().compactMap { try? JSONParser.parse($0) }
            if lines.contains(where: { $0["msg"]?.stringValue == "handler ran" }) { break }
            usleep(25_000)
        }
        let refused = try #require(lines.first { $0["outcome"]?.stringValue == "rejected" })
        #expect(refused["reason"]?.stringValue == "malformed_signature" || refused["reason"]?.stringValue == "invalid_signature")
        #expect((refused["detail"]?.stringValue ?? "-") != "-", "the explanation is logged")
        #expect(refused["peer"]?.stringValue?.hasPrefix("127.0.0.1:") == true)
        #expect((refused["request_id"]?.stringValue ?? "").count > 4)
        let delivery = try #require(lines.first { $0["outcome"]?.stringValue == "accepted" })
        let ran = try #require(lines.first { $0["msg"]?.stringValue == "handler ran" })
        #expect(delivery["event"]?.stringValue?.hasPrefix("evt_") == true)
        #expect(ran["event"]?.stringValue == delivery["event"]?.stringValue)
        #expect(ran["handler"]?.stringValue == "all-events" && ran["duration_ms"] != nil)
        #expect(delivery["request_id"]?.stringValue != refused["request_id"]?.stringValue)
    }
}
