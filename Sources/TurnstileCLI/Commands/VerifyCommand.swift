import TurnstileCore
import TurnstileIngest

/// `turnstile verify`: signature and timestamp checks only, no store and no dispatch.
struct VerifyCommand: TurnstileCommand {
    static let spec = CommandSpec(
        name: "verify",
        abstract: "Verify stored deliveries (signatures and timestamps only; no store, no dispatch).",
        usage: "verify --config FILE [--now ISO8601] [--check] PATH...",
        options: [
            .option("config", "FILE", required: true, help: "The Turnstile config file (JSON)."),
            .option("now", "ISO8601", help: "Judge timestamps at this instant instead of each delivery's received_at."),
            .flag("check", help: "Exit 1 when a delivery's outcome differs from its expect."),
        ],
        positionals: ("PATH...", true),
        discussion: """
            Prints one JSON line per delivery on stdout, in input order; a valid delivery is "accepted" (duplicates
            need the store, so an expected "duplicate" counts as met by "accepted"). Each failure is explained on stderr.
            Folders are walked recursively in sorted order, reading *.json and *.ndjson files.
            """)

    let configPath: String
    let now: Instant?
    let check: Bool
    let paths: [String]

    init(_ arguments: ParsedArguments) throws(UsageError) {
        configPath = arguments.value("config") ?? ""
        now = try arguments.instant("now")
        check = arguments.flag("check")
        paths = arguments.positionals
    }

    func run(console: any Console, setup: HandlerSetup) async throws -> Int32 {
        let config = try TurnstileConfig.load(path: configPath)
        let ingest = try Ingest(config: config)
        let source = DeliverySource(paths: paths, schema: try SchemaCatalog.shared().schema("delivery"),
                                    maximumRecordBytes: max(64 << 20, config.maxBodyBytes * 2 + (1 << 20)))
        var tally = OutcomeTally()
        var mismatches = 0
        try source.forEach { item in
            switch item {
            case .skipped(let file, let why):
                console.err("\(file): skipped: \(why)")
            case .delivery(let delivery, let origin):
                let result = ingest.verify(delivery, now: now)
                let report = DeliveryReport(source: origin, provider: delivery.provider, result: result)
                console.out(report.jsonLine)
                tally.add(report)
                switch result {
                case .failure(let rejection):
                    console.err("\(origin): \(delivery.provider): rejected (\(rejection.reason)): \(rejection.detail)")
                case .success(let verified):
                    if verified.usedStringifyFallback {
                        console.err("\(origin): \(delivery.provider): the raw body did not verify; its JSON.stringify form did (fallback)")
                    }
                }
                if check, let expect = delivery.expect, !report.meets(expect, storeConsulted: false) {
                    mismatches += 1
                    let wanted = expect.reason.map { "\(expect.outcome.rawValue)/\($0.rawValue)" } ?? expect.outcome.rawValue
                    console.err("\(origin): check failed: expected \(wanted), got \(report.verdict)")
                }
            }
        }
        console.err("verify: \(tally.total) deliveries: \(tally.summary.isEmpty ? "none" : tally.summary)"
                    + (check ? "; \(mismatches) differ from expect" : ""))
        if check && tally.total == 0 { return Self.nothingChecked(paths, console: console) }
        return mismatches > 0 ? ExitStatus.checkFailed : ExitStatus.success
    }

    /// `--check` over paths that hold no delivery checks nothing, which must not pass as a success.
    static func nothingChecked(_ paths: [String], console: any Console) -> Int32 {
        console.err("error: --check found no deliveries in \(paths.joined(separator: " ")), so nothing was checked")
        return ExitStatus.usage
    }
}
