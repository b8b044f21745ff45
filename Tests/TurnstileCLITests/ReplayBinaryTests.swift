#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TurnstileCore
import TurnstileIngest

/// A config in a temporary folder: the fixtures' providers and secrets, a file store, one jsonl handler.
struct TemporaryConfig {
    let folder: String
    let path: String
    let events: String

    /// The store's file.
    let store: String
    let maxBodyBytes: Int

    init(handlerPath: String? = nil, maxAttempts: Int = 3, leaseSeconds: Double = 30, maxBodyBytes: Int = 65_536,
         store: String? = nil, extra: String = "") throws {
        folder = try temporaryFolder()
        events = folder + "/events.jsonl"
        path = folder + "/turnstile.json"
        self.store = store ?? folder + "/turnstile.db"
        self.maxBodyBytes = maxBodyBytes
        try write(handlerPath: handlerPath ?? events, maxAttempts: maxAttempts, leaseSeconds: leaseSeconds, extra: extra)
    }

    /// A config a test wrote itself at `path`, its store and events in `folder`.
    init(existing path: String, folder: String, events: String, store: String? = nil) {
        self.folder = folder
        self.path = path
        self.events = events
        self.store = store ?? folder + "/turnstile.db"
        self.maxBodyBytes = 0
    }

    /// Rewrites the config with another handler path (the same store).
    func write(handlerPath: String, maxAttempts: Int = 3, leaseSeconds: Double = 30, extra: String = "") throws {
        let fixtures = try JSONParser.parse(String(contentsOfFile: repositoryRoot + "/fixtures/turnstile.json", encoding: .utf8))
        let providers = fixtures["providers"]!.serialized()
        try """
            {"store":"sqlite:\(store)","env_file":"\(repositoryRoot)/fixtures/secrets.env","max_body_bytes":\(maxBodyBytes),
             "providers":\(providers),
             "dispatch":{"max_attempts":\(maxAttempts),"backoff_base_seconds":0.01,"backoff_max_seconds":0.05,"lease_seconds":\(leaseSeconds)},
             "handlers":[{"name":"all-events","type":"jsonl","path":"\(handlerPath)","events":["*"]}]\(extra)}
            """.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func eventLines() throws -> [JSONValue] {
        guard FileManager.default.fileExists(atPath: events) else { return [] }
        return try String(contentsOfFile: events, encoding: .utf8).split(separator: "\n").map { try JSONParser.parse(String($0)) }
    }
}

@Suite(.serialized) struct ReplayBinaryTests {
    @Test func replayCheckPassesOnTheShippedFixtures() throws {
        let result = try run(["replay", "--config", "fixtures/turnstile.json", "--check", "fixtures/"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = try result.lines.map { try JSONParser.parse($0) }
        #expect(lines.count >= 70)
        #expect(lines.contains { $0["outcome"]?.stringValue == "duplicate" && $0["reason"]?.stringValue == "seen_event" })
        #expect(lines.contains { $0["outcome"]?.stringValue == "duplicate" && $0["reason"]?.stringValue == "seen_signature" })
        #expect(result.stderr.contains("0 differ from expect"))
        #expect(result.stderr.contains("replay: dispatched"))
        // Repeatable: the fixture config keeps its store in memory.
        #expect(try run(["replay", "--config", "fixtures/turnstile.json", "--check", "--no-dispatch", "fixtures/"]).status == 0)
    }

    @Test func smallBatchesGiveTheSameLinesInTheSameOrder() throws {
        // Batches of 7: duplicates now sit in later batches than their originals, and each batch is verified
        // while the one before is stored.
        let whole = try run(["replay", "--config", "fixtures/turnstile.json", "--check", "--no-dispatch", "fixtures/"])
        let batched = try run(["replay", "--config", "fixtures/turnstile.json", "--check", "--no-dispatch", "--batch", "7", "fixtures/"])
        #expect(batched.status == 0, "\(batched.stderr)")
        #expect(batched.lines == whole.lines)
        #expect(batched.stderr.contains("0 differ from expect"))
    }

    @Test func everyAcceptedEventReachesTheJSONLHandlerOnce() throws {
        let config = try TemporaryConfig()
        let result = try run(["replay", "--config", config.path, "fixtures/deliveries/"])
        #expect(result.status == 0, "\(result.stderr)")
        let accepted = try result.lines.map { try JSONParser.parse($0) }.filter { $0["outcome"]?.stringValue == "accepted" }
        let dispatched = try config.eventLines()
        // One event breaks its schema: accepted, but dead-lettered instead of dispatched.
        #expect(dispatched.count == accepted.count - 1)
        #expect(Set(dispatched.compactMap { $0["event_key"]?.stringValue }).count == dispatched.count)
        let letters = try run(["dead-letters", "--config", config.path, "list"])
        #expect(letters.lines.count == 1)
        #expect(try JSONParser.parse(letters.lines[0])["reason"]?.stringValue == "schema_violation")
    }

    @Test func exportThenReplayReprocessDispatchesTheSameEventsAgain() throws {
        let config = try TemporaryConfig()
        #expect(try run(["replay", "--config", config.path, "fixtures/deliveries/github.ndjson", "fixtures/deliveries/sync.ndjson"]).status == 0)
        let first = try config.eventLines()
        let export = try run(["export", "--config", config.path])
        #expect(export.status == 0)
        let exportFile = config.folder + "/export.ndjson"
        try export.stdout.write(toFile: exportFile, atomically: true, encoding: .utf8)
        #expect(export.lines.count == first.count + 1)  // the dead-lettered one is archived too

        let plain = try run(["replay", "--config", config.path, exportFile])
        #expect(plain.lines.allSatisfy { $0.contains(#""outcome":"duplicate""#) })
        #expect(try config.eventLines().count == first.count)

        let again = try run(["replay", "--config", config.path, "--reprocess", exportFile])
        #expect(again.status == 0, "\(again.stderr)")
        let all = try config.eventLines()
        let reprocessed = all.filter { $0["reprocess"] == .bool(true) }
        #expect(Set(reprocessed.compactMap { $0["event_key"]?.stringValue }) == Set(first.compactMap { $0["event_key"]?.stringValue }))

        let github = try run(["export", "--config", config.path, "--provider", "github", "--since", "2026-01-01T00:00:00Z"])
        #expect(github.lines.allSatisfy { $0.contains(#""provider":"github""#) } && !github.lines.isEmpty)
    }

    @Test func deadLettersAreRetriedAfterTheFaultIsFixed() throws {
        let config = try TemporaryConfig(handlerPath: "/dev/full", maxAttempts: 2)
        let replay = try run(["replay", "--config", config.path, "fixtures/deliveries/github.ndjson"])
        #expect(replay.status == 0)
        #expect(replay.stderr.contains("dead-lettered"))
        let letters = try run(["dead-letters", "--config", config.path, "list"]).lines.map { try JSONParser.parse($0) }
        #expect(letters.count == 2)
        #expect(letters.allSatisfy { $0["reason"]?.stringValue == "sink_unavailable" })
        #expect(letters.allSatisfy { ($0["last_error"]?.stringValue ?? "").contains("No space left on device") })

        try config.write(handlerPath: config.events)
        let one = try run(["dead-letters", "--config", config.path, "retry", String(letters[0]["id"]!.numberValue!.text)])
        #expect(one.status == 0, "\(one.stderr)")
        #expect(try config.eventLines().count == 1)
        let all = try run(["dead-letters", "--config", config.path, "retry", "--all"])
        #expect(all.status == 0)
        #expect(try config.eventLines().count == 2)
        #expect(try run(["dead-letters", "--config", config.path, "list"]).lines.isEmpty)
        #expect(try run(["dead-letters", "--config", config.path, "retry", "999"]).status == 2)
        #expect(try run(["dead-letters", "--config", config.path, "retry"]).status == 2)
    }

    @Test func leasedEventsOfAKilledProcessAreDeliveredAfterRestart() throws {
        let config = try TemporaryConfig(leaseSeconds: 1)
        // Enough events to fill a pipe: the handler blocks on a FIFO nobody reads, with events leased.
        let fifo = config.folder + "/stuck.fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        let reader = open(fifo, O_RDONLY | O_NONBLOCK)
        #expect(reader >= 0)
        defer { close(reader) }
        try config.write(handlerPath: fifo, leaseSeconds: 1)
        let deliveries = config.folder + "/many.ndjson"
        try makeSignedDeliveries(count: 200, into: deliveries)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: turnstileBinary)
        process.arguments = ["replay", "--config", config.path, deliveries]
        process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Wait until the handler is stuck: the pipe is nearly full and stops filling.
        var buffered: Int32 = 0
        var steady = 0
        for _ in 0..<1500 where steady < 10 {
            usleep(20_000)
            let before = buffered
            _ = ioctl(reader, UInt(FIONREAD), &buffered)
            steady = buffered > 32_000 && buffered == before ? steady + 1 : 0
        }
        #expect(steady >= 10)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal)
        let acknowledged = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .split(separator: "\n").compactMap { try? JSONParser.parse(String($0)) }
            .filter { $0["outcome"]?.stringValue == "accepted" }.compactMap { $0["event_key"]?.stringValue }
        #expect(acknowledged.count == 200)

        // Restart with a working handler: every acknowledged event arrives, the leased ones once their lease expires.
        try config.write(handlerPath: config.events, leaseSeconds: 1)
        let restart = try run(["dispatch", "--config", config.path])
        #expect(restart.status == 0, "\(restart.stderr)")
        let delivered = Set(try config.eventLines().compactMap { $0["event_key"]?.stringValue })
        #expect(delivered == Set(acknowledged))
    }

    /// Commands that only read or manage a store refuse to create a new empty one (a mistyped path must not
    /// look like an empty store), and every command names the store it opened.
    @Test func storeCommandsRefuseToCreateAStoreAndNameTheOneTheyOpen() throws {
        let config = try TemporaryConfig()
        for arguments in [["export"], ["dead-letters", "list"], ["prune"], ["dispatch"]] {
            let result = try run([arguments[0], "--config", config.path] + arguments.dropFirst())
            #expect(result.status == 2, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains("there is no store at \(config.store)"), "\(result.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: config.store), "no empty store was left behind")
        let replay = try run(["replay", "--config", config.path, "--no-dispatch", "fixtures/deliveries/sync.ndjson"])
        #expect(replay.stderr.contains("replay: store sqlite:\(config.store)"))
        for arguments in [["export"], ["dead-letters", "list"], ["prune"], ["dispatch"]] {
            let result = try run([arguments[0], "--config", config.path] + arguments.dropFirst())
            #expect(result.status == 0, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains("\(arguments[0]): store sqlite:\(config.store)"), "\(result.stderr)")
        }
    }

    @Test func checkOnNoDeliveriesIsAnErrorNotAPass() throws {
        let empty = try temporaryFolder()
        for command in ["verify", "replay"] {
            let result = try run([command, "--config", "fixtures/turnstile.json", "--check", empty])
            #expect(result.status == 2, "\(command): \(result.stderr)")
            #expect(result.stderr.contains("--check found no deliveries"))
        }
        #expect(try run(["verify", "--config", "fixtures/turnstile.json", empty]).status == 0, "without --check an empty folder is fine")
    }

    @Test func serveRefusesAConfigWithoutProviders() throws {
        let folder = try temporaryFolder()
        try #"{"store":"sqlite:\#(folder)/t.db","listen":"127.0.0.1:0","providers":{}}"#.write(toFile: folder + "/c.json", atomically: true, encoding: .utf8)
        let result = try run(["serve", "--config", folder + "/c.json"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("no providers are configured"))
    }

    @Test func aLockedNewStoreAtStartUpSaysSoInOneShortLine() throws {
        let config = try TemporaryConfig(extra: #","sqlite":{"busy_timeout_ms":50}"#)
        // An empty database file locked by another process: the migration cannot run.
        _ = FileManager.default.createFile(atPath: config.store, contents: nil)
        let lock = try lockDatabase(config.store, seconds: 3)
        defer { lock.waitUntilExit() }
        let result = try run(["replay", "--config", config.path, "--no-dispatch", "fixtures/deliveries/sync.ndjson"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("locked"), "\(result.stderr)")
        #expect(!result.stderr.contains("CREATE TABLE"))
        #expect(result.stderr.utf8.count < 400, "\(result.stderr)")
    }

    @Test func pruneRemovesExpiredNonces() throws {
        let config = try TemporaryConfig()
        #expect(try run(["replay", "--config", config.path, "--no-dispatch", "fixtures/deliveries/sync.ndjson"]).status == 0)
        let early = try run(["prune", "--config", config.path, "--now", "2026-01-15T19:05:00Z"])
        #expect(early.stdout.contains(#"{"pruned":0}"#))
        // The fixtures were received in January 2026: by the clock, their nonces' retention has passed.
        let late = try run(["prune", "--config", config.path])
        let pruned = try JSONParser.parse(late.lines.first ?? "{}")["pruned"]?.numberValue?.int64Value ?? 0
        #expect(pruned > 0, "\(late.stderr)")
        // A time later than the clock is refused: it would delete nonces that still guard against replays.
        let future = try run(["prune", "--config", config.path, "--now", "2999-01-01T00:00:00Z"])
        #expect(future.status == 2)
        #expect(future.stderr.contains("later than the clock"))
    }

    @Test func startUpRefusesARetentionShorterThanTheWindow() throws {
        let folder = try temporaryFolder()
        try #"{"providers":{"sync":{"scheme":"sync","secrets":["env:S"],"tolerance_seconds":300,"retention_seconds":200}}}"#
            .write(toFile: folder + "/c.json", atomically: true, encoding: .utf8)
        let result = try run(["replay", "--config", folder + "/c.json", "fixtures/"], environment: ["S": "whsec_x"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("provider sync: retention_seconds 200 is shorter than the 360 seconds"))
    }
}

/// Writes `count` distinct, valid GitHub deliveries of about 1 KB.
/// `count` distinct GitHub deliveries of about 1 KB, signed as `turnstile sign` signs them (with the fixtures'
/// config and the same signer), written as NDJSON. Signed in this process: running the binary once per
/// delivery made the tests that need hundreds of them slow.
func makeSignedDeliveries(count: Int, into path: String) throws {
    let config = try TurnstileConfig.load(path: repositoryRoot + "/fixtures/turnstile.json")
    let scheme = try #require(try Ingest(config: config).scheme(for: "github"))
    let now = SystemWallClock().now()
    let signedAt = Instant(secondsSince1970: Double(now.unixSeconds))
    var lines: [String] = []
    for index in 0..<count {
        let body = Array(#"{"ref":"refs/heads/main","index":\#(index),"padding":"\#(String(repeating: "x", count: 900))"}"#.utf8)
        var headers = HeaderFields([("Content-Type", "application/json")])
        for field in try scheme.signatureHeaders(body: body, at: now, id: "delivery-\(index)", eventType: "push") {
            headers.append(name: field.name, value: field.value)
        }
        let delivery = Delivery(provider: "github", receivedAt: signedAt, headers: headers, body: body, id: "delivery-\(index)",
                                path: "/webhooks/github")
        lines.append(delivery.jsonValue.serialized())
    }
    try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
}
