public import Turnstile
import TurnstileHTTP

/// `serve` as a library: the contract's HTTP routes (`POST /webhooks/<provider>`, `/healthz`, `/metrics`)
/// over a ``Receiver``, run with the receiver's services (checkpoints, store maintenance, group commit,
/// dispatch) in one ``ServiceGroup``, which shuts them down in one place: the HTTP front stops accepting
/// and finishes its requests, dispatch drains, within `dispatch.shutdown_grace_seconds`.
public struct WebhookServer: Sendable {
    public let receiver: Receiver
    private let http: HTTPServer
    private let state: ServerState
    private let services: [any Service]

    /// Checks what would make every delivery fail (no providers; a store that cannot take a write now) and
    /// binds the listen address; nothing runs until ``run(until:)``.
    /// - Throws: ``InputError`` naming the config key at fault.
    public init(receiver: Receiver) throws(InputError) {
        let config = receiver.config
        guard !config.providers.isEmpty else {
            throw InputError(.invalidValue, "no providers are configured, so every delivery would be refused with 404",
                             file: config.file, field: "providers")
        }
        let (host, port) = try Self.listenAddress(config.listen, file: config.file)
        // A store that cannot take a write now (read-only, full, locked) is refused at start-up, not
        // discovered by the first sender.
        if case .unwritable(let reason) = receiver.health.check(receiver.store, now: SystemWallClock().now()) {
            throw InputError(.unreadableFile, "the store cannot take a write: \(reason)", file: config.file, field: "store")
        }
        let state = ServerState()
        let dispatcher = receiver.dispatcher
        let services = try receiver.services(gauges: { gauges in
            state.setGauges(queueDepth: gauges.queueDepth, deadLetters: gauges.deadLetters)
            state.setHandlerGauges(Dictionary(uniqueKeysWithValues: dispatcher.breakerStates.map { name, breaker in
                (name, (gauges.backlog[name] ?? 0, breaker))
            }))
        })
        // The gauges `/metrics` and `queue_bound` read are measured before the first request, never a made-up 0.
        do {
            let backlog = try receiver.store.backlog()
            state.setGauges(queueDepth: backlog.values.reduce(0, +), deadLetters: try receiver.store.deadLetterCount())
        } catch {
            throw InputError(.unreadableFile, "the store cannot be read: \(error.message)", file: config.file, field: "store")
        }
        var settings = HTTPServerConfiguration(host: host, port: port)
        settings.limits.maxBodyBytes = config.maxBodyBytes
        settings.limits.maxHeaderBytes = config.http.maxHeaderBytes
        settings.limits.maxHeaderCount = config.http.maxHeaderCount
        settings.maxConnections = config.http.maxConnections
        settings.headerTimeoutSeconds = config.http.headerTimeoutSeconds
        settings.bodyTimeoutSeconds = config.http.bodyTimeoutSeconds
        settings.idleTimeoutSeconds = config.http.idleTimeoutSeconds
        settings.bodyBudgetBytes = config.http.bodyBudgetBytes
        let logger = receiver.logger
        settings.warn = { message, detail in logger.warning(message, ["detail": detail]) }
        settings.errorResponse = { error in
            let body = error.status == 413 ? #"{"outcome":"rejected","reason":"body_too_large"}"#
                : error.status == 503 ? #"{"outcome":"rejected","reason":"store_unavailable"}"#
                : #"{"error":"\#(error.status == 431 ? "request header fields too large" : "bad request")"}"#
            return HTTPResponse.json(error.status, body, headers: error.status == 503 ? ["Retry-After": "1"] : [:])
        }
        let routes = WebhookRoutes(receiver: receiver, state: state)
        let server: HTTPServer
        do { server = try HTTPServer(configuration: settings, handler: { request, writer in routes.handle(request, writer: writer) }) } catch {
            throw InputError(.invalidValue, error.message, file: config.file, field: "listen")
        }
        state.setConnectionCounter { server.openConnections }
        if server.connectionLimit < config.http.maxConnections {
            logger.warning("the descriptor limit lowers max_connections", [
                "max_connections": String(server.connectionLimit), "configured": String(config.http.maxConnections),
            ])
        }
        self.receiver = receiver
        self.http = server
        self.state = state
        self.services = services + [HTTPService(server: server, state: state)]
    }

    /// The port bound (useful with port 0).
    public var port: Int { http.port }
    /// `host:port` as bound, an IPv6 host in brackets.
    public var address: String {
        let host = http.configuration.host
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Serves until `trigger` returns (serve passes the first SIGTERM or SIGINT), then shuts down gracefully.
    public func run(until trigger: @escaping @Sendable () async -> Void) async {
        await ServiceGroup(services, gracePeriodSeconds: receiver.config.dispatch.shutdownGraceSeconds, logger: receiver.logger)
            .run(until: trigger)
    }

    /// `HOST:PORT` or `[IPv6]:PORT`.
    public static func listenAddress(_ text: String, file: String) throws(InputError) -> (String, Int) {
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

/// The HTTP front as a ``Service``: serves until shutdown, then refuses new deliveries (503), stops
/// accepting and finishes the requests in flight within the grace period.
struct HTTPService: Service {
    let server: HTTPServer
    let state: ServerState
    var name: String { "HTTP server" }

    func run(until shutdown: GracefulShutdown) async {
        server.start()
        await shutdown.wait()
        state.beginShutdown()
        await server.shutdown(graceSeconds: shutdown.secondsLeft)
    }
}
