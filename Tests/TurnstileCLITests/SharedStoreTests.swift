#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TurnstileCore
import TurnstileSync
import TurnstileTestSupport
@testable import TurnstilePostgres

/// One `turnstile serve` of several on a shared store.
final class Instance: @unchecked Sendable {
    let process = Process()
    let logPath: String
    let port: Int

    init(config: String, log: String) throws {
        logPath = log
        port = try launchTurnstile(process, ["serve", "--config", config], logPath: log) { line in
            guard line.contains(#""msg":"listening""#), let address = try? JSONParser.parse(line)["address"]?.stringValue else { return nil }
            return Int(address.split(separator: ":").last ?? "")
        }
    }

    var pid: Int32 { process.processIdentifier }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// POSTs `delivery` and returns the answer's body.
    func post(_ delivery: JSONValue) throws -> RawResponse? {
        let client = try RawClient(port: port)
        client.send(httpRequest(for: delivery))
        return client.responses(1, timeout: 10).first
    }

    /// `turnstile_queue_depth` from `/metrics` (its gauges are read every 250 ms).
    func queueDepth() throws -> Int? {
        let client = try RawClient(port: port)
        client.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        let text = client.responses(1).first?.body ?? ""
        return text.split(separator: "\n").first { $0.hasPrefix("turnstile_queue_depth ") }.flatMap { Int($0.split(separator: " ").last ?? "") }
    }

    func stop() -> Int32 {
        kill(pid, SIGCONT)
        kill(pid, SIGTERM)
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { if process.isRunning { kill(pid, SIGKILL) } }
}

/// Several `turnstile serve` processes on one PostgreSQL database, as behind a load balancer.
@Suite(.serialized) struct SharedStoreTests {
    /// A config on a fresh schema of the test server (nil, skipped, when none is configured outside CI).
    func configs(_ count: Int, handlers: (_ index: Int, _ folder: String) -> String, leaseSeconds: Double = 30) throws -> (paths: [String], folder: String)? {
        guard let server = TestPostgres.configured else {
            #expect(!TestPostgres.isRequired, "PostgreSQL is required here")
            print(TestPostgres.skipNote)
            return nil
        }
        let (url, password) = (server.url, server.password)
        let schema = TestPostgres.schemaName("shared_")
        try PostgresConnection(url: url, password: password).execute("CREATE SCHEMA \(schema)")
        let folder = try temporaryFolder()
        try FileManager.default.createDirectory(atPath: folder + "/runs", withIntermediateDirectories: true)
        let fixtures = try JSONParser.parse(String(contentsOfFile: repositoryRoot + "/fixtures/turnstile.json", encoding: .utf8))
        var paths: [String] = []
        for index in 0..<count {
            let path = folder + "/instance-\(index).json"
            try """
                {"store":"\(server.url(inSchema: schema))","listen":"127.0.0.1:0",
                 "postgres":{"password":"env:TURNSTILE_TEST_POSTGRES_PASSWORD"},
                 "env_file":"\(repositoryRoot)/fixtures/secrets.env","providers":\(fixtures["providers"]!.serialized()),
                 "dispatch":{"lease_seconds":\(leaseSeconds),"backoff_base_seconds":0.05,"backoff_max_seconds":0.1},
                 "handlers":[\(handlers(index, folder))]}
                """.write(toFile: path, atomically: true, encoding: .utf8)
            paths.append(path)
        }
        return (paths, folder)
    }

    @Test func twoInstancesShareDedupAndDispatchEachEventOnce() throws {
        guard let (paths, folder) = try configs(2, handlers: { index, _ in
            #"{"name":"all","type":"jsonl","path":"instance-\#(index).jsonl","events":["*"]}"#
        }) else { return }
        let a = try Instance(config: paths[0], log: folder + "/a.log")
        let b = try Instance(config: paths[1], log: folder + "/b.log")

        // Accepted by one, a duplicate at the other.
        let first = try signedGitHub(0, folder: folder)
        #expect(try a.post(first)?.body.contains(#""outcome":"accepted""#) == true)
        #expect(try b.post(first)?.body.contains(#""outcome":"duplicate""#) == true)

        // The same delivery sent to both at once, 50 times: accepted exactly once in total each time.
        let accepted = Locked(0)
        let answered = Locked(0)
        for index in 1...50 {
            let delivery = try signedGitHub(index, folder: folder)
            let group = DispatchGroup()
            for instance in [a, b] {
                group.enter()
                Thread {
                    defer { group.leave() }
                    guard let answer = try? instance.post(delivery), answer.status == 200 else { return }
                    answered.withLock { $0 += 1 }
                    if answer.body.contains(#""outcome":"accepted""#) { accepted.withLock { $0 += 1 } }
                }.start()
            }
            group.wait()
        }
        #expect(answered.withLock { $0 } == 100)
        #expect(accepted.withLock { $0 } == 50)

        // Every event enqueued by either is dispatched once across both instances' workers.
        var keys: [String] = []
        for _ in 0..<300 {
            keys = (0..<2).flatMap { index in
                ((try? String(contentsOfFile: folder + "/instance-\(index).jsonl", encoding: .utf8)) ?? "").split(separator: "\n")
                    .compactMap { try? JSONParser.parse(String($0))["event_key"]?.stringValue }
            }
            if keys.count >= 51 { break }
            usleep(50_000)
        }
        #expect(keys.count == 51)
        #expect(Set(keys).count == 51, "no event was dispatched twice")
        #expect(a.stop() == 0)
        #expect(b.stop() == 0)
    }

    /// A slow handler (it notes each start, sleeps 3 s, notes its end), used with 2 s leases: slower than a lease,
    /// so only renewals keep its deliveries.
    func slowHandler(_ folder: String) -> String {
        let script = "echo > '\(folder)/runs/'start.$TURNSTILE_EVENT_ID.$$; sleep 3; echo > '\(folder)/runs/'done.$TURNSTILE_EVENT_ID.$$"
        return #"{"name":"slow","type":"exec","command":["/bin/sh","-c","\#(script)"],"events":["github.*"],"timeout_seconds":30}"#
    }

    func runs(_ folder: String, _ kind: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder + "/runs")) ?? []).filter { $0.hasPrefix(kind + ".") }
    }

    /// Waits until `condition` holds (at most `seconds`).
    func waitUntil(_ seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        for _ in 0..<Int(seconds * 20) {
            if try condition() { return true }
            usleep(50_000)
        }
        return try condition()
    }

    @Test func aKilledInstancesLeasedEventsAreTakenOverByTheOther() throws {
        guard let (paths, folder) = try configs(2, handlers: { _, folder in slowHandler(folder) }, leaseSeconds: 2) else { return }
        let a = try Instance(config: paths[0], log: folder + "/a.log")
        for index in 0..<3 { #expect(try a.post(try signedGitHub(index, folder: folder))?.status == 200) }
        #expect(waitUntil(30) { !runs(folder, "start").isEmpty }, "A leased and started its handler")
        let startedAtA = Set(runs(folder, "start").map { $0.split(separator: ".")[1] })
        kill(a.pid, SIGKILL)
        a.process.waitUntilExit()
        let b = try Instance(config: paths[1], log: folder + "/b.log")
        // B takes the three over once A's leases expire, runs them, and the queue empties.
        #expect(try waitUntil(60) { (try b.queueDepth()) == 0 && runs(folder, "done").count >= 3 }, "\(b.log.suffix(1_500))")
        // Every event ran, and those A had started when it was killed ran again at B.
        let starts = Dictionary(grouping: runs(folder, "start"), by: { $0.split(separator: ".")[1] }).mapValues(\.count)
        #expect(starts.count == 3, "\(starts)")
        #expect(startedAtA.allSatisfy { (starts[$0] ?? 0) >= 2 }, "\(starts)")
        #expect(b.stop() == 0)
    }

    @Test func aPausedInstancesLateCompletionIsFencedOffAndChangesNothing() throws {
        guard let (paths, folder) = try configs(2, handlers: { _, folder in slowHandler(folder) }, leaseSeconds: 2) else { return }
        let a = try Instance(config: paths[0], log: folder + "/a.log")
        for index in 0..<2 { #expect(try a.post(try signedGitHub(index, folder: folder))?.status == 200) }
        #expect(waitUntil(30) { !runs(folder, "start").isEmpty })
        // A stops mid-dispatch, past its lease; B takes the events over and finishes them.
        kill(a.pid, SIGSTOP)
        let b = try Instance(config: paths[1], log: folder + "/b.log")
        #expect(try waitUntil(60) { (try b.queueDepth()) == 0 && runs(folder, "done").count >= 3 }, "\(b.log.suffix(1_500))")
        // A wakes, its handler calls have long ended, and its completions find the leases gone.
        kill(a.pid, SIGCONT)
        #expect(waitUntil(30) { a.log.contains("leases lost before their results were stored") }, "\(a.log.suffix(1_500))")
        #expect(try b.queueDepth() == 0)
        let letters = try run(["dead-letters", "--config", paths[1], "list"],
                              environment: ["TURNSTILE_TEST_POSTGRES_PASSWORD": ProcessInfo.processInfo.environment["TURNSTILE_TEST_POSTGRES_PASSWORD"] ?? ""])
        #expect(letters.status == 0)
        #expect(letters.stdout.isEmpty, "the late results dead-lettered nothing")
        #expect(a.stop() == 0)
        #expect(b.stop() == 0)
    }
}

/// PostgreSQL stopped and started again under load, on a cluster of the test's own (so that no other test
/// sees the outage).
@Suite struct PostgresOutageTests {
    @Test func anOutageGives503sLosesNothingAcknowledgedAndServiceComesBackByItself() throws {
        guard TestPostgres.configured != nil else {
            #expect(!TestPostgres.isRequired, "PostgreSQL is required here")
            print("skipped: needs a PostgreSQL installation to start a cluster of its own (eval \"$(bash .ci/postgres.sh start)\")")
            return
        }
        let folder = try temporaryFolder()
        // Through system(3), with output to a file: a pipe held open by the server it starts never reaches EOF.
        func cluster(_ arguments: String) -> Int32 {
            system("/bin/bash '\(repositoryRoot)/.ci/postgres.sh' \(arguments) > '\(folder)/cluster.out' 2>&1")
        }
        #expect(cluster("start") == 0, "\((try? String(contentsOfFile: folder + "/cluster.out", encoding: .utf8)) ?? "")")
        var variables: [String: String] = [:]
        for line in try String(contentsOfFile: folder + "/cluster.out", encoding: .utf8).split(separator: "\n") where line.hasPrefix("export ") {
            let pair = line.dropFirst("export ".count).split(separator: "=", maxSplits: 1).map(String.init)
            if pair.count == 2 { variables[pair[0]] = pair[1] }
        }
        let dir = try #require(variables["TURNSTILE_TEST_POSTGRES_DIR"])
        defer { _ = cluster("stop '\(dir)'") }
        let fixtures = try JSONParser.parse(String(contentsOfFile: repositoryRoot + "/fixtures/turnstile.json", encoding: .utf8))
        let config = folder + "/turnstile.json"
        try """
            {"store":"\(try #require(variables["TURNSTILE_TEST_POSTGRES_URL"]))","listen":"127.0.0.1:0",
             "postgres":{"password":"env:TURNSTILE_TEST_POSTGRES_PASSWORD"},
             "env_file":"\(repositoryRoot)/fixtures/secrets.env","providers":\(fixtures["providers"]!.serialized()),
             "dispatch":{"backoff_base_seconds":0.05,"backoff_max_seconds":0.2},
             "handlers":[{"name":"all","type":"jsonl","path":"events.jsonl","events":["*"]}]}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let serve = try Instance(config: config, log: folder + "/serve.log")
        defer { _ = serve.stop() }
        try makeSignedDeliveries(count: 3_000, into: folder + "/load.ndjson")
        let requests = try String(contentsOfFile: folder + "/load.ndjson", encoding: .utf8).split(separator: "\n").map { try JSONParser.parse(String($0)) }

        let shared = SharedRequests(requests)
        let acknowledged = Locked<Set<String>>([])
        let unavailable = Locked(0)
        let stop = Locked(false)
        let sender = DispatchGroup()
        sender.enter()
        Thread {
            defer { sender.leave() }
            var client = try? RawClient(port: serve.port)
            while !stop.withLock({ $0 }), let request = shared.next() {
                client?.send(httpRequest(for: request))
                guard let answer = client?.responses(1, timeout: 10).first else {
                    client = try? RawClient(port: serve.port)
                    continue
                }
                if answer.status == 200, answer.body.contains(#""outcome":"accepted""#),
                   let key = (try? JSONParser.parse(answer.body))?["event_key"]?.stringValue {
                    acknowledged.withLock { _ = $0.insert(key) }
                }
                if answer.status == 503 { unavailable.withLock { $0 += 1 } }
                client = try? RawClient(port: serve.port)
                usleep(2_000)
            }
        }.start()
        func health() -> Int? {
            guard let client = try? RawClient(port: serve.port) else { return nil }
            client.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            return client.responses(1, timeout: 5).first?.status
        }
        usleep(1_000_000)
        let before = acknowledged.withLock { $0.count }
        #expect(cluster("down '\(dir)'") == 0)
        var sawUnhealthy = false
        for _ in 0..<40 where !sawUnhealthy {
            sawUnhealthy = health() == 503
            usleep(100_000)
        }
        usleep(500_000)
        #expect(cluster("up '\(dir)'") == 0)
        var healthyAgain = false
        for _ in 0..<100 where !healthyAgain {
            healthyAgain = health() == 200
            usleep(100_000)
        }
        let atReturn = acknowledged.withLock { $0.count }
        usleep(1_500_000)
        stop.withLock { $0 = true }
        sender.wait()
        let after = acknowledged.withLock { $0.count }
        print("outage: \(before) acknowledged before, \(unavailable.withLock { $0 }) answered 503, \(after - atReturn) acknowledged after it")
        #expect(before > 0)
        #expect(sawUnhealthy, "/healthz answered 503 while PostgreSQL was down")
        #expect(unavailable.withLock { $0 } > 0, "deliveries got 503 during the outage")
        #expect(healthyAgain, "/healthz came back without restarting Turnstile")
        #expect(after > atReturn, "deliveries were accepted again after the outage")
        // Everything acknowledged reaches the handler once dispatch catches up.
        var dispatched = Set<String>()
        for _ in 0..<200 {
            dispatched = Set(((try? String(contentsOfFile: folder + "/events.jsonl", encoding: .utf8)) ?? "").split(separator: "\n")
                .compactMap { try? JSONParser.parse(String($0))["event_key"]?.stringValue })
            if dispatched.count >= after { break }
            usleep(100_000)
        }
        let keys = acknowledged.withLock { $0 }
        #expect(keys.isSubset(of: dispatched), "acknowledged but lost: \(keys.subtracting(dispatched).sorted().prefix(5))")
    }
}
