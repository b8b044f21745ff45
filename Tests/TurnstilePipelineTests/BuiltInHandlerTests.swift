#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TurnstileCore
import TurnstileHTTP
import TurnstileHandlers
import TurnstileIngest
import TurnstilePipeline
import TurnstileSQLite
import TurnstileSync

let standardWebhooksSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

/// A local service that receives the `http` handler's requests and checks each signature with Turnstile's
/// own `standard-webhooks` verifier; it answers with the next scripted status (200 once the script is used
/// up), or never answers while `silent` is set.
final class CheckingReceiver: Sendable {
    struct Seen: Sendable {
        let verified: Bool
        let webhookID: String?
        let body: [UInt8]
    }
    private let state = Locked<(script: [Int], seen: [Seen], silent: Bool)>(([], [], false))
    private let server: HTTPServer
    let verifier: SchemeVerifier

    init(script: [Int] = [], silent: Bool = false) throws {
        let verifier = try SchemeVerifier(config: ProviderConfig(name: "crm", scheme: "standard-webhooks",
                                                                 secrets: [Secret(reference: "env:X", value: Array(standardWebhooksSecret.utf8))]))
        self.verifier = verifier
        state.withLock { $0.script = script; $0.silent = silent }
        let state = self.state
        server = try HTTPServer(configuration: HTTPServerConfiguration(host: "127.0.0.1", port: 0)) { request, writer in
            var headers = HeaderFields()
            for field in request.headers { headers.append(name: field.name, value: field.value) }
            let verified: Bool
            if case .success = verifier.verify(headers: headers, body: request.body, now: SystemWallClock().now()) { verified = true } else { verified = false }
            let status = state.withLock { state -> Int? in
                state.seen.append(Seen(verified: verified, webhookID: headers["webhook-id"], body: request.body))
                if state.silent { return nil }
                return state.script.isEmpty ? 200 : state.script.removeFirst()
            }
            guard let status else { return }
            writer.respond(HTTPResponse.json(verified ? status : 401, verified ? "{}" : #"{"error":"bad signature"}"#))
        }
        server.start()
    }

    var port: Int { server.port }
    var url: String { "http://127.0.0.1:\(port)/hooks" }
    var seen: [Seen] { state.withLock { $0.seen } }
    var openConnections: Int { server.openConnections }
    func stop() async { await server.shutdown(graceSeconds: 0) }
}

@Suite struct HTTPHandlerTests {
    let secret = Secret(reference: "env:CRM_WEBHOOK_SECRET", value: Array(standardWebhooksSecret.utf8))

    func registry(_ receiver: CheckingReceiver, timeout: Double = 5) throws -> HandlerRegistry {
        try HandlerRegistry.configured(by: [HandlerConfig(name: "crm", kind: .http(url: receiver.url, secret: secret, timeoutSeconds: timeout),
                                                          events: ["*"], limits: HandlerLimits(concurrency: 1))])
    }

    @Test func eventsArrivePostedAndSignedSoTheReceiverVerifiesThem() async throws {
        let harness = try Harness()
        _ = harness.process((0..<3).map { try! harness.signed("github", #"{"n":\#($0)}"#) })
        let receiver = try CheckingReceiver()
        let handlers = try registry(receiver)
        let stats = try await harness.dispatcher(handlers).drain()
        #expect(stats.dispatched == 3)
        let seen = receiver.seen
        #expect(seen.count == 3)
        #expect(seen.allSatisfy { $0.verified }, "Turnstile's standard-webhooks verifier accepts every request")
        let envelope = try JSONParser.parse(seen[0].body)
        // webhook-id is the delivery's stable identity, the same as the envelope's `delivery`.
        #expect(seen.allSatisfy { $0.webhookID?.hasPrefix("msg_") == true })
        #expect(seen[0].webhookID == envelope["delivery"]?.stringValue)
        #expect(Set(seen.compactMap(\.webhookID)).count == 3)
        #expect(envelope["event_type"]?.stringValue == "github.push")
        #expect(envelope["handler"]?.stringValue == "crm")
        #expect(envelope["payload"]?["n"] != nil)
        // One keep-alive connection carried all three, and stays open for the next.
        withExtendedLifetime(handlers) { #expect(receiver.openConnections == 1) }
        await receiver.stop()
    }

    @Test func aFailedStatusIsRetriedWithTheSameWebhookID() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let receiver = try CheckingReceiver(script: [500, 503])
        let stats = try await harness.dispatcher(try registry(receiver)).drain()
        #expect(stats.retried == 2)
        #expect(stats.dispatched == 1)
        let ids = receiver.seen.map(\.webhookID)
        #expect(ids.count == 3 && Set(ids).count == 1, "a retry is the same message")
        await receiver.stop()
    }

    @Test func aStatusThatNeverTurns2xxIsDeadLetteredWithIt() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let receiver = try CheckingReceiver(script: [500, 500, 422])
        let stats = try await harness.dispatcher(try registry(receiver), maxAttempts: 3).drain()
        #expect(stats.deadLettered == 1)
        let letter = try #require(try harness.store.deadLetters(limit: 1).first)
        #expect(letter.handler == "crm")
        #expect(letter.lastError.contains("answered 422"))
        await receiver.stop()
    }

    @Test func aReceiverThatDoesNotAnswerTimesOut() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let receiver = try CheckingReceiver(silent: true)
        let stats = try await harness.dispatcher(try registry(receiver, timeout: 0.3), maxAttempts: 1).drain()
        #expect(stats.deadLettered == 1)
        let letter = try #require(try harness.store.deadLetters(limit: 1).first)
        #expect(letter.lastError.contains("did not answer within 0.3 s"))
        await receiver.stop()
    }

    @Test func aRefusedConnectionFails() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let receiver = try CheckingReceiver()
        let url = receiver.url
        await receiver.stop()
        let registry = try HandlerRegistry.configured(by: [HandlerConfig(name: "crm", kind: .http(url: url, secret: secret, timeoutSeconds: 1),
                                                                         events: ["*"])])
        let stats = try await harness.dispatcher(registry, maxAttempts: 1).drain()
        #expect(stats.deadLettered == 1)
        #expect(try harness.store.deadLetters(limit: 1).first?.lastError.contains("cannot connect") == true)
    }

    /// The official Standard Webhooks library (PyPI `standardwebhooks`) verifies our requests too. CI installs
    /// it and sets TURNSTILE_REQUIRE_STANDARDWEBHOOKS=1, so there a missing library fails instead of skipping.
    @Test func theStandardWebhooksPythonLibraryVerifiesOurSignature() async throws {
        let available = Process.succeeds("/usr/bin/env", ["python3", "-c", "import standardwebhooks"])
        if !available {
            #expect(ProcessInfo.processInfo.environment["TURNSTILE_REQUIRE_STANDARDWEBHOOKS"] != "1",
                    "the standardwebhooks Python package is required here (pip install standardwebhooks)")
            print("skipped: the standardwebhooks Python package is not installed")
            return
        }
        let folder = try temporaryFolder()
        let log = folder + "/verified.jsonl"
        let python = Process()
        python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        python.arguments = ["python3", repositoryRoot + "/Tests/Support/standardwebhooks-receiver.py", log]
        python.environment = ProcessInfo.processInfo.environment.merging(["STANDARD_WEBHOOKS_SECRET": standardWebhooksSecret]) { $1 }
        let stdin = Pipe()
        let stdout = Pipe()
        python.standardInput = stdin
        python.standardOutput = stdout
        try python.run()
        defer { try? stdin.fileHandleForWriting.close(); python.waitUntilExit() }
        let portLine = String(decoding: stdout.fileHandleForReading.availableLine(), as: UTF8.self)
        let port = try #require(Int(portLine.trimmingCharacters(in: .whitespacesAndNewlines)))

        let harness = try Harness()
        _ = harness.process((0..<3).map { try! harness.signed("github", #"{"n":\#($0)}"#) })
        let good = try HandlerRegistry.configured(by: [HandlerConfig(
            name: "crm", kind: .http(url: "http://127.0.0.1:\(port)/", secret: secret, timeoutSeconds: 5), events: ["*"])])
        let stats = try await harness.dispatcher(good).drain()
        #expect(stats.dispatched == 3)
        // Signed with another secret: the library refuses it, and the call fails.
        _ = harness.process([try harness.signed("github", #"{"n":"other"}"#)])
        let wrong = Secret(reference: "env:X", value: Array("whsec_b3RoZXItc2VjcmV0LW9mLXRoaXJ0eS10d28tYnl0ZXM=".utf8))
        let bad = try HandlerRegistry.configured(by: [HandlerConfig(
            name: "crm", kind: .http(url: "http://127.0.0.1:\(port)/", secret: wrong, timeoutSeconds: 5), events: ["*"])])
        let refused = try await harness.dispatcher(bad, maxAttempts: 1).drain()
        #expect(refused.deadLettered == 1)
        let entries = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map { try JSONParser.parse(String($0)) }
        #expect(entries.count == 4)
        #expect(entries.prefix(3).allSatisfy { $0["verified"] == .bool(true) })
        #expect(entries.last?["verified"] == .bool(false))
    }
}

@Suite struct ExecHandlerTests {
    func registry(_ command: [String], timeout: Double = 10) throws -> HandlerRegistry {
        try HandlerRegistry.configured(by: [HandlerConfig(name: "notify", kind: .exec(command: command, timeoutSeconds: timeout), events: ["*"])])
    }

    @Test func theCommandGetsTheEventOnStdinAndItsMetadataInTheEnvironment() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let folder = try temporaryFolder()
        setenv("TURNSTILE_TEST_PARENT_ONLY", "must-not-leak", 1)
        let stats = try await harness.dispatcher(try registry(["/bin/sh", "-c", "cat > '\(folder)/in.json'; env > '\(folder)/env'"])).drain()
        #expect(stats.dispatched == 1)
        let envelope = try JSONParser.parse(try String(contentsOfFile: folder + "/in.json", encoding: .utf8))
        #expect(envelope["payload"]?["a"] != nil)
        let environment = try String(contentsOfFile: folder + "/env", encoding: .utf8)
        #expect(environment.contains("TURNSTILE_EVENT_TYPE=github.push"))
        #expect(environment.contains("TURNSTILE_HANDLER=notify"))
        #expect(environment.contains("TURNSTILE_ATTEMPT=1"))
        #expect(!environment.contains("must-not-leak"), "the command gets none of Turnstile's own variables (its secrets)")
    }

    @Test func aNonZeroExitFailsWithItsStatusAndOutput() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let stats = try await harness.dispatcher(try registry(["/bin/sh", "-c", "echo 'crm is down' >&2; exit 3"]), maxAttempts: 2).drain()
        #expect(stats.retried == 1)
        #expect(stats.deadLettered == 1)
        let error = try #require(try harness.store.deadLetters(limit: 1).first?.lastError)
        #expect(error.contains("exited with status 3"))
        #expect(error.contains("crm is down"))
    }

    @Test func aMissingProgramFailsClearly() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let stats = try await harness.dispatcher(try registry(["/nonexistent/notify"]), maxAttempts: 1).drain()
        #expect(stats.deadLettered == 1)
        #expect(try harness.store.deadLetters(limit: 1).first?.lastError.contains("could not start") == true)
    }

    @Test func atTheTimeoutTheWholeProcessGroupIsKilledChildrenIncluded() async throws {
        let harness = try Harness()
        _ = harness.process([try harness.signed("github", #"{"a":1}"#)])
        let folder = try temporaryFolder()
        // The command forks a child that would outlive it, then waits.
        let script = "sleep 300 & echo $! > '\(folder)/child.pid'; sleep 300"
        let stats = try await harness.dispatcher(try registry(["/bin/sh", "-c", script], timeout: 0.5), maxAttempts: 1).drain()
        #expect(stats.deadLettered == 1)
        #expect(try harness.store.deadLetters(limit: 1).first?.lastError.contains("timeout") == true)
        let child = try #require(Int32(try String(contentsOfFile: folder + "/child.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        var alive = true
        for _ in 0..<200 where alive {
            alive = Self.isRunning(child)
            if alive { usleep(10_000) }
        }
        #expect(!alive, "the forked child was killed with its group")
    }

    /// True while `pid` exists and is not a zombie.
    static func isRunning(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)]
        return state != "Z" && state != "X"
    }
}

extension Process {
    /// Runs `program` with `arguments`, output discarded; true when it exits 0.
    static func succeeds(_ program: String, _ arguments: [String]) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }
}

extension FileHandle {
    /// Reads up to the first newline.
    func availableLine() -> [UInt8] {
        var line: [UInt8] = []
        while let byte = try? read(upToCount: 1), let first = byte.first, first != 0x0a { line.append(first) }
        return line
    }
}
