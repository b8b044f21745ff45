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
        // Chunk sizes that overflowed an Int (a trap that killed the server), alone and after a first chunk.
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8000000000000000\r\n", 413),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n", 413),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n7FFFFFFFFFFFFFFF\r\n", 413),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + String(repeating: "0", count: 40) + "1\r\nx\r\n0\r\n\r\n", 200),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999999\r\n\r\n", 413),
        // Blank lines before a request line count against the head limit, as do trailers.
        (String(repeating: "\r\n", count: 300) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 431),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + String(repeating: "X: \(String(repeating: "y", count: 40))\r\n", count: 9) + "\r\n", 200),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + String(repeating: "X: \(String(repeating: "y", count: 90))\r\n", count: 9) + "\r\n", 431),
        ("GET /" + String(repeating: "a", count: 300) + " HTTP/1.1\r\nHost: a\r\n\r\n", 431),
        ("GET / HTTP/1.1\r\nHost: a\r\n" + String(repeating: "X: y\r\n", count: 11) + "\r\n", 431),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "y", count: 600) + "\r\n\r\n", 431),
    ])
    func refusesWithTheRightStatus(text: String, status: Int) throws {
        for chunkSize in [1, 7, Int.max] { try refuses(text: text, status: status, chunkSize: chunkSize) }
    }

    private func refuses(text: String, status: Int, chunkSize: Int) throws {
        var limits = HTTPLimits()
        limits.maxBodyBytes = 100
        limits.maxRequestLineBytes = 256
        limits.maxHeaderBytes = 512
        limits.maxHeaderCount = 10
        if status == 200 {
            #expect(requests(try parseAll(text, limits: limits, chunkSize: chunkSize)).count == 1)
            return
        }
        do {
            _ = try parseAll(text, limits: limits, chunkSize: chunkSize)
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

    /// A body sent a byte at a time, as Content-Length and as 1-byte chunks: the parser used to copy the body
    /// so far on every append (1 MiB took 22 s). Two sizes in one run; linear work grows about 4x for 4x the
    /// bytes, the old quadratic work 16x. The bound (10x) leaves room for noise without hiding a square.
    @Test(arguments: [false, true])
    func parsingIsLinearInTheBytesReceived(chunked: Bool) throws {
        func seconds(bodyBytes: Int) throws -> Double {
            var limits = HTTPLimits()
            limits.maxBodyBytes = 8 << 20
            var parser = HTTPRequestParser(limits: limits)
            var buffer = HTTPByteBuffer()
            let head = chunked ? "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                : "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \(bodyBytes)\r\n\r\n"
            buffer.append(Array(head.utf8))
            #expect(try parser.next(&buffer) == nil)
            let piece = chunked ? Array("1\r\nx\r\n".utf8) : [UInt8(ascii: "x")]
            let started = ContinuousClock.now
            for _ in 0..<(bodyBytes - 1) {
                buffer.append(piece)
                if let output = try parser.next(&buffer) { Issue.record("finished early: \(output)") }
            }
            buffer.append(piece)
            if chunked { buffer.append(Array("0\r\n\r\n".utf8)) }
            let output = try parser.next(&buffer)
            let elapsed = ContinuousClock.now - started
            guard case .request(let request)? = output else {
                Issue.record("no request")
                return 0
            }
            #expect(request.body.count == bodyBytes)
            let parts = elapsed.components
            return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
        }
        _ = try seconds(bodyBytes: 16 << 10)  // warm-up
        let small = try seconds(bodyBytes: 128 << 10)
        let large = try seconds(bodyBytes: 512 << 10)
        #expect(large / max(small, 1e-6) < 10, "128 KiB took \(small) s, 512 KiB \(large) s")
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
