import Turnstile
import TurnstileCore
import TurnstileHTTP

/// `turnstile send`: POST stored deliveries, with their headers, to a running receiver.
struct SendCommand: TurnstileCommand {
    static let spec = CommandSpec(
        name: "send",
        abstract: "POST stored deliveries, with their headers, to a running receiver; print each HTTP status.",
        usage: "send --url URL PATH...",
        options: [.option("url", "URL", required: true, help: "http://HOST:PORT of the receiver, or a full URL to post every delivery to.")],
        positionals: ("PATH...", true),
        discussion: """
            Each delivery goes to the URL's path when it has one, else to its own "path", else to /webhooks/<provider>.
            Prints one JSON line per delivery: {"source":"FILE:LINE","status":200,"body":"…"}. Plain HTTP only: put TLS
            in front (see the README's nginx section).
            """)

    let host: String
    let port: Int
    let path: String?
    let paths: [String]

    init(_ arguments: ParsedArguments) throws(UsageError) {
        let url = arguments.value("url") ?? ""
        guard url.hasPrefix("http://") else { throw UsageError("--url must start with http:// (got \"\(url)\")") }
        let rest = url.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" }
        let pathPart = rest.dropFirst(authority.count)
        path = pathPart.isEmpty || pathPart == "/" ? nil : String(pathPart)
        var hostPart = Substring(authority)
        var portPart: Substring = "80"
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { portPart = after.dropFirst() }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
        }
        guard !hostPart.isEmpty, let port = Int(portPart), (1...65_535).contains(port) else {
            throw UsageError("--url \"\(url)\" has no usable host and port")
        }
        host = hostPart == "localhost" ? "127.0.0.1" : String(hostPart)
        self.port = port
        paths = arguments.positionals
    }

    func run(console: any Console, setup: HandlerSetup) async throws -> Int32 {
        let source = DeliverySource(paths: paths, schema: try SchemaCatalog.shared().schema("delivery"))
        let client = HTTPClient(host: host, port: port)
        var failures = 0
        try source.forEach { item in
            switch item {
            case .skipped(let file, let why):
                console.err("\(file): skipped: \(why)")
            case .delivery(let delivery, let origin):
                var headers = HTTPHeaders()
                for field in delivery.headers { headers.append(name: field.name, value: field.value) }
                let target = path ?? delivery.path ?? "/webhooks/\(delivery.provider)"
                var line = JSONObject()
                line["source"] = .string(origin)
                do {
                    let response = try client.send(HTTPRequest(method: "POST", target: target, headers: headers, body: delivery.body))
                    line["status"] = .number(JSONNumber(Int64(response.status)))
                    line["body"] = .string(String(decoding: response.body, as: UTF8.self))
                } catch {
                    failures += 1
                    line["status"] = .null
                    line["error"] = .string(String(describing: error))
                }
                console.out(JSONValue.object(line).serialized())
            }
        }
        return failures > 0 ? ExitStatus.failure : ExitStatus.success
    }
}
