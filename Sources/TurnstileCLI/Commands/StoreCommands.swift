import Turnstile
import TurnstileCore
import TurnstilePipeline

/// `turnstile export`: archived raw deliveries as NDJSON in the delivery format, ready for `replay`.
struct ExportCommand: TurnstileCommand {
    static let spec = CommandSpec(
        name: "export",
        abstract: "Print archived raw deliveries as NDJSON in the delivery format (replayable).",
        usage: "export --config FILE [--provider NAME] [--since ISO8601]",
        options: [
            .option("config", "FILE", required: true, help: "The Turnstile config file (JSON)."),
            .option("provider", "NAME", help: "Only this provider's deliveries."),
            .option("since", "ISO8601", help: "Only deliveries received at or after this instant."),
        ])

    let configPath: String
    let provider: String?
    let since: Instant?

    init(_ arguments: ParsedArguments) throws(UsageError) {
        configPath = arguments.value("config") ?? ""
        provider = arguments.value("provider")
        since = try arguments.instant("since")
    }

    func run(console: any Console, setup: HandlerSetup) async throws -> Int32 {
        let config = try TurnstileConfig.load(path: configPath)
        try Receiver.requireExistingStore(config)
        let store = try Receiver.openStore(config)
        console.err("export: store \(config.store.description)")
        var count = 0
        try store.forEachArchived(provider: provider, since: since) { delivery in
            console.out(delivery.jsonValue.serialized())
            count += 1
        }
        console.err("export: \(count) deliveries")
        return ExitStatus.success
    }
}

/// `turnstile dead-letters`: inspect and re-queue dead-lettered events.
struct DeadLettersCommand: TurnstileCommand {
    static let spec = CommandSpec(
        name: "dead-letters",
        abstract: "List dead-lettered events, or re-queue them (and dispatch them) after a fix.",
        usage: "dead-letters --config FILE list | retry ID | retry --all",
        options: [
            .option("config", "FILE", required: true, help: "The Turnstile config file (JSON)."),
            .flag("all", help: "With retry: every dead letter."),
            .flag("no-dispatch", help: "With retry: only re-queue; leave dispatch to serve or 'turnstile dispatch'."),
        ],
        positionals: ("list | retry ID", true),
        discussion: "list prints one JSON line per dead letter: id, provider, event_type, event_key, reason, last_error, attempts, dead_at.")

    enum Action: Equatable {
        case list
        case retry([Int64]?)
    }

    let configPath: String
    let action: Action
    let dispatch: Bool

    init(_ arguments: ParsedArguments) throws(UsageError) {
        configPath = arguments.value("config") ?? ""
        dispatch = !arguments.flag("no-dispatch")
        let words = arguments.positionals
        switch (words.first, words.count, arguments.flag("all")) {
        case ("list", 1, false): action = .list
        case ("retry", 1, true): action = .retry(nil)
        case ("retry", 2, false):
            guard let id = Int64(words[1]), id > 0 else { throw UsageError("retry takes a dead letter's numeric id, got \"\(words[1])\"") }
            action = .retry([id])
        default:
            throw UsageError("say list, retry ID, or retry --all")
        }
    }

    func run(console: any Console, setup: HandlerSetup) async throws -> Int32 {
        // Only a retry that dispatches builds the handlers: listing and re-queueing open the store alone, so
        // they never open (and repair) a sink that a running serve is writing.
        let config = try TurnstileConfig.load(path: configPath)
        try Receiver.requireExistingStore(config)
        let store = try Receiver.openStore(config)
        console.err("dead-letters: store \(config.store.description)")
        switch action {
        case .list:
            for letter in try store.deadLetters(limit: Int.max) {
                var object = JSONObject()
                object["id"] = .number(JSONNumber(letter.id))
                object["handler"] = letter.handler.isEmpty ? .null : .string(letter.handler)
                object["provider"] = .string(letter.provider)
                object["event_type"] = .string(letter.eventType)
                object["event_key"] = .string(letter.eventKey)
                object["reason"] = .string(letter.reason.rawValue)
                object["last_error"] = .string(letter.lastError)
                object["attempts"] = .number(JSONNumber(Int64(letter.attempts)))
                object["dead_at"] = .string(letter.deadAt.iso8601)
                console.out(JSONValue.object(object).serialized())
            }
            return ExitStatus.success
        case .retry(let ids):
            let moved = try store.requeueDeadLetters(ids, now: SystemWallClock().now())
            if let ids, moved == 0 {
                throw UsageError("no dead letter with id \(ids[0])")
            }
            console.err("dead-letters: re-queued \(moved)")
            if dispatch {
                let runtime = try Receiver.load(configPath: configPath, existingStoreOnly: true, configure: setup.configure)
                let stats = try await runtime.batchDispatcher(logger: Logger(handler: StandardErrorLogHandler(), minimumLevel: .warning)).drain()
                console.err("dead-letters: dispatched \(stats.dispatched), retried \(stats.retried), dead-lettered again \(stats.deadLettered)")
                return stats.deadLettered > 0 ? ExitStatus.failure : ExitStatus.success
            }
            return ExitStatus.success
        }
    }
}

/// `turnstile prune`: delete expired nonces now.
struct PruneCommand: TurnstileCommand {
    static let spec = CommandSpec(
        name: "prune",
        abstract: "Delete expired nonces, and archived deliveries past archive.retention_seconds, now (serve also prunes every minute).",
        usage: "prune --config FILE [--now ISO8601]",
        options: [
            .option("config", "FILE", required: true, help: "The Turnstile config file (JSON)."),
            .option("now", "ISO8601", help: "Prune as if it were this instant (default: the clock); not later than the clock."),
        ],
        discussion: """
            Prints {"pruned":N} on stdout. A --now later than the clock is refused: it would delete nonces that still
            guard against replays, and a replayed delivery would then be accepted and dispatched again.
            """)

    let configPath: String
    let now: Instant?

    init(_ arguments: ParsedArguments) throws(UsageError) {
        configPath = arguments.value("config") ?? ""
        now = try arguments.instant("now")
        if let now, now > SystemWallClock().now().adding(seconds: 1) {
            throw UsageError("--now \(now.iso8601) is later than the clock; pruning as of a future instant would delete live nonces")
        }
    }

    func run(console: any Console, setup: HandlerSetup) async throws -> Int32 {
        let config = try TurnstileConfig.load(path: configPath)
        try Receiver.requireExistingStore(config)
        let store = try Receiver.openStore(config)
        console.err("prune: store \(config.store.description)")
        let instant = now ?? SystemWallClock().now()
        let pruned = try store.pruneNonces(now: instant)
        if let retention = config.archiveRetentionSeconds {
            let archived = try store.pruneArchive(receivedBefore: instant.adding(seconds: -Double(retention)))
            console.out(#"{"pruned":\#(pruned),"archive_pruned":\#(archived)}"#)
        } else {
            console.out(#"{"pruned":\#(pruned)}"#)
        }
        return ExitStatus.success
    }
}

/// `turnstile migrate`: bring the store's schema up to this binary's, explicitly (serve and every other
/// command also migrate when they open the store; on PostgreSQL under an advisory lock, so instances that
/// start at once do not race).
struct MigrateCommand: TurnstileCommand {
    static let spec = CommandSpec(
        name: "migrate",
        abstract: "Create or upgrade the store's schema to this binary's version, then exit.",
        usage: "migrate --config FILE",
        options: [.option("config", "FILE", required: true, help: "The Turnstile config file (JSON).")],
        discussion: """
            Prints {"store":…,"schema_version":N}. A store whose schema is newer than this binary is refused
            with store_incompatible (exit 2): run the newer binary, or restore a backup.
            """)

    let configPath: String

    init(_ arguments: ParsedArguments) throws(UsageError) {
        configPath = arguments.value("config") ?? ""
    }

    func run(console: any Console, setup: HandlerSetup) async throws -> Int32 {
        let config = try TurnstileConfig.load(path: configPath)
        console.err("migrate: store \(config.store.description)")
        _ = try Receiver.openStore(config)
        var object = JSONObject()
        object["store"] = .string(config.store.description)
        object["schema_version"] = .number(JSONNumber(Int64(Receiver.schemaVersion(of: config.store))))
        console.out(JSONValue.object(object).serialized())
        return ExitStatus.success
    }
}

/// `turnstile dispatch`: run the workers until the queue is empty.
struct DispatchCommand: TurnstileCommand {
    static let spec = CommandSpec(
        name: "dispatch",
        abstract: "Run the dispatch workers until the queue is empty (after a crash, or after replay --no-dispatch).",
        usage: "dispatch --config FILE",
        options: [.option("config", "FILE", required: true, help: "The Turnstile config file (JSON).")])

    let configPath: String

    init(_ arguments: ParsedArguments) throws(UsageError) {
        configPath = arguments.value("config") ?? ""
    }

    func run(console: any Console, setup: HandlerSetup) async throws -> Int32 {
        let runtime = try Receiver.load(configPath: configPath, existingStoreOnly: true, configure: setup.configure)
        console.err("dispatch: store \(runtime.config.store.description)")
        let watch = Stopwatch()
        let stats = try await runtime.batchDispatcher(logger: Logger(handler: StandardErrorLogHandler(), minimumLevel: .warning)).drain()
        console.err("dispatch: \(stats.dispatched) events in \(watch.elapsedText) (retried \(stats.retried), dead-lettered \(stats.deadLettered))")
        return ExitStatus.success
    }
}
