#if canImport(Glibc)
import Glibc
#endif
import TurnstileSync
import Dispatch
import Foundation
import Turnstile
import TurnstileCore
import TurnstileHTTP
import TurnstilePipeline
import TurnstileSQLite

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
        let receiver = try Receiver.load(configPath: configPath, configure: setup.configure)
        let config = receiver.config
        guard !config.providers.isEmpty else {
            throw InputError(.invalidValue, "no providers are configured, so every delivery would be refused with 404",
                             file: config.file, field: "providers")
        }
        let (host, port) = try Self.listenAddress(config.listen, file: config.file)
        // A store that cannot take a write now (read-only, full, locked) is refused at start-up, not
        // discovered by the first sender.
        let health = StoreHealth()
        if case .unwritable(let reason) = health.check(receiver.store, now: SystemWallClock().now()) {
            throw InputError(.unreadableFile, "the store cannot take a write: \(reason)", file: config.file, field: "store")
        }
        // The gauges `/metrics` and `queue_bound` read are measured before the first request, never a made-up 0.
        let state = ServeState()
        do { state.setGauges(queueDepth: try receiver.store.queueDepth(), deadLetters: try receiver.store.deadLetterCount()) } catch {
            throw InputError(.unreadableFile, "the store cannot be read: \(error.message)", file: config.file, field: "store")
        }
        let logHandler = StandardErrorLogHandler(buffered: true)
        let logger = Logger(handler: logHandler)
        let metrics = PipelineMetrics(providers: receiver.ingest.providerNames)
        var pipeline = receiver.pipeline
        pipeline.health = health
        let committer = GroupCommitter(pipeline: pipeline)
        // On SQLite, WAL checkpoints run on a thread of their own instead of inside the group commit.
        var checkpointer: WALCheckpointer? = nil
        if let store = receiver.store as? SQLiteEventStore, store.path != ":memory:" {
            do {
                checkpointer = try WALCheckpointer(store: store, others: [receiver.dispatchStore as? SQLiteEventStore].compactMap { $0 },
                                                   logger: logger)
            } catch {
                throw InputError(.unreadableFile, error.message, file: config.file, field: "store")
            }
        }
        let dispatcher = Dispatcher(store: receiver.dispatchStore, registry: receiver.registry, settings: config.dispatch, logger: logger,
                                    observer: { event, handler, succeeded, seconds in
                                        let started = SystemWallClock().now().secondsSince1970 - seconds
                                        metrics.recordHandlerRun(handler: handler, succeeded: succeeded, seconds: seconds,
                                                                 startDelay: event.attempt == 1 ? started - event.receivedAt.secondsSince1970 : nil)
                                    })
        var http = HTTPServerConfiguration(host: host, port: port)
        http.limits.maxBodyBytes = config.maxBodyBytes
        http.limits.maxHeaderBytes = config.http.maxHeaderBytes
        http.limits.maxHeaderCount = config.http.maxHeaderCount
        http.maxConnections = config.http.maxConnections
        http.headerTimeoutSeconds = config.http.headerTimeoutSeconds
        http.bodyTimeoutSeconds = config.http.bodyTimeoutSeconds
        http.idleTimeoutSeconds = config.http.idleTimeoutSeconds
        http.bodyBudgetBytes = config.http.bodyBudgetBytes
        http.warn = { message, detail in logger.warning(message, ["detail": detail]) }
        http.errorResponse = { error in
            let body = error.status == 413 ? #"{"outcome":"rejected","reason":"body_too_large"}"#
                : error.status == 503 ? #"{"outcome":"rejected","reason":"store_unavailable"}"#
                : #"{"error":"\#(error.status == 431 ? "request header fields too large" : "bad request")"}"#
            return HTTPResponse.json(error.status, body, headers: error.status == 503 ? ["Retry-After": "1"] : [:])
        }
        let inbound = InboundCallAnswers(store: receiver.store, responder: receiver.registry.inboundResponder, config: config)
        let service = WebhookService(receiver: receiver, committer: committer, metrics: metrics, logger: logger, state: state,
                                     inbound: inbound, health: health, accepted: { dispatcher.wake() })
        let server: HTTPServer
        do { server = try HTTPServer(configuration: http, handler: { request, writer in service.handle(request, writer: writer) }) } catch {
            throw InputError(.invalidValue, error.message, file: config.file, field: "listen")
        }
        state.setConnectionCounter { server.openConnections }
        if server.connectionLimit < config.http.maxConnections {
            logger.warning("the descriptor limit lowers max_connections", [
                "max_connections": String(server.connectionLimit), "configured": String(config.http.maxConnections),
            ])
        }
        let shown = Self.shownAddress(host: host, port: server.port)
        logger.info("listening", ["address": shown, "store": config.store.description, "providers": receiver.ingest.providerNames.joined(separator: ",")])
        logHandler.flush()

        // The long-running loops survive store errors themselves; should one still end early, it is logged and
        // started again.
        let stopped: @Sendable () -> Bool = { state.dispatchStopped }
        let dispatching = Task {
            await Self.supervised("dispatch", logger: logger, until: stopped) { _ = await dispatcher.run(shouldStop: stopped) }
        }
        let maintenance = Task {
            await Self.supervised("store maintenance", logger: logger, until: stopped) {
                await Self.maintain(receiver.store, health: health, state: state, dispatcher: dispatcher, logger: logger)
            }
        }

        let signal = await signals.first()
        logger.info("shutting down", ["signal": signal == SIGTERM ? "SIGTERM" : "SIGINT"])
        state.beginShutdown()
        await server.shutdown(graceSeconds: config.dispatch.shutdownGraceSeconds)
        committer.stop()
        // Drain dispatch up to the grace period, then stop the workers (what is left stays queued).
        let deadline = SystemWallClock().now().adding(seconds: config.dispatch.shutdownGraceSeconds)
        while SystemWallClock().now() < deadline, ((try? receiver.store.queueDepth()) ?? 0) > 0 {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        state.stopDispatch()
        await dispatching.value
        await maintenance.value
        checkpointer?.stop()
        logger.info("stopped", ["queue_depth": String((try? receiver.store.queueDepth()) ?? -1)])
        logHandler.flush()
        return ExitStatus.success
    }

    /// Runs `body` until `until` turns true; should it return before, that is logged and it runs again after
    /// a back-off (100 ms doubling to 5 s), so no background loop of `serve` can stop silently.
    static func supervised(_ name: String, logger: Logger, until stopped: @Sendable () -> Bool, _ body: () async -> Void) async {
        var backoff = Backoff(initial: 0.1, maximum: 5)
        while true {
            await body()
            if stopped() { return }
            let wait = backoff.next()
            logger.error("\(name) ended unexpectedly; restarting it", ["restart_in_s": String(wait)])
            try? await Task.sleep(nanoseconds: UInt64(wait * 1e9))
        }
    }

    /// The store's upkeep while `serve` runs: the queue depth `queue_bound` uses (every 250 ms), the dead
    /// letters `/metrics` shows and the write check `/healthz` answers from (every second), and nonce pruning
    /// (every minute).
    /// A store error is logged once per episode and tried again on the next round.
    static func maintain(_ store: any EventStore, health: StoreHealth, state: ServeState, dispatcher: Dispatcher, logger: Logger) async {
        let gauges = FailureEpisode("reading the queue gauges", logger: logger)
        let writes = FailureEpisode("the store write check", logger: logger)
        let pruning = FailureEpisode("nonce pruning", logger: logger)
        var lastPrune = 0.0
        var lastCheck = 0.0
        while !state.dispatchStopped {
            let now = SystemWallClock().now()
            let everySecond = now.secondsSince1970 - lastCheck >= 1
            do {
                // The queue depth gates `queue_bound` and is read every round; the dead letters, which only
                // `/metrics` shows and which cost a count of their table, once a second.
                let backlog = try store.backlog()
                state.setGauges(queueDepth: backlog.values.reduce(0, +), deadLetters: everySecond ? try store.deadLetterCount() : nil)
                let breakers = dispatcher.breakerStates
                state.setHandlerGauges(Dictionary(uniqueKeysWithValues: breakers.map { name, breaker in (name, (backlog[name] ?? 0, breaker)) }))
                gauges.succeeded()
            } catch {
                gauges.failed(error, "the last values are kept")
            }
            if everySecond {
                lastCheck = now.secondsSince1970
                switch health.check(store, now: now) {
                case .writable: writes.succeeded()
                case .unwritable(let reason):
                    writes.failed(StoreError(.unavailable, reason), "/healthz answers 503 until a write succeeds")
                }
            }
            if now.secondsSince1970 - lastPrune > 60 {
                lastPrune = now.secondsSince1970
                do {
                    let pruned = try store.pruneNonces(now: now)
                    if pruned > 0 { logger.info("pruned nonces", ["count": String(pruned)]) }
                    pruning.succeeded()
                } catch {
                    pruning.failed(error, "retried in a minute")
                }
            }
            try? await Task.sleep(nanoseconds: 250_000_000)
        }
    }

    /// `host:port` as a listen address is written: an IPv6 host in brackets.
    static func shownAddress(host: String, port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// `HOST:PORT` or `[IPv6]:PORT`.
    static func listenAddress(_ text: String, file: String) throws(InputError) -> (String, Int) {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") {
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else if let colon = text.lastIndex(of: ":") {
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            throw InputError(.invalidValue, "listen must be HOST:PORT or [IPV6]:PORT, got \"\(text)\"", file: file, field: "listen")
        }
        if host == "localhost" { host = "127.0.0.1" }
        guard let port = Int(portText), (0...65_535).contains(port), !host.isEmpty else {
            throw InputError(.invalidValue, "listen must be HOST:PORT with a port from 0 to 65535, got \"\(text)\"", file: file, field: "listen")
        }
        return (String(host), port)
    }
}

/// SIGTERM and SIGINT, watched from the moment this is made: the first one is kept until ``first()`` asks,
/// a second one ends the process at once.
final class ShutdownSignals: Sendable {
    private final class State: Sendable {
        let lock = Locked<(count: Int, first: Int32?, waiter: CheckedContinuation<Int32, Never>?)>((0, nil, nil))
    }
    private let state = State()
    /// The dispatch sources, kept alive as long as this is (only held, never touched again).
    private let sources: Locked<[any DispatchSourceSignal]>

    init() {
        var sources: [any DispatchSourceSignal] = []
        let state = self.state
        for signo in [SIGTERM, SIGINT] {
            Glibc.signal(signo, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signo, queue: .global())
            source.setEventHandler {
                let waiter = state.lock.withLock { state -> CheckedContinuation<Int32, Never>? in
                    state.count += 1
                    if state.count > 1 { _exit(128 + signo) }
                    state.first = signo
                    defer { state.waiter = nil }
                    return state.waiter
                }
                waiter?.resume(returning: signo)
            }
            source.resume()
            sources.append(source)
        }
        self.sources = Locked(sources)
    }

    /// The first signal, once it has arrived.
    func first() async -> Int32 {
        await withCheckedContinuation { continuation in
            let arrived = state.lock.withLock { state -> Int32? in
                if let first = state.first { return first }
                state.waiter = continuation
                return nil
            }
            if let arrived { continuation.resume(returning: arrived) }
        }
    }
}

/// Flags and gauges shared by the routes and the background tasks of `serve`.
final class ServeState: Sendable {
    private let flags = Locked<(shuttingDown: Bool, dispatchStopped: Bool, queueDepth: Int, deadLetters: Int?)>((false, false, 0, nil))
    private let counter = Locked<(@Sendable () -> Int)?>(nil)
    private let handlers = Locked<[String: (backlog: Int, breaker: Int)]>([:])

    var handlerGauges: [String: (backlog: Int, breaker: Int)] { handlers.withLock { $0 } }
    func setHandlerGauges(_ gauges: [String: (backlog: Int, breaker: Int)]) { handlers.withLock { $0 = gauges } }

    var shuttingDown: Bool { flags.withLock { $0.shuttingDown } }
    var dispatchStopped: Bool { flags.withLock { $0.dispatchStopped } }
    /// As last read by the maintenance loop (the request path never waits on the store for it).
    var queueDepth: Int { flags.withLock { $0.queueDepth } }
    var deadLetters: Int? { flags.withLock { $0.deadLetters } }

    /// Records the gauges just read; a nil `deadLetters` keeps the last count.
    func setGauges(queueDepth: Int, deadLetters: Int?) {
        flags.withLock {
            $0.queueDepth = queueDepth
            if let deadLetters { $0.deadLetters = deadLetters }
        }
    }
    var openConnections: Int { counter.withLock { $0?() ?? 0 } }

    func beginShutdown() { flags.withLock { $0.shuttingDown = true } }
    func stopDispatch() { flags.withLock { $0.dispatchStopped = true } }
    func setConnectionCounter(_ read: @escaping @Sendable () -> Int) { counter.withLock { $0 = read } }
}

/// The routes of the contract's HTTP table, over the pipeline.
struct WebhookService: Sendable {
    let receiver: Receiver
    let committer: GroupCommitter
    let metrics: PipelineMetrics
    let logger: Logger
    let state: ServeState
    let inbound: InboundCallAnswers
    let health: StoreHealth
    /// Told of every accepted delivery once it is durable: wakes the dispatcher.
    let accepted: @Sendable () -> Void

    private static let unavailable = #"{"outcome":"rejected","reason":"store_unavailable"}"#

    /// Called on an event loop thread. A delivery is verified right here and handed to the group-commit
    /// writer, whose commit sends the answer (built back on the loop thread); anything that may wait on the
    /// store or a handler (`/healthz`, `/metrics`, an inbound call's answer) runs on a task.
    func handle(_ request: HTTPRequest, writer: HTTPResponseWriter) {
        let path = request.path
        guard path.hasPrefix("/webhooks/") else { return writer.respond(respond(to: request)) }
        let provider = String(path.dropFirst("/webhooks/".count))
        guard !provider.isEmpty, !provider.contains("/") else { return writer.respond(notFound()) }
        guard request.method == "POST" else {
            return writer.respond(HTTPResponse.json(405, #"{"error":"method not allowed"}"#, headers: ["Allow": "POST"]))
        }
        deliver(request, provider: provider, writer: writer)
    }

    /// The routes other than `/webhooks/<provider>`, answered from state kept in memory: neither waits on
    /// the store, so a flood of health checks or scrapes costs the store nothing.
    private func respond(to request: HTTPRequest) -> HTTPResponse {
        let path = request.path
        switch path {
        case "/healthz":
            guard request.method == "GET" || request.method == "HEAD" else {
                return HTTPResponse.json(405, #"{"error":"method not allowed"}"#, headers: ["Allow": "GET, HEAD"])
            }
            switch health.status {
            case .writable:
                return HTTPResponse.json(200, #"{"status":"ok"}"#)
            case .unwritable(let reason):
                let body = JSONValue.object(JSONObject(["status": "store_unavailable", "reason": .string(reason)])).serialized()
                return HTTPResponse.json(503, body, headers: ["Retry-After": "5"])
            }
        case "/metrics":
            guard request.method == "GET" else {
                return HTTPResponse.json(405, #"{"error":"method not allowed"}"#, headers: ["Allow": "GET"])
            }
            let text = metrics.render(queueDepth: state.queueDepth, deadLetters: state.deadLetters, openConnections: state.openConnections,
                                      handlers: state.handlerGauges)
            return HTTPResponse(status: 200, headers: ["Content-Type": "text/plain; version=0.0.4"], body: Array(text.utf8))
        default:
            return notFound()
        }
    }

    private func notFound() -> HTTPResponse { HTTPResponse.json(404, #"{"error":"not found"}"#) }

    /// `seconds` as milliseconds with two decimals (`12.34`), without Foundation's formatter on this path.
    static func milliseconds(_ seconds: Double) -> String {
        let hundredths = max(0, Int((seconds * 100_000).rounded()))
        let fraction = hundredths % 100
        return "\(hundredths / 100)." + (fraction < 10 ? "0" : "") + String(fraction)
    }

    /// Verifies and submits one delivery; the answer goes to `writer` once its transaction committed (at
    /// once for a rejection). The answer is formatted, and the delivery recorded in the metrics and the log,
    /// on the loop thread, not on the group-commit writer; an inbound call's answer is awaited on a task.
    private func deliver(_ request: HTTPRequest, provider: String, writer: HTTPResponseWriter) {
        let started = DispatchTime.now().uptimeNanoseconds
        let shownProvider = provider.count > 64 ? provider.prefix(64) + "…" : provider
        if state.shuttingDown || state.queueDepth > receiver.config.queueBound {
            let reason = state.shuttingDown ? "shutting down" : "queue over its bound"
            metrics.recordDelivery(provider: provider, outcome: .rejected, reason: .storeUnavailable, seconds: 0)
            logger.warning("delivery", ["provider": shownProvider, "outcome": "rejected", "reason": "store_unavailable", "detail": reason, "status": "503"])
            return writer.respond(HTTPResponse.json(503, Self.unavailable, headers: ["Retry-After": "5"]))
        }
        var headers = HeaderFields()
        for field in request.headers { headers.append(name: field.name, value: field.value) }
        let receivedAt = SystemWallClock().now()
        let delivery = Delivery(provider: provider, receivedAt: receivedAt, headers: headers, body: request.body, path: request.path)
        committer.submit(delivery) { [self] verdict in
            if verdict.outcome == .accepted { accepted() }
            // Records the delivery and makes its answer; `inboundAnswer` is a request/response webhook's.
            let finish = { @Sendable (inboundAnswer: String?) -> HTTPResponse in
                let answer = ReceiveResponse(verdict)
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
                metrics.recordDelivery(provider: provider, outcome: verdict.outcome, reason: verdict.reason, seconds: seconds,
                                       secretIndex: verdict.secretIndex)
                if answer.status == 503 {
                    // Names the cause: the store's error (a full disk, a lock held past the timeout, …).
                    logger.warning("delivery", [
                        "provider": shownProvider, "outcome": verdict.outcome.rawValue, "reason": verdict.reason?.rawValue ?? "-",
                        "detail": verdict.detail ?? "-", "status": "503", "latency_ms": Self.milliseconds(seconds),
                    ])
                } else {
                    logger.info("delivery", [
                        "provider": shownProvider, "outcome": verdict.outcome.rawValue, "reason": verdict.reason?.rawValue ?? "-",
                        "event_key": verdict.eventKey ?? "-", "secret_index": verdict.secretIndex.map(String.init) ?? "-",
                        "status": String(answer.status), "latency_ms": Self.milliseconds(seconds),
                    ])
                }
                if let inboundAnswer { return HTTPResponse.json(200, inboundAnswer) }
                var responseHeaders = HTTPHeaders()
                if answer.status == 503 { responseHeaders.append(name: "Retry-After", value: "5") }
                return HTTPResponse.json(answer.status, answer.body, headers: responseHeaders)
            }
            if inbound.applies(to: verdict, provider: provider) {
                // Request/response: the answer routes the call; a repeat gets the answer kept for the first.
                Task { writer.respond(finish(await inbound.answer(provider: provider, verdict: verdict, body: request.body, receivedAt: receivedAt))) }
            } else {
                writer.respond(building: { finish(nil) })
            }
        }
    }
}
