import Foundation
import Testing
import TurnstileHTTP
import TurnstileTestSupport

/// The server in-process, through its request-handler API: answers given on the loop thread, later from
/// other threads, or built on the loop (`respond(building:)`) all reach the right connection in order.
@Suite struct HTTPServerTests {
    /// Answers `/now/<x>` at once on the loop thread, `/later/<ms>/<x>` from another thread after a delay
    /// (built on the loop), and anything else through the async responder path.
    private static func startServer() throws -> HTTPServer {
        try HTTPServer(configuration: HTTPServerConfiguration(host: "127.0.0.1", port: 0)) { request, writer in
            let parts = request.path.split(separator: "/").map(String.init)
            switch parts.first {
            case "now":
                writer.respond(HTTPResponse(status: 200, body: Array(parts[1].utf8)))
            case "later":
                let delay = Double(parts[1])! / 1000
                let text = parts[2]
                DispatchQueue.global().asyncAfter(deadline: .now() + delay) {
                    writer.respond(building: { HTTPResponse(status: 202, body: Array(text.utf8)) })
                }
            default:
                Task { writer.respond(HTTPResponse(status: 404)) }
            }
        }
    }

    @Test func pipelinedAnswersGivenOutOfOrderAreWrittenInRequestOrder() async throws {
        let server = try Self.startServer()
        let client = try RawClient(port: server.port)
        // The first request is answered last (from another thread), the second at once on the loop.
        client.send("GET /later/150/first HTTP/1.1\r\nHost: t\r\n\r\nGET /now/second HTTP/1.1\r\nHost: t\r\n\r\nGET /later/10/third HTTP/1.1\r\nHost: t\r\n\r\n")
        let answers = client.responses(3, timeout: 5)
        #expect(answers.map(\.body) == ["first", "second", "third"])
        #expect(answers.map(\.status) == [202, 200, 202])
        await server.shutdown(graceSeconds: 3)
    }

    @Test func answersFromManyThreadsReachEachConnection() async throws {
        let server = try Self.startServer()
        let port = server.port
        await withTaskGroup(of: Bool.self) { group in
            for index in 0..<20 {
                group.addTask {
                    guard let client = try? RawClient(port: port) else { return false }
                    var ok = true
                    for round in 0..<10 {
                        let tag = "c\(index)r\(round)"
                        client.send("GET /later/\(round % 3)/\(tag) HTTP/1.1\r\nHost: t\r\n\r\n")
                        ok = ok && client.responses(round + 1, timeout: 5).last?.body == tag
                    }
                    return ok
                }
            }
            for await ok in group { #expect(ok) }
        }
        await server.shutdown(graceSeconds: 3)
    }

    @Test func theAsyncResponderStillAnswers() async throws {
        let server = try HTTPServer(configuration: HTTPServerConfiguration(host: "127.0.0.1", port: 0)) { request in
            HTTPResponse(status: 200, body: Array("async \(request.method)".utf8))
        }
        let response = try HTTPClient(host: "127.0.0.1", port: server.port).send(HTTPRequest(method: "GET", target: "/x"))
        #expect(response.status == 200)
        #expect(String(decoding: response.body, as: UTF8.self) == "async GET")
        await server.shutdown(graceSeconds: 3)
    }
}
