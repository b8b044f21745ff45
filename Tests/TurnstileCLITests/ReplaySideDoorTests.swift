#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TurnstileCore
import TurnstileIngest
import TurnstileTestSupport

/// The replay guard through the real `turnstile serve`: one captured delivery, re-sent with everything an
/// attacker can change without the secret (headers the signature does not cover, a second reading of the
/// body, which of several signature entries is kept, the route), is answered `duplicate` or refused, and
/// its event is dispatched once.
@Suite(.serialized) struct ReplaySideDoorTests {
    /// A serve with providers chosen to expose each side door, and the config to sign for them.
    struct Bench {
        let folder: String
        let events: String
        let server: RunningServer
        let ingest: Ingest
        /// Ingests that hold only the second secret of `multi`, to sign a second signature entry.
        let secondSecret: Ingest

        init() throws {
            folder = try temporaryFolder()
            events = folder + "/events.jsonl"
            try """
                GITHUB_SECRET=github-side-door-secret
                SYNC_SECRET=whsec_sync-side-door-secret
                HOOK_SECRET=hook-side-door-secret
                MULTI_NEW=multi-new-secret
                MULTI_OLD=multi-old-secret
                SHARED=shared-workspace-secret

                """.write(toFile: folder + "/secrets.env", atomically: true, encoding: .utf8)
            let providers = """
                "github":{"scheme":"github","secrets":["env:GITHUB_SECRET"]},
                "sync":{"scheme":"sync","secrets":["env:SYNC_SECRET"]},
                "hook":{"scheme":"hmac","secrets":["env:HOOK_SECRET"],"retention_seconds":604800,
                        "hmac":{"signature_header":"X-Hook-Signature","signed":"body","event_id":"header:X-Hook-Id","event_type":"header:X-Hook-Event"}},
                "multi":{"scheme":"hmac","secrets":["env:MULTI_NEW","env:MULTI_OLD"],
                         "hmac":{"signature_header":"X-Multi-Signature","format":"key-value","timestamp":"signature","signed":"timestamp.body",
                                 "event_id":"header:X-Multi-Id"}},
                "workspace-a":{"scheme":"synthflow","secrets":["env:SHARED"]},
                "workspace-b":{"scheme":"synthflow","secrets":["env:SHARED"]}
                """
            let path = folder + "/turnstile.json"
            try """
                {"store":"sqlite:\(folder)/turnstile.db","env_file":"secrets.env","listen":"127.0.0.1:0","max_body_bytes":4194304,
                 "providers":{\(providers)},
                 "handlers":[{"name":"all","type":"jsonl","path":"\(events)","events":["*"]}]}
                """.write(toFile: path, atomically: true, encoding: .utf8)
            ingest = try Ingest(config: TurnstileConfig.load(path: path))
            let secondPath = folder + "/second.json"
            try """
                {"env_file":"secrets.env","providers":{"multi":{"scheme":"hmac","secrets":["env:MULTI_OLD"],
                 "hmac":{"signature_header":"X-Multi-Signature","format":"key-value","timestamp":"signature","signed":"timestamp.body","event_id":"header:X-Multi-Id"}}}}
                """.write(toFile: secondPath, atomically: true, encoding: .utf8)
            secondSecret = try Ingest(config: TurnstileConfig.load(path: secondPath))
            server = try RunningServer(config: TemporaryConfig(existing: path, folder: folder, events: events))
        }

        /// Signed headers for `body` to `provider`, now.
        func sign(_ provider: String, _ body: String, id: String? = nil, event: String? = nil, with ingest: Ingest? = nil) throws -> HeaderFields {
            let scheme = try #require((ingest ?? self.ingest).scheme(for: provider))
            return try scheme.signatureHeaders(body: Array(body.utf8), at: SystemWallClock().now(), id: id, eventType: event)
        }

        /// POSTs one delivery and returns its status and outcome.
        func post(_ provider: String, _ headers: HeaderFields, _ body: String) throws -> (status: Int, outcome: String, reason: String?) {
            var text = "POST /webhooks/\(provider) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            for field in headers.fields { text += "\(field.name): \(field.value)\r\n" }
            text += "Content-Length: \(body.utf8.count)\r\n\r\n" + body
            let client = try RawClient(port: server.port)
            client.send(text)
            let answer = try #require(client.responses(1, timeout: 30).first)
            let json = try? JSONParser.parse(answer.body)
            return (answer.status, json?["outcome"]?.stringValue ?? "", json?["reason"]?.stringValue)
        }

        /// The events dispatched to the jsonl handler once the queue has drained.
        func dispatched(atLeast count: Int) throws -> [JSONValue] {
            var lines: [JSONValue] = []
            for _ in 0..<400 {
                lines = (try? String(contentsOfFile: events, encoding: .utf8))?.split(separator: "\n").compactMap { try? JSONParser.parse(String($0)) } ?? []
                if lines.count >= count { break }
                usleep(25_000)
            }
            // Give a wrongly queued extra event the time to show up too.
            usleep(300_000)
            return (try? String(contentsOfFile: events, encoding: .utf8))?.split(separator: "\n").compactMap { try? JSONParser.parse(String($0)) } ?? lines
        }
    }

    @Test func gitHubEventAndDeliveryHeadersAreNotPartOfTheReplayGuard() throws {
        let bench = try Bench()
        defer { _ = bench.server.stop() }
        let body = #"{"ref":"refs/heads/main","after":"9f2c"}"#
        let original = try bench.sign("github", body, id: "delivery-1", event: "push")
        #expect(try bench.post("github", original, body).outcome == "accepted")
        var outcomes: [String: Int] = [:]
        for index in 0..<50 {
            var headers = HeaderFields()
            for field in original.fields {
                switch field.name.lowercased() {
                case "x-github-event": headers.append(name: field.name, value: ["issues", "Push", "PUSH", "push ", "release"][index % 5] + (index < 5 ? "" : "\(index)"))
                case "x-github-delivery": headers.append(name: field.name, value: index % 2 == 0 ? "delivery-1" : "delivery-replay-\(index)")
                default: headers.append(name: field.name, value: field.value)
                }
            }
            let answer = try bench.post("github", headers, body)
            outcomes["\(answer.status) \(answer.outcome)/\(answer.reason ?? "")", default: 0] += 1
        }
        #expect(outcomes == ["200 duplicate/seen_signature": 50], "\(outcomes)")
        #expect(try bench.dispatched(atLeast: 1).count == 1)
    }

    @Test func syncFallbackReadsTheEventFromTheBytesItVerified() throws {
        let bench = try Bench()
        defer { _ = bench.server.stop() }
        let body = #"{"id":"gen_B","status":"COMPLETED"}"#
        let headers = try bench.sign("sync", body)
        #expect(try bench.post("sync", headers, body).outcome == "accepted")
        // A second copy of a key: `JSON.parse` keeps the last one (the signed text), a reader of the raw bytes
        // the first one. The fallback does not apply to such a body.
        for smuggled in [#"{"id":"gen_A","status":"COMPLETED","id":"gen_B"}"#, #"{"id":"gen_B","status":"FAILED","status":"COMPLETED"}"#,
                         #"{"id":"gen_B","status":"COMPLETED","metrics":{},"metrics":null}"#] {
            let answer = try bench.post("sync", headers, smuggled)
            #expect(answer.status == 401 && answer.reason == "invalid_signature", "\(smuggled): \(answer)")
        }
        // Other spellings of the same JSON verify through the fallback, and are the same signed message.
        for variant in [#"{ "id" : "gen_B", "status" : "COMPLETED" }"#, #"{"id":"gen_\u0042","status":"\u0043OMPLETED"}"#,
                        "{\"id\":\"gen_B\",\n\"status\":\"COMPLETED\"}\n"] {
            let answer = try bench.post("sync", headers, variant)
            #expect(answer.status == 200 && answer.outcome == "duplicate" && answer.reason == "seen_signature", "\(variant): \(answer)")
        }
        let lines = try bench.dispatched(atLeast: 1)
        #expect(lines.count == 1)
        #expect(lines.first?["event_key"]?.stringValue == "generation:gen_B:COMPLETED")
    }

    @Test func genericHeaderTypeAndIdDoNotScopeTheNonce() throws {
        let bench = try Bench()
        defer { _ = bench.server.stop() }
        // A large body: before the fix, each replay under new header values was stored again.
        let body = #"{"payload":""# + String(repeating: "x", count: 2 << 20) + #""}"#
        let original = try bench.sign("hook", body, id: "hook-1", event: "order.created")
        #expect(try bench.post("hook", original, body).outcome == "accepted")
        let storeBefore = fileBytes(bench.folder + "/turnstile.db") + fileBytes(bench.folder + "/turnstile.db-wal")
        var outcomes: [String: Int] = [:]
        for index in 0..<10 {
            var headers = HeaderFields()
            for field in original.fields where !["x-hook-id", "x-hook-event"].contains(field.name.lowercased()) {
                headers.append(name: field.name, value: field.value)
            }
            headers.append(name: "X-Hook-Id", value: "hook-replay-\(index)")
            headers.append(name: "X-Hook-Event", value: "order.replayed.\(index)")
            let answer = try bench.post("hook", headers, body)
            outcomes["\(answer.outcome)/\(answer.reason ?? "")", default: 0] += 1
        }
        #expect(outcomes == ["duplicate/seen_signature": 10], "\(outcomes)")
        #expect(try bench.dispatched(atLeast: 1).count == 1)
        let storeAfter = fileBytes(bench.folder + "/turnstile.db") + fileBytes(bench.folder + "/turnstile.db-wal")
        #expect(storeAfter - storeBefore < 2 << 20, "replays must not be stored again: grew \(storeAfter - storeBefore) bytes")
    }

    @Test func droppingOneOfSeveralSignatureEntriesIsTheSameSignedMessage() throws {
        let bench = try Bench()
        defer { _ = bench.server.stop() }
        let body = #"{"order":42}"#
        // A sender rotating its secret signs under both: `t=…,v1=<new>,v1=<old>`.
        let new = try bench.sign("multi", body, id: "multi-1")
        let old = try bench.sign("multi", body, id: "multi-1", with: bench.secondSecret)
        let newValue = try #require(new.values("X-Multi-Signature").first)
        let oldEntry = try #require(old.values("X-Multi-Signature").first?.split(separator: ",").last)
        var both = HeaderFields()
        both.append(name: "X-Multi-Signature", value: newValue + "," + oldEntry)
        both.append(name: "X-Multi-Id", value: "multi-1")
        #expect(try bench.post("multi", both, body).outcome == "accepted")
        // The captured delivery with only the old secret's entry, under a new id header.
        var stripped = HeaderFields()
        stripped.append(name: "X-Multi-Signature", value: try #require(old.values("X-Multi-Signature").first))
        stripped.append(name: "X-Multi-Id", value: "multi-replayed")
        let answer = try bench.post("multi", stripped, body)
        #expect(answer.outcome == "duplicate" && answer.reason == "seen_signature", "\(answer)")
        #expect(try bench.dispatched(atLeast: 1).count == 1)
    }

    @Test func aDeliveryReplayedToAnotherRouteUnderTheSameSecretIsASeenSignature() throws {
        let bench = try Bench()
        defer { _ = bench.server.stop() }
        let body = #"{"status":"completed","call":{"call_id":"c0ffee00-1234-4abc-8def-0123456789ab","status":"completed"}}"#
        let headers = try bench.sign("workspace-a", body)
        #expect(try bench.post("workspace-a", headers, body).outcome == "accepted")
        let answer = try bench.post("workspace-b", headers, body)
        #expect(answer.outcome == "duplicate" && answer.reason == "seen_signature", "\(answer)")
        #expect(try bench.dispatched(atLeast: 1).count == 1)
    }
}

func fileBytes(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
}

/// Many processes on one store and one `jsonl` sink: every acknowledged event's line is in the file. The repair
/// of a torn last line at open, and the cut-back after a failed write, once removed another process's line
/// (33 dispatchers lost one event; `dead-letters list` during `serve` removed 8 and 14 of 300). Appends and
/// repairs now hold the file's lock, and `dead-letters list` opens no sink at all.
@Suite(.serialized) struct ManyDispatchersTests {
    @Test func dispatchersAndListingsOnOneSinkLoseNoLine() throws {
        let config = try TemporaryConfig(leaseSeconds: 30)
        let count = 400
        var lines: [String] = []
        for index in 0..<count {
            lines.append(try signedDelivery("github", #"{"many":\#(index),"pad":"\#(String(repeating: "p", count: index % 7 * 300))"}"#,
                                            id: "many-\(index)").serialized())
        }
        let input = config.folder + "/deliveries.ndjson"
        try (lines.joined(separator: "\n") + "\n").write(toFile: input, atomically: true, encoding: .utf8)
        let admitted = try run(["replay", "--config", config.path, "--no-dispatch", input])
        #expect(admitted.status == 0, "\(admitted.stderr)")
        #expect(admitted.lines.filter { $0.contains(#""outcome":"accepted""#) }.count == count)

        // 12 dispatchers at once, and a reader listing dead letters over and over meanwhile.
        var processes: [Process] = []
        for index in 0..<14 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: turnstileBinary)
            process.arguments = index < 12 ? ["dispatch", "--config", config.path] : ["dead-letters", "--config", config.path, "list"]
            process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            processes.append(process)
        }
        var listings = 2
        while processes.prefix(12).contains(where: \.isRunning) && listings < 200 {
            _ = try run(["dead-letters", "--config", config.path, "list"])
            listings += 1
        }
        for process in processes { process.waitUntilExit() }
        #expect(try run(["dispatch", "--config", config.path]).status == 0)
        let keys = Set(try config.eventLines().compactMap { $0["event_key"]?.stringValue })
        print("many dispatchers: \(count) acknowledged, \(keys.count) in the sink after 12 dispatchers and \(listings) listings")
        #expect(keys.count == count, "missing: \((0..<count).map { "many-\($0)" }.filter { !keys.contains($0) }.prefix(10))")
    }
}
