#if canImport(Glibc)
import Glibc
#endif
import Turnstile
import TurnstileServer

/// `turnstile serve`: the webhook endpoint providers call.
struct ServeCommand: TurnstileCommand {
    static let spec = CommandSpec(
        name: "serve",
        abstract: "Run the HTTP receiver and the dispatch workers until SIGTERM/SIGINT, then drain and exit 0.",
        usage: "serve --config FILE",
        options: [.option("config", "FILE", required: true, help: "The Turnstile config file (JSON).")],
        discussion: """
            Routes: POST /webhooks/<provider>, GET /healthz, GET /metrics. A 200 is written only after the event's
            transaction has committed; concurrent deliveries share one transaction (group commit). On SIGTERM or SIGINT
            it stops accepting, finishes requests in flight, drains dispatch up to dispatch.shutdown_grace_seconds and
            exits 0; a second signal exits at once. Logs one JSON line per delivery on stderr.
            """)

    let configPath: String

    init(_ arguments: ParsedArguments) throws(UsageError) {
        configPath = arguments.value("config") ?? ""
    }

    func run(console: any Console, setup: HandlerSetup) async throws -> Int32 {
        // Watch for the signals before anything can announce readiness: a SIGTERM that arrives right after
        // "listening" must not be lost.
        let signals = ShutdownSignals()
        let logHandler = StandardErrorLogHandler(buffered: true)
        let logger = Logger(handler: logHandler)
        let receiver = try Receiver.load(configPath: configPath, logger: logger, configure: setup.configure)
        let server = try WebhookServer(receiver: receiver)
        logger.info("listening", ["address": server.address, "store": receiver.config.store.description,
                                  "providers": receiver.ingest.providerNames.joined(separator: ","),
                                  "handlers": receiver.registry.names.joined(separator: ",")])
        logHandler.flush()
        await server.run(until: {
            let signal = await signals.first()
            logger.info("shutting down", ["signal": signal == SIGTERM ? "SIGTERM" : "SIGINT"])
            logHandler.flush()
        })
        logger.info("stopped", ["queue_depth": String((try? receiver.store.queueDepth()) ?? -1)])
        logHandler.flush()
        return ExitStatus.success
    }
}
