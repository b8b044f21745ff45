import Dispatch
import TurnstileCore
import TurnstileCrypto
import TurnstileIngest

/// `turnstile bench`: throughput figures, each next to a reference measured in the same run.
struct BenchCommand: TurnstileCommand {
    static let spec = CommandSpec(
        name: "bench",
        abstract: "Print throughput figures next to raw-library references measured in the same run.",
        usage: "bench verify [--runs N] [--seconds S] [--scheme NAME] | bench pipeline [--runs N] [--count N] [--replay N] [--store postgres://…] | bench large-store [--runs N] [--count N] [--nonces N] [--archived N] [--keep PATH] | bench http-reference --listen HOST:PORT",
        options: [
            .option("runs", "N", help: "Measurements per figure; the median is printed (default 5 for verify, 3 for pipeline)."),
            .option("seconds", "S", help: "verify: rough length of one measurement in seconds (default 0.3)."),
            .option("scheme", "NAME", help: "verify: measure only this scheme (for profiling)."),
            .option("count", "N", help: "pipeline, large-store: deliveries per measurement (default 20000)."),
            .option("nonces", "N", help: "large-store: live nonces in the large store (default 5000000)."),
            .option("archived", "N", help: "large-store: archived 1 KB deliveries in the large store (default 1000000)."),
            .option("keep", "PATH", help: "large-store: keep the large store at PATH (built there if absent, reused if present)."),
            .option("replay", "N", help: "pipeline: also time the replay command on N generated deliveries (default 100000; 0 skips)."),
            .option("listen", "HOST:PORT", help: "http-reference: where to listen (port 0 picks a free one)."),
            .option("store", "URL", help: "pipeline: measure on this PostgreSQL database instead (a schema per run; password in PGPASSWORD)."),
        ],
        positionals: ("verify | pipeline | large-store | http-reference", true),
        discussion: """
            verify: verifications per second of every scheme on 1 KB bodies (the whole Ingest.verify path: header
            look-up, parsing, HMAC, body fields, timestamps), next to raw OpenSSL HMAC-SHA256 on the same bodies with
            one EVP_MAC_CTX prepared once and reused, and the one-shot HMAC() call.
            pipeline: deliveries per second through verify + dedup + durable enqueue on SQLite (synchronous=FULL), next to
            plain SQLite inserts of the same rows with the same transaction batching; then wall time and peak memory of
            the replay command on generated files of N/10 and N deliveries.
            large-store: the pipeline's durable rate on a store like one a month in production (live nonces and archived
            deliveries, built first, which takes a minute or two and about 2 GB of disk at the defaults), next to an
            empty store, batched 1000 and 64 per transaction; also how long the large store takes to open.
            http-reference: Turnstile's HTTP server answering every request with a fixed 200 (no verification, store or
            log) until SIGTERM/SIGINT, for a load generator to measure beside nginx and `serve` (Benchmarks/http-load.sh).
            """)

    let target: String
    let runs: Int
    let seconds: Double
    let only: String?
    let count: Int
    let replayCount: Int
    let listen: String?
    let store: String?
    let nonces: Int
    let archived: Int
    let keep: String?

    init(_ arguments: ParsedArguments) throws(UsageError) {
        guard arguments.positionals.count == 1, let target = arguments.positionals.first,
              ["verify", "pipeline", "large-store", "http-reference"].contains(target) else {
            throw UsageError("say what to measure: verify, pipeline, large-store or http-reference")
        }
        self.target = target
        listen = arguments.value("listen")
        store = arguments.value("store")
        if let store, !(store.hasPrefix("postgres://") || store.hasPrefix("postgresql://")) || TurnstileConfig.urlHasPassword(store) {
            throw UsageError("--store takes a postgres:// URL without a password (give it in PGPASSWORD)")
        }
        if target == "http-reference", listen == nil { throw UsageError("bench http-reference needs --listen HOST:PORT") }
        runs = try arguments.positiveInteger("runs") ?? (target == "verify" ? 5 : 3)
        count = try arguments.positiveInteger("count") ?? 20_000
        nonces = try arguments.positiveInteger("nonces") ?? 5_000_000
        archived = try arguments.positiveInteger("archived") ?? 1_000_000
        keep = arguments.value("keep")
        if let text = arguments.value("replay") {
            guard let value = Int(text), value >= 0 else { throw UsageError("--replay must be a whole number, got \"\(text)\"") }
            replayCount = value
        } else {
            replayCount = 100_000
        }
        if let text = arguments.value("seconds") {
            guard let value = Double(text), value > 0, value <= 60 else { throw UsageError("--seconds must be a number of seconds in (0, 60]") }
            seconds = value
        } else {
            seconds = 0.3
        }
        only = arguments.value("scheme")
        if let only, !SchemePresets.names.contains(only) {
            throw UsageError("--scheme must be one of \(SchemePresets.names.joined(separator: ", "))")
        }
    }

    func run(console: any Console, setup: HandlerSetup) async throws -> Int32 {
        if target == "pipeline" {
            return try await PipelineBench(runs: runs, count: count, replayCount: replayCount, postgresURL: store, console: console).run()
        }
        if target == "large-store" {
            return try await LargeStoreBench(runs: runs, count: count, nonces: nonces, archived: archived, keep: keep, console: console).run()
        }
        if target == "http-reference", let listen {
            return try await HTTPReferenceBench(listen: listen, console: console).run()
        }
        let cases = try VerifyBenchCase.all().filter { only == nil || $0.name == only }
        let referenceKey = Array("whsec_bench_reference_key_0123456789".utf8)
        let referenceBody = VerifyBenchCase.body("\"filler\":true")
        var raw: [Double] = []
        var oneShot: [Double] = []
        var rates = [[Double]](repeating: [], count: cases.count)
        var ratios = [[Double]](repeating: [], count: cases.count)
        console.err("bench verify: \(runs) runs of about \(seconds) s per figure, 1 KB bodies")
        let measureRaw = {
            measure(seconds) { iterations in
                CryptoBaseline.reusedContextRate(key: referenceKey, message: referenceBody, iterations: iterations)
            }
        }
        for run in 1...runs {
            // Each scheme is measured between two raw measurements, and its ratio is to their mean: the
            // machine's speed drifts within a run, and ratios taken side by side are what compare.
            var before = measureRaw()
            raw.append(before)
            oneShot.append(measure(seconds) { iterations in
                CryptoBaseline.oneShotRate(key: referenceKey, message: referenceBody, iterations: iterations)
            })
            for (index, benchCase) in cases.enumerated() {
                let rate = measure(seconds) { iterations in benchCase.rate(iterations: iterations) }
                let after = measureRaw()
                rates[index].append(rate)
                ratios[index].append(rate / ((before + after) / 2))
                before = after
            }
            console.err("  run \(run)/\(runs) done")
        }
        let rawMedian = BenchTable.median(raw)
        console.out("Verifications per second on 1 KB bodies (median of \(runs) runs, one core; \"of raw\" is the median of")
        console.out("each run's ratio to the raw EVP_MAC_CTX rate measured just before and after that scheme)")
        console.out(BenchTable.pad("scheme", 20) + BenchTable.pad("per second", 14) + BenchTable.pad("of raw", 9) + BenchTable.pad("target", 9) + "met")
        console.out(BenchTable.pad("raw EVP_MAC_CTX", 20) + BenchTable.pad(BenchTable.format(rawMedian), 14) + BenchTable.pad("100%", 9) + BenchTable.pad("-", 9) + "-")
        console.out(BenchTable.pad("raw one-shot HMAC()", 20) + BenchTable.pad(BenchTable.format(BenchTable.median(oneShot)), 14)
                    + BenchTable.pad(BenchTable.percent(BenchTable.median(oneShot) / rawMedian), 9) + BenchTable.pad("-", 9) + "-")
        for (index, benchCase) in cases.enumerated() {
            let ratio = BenchTable.median(ratios[index])
            console.out(BenchTable.pad(benchCase.name, 20) + BenchTable.pad(BenchTable.format(BenchTable.median(rates[index])), 14) + BenchTable.pad(BenchTable.percent(ratio), 9)
                        + BenchTable.pad(BenchTable.percent(benchCase.target), 9) + (ratio >= benchCase.target ? "yes" : "no"))
        }
        return ExitStatus.success
    }

    /// Calibrates an iteration count for about `seconds`, then returns the rate of one timed batch.
    private func measure(_ seconds: Double, _ body: (Int) -> Double) -> Double {
        let probe = body(2_000)
        let iterations = max(2_000, Int(probe * seconds))
        return body(iterations)
    }
}

/// One scheme's verification benchmark: a provider, a signed 1 KB delivery and the instant to judge it at.
struct VerifyBenchCase {
    let name: String
    let ingest: Ingest
    let headers: HeaderFields
    let body: [UInt8]
    let now: Instant
    /// The share of the raw rate the issue asks for.
    let target: Double

    func rate(iterations: Int) -> Double {
        var accepted = 0
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<iterations {
            if case .success = ingest.verify(provider: name, headers: headers, body: body, now: now) { accepted += 1 }
        }
        let elapsed = DispatchTime.now().uptimeNanoseconds - start
        precondition(accepted == iterations, "bench delivery for \(name) did not verify")
        return Double(iterations) / (Double(elapsed) / 1e9)
    }

    static let signedAt = Instant(iso8601: "2026-01-15T19:04:06Z")!

    /// A JSON object text of exactly 1024 bytes: `head` members, then a `padding` member filling the rest.
    static func body(_ head: String) -> [UInt8] {
        let opening = "{" + head + ",\"padding\":\""
        let fill = 1024 - opening.utf8.count - 2
        return Array((opening + String(repeating: "x", count: max(0, fill)) + "\"}").utf8)
    }

    static func all() throws -> [VerifyBenchCase] {
        let payloads: [(String, String, String, Double)] = [
            ("synthflow", "sf_bench_secret_key",
             #""status":"completed","error_message":"","call":{"call_id":"c0ffee00-1234-4abc-8def-0123456789ab","status":"completed","end_call_reason":"human_goodbye","duration":87,"start_time":"2026-01-15T14:03:27.512349-05:00","transcript":"\nbot: Hi.\nhuman: Hello."}"#, 0.25),
            ("autify", "autify_bench_secret",
             #""action":"finished","id":555001,"started_at":"2026-01-15T19:00:01.250Z","finished_at":"2026-01-15T19:02:40.100Z","status":"passed","scenario_id":1201,"scenario_name":"Checkout","review_needed":false,"test_plan_id":314"#, 0.25),
            ("sync", "whsec_bench_secret",
             #""id":"6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f","createdAt":"2026-01-15T19:04:05.123Z","status":"COMPLETED","model":"lipsync-2","outputUrl":"https://example.invalid/out/6f1c2d3e.mp4","outputDuration":10.5"#, 0.25),
            ("standard-webhooks", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
             #""type":"invoice.paid","timestamp":"2026-01-15T19:04:06Z","data":{"id":"inv_123","amount":4200}"#, 0.5),
            ("stripe", "whsec_bench_stripe",
             #""id":"evt_123","object":"event","type":"customer.created","created":1768503846,"livemode":false"#, 0.25),
            ("github", "It's a Secret to Everybody",
             #""ref":"refs/heads/main","before":"0000000000000000000000000000000000000000","after":"1111111111111111111111111111111111111111""#, 0.5),
        ]
        return try payloads.map { name, secret, head, target in
            let provider = ProviderConfig(name: name, scheme: name, secrets: [Secret(reference: "env:BENCH", value: Array(secret.utf8))])
            let config = TurnstileConfig(file: "<bench>", store: .sqlite(path: ":memory:"), listen: "127.0.0.1:0",
                                         maxBodyBytes: 1 << 20, providers: [provider], handlers: [])
            let ingest = try Ingest(config: config)
            let body = body(head)
            let headers = try ingest.scheme(for: name)!.signatureHeaders(body: body, at: signedAt, id: "msg_bench", eventType: "push")
            return VerifyBenchCase(name: name, ingest: ingest, headers: headers, body: body,
                                   now: signedAt.adding(seconds: 30), target: target)
        }
    }
}
