import Foundation
import TurnstileCore
import TurnstileIngest
import TurnstileSQLite

/// `turnstile bench large-store`: the pipeline's durable rate on a store that has run in production for a month
/// (by default 5 million live nonces and 1 million archived deliveries), next to an empty store, in the same run.
struct LargeStoreBench {
    let runs: Int
    let count: Int
    let nonces: Int
    let archived: Int
    /// Where the large store is kept: reused when it exists, built there when not; the runs measure on a copy,
    /// so it stays as built. Nil builds one in a temporary folder and deletes it after.
    let keep: String?
    let console: any Console

    func run() async throws -> Int32 {
        let (folder, config, ingest) = try PipelineBench.setUp()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let templatePath = keep ?? folder + "/template.db"
        let largePath = folder + "/large.db"

        if FileManager.default.fileExists(atPath: templatePath) {
            console.err("bench large-store: using the store at \(templatePath)")
        } else {
            console.err("bench large-store: building \(templatePath): \(nonces) live nonces, \(archived) archived deliveries of 1 KB")
            let watch = Stopwatch()
            let total = nonces + archived
            var reported = 0
            try SQLiteEventStore.fillLikeProduction(path: templatePath, provider: "sync", nonces: nonces, archived: archived, now: SystemWallClock().now()) { written in
                if written * 10 / max(1, total) > reported || written == total {
                    reported = written * 10 / max(1, total)
                    console.err("  \(written)/\(total) rows, \(Stopwatch.format(watch.elapsed))")
                }
            }
        }
        // The copy is flushed before it is measured, so the measurement's fsyncs do not pay for its pages (seen
        // as 25 ms commits, a tenth of the rate, on a store written the moment before).
        let copying = Stopwatch()
        try FileManager.default.copyItem(atPath: templatePath, toPath: largePath)
        if let file = FileHandle(forUpdatingAtPath: largePath) {
            try file.synchronize()
            try file.close()
        }
        console.err("  copied and flushed to disk in \(Stopwatch.format(copying.elapsed))")
        let opening = Stopwatch()
        let large = try SQLiteEventStore(path: largePath)
        try large.loadNonceIndex()
        let openSeconds = opening.elapsed
        let indexed = large.indexedNonces
        let fileBytes = (try? FileManager.default.attributesOfItem(atPath: largePath)[.size] as? Int) ?? 0
        console.err("  opened in \(Stopwatch.format(openSeconds)): \(indexed) nonces indexed, file \(fileBytes / 1_000_000) MB")

        var samples: [String: [(empty: Double, large: Double)]] = [:]
        let batchings = [("1000 per transaction", 1_000), ("64 per transaction", 64)]
        for run in 1...runs {
            for (name, batch) in batchings {
                // New deliveries every time: the large store keeps the ones of earlier runs, as production would.
                let salt = "\(UUID().uuidString.prefix(8))_"
                let deliveries = try PipelineBench.deliveries(count: count, ingest: ingest, salt: salt)
                let empty = try SQLiteEventStore(path: "\(folder)/empty-\(run)-\(batch).db")
                let emptyRate = try PipelineBench.pipelineRate(deliveries, batch: batch, ingest: ingest, config: config, store: empty)
                let largeRate = try PipelineBench.pipelineRate(try PipelineBench.deliveries(count: count, ingest: ingest, salt: "l" + salt),
                                                               batch: batch, ingest: ingest, config: config, store: large)
                samples[name, default: []].append((emptyRate, largeRate))
            }
            console.err("  run \(run)/\(runs) done")
        }
        console.out("Deliveries per second through verify + dedup + durable enqueue (SQLite, synchronous=FULL), median of \(runs) runs")
        console.out("large store at the start: \(indexed) nonces, \(archived) archived deliveries, \(fileBytes / 1_000_000) MB; opened in "
                    + Stopwatch.format(openSeconds))
        console.out(BenchTable.pad("transaction batching", 24) + BenchTable.pad("empty store", 14) + BenchTable.pad("large store", 14)
                    + BenchTable.pad("large / empty", 15) + "target 80%")
        for (name, _) in batchings {
            let runs = samples[name] ?? []
            let ratio = BenchTable.median(runs.map { $0.large / $0.empty })
            console.out(BenchTable.pad(name, 24) + BenchTable.pad(BenchTable.format(BenchTable.median(runs.map(\.empty))), 14)
                        + BenchTable.pad(BenchTable.format(BenchTable.median(runs.map(\.large))), 14)
                        + BenchTable.pad(BenchTable.percent(ratio), 15) + (ratio >= 0.8 ? "met" : "not met"))
        }
        return ExitStatus.success
    }
}
