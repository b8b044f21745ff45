import Dispatch
import Turnstile
import TurnstileHTTP
import TurnstileSync

/// Flags and gauges shared by the routes and the services of a ``WebhookServer``.
final class ServerState: Sendable {
    private let flags = Locked<(shuttingDown: Bool, queueDepth: Int, deadLetters: Int?)>((false, 0, nil))
    private let counter = Locked<(@Sendable () -> Int)?>(nil)
    private let handlers = Locked<[String: (backlog: Int, breaker: Int)]>([:])

    var handlerGauges: [String: (backlog: Int, breaker: Int)] { handlers.withLock { $0 } }
    func setHandlerGauges(_ gauges: [String: (backlog: Int, breaker: Int)]) { handlers.withLock { $0 = gauges } }

    var shuttingDown: Bool { flags.withLock { $0.shuttingDown } }
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
    func setConnectionCounter(_ read: @escaping @Sendable () -> Int) { counter.withLock { $0 = read } }
}

/// The routes of the contract's HTTP table, over the receiver's ``DeliveryFront``.
struct WebhookRoutes: Sendable {
    let receiver: Receiver
    let state: ServerState
    var metrics: PipelineMetrics { receiver.metrics }
    var logger: Logger { receiver.logger }
    var health: StoreHealth { receiver.health }

    private static let unavailable = #"{"outcome":"rejected","reason":"store_unavailable"}"#

    /// Called on an event loop thread. A delivery is verified right here and handed to the group-commit
    /// writer, whose commit sends the answer (built back on the loop thread); an inbound call's answer, which
    /// waits on its responder, comes from a task. `/healthz` and `/metrics` answer from memory.
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
            guard request.method == "GET" || request.method == "HEAD" else {
                return HTTPResponse.json(405, #"{"error":"method not allowed"}"#, headers: ["Allow": "GET, HEAD"])
            }
            let text = metrics.render(queueDepth: state.queueDepth, deadLetters: state.deadLetters, openConnections: state.openConnections,
                                      handlers: state.handlerGauges)
            return HTTPResponse(status: 200, headers: ["Content-Type": "text/plain; version=0.0.4"], body: Array(text.utf8))
        default:
            return notFound()
        }
    }

    private func notFound() -> HTTPResponse { HTTPResponse.json(404, #"{"error":"not found"}"#) }


    /// Verifies and submits one delivery; the answer goes to `writer` once its transaction committed (at
    /// once for a rejection, after its responder for an inbound call). The answer is formatted, and the
    /// delivery recorded in the metrics and the log, on the loop thread, not on the group-commit writer.
    private func deliver(_ request: HTTPRequest, provider: String, writer: HTTPResponseWriter) {
        let started = DispatchTime.now().uptimeNanoseconds
        let shownProvider = provider.count > 64 ? provider.prefix(64) + "…" : provider
        if state.shuttingDown || state.queueDepth > receiver.config.queueBound {
            let reason = state.shuttingDown ? "shutting down" : "queue over its bound"
            metrics.recordDelivery(provider: provider, outcome: .rejected, reason: .storeUnavailable, seconds: 0)
            logger.warning("delivery", ["provider": shownProvider, "outcome": "rejected", "reason": "store_unavailable", "detail": reason, "status": "503",
                                        "request_id": request.id, "peer": request.peer])
            return writer.respond(HTTPResponse.json(503, Self.unavailable, headers: ["Retry-After": "5"]))
        }
        var headers = HeaderFields()
        for field in request.headers { headers.append(name: field.name, value: field.value) }
        let receivedAt = SystemWallClock().now()
        let delivery = Delivery(provider: provider, receivedAt: receivedAt, headers: headers, body: request.body, path: request.path)
        receiver.front.submit(delivery) { [self] answer in
            let verdict = answer.verdict
            writer.respond(building: {
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
                metrics.recordDelivery(provider: provider, outcome: verdict.outcome, reason: verdict.reason, seconds: seconds,
                                       secretIndex: verdict.secretIndex)
                if answer.status == 503 {
                    // Names the cause: the store's error (a full disk, a lock held past the timeout, …).
                    logger.warning("delivery", [
                        "provider": shownProvider, "outcome": verdict.outcome.rawValue, "reason": verdict.reason?.rawValue ?? "-",
                        "detail": verdict.detail ?? "-", "status": "503", "latency_ms": LogFormat.milliseconds(seconds),
                        "request_id": request.id, "peer": request.peer,
                    ])
                } else if verdict.outcome == .rejected {
                    // The same explanation `verify` and `replay` print (`signed 400 s before now; at most 300 s allowed`).
                    logger.info("delivery", [
                        "provider": shownProvider, "outcome": "rejected", "reason": verdict.reason?.rawValue ?? "-",
                        "detail": verdict.detail ?? "-", "status": String(answer.status), "latency_ms": LogFormat.milliseconds(seconds),
                        "request_id": request.id, "peer": request.peer,
                    ])
                } else {
                    logger.info("delivery", [
                        "provider": shownProvider, "outcome": verdict.outcome.rawValue, "reason": verdict.reason?.rawValue ?? "-",
                        "event_key": verdict.eventKey ?? "-", "secret_index": verdict.secretIndex.map(String.init) ?? "-",
                        "status": String(answer.status), "latency_ms": LogFormat.milliseconds(seconds),
                        "event": verdict.eventKey.map { DispatchContext.eventIdentity(provider: provider, eventKey: $0) } ?? "-",
                        "request_id": request.id, "peer": request.peer,
                    ])
                }
                var responseHeaders = HTTPHeaders()
                if answer.status == 503 { responseHeaders.append(name: "Retry-After", value: "5") }
                return HTTPResponse.json(answer.status, answer.body, headers: responseHeaders)
            })
        }
    }
}

/// How the delivery log writes numbers.
public enum LogFormat {
    /// `seconds` as milliseconds with two decimals (`12.34`), without Foundation's formatter on this path.
    public static func milliseconds(_ seconds: Double) -> String {
        let hundredths = max(0, Int((seconds * 100_000).rounded()))
        let fraction = hundredths % 100
        return "\(hundredths / 100)." + (fraction < 10 ? "0" : "") + String(fraction)
    }
}
