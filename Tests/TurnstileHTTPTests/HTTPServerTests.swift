#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
@testable import TurnstileHTTP

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
        let client = try Socket(port: server.port)
        // The first request is answered last (from another thread), the second at once on the loop.
        client.write("GET /later/150/first HTTP/1.1\r\nHost: t\r\n\r\nGET /now/second HTTP/1.1\r\nHost: t\r\n\r\nGET /later/10/third HTTP/1.1\r\nHost: t\r\n\r\n")
        let text = client.read(until: "third", timeout: 5)
        let bodies = ["first", "second", "third"].map { text.range(of: "\r\n\r\n\($0)")?.lowerBound }
        #expect(bodies.allSatisfy { $0 != nil }, "got: \(text)")
        if let first = bodies[0], let second = bodies[1], let third = bodies[2] {
            #expect(first < second && second < third)
        }
        #expect(text.hasPrefix("HTTP/1.1 202 "))
        await server.shutdown(graceSeconds: 3)
    }

    @Test func answersFromManyThreadsReachEachConnection() async throws {
        let server = try Self.startServer()
        let port = server.port
        await withTaskGroup(of: Bool.self) { group in
            for index in 0..<20 {
                group.addTask {
                    guard let client = try? Socket(port: port) else { return false }
                    var ok = true
                    for round in 0..<10 {
                        let tag = "c\(index)r\(round)"
                        client.write("GET /later/\(round % 3)/\(tag) HTTP/1.1\r\nHost: t\r\n\r\n")
                        ok = ok && client.read(until: tag, timeout: 5).contains("\r\n\r\n\(tag)")
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

/// A blocking TCP client that writes raw bytes and reads until a marker shows up.
private final class Socket: @unchecked Sendable {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw HTTPServerError(message: "connect: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func write(_ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written <= 0 { return }
            offset += written
        }
    }

    /// What arrived until `marker` is in it, the peer closed, or `timeout` seconds passed.
    func read(until marker: String, timeout: Double) -> String {
        var received: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        var chunk = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline, !String(decoding: received, as: UTF8.self).contains(marker) {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { break }
            if count > 0 { received += chunk[0..<count] }
        }
        return String(decoding: received, as: UTF8.self)
    }
}
