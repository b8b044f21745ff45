import Testing
@testable import TurnstileHTTP

private func parseAll(_ text: String, limits: HTTPLimits = HTTPLimits(), chunkSize: Int = .max) throws -> [HTTPParserOutput] {
    var parser = HTTPRequestParser(limits: limits)
    var buffer = HTTPByteBuffer()
    var outputs: [HTTPParserOutput] = []
    let bytes = Array(text.utf8)
    var index = 0
    while index < bytes.count {
        let end = min(bytes.count, index + chunkSize)
        buffer.append(Array(bytes[index..<end]))
        index = end
        while let output = try parser.next(&buffer) { outputs.append(output) }
    }
    return outputs
}

private func requests(_ outputs: [HTTPParserOutput]) -> [HTTPRequest] {
    outputs.compactMap { if case .request(let request) = $0 { request } else { nil } }
}

@Suite struct HTTPParserTests {
    @Test(arguments: [1, 3, 17, Int.max])
    func parsesPipelinedRequestsFedInAnySizeOfPieces(chunkSize: Int) throws {
        let text = "POST /webhooks/sync?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Two: one\r\nx-two: two\r\n\r\nhello"
            + "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        let parsed = requests(try parseAll(text, chunkSize: chunkSize))
        #expect(parsed.count == 2)
        #expect(parsed[0].method == "POST")
        #expect(parsed[0].path == "/webhooks/sync")
        #expect(parsed[0].body == Array("hello".utf8))
        #expect(parsed[0].headers.values("X-TWO") == ["one", "two"])
        #expect(parsed[0].keepAlive)
        #expect(parsed[1].path == "/healthz")
        #expect(!parsed[1].keepAlive)
    }

    @Test(arguments: [1, 5, Int.max])
    func decodesChunkedBodiesWithExtensionsAndTrailers(chunkSize: Int) throws {
        let text = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        #expect(requests(try parseAll(text, chunkSize: chunkSize)).first?.body == Array("hello world".utf8))
    }

    @Test func announcesExpectContinueBeforeTheBody() throws {
        var parser = HTTPRequestParser(limits: HTTPLimits())
        var buffer = HTTPByteBuffer(Array("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n".utf8))
        #expect(try parser.next(&buffer) == .continueExpected)
        #expect(try parser.next(&buffer) == nil)
        buffer.append(Array("{}".utf8))
        if case .request(let request)? = try parser.next(&buffer) { #expect(request.body == Array("{}".utf8)) } else { Issue.record("no request") }
    }

    @Test func http10DefaultsToClose() throws {
        let parsed = requests(try parseAll("GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
        #expect(parsed.map(\.keepAlive) == [false, true])
    }

    @Test(arguments: [
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 \r\n\r\nx", 200),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\tcontinued\r\n\r\n", 400),
        ("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\u{7f}\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
        ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nab", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", 413),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n", 413),
        ("GET /" + String(repeating: "a", count: 300) + " HTTP/1.1\r\nHost: a\r\n\r\n", 431),
        ("GET / HTTP/1.1\r\nHost: a\r\n" + String(repeating: "X: y\r\n", count: 11) + "\r\n", 431),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "y", count: 600) + "\r\n\r\n", 431),
    ])
    func refusesWithTheRightStatus(text: String, status: Int) throws {
        var limits = HTTPLimits()
        limits.maxBodyBytes = 100
        limits.maxRequestLineBytes = 256
        limits.maxHeaderBytes = 512
        limits.maxHeaderCount = 10
        if status == 200 {
            #expect(requests(try parseAll(text, limits: limits)).count == 1)
            return
        }
        do {
            _ = try parseAll(text, limits: limits)
            Issue.record("expected \(status) for \(text.prefix(60))")
        } catch let error as HTTPParseError {
            #expect(error.status == status, "\(error.reason)")
        }
    }

    @Test func anOversizedHeadIsRefusedBeforeItEnds() throws {
        var limits = HTTPLimits()
        limits.maxHeaderBytes = 100
        var parser = HTTPRequestParser(limits: limits)
        var buffer = HTTPByteBuffer(Array(("GET / HTTP/1.1\r\nX: " + String(repeating: "y", count: 200)).utf8))
        #expect(throws: HTTPParseError.self) { try parser.next(&buffer) }
    }

    @Test func responsesCarryLengthAndClose() {
        let bytes = HTTPResponse.json(200, #"{"a":1}"#).serialized(keepAlive: false, date: nil)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.contains("Content-Length: 7\r\n"))
        #expect(text.contains("Connection: close\r\n"))
        #expect(text.hasSuffix("\r\n\r\n{\"a\":1}"))
    }
}
