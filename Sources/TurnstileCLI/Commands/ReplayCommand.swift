import TurnstileSync
import Turnstile
import TurnstileCore
import TurnstileIngest
import TurnstilePipeline

/// `turnstile replay`: stored deliveries through the whole pipeline.
struct ReplayCommand: TurnstileCommand {
    static let spec = CommandSpec(
        name: "replay",
        abstract: "Push stored deliveries through the whole pipeline: verify, dedup, enqueue, dispatch.",
        usage: "replay --config FILE [--now ISO8601] [--reprocess] [--check] [--no-dispatch] PATH...",
        options: [
            .option("config", "FILE", required: true, help: "The Turnstile config file (JSON)."),
            .option("now", "ISO8601", help: "Judge timestamps at this instant instead of each delivery's received_at."),
            .flag("reprocess", help: "Dispatch already-seen events again after verifying them (handlers are told it is a reprocess)."),
            .flag("check", help: "Exit 1 when a delivery's outcome differs from its expect."),
            .flag("no-dispatch", help: "Only verify, dedup and enqueue; leave dispatch to serve or 'turnstile dispatch'."),
            .option("batch", "N", help: "Deliveries admitted per transaction (default 1000)."),
        ],
        positionals: ("PATH...", true),
        discussion: """
            Prints one JSON line per delivery on stdout, in input order, once its transaction has committed; a summary
            (counts by outcome and reason, elapsed time, deliveries per second) and, for batches over a second, progress
            lines on stderr. Then dispatches what it enqueued to the configured handlers before exiting.
            Input is streamed: memory does not grow with the number of deliveries.
            """)

    let configPath: String
    let now: Instant?
    let reprocess: Bool
    let check: Bool
    let dispatch: Bool
    let batchSize: Int
    let paths: [String]

    init(_ arguments: ParsedArguments) throws(UsageError) {
        configPath = arguments.value("config") ?? ""
        now = try arguments.instant("now")
        reprocess = arguments.flag("reprocess")
        check = arguments.flag("check")
        dispatch = !arguments.flag("no-dispatch")
        batchSize = try arguments.positiveInteger("batch") ?? 1_000
        paths = arguments.positionals
    }

    func run(console: any Console, setup: HandlerSetup) async throws -> Int32 {
        let runtime = try Receiver.load(configPath: configPath, configure: setup.configure)
        console.err("replay: store \(runtime.config.store.description)")
        let pipeline = runtime.pipeline
        let logger = Logger(handler: StandardErrorLogHandler(), minimumLevel: .warning)
        let dispatcher = dispatch ? runtime.batchDispatcher(logger: logger) : nil
        let source = DeliverySource(paths: paths, schema: try SchemaCatalog.shared().schema("delivery"),
                                    maximumRecordBytes: max(64 << 20, runtime.config.maxBodyBytes * 2 + (1 << 20)))
        var pending: [(delivery: Delivery, origin: String)] = []
        pending.reserveCapacity(batchSize)
        var tally = OutcomeTally()
        var mismatches = 0
        let stopwatch = Stopwatch()
        var nextProgress = 1.0

        // While one batch is stored, the next is verified (OverlappedBatches); verdicts come back a batch late.
        let batches = OverlappedBatches(pipeline: pipeline, now: now, reprocess: reprocess)
        var inFlight: [(delivery: Delivery, origin: String)] = []

        func reportBatch(_ verdicts: [DeliveryVerdict]?) {
            guard let verdicts else { return }
            for ((delivery, origin), verdict) in zip(inFlight, verdicts) {
                let report = DeliveryReport(source: origin, provider: delivery.provider, verdict: verdict)
                console.out(report.jsonLine)
                tally.add(report)
                if verdict.outcome == .rejected {
                    console.err("\(origin): \(delivery.provider): rejected (\(verdict.reason?.rawValue ?? "?")): \(verdict.detail ?? "")")
                } else if verdict.deadLettered {
                    console.err("\(origin): \(delivery.provider): accepted and dead-lettered (schema_violation): \(verdict.detail ?? "")")
                }
                if verdict.usedStringifyFallback {
                    console.err("\(origin): \(delivery.provider): the raw body did not verify; its JSON.stringify form did (fallback)")
                }
                if check, let expect = delivery.expect, !report.meets(expect, storeConsulted: true) {
                    mismatches += 1
                    let wanted = expect.reason.map { "\(expect.outcome.rawValue)/\($0.rawValue)" } ?? expect.outcome.rawValue
                    console.err("\(origin): check failed: expected \(wanted), got \(report.verdict)")
                }
            }
            if stopwatch.elapsed >= nextProgress {
                console.err("replay: \(tally.total) deliveries, \(stopwatch.rate(tally.total))/s")
                nextProgress = stopwatch.elapsed + 1
            }
        }

        func flush() {
            guard !pending.isEmpty else { return }
            reportBatch(batches.submit(pending.map(\.delivery)))
            inFlight = pending
            pending.removeAll(keepingCapacity: true)
        }

        // Dispatch runs beside admission (two cores: one parses and verifies, the other hands events to
        // handlers), then drains what is left once the input is done.
        let admissionDone = Flag()
        let background = dispatcher.map { dispatcher in
            Task { await dispatcher.run(idleSeconds: 0.05, shouldStop: { admissionDone.isSet }) }
        }
        do {
            try source.forEach { item in
                switch item {
                case .skipped(let file, let why):
                    console.err("\(file): skipped: \(why)")
                case .delivery(let delivery, let origin):
                    pending.append((delivery, origin))
                    if pending.count >= batchSize { flush() }
                }
            }
        } catch {
            // What was read before the bad input is stored and reported, as without the overlap.
            reportBatch(batches.finish())
            console.flush()
            throw error
        }
        flush()
        reportBatch(batches.finish())
        console.flush()
        admissionDone.set()
        let early = await background?.value ?? Dispatcher.Stats()
        let admitted = stopwatch.elapsed
        console.err("replay: \(tally.total) deliveries in \(stopwatch.elapsedText) (\(stopwatch.rate(tally.total))/s): "
                    + (tally.summary.isEmpty ? "none" : tally.summary) + (check ? "; \(mismatches) differ from expect" : ""))
        if let dispatcher {
            let dispatchWatch = Stopwatch()
            var nextLine = 1.0
            var stats = try await dispatcher.drain(progress: { stats in
                if dispatchWatch.elapsed >= nextLine {
                    console.err("replay: dispatched \(stats.dispatched) events, \(dispatchWatch.rate(stats.dispatched))/s")
                    nextLine = dispatchWatch.elapsed + 1
                }
            })
            stats.dispatched += early.dispatched
            stats.retried += early.retried
            stats.deadLettered += early.deadLettered
            console.err("replay: dispatched \(stats.dispatched) events, \(stats.dispatched - early.dispatched) of them after the input ended, in \(dispatchWatch.elapsedText) "
                        + "(retried \(stats.retried), dead-lettered \(stats.deadLettered)); total \(Stopwatch.format(admitted + dispatchWatch.elapsed))")
        }
        if check && tally.total == 0 { return VerifyCommand.nothingChecked(paths, console: console) }
        return mismatches > 0 ? ExitStatus.checkFailed : ExitStatus.success
    }
}

/// A one-way boolean shared between tasks.
final class Flag: Sendable {
    private let value = Locked(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
