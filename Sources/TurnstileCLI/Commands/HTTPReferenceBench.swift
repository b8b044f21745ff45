import TurnstileCore
import TurnstileHTTP
import TurnstileServer

/// `turnstile bench http-reference`: Turnstile's own HTTP server answering every request with a fixed 200,
/// with no verification, store or log behind it, until SIGTERM or SIGINT. It is the reference that
/// `Benchmarks/http-load.sh` puts beside nginx in the same run, so the HTTP layer's share of the cost of
/// `serve` is measured, not guessed.
struct HTTPReferenceBench {
    let listen: String
    let console: any Console

    func run() async throws -> Int32 {
        let signals = ShutdownSignals()
        let (host, port) = try WebhookServer.listenAddress(listen, file: "--listen")
        let answer = HTTPResponse.json(200, #"{"outcome":"accepted"}"#)
        let server: HTTPServer
        do throws(HTTPServerError) {
            server = try HTTPServer(configuration: HTTPServerConfiguration(host: host, port: port), handler: { _, writer in writer.respond(answer) })
        } catch {
            throw InputError(.invalidValue, error.message, file: "--listen", field: "listen")
        }
        server.start()
        let shown = host.contains(":") ? "[\(host)]:\(server.port)" : "\(host):\(server.port)"
        console.err("bench http-reference: listening on \(shown), a fixed 200 for every request")
        _ = await signals.first()
        await server.shutdown(graceSeconds: 1)
        return ExitStatus.success
    }
}
