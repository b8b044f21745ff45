public import TurnstileCore
public import TurnstilePipeline
import TurnstileHTTP
import TurnstileIngest
import TurnstileSync
import Dispatch

/// The built-in `http` handler: POSTs each event's envelope (``EventEnvelope``) as JSON to a URL, signed in
/// Standard Webhooks form (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`)
/// with a `whsec_` secret, so the receiving service can check it with any Standard Webhooks library.
///
/// - 2xx is success; any other status, a refused connection or a timeout fails the call, which retries with
///   the dispatcher's backoff. `webhook-id` is ``DispatchContext/deliveryIdentity``: the same on every retry,
///   in every store and after a reprocess, and different for different events or handlers, so the receiver
///   can drop repeats. A deliberate re-drive carries `turnstile-reprocess: true`.
/// - Keep-alive connections are reused (an idle one is kept per call that may run at once).
/// - Plain `http://` only, meant for services inside the same network; there is no TLS yet.
/// - Calls block on threads of the handler's own, never on the cooperative pool.
public final class HTTPHandler: EventHandler {
    public typealias Event = GenericEvent

    public let name: String
    public let host: String
    public let port: Int
    public let path: String
    public let timeoutSeconds: Double
    private let signer: SchemeVerifier
    private let idle = Locked<[HTTPClient]>([])
    private let queue: DispatchQueue
    private let clock: any WallClock

    /// - Throws: ``InputError`` for a URL that is not `http://host[:port][/path]` or a secret that cannot sign.
    public init(name: String, url: String, secret: Secret, timeoutSeconds: Double, clock: any WallClock = SystemWallClock()) throws(InputError) {
        let (host, port, path) = try Self.parse(url)
        let provider = ProviderConfig(name: name, scheme: "standard-webhooks", secrets: [secret])
        let signer = try SchemeVerifier(config: provider)
        do { _ = try signer.signatureHeaders(body: [], at: clock.now()) } catch {
            throw InputError(.invalidValue, "the secret cannot sign: \(error)", field: "secret")
        }
        self.name = name
        self.host = host
        self.port = port
        self.path = path
        self.timeoutSeconds = timeoutSeconds
        self.signer = signer
        self.clock = clock
        self.queue = DispatchQueue(label: "ts-http-\(name)", attributes: .concurrent)
    }

    /// `http://host[:port][/path]`, the host a name, an IPv4 address or a bracketed IPv6 address.
    static func parse(_ url: String) throws(InputError) -> (String, Int, String) {
        guard url.hasPrefix("http://") else { throw InputError(.invalidValue, "url must start with http://", field: "url") }
        let rest = url.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" && $0 != "?" }
        var path = String(rest.dropFirst(authority.count))
        if path.isEmpty { path = "/" } else if path.hasPrefix("?") { path = "/" + path }
        var host = Substring(authority)
        var port = 80
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                guard let value = Int(after.dropFirst()), (1...65_535).contains(value) else {
                    throw InputError(.invalidValue, "url has a port that is not 1 to 65535", field: "url")
                }
                port = value
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            guard let value = Int(authority[authority.index(after: colon)...]), (1...65_535).contains(value) else {
                throw InputError(.invalidValue, "url has a port that is not 1 to 65535", field: "url")
            }
            port = value
        }
        guard !host.isEmpty, !host.contains("@"), path.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
            throw InputError(.invalidValue, "url must be http://HOST[:PORT][/PATH] with no user, spaces or non-ASCII path", field: "url")
        }
        return (host == "localhost" ? "127.0.0.1" : String(host), port, path)
    }

    public func handle(_ event: GenericEvent, context: DispatchContext) async throws {
        let body = EventEnvelope.json(event, context: context)
        var headers = HTTPHeaders()
        headers.append(name: "Content-Type", value: "application/json")
        headers.append(name: "User-Agent", value: "Turnstile")
        if context.isReprocess { headers.append(name: "turnstile-reprocess", value: "true") }
        for field in try signer.signatureHeaders(body: body, at: clock.now(), id: context.deliveryIdentity) {
            headers.append(name: field.name, value: field.value)
        }
        let request = HTTPRequest(method: "POST", target: path, headers: headers, body: body)
        let result: Result<HTTPResponse, HTTPServerError> = await withCheckedContinuation { continuation in
            queue.async { [self] in
                let client = idle.withLock { $0.popLast() } ?? HTTPClient(host: host, port: port, timeoutSeconds: timeoutSeconds,
                                                                           maxResponseBytes: 1 << 20)
                do throws(HTTPServerError) {
                    let response = try client.send(request)
                    if !response.closeConnection { idle.withLock { $0.append(client) } }
                    continuation.resume(returning: .success(response))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        let response: HTTPResponse
        switch result {
        case .success(let answer): response = answer
        case .failure(let error): throw HTTPHandlerError(url: "http://\(host):\(port)\(path)", status: nil, detail: error.message)
        }
        guard (200..<300).contains(response.status) else {
            let excerpt = String(decoding: response.body.prefix(200), as: UTF8.self)
            throw HTTPHandlerError(url: "http://\(host):\(port)\(path)", status: response.status, detail: excerpt)
        }
    }
}

/// An `http` handler's call that did not get a 2xx.
public struct HTTPHandlerError: Error, CustomStringConvertible {
    public let url: String
    /// The answer's status; nil when there was none (refused, closed, timed out).
    public let status: Int?
    public let detail: String

    public var description: String {
        if let status { return "POST \(url) answered \(status)" + (detail.isEmpty ? "" : ": \(detail)") }
        return "POST \(url) failed: \(detail)"
    }
}
