#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TurnstileCore
import TurnstileIngest
import TurnstilePipeline
import TurnstileSQLite
import TurnstilePostgres

/// `turnstile bench pipeline`: verify + dedup + durable enqueue on SQLite (synchronous=FULL), next to plain
/// SQLite inserts of the same rows with the same batching, measured in the same run; then the real
/// `replay` command over generated files, timed, with its peak memory.
struct PipelineBench {
    let runs: Int
    let count: Int
    let replayCount: Int
    /// Measure on this PostgreSQL database (each run in a schema of its own, dropped after) instead of SQLite;
    /// the password comes from libpq's own `PGPASSWORD`, never from argv.
    let postgresURL: String?
    let console: any Console

    static let secret = "whsec_bench_pipeline_secret"
    static let signedAt = Instant(iso8601: "2026-01-15T19:04:06Z")!

    /// A fresh temporary folder (the caller removes it) and a config with one Sync provider whose deliveries
    /// ``deliveries(count:ingest:salt:)`` signs.
    static func setUp() throws -> (folder: String, config: TurnstileConfig, ingest: Ingest) {
        let folder = NSTemporaryDirectory() + "turnstile-bench-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let config = TurnstileConfig(file: folder + "/bench.json", providers: [
            ProviderConfig(name: "sync", scheme: "sync", secrets: [Secret(reference: "env:BENCH", value: Array(secret.utf8))]),
        ])
        return (folder, config, try Ingest(config: config))
    }

    func run() async throws -> Int32 {
        let (folder, config, ingest) = try Self.setUp()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let deliveries = try Self.deliveries(count: count, ingest: ingest)
        let single = Array(deliveries.prefix(max(1, min(1_000, count / 10))))
        let engine = postgresURL == nil ? "SQLite \(SQLiteEventStore.libraryVersion), synchronous=FULL" : "PostgreSQL \(StoreLocation.postgres(url: postgresURL!))"
        console.err("bench pipeline: \(count) deliveries of 1 KB, \(runs) runs; \(engine)")

        var batched: [(Double, Double)] = []
        var singles: [(Double, Double)] = []
        for run in 1...runs {
            batched.append((try pipelineRate(deliveries, batch: 1_000, ingest: ingest, config: config, place: "\(folder)/p\(run).db"),
                            try plainRate(deliveries, batch: 1_000, ingest: ingest, config: config, place: "\(folder)/b\(run).db")))
            singles.append((try pipelineRate(single, batch: 1, ingest: ingest, config: config, place: "\(folder)/p1-\(run).db"),
                            try plainRate(single, batch: 1, ingest: ingest, config: config, place: "\(folder)/b1-\(run).db")))
            console.err("  run \(run)/\(runs) done")
        }
        console.out("Deliveries per second into \(engine) (median of \(runs) runs)")
        console.out(BenchTable.pad("transaction batching", 24) + BenchTable.pad("pipeline", 12) + BenchTable.pad("plain inserts", 15) + "pipeline / plain")
        for (name, samples) in [("1000 per transaction", batched), ("1 per transaction", singles)] {
            let pipeline = BenchTable.median(samples.map(\.0))
            let plain = BenchTable.median(samples.map(\.1))
            let ratios = BenchTable.median(samples.map { $0.0 / $0.1 })
            console.out(BenchTable.pad(name, 24) + BenchTable.pad(BenchTable.format(pipeline), 12) + BenchTable.pad(BenchTable.format(plain), 15) + BenchTable.percent(ratios))
        }
        if replayCount > 0 && postgresURL == nil {
            try replayFigures(folder: folder)
        }
        return ExitStatus.success
    }

    /// A fresh store for one measurement: a SQLite file at `place`, or a new schema of the PostgreSQL database
    /// (dropped by `cleanUp`).
    private func freshStore(_ place: String) throws -> (store: any EventStore, cleanUp: () -> Void) {
        guard let url = postgresURL else { return (try SQLiteEventStore(path: place), {}) }
        let (store, schema) = try PostgresEventStore.inFreshSchema(url: url, password: nil)
        return (store, { PostgresEventStore.dropSchema(schema, url: url, password: nil) })
    }

    private func pipelineRate(_ deliveries: [Delivery], batch: Int, ingest: Ingest, config: TurnstileConfig, place: String) throws -> Double {
        let (store, cleanUp) = try freshStore(place)
        defer { cleanUp() }
        return try Self.pipelineRate(deliveries, batch: batch, ingest: ingest, config: config, store: store)
    }

    /// Deliveries per second through verify, dedup and durable enqueue into `store`, `batch` at a time, each
    /// batch's verification overlapped with the previous one's commit as `serve` does. Every delivery must be new.
    static func pipelineRate(_ deliveries: [Delivery], batch: Int, ingest: Ingest, config: TurnstileConfig, store: any EventStore) throws -> Double {
        let pipeline = try Pipeline(config: config, ingest: ingest, store: store, catalog: try SchemaCatalog.shared())
        let watch = Stopwatch()
        var accepted = 0
        var index = 0
        let batches = OverlappedBatches(pipeline: pipeline)
        while index < deliveries.count {
            let end = min(index + batch, deliveries.count)
            accepted += (batches.submit(Array(deliveries[index..<end])) ?? []).filter { $0.outcome == .accepted }.count
            index = end
        }
        accepted += (batches.finish() ?? []).filter { $0.outcome == .accepted }.count
        let rate = Double(deliveries.count) / watch.elapsed
        precondition(accepted == deliveries.count, "bench deliveries were not all accepted")
        return rate
    }

    private func plainRate(_ deliveries: [Delivery], batch: Int, ingest: Ingest, config: TurnstileConfig, place: String) throws -> Double {
        let (store, cleanUp) = try freshStore(place)
        defer { cleanUp() }
        let admissions = try Pipeline(config: config, ingest: ingest, store: store, catalog: try SchemaCatalog.shared())
            .admissions(for: deliveries)
        if let postgres = store as? PostgresEventStore { return try postgres.plainInsertRate(admissions, batchSize: batch) }
        return try (store as! SQLiteEventStore).plainInsertRate(admissions, batchSize: batch)
    }

    /// Times the real binary: `replay` of generated files, without and with dispatch, and its peak RSS.
    private func replayFigures(folder: String) throws {
        let configPath = folder + "/replay.json"
        try #"""
            {"store":"sqlite:\#(folder)/replay.db","providers":{"sync":{"scheme":"sync","secrets":["file:secret"]}},
             "dispatch":{"batch_size":256},
             "handlers":[{"name":"all","type":"jsonl","path":"\#(folder)/events.jsonl","events":["*"]}]}
            """#.write(toFile: configPath, atomically: true, encoding: .utf8)
        try Self.secret.write(toFile: folder + "/secret", atomically: true, encoding: .utf8)
        let ingest = try Ingest(config: TurnstileConfig(file: configPath, providers: [
            ProviderConfig(name: "sync", scheme: "sync", secrets: [Secret(reference: "file:secret", value: Array(Self.secret.utf8))]),
        ]))
        console.out("")
        console.out("turnstile replay of generated files (1 KB sync deliveries, distinct), wall time and peak RSS")
        console.out(BenchTable.pad("deliveries", 12) + BenchTable.pad("dispatch", 10) + BenchTable.pad("seconds", 10) + BenchTable.pad("per second", 12) + "peak RSS")
        for (size, dispatch) in [(replayCount / 10, false), (replayCount, false), (replayCount, true)] {
            let file = "\(folder)/replay-\(size).ndjson"
            if !FileManager.default.fileExists(atPath: file) { try Self.writeDeliveries(count: size, ingest: ingest, to: file) }
            try? FileManager.default.removeItem(atPath: folder + "/replay.db")
            try? FileManager.default.removeItem(atPath: folder + "/replay.db-wal")
            try? FileManager.default.removeItem(atPath: folder + "/replay.db-shm")
            try? FileManager.default.removeItem(atPath: folder + "/events.jsonl")
            var arguments = ["replay", "--config", configPath, file]
            if !dispatch { arguments.insert("--no-dispatch", at: 1) }
            let (seconds, peakKiB) = try Self.timeChild(arguments)
            console.out(BenchTable.pad(String(size), 12) + BenchTable.pad(dispatch ? "yes" : "no", 10) + BenchTable.pad(String(format: "%.2f", seconds), 10)
                        + BenchTable.pad(BenchTable.format(Double(size) / seconds), 12) + "\(peakKiB / 1024) MiB")
        }
    }

    /// Runs this executable with `arguments` (output discarded); returns wall seconds and its peak RSS in KiB.
    static func timeChild(_ arguments: [String]) throws -> (Double, Int) {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var pid: pid_t = 0
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let watch = Stopwatch()
        guard posix_spawn(&pid, executable, &actions, nil, argv, environ) == 0 else {
            throw InputError(.unreadableFile, "cannot start \(executable)")
        }
        var status: Int32 = 0
        var usage = rusage()
        _ = wait4(pid, &status, 0, &usage)
        return (watch.elapsed, Int(usage.ru_maxrss))
    }

    /// `count` distinct, signed 1 KB Sync deliveries.
    /// `count` distinct signed Sync deliveries of 1 KB; `salt` goes into every id, so runs can differ.
    static func deliveries(count: Int, ingest: Ingest, salt: String = "") throws -> [Delivery] {
        let scheme = ingest.scheme(for: "sync")!
        return try (0..<count).map { index in
            let body = VerifyBenchCase.body(#""id":"gen_\#(salt)\#(index)","status":"COMPLETED","model":"lipsync-2","outputDuration":10.5"#)
            let headers = try scheme.signatureHeaders(body: body, at: signedAt)
            return Delivery(provider: "sync", receivedAt: signedAt.adding(seconds: 1), headers: headers, body: body)
        }
    }

    static func writeDeliveries(count: Int, ingest: Ingest, to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil) else { throw InputError(.unreadableFile, "cannot create", file: path) }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw InputError(.unreadableFile, "cannot write", file: path) }
        defer { try? handle.close() }
        var chunk = [UInt8]()
        for start in stride(from: 0, to: count, by: 1_000) {
            let scheme = ingest.scheme(for: "sync")!
            for index in start..<min(start + 1_000, count) {
                let body = VerifyBenchCase.body(#""id":"gen_\#(index)","status":"COMPLETED","model":"lipsync-2","outputDuration":10.5"#)
                let headers = try scheme.signatureHeaders(body: body, at: signedAt)
                let delivery = Delivery(provider: "sync", receivedAt: signedAt.adding(seconds: 1), headers: headers, body: body)
                chunk += delivery.jsonValue.javaScriptStringified()
                chunk.append(0x0a)
            }
            try handle.write(contentsOf: chunk)
            chunk.removeAll(keepingCapacity: true)
        }
    }
}
