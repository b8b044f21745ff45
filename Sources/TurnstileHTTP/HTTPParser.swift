/// Limits on what one request may be.
public struct HTTPLimits: Sendable, Hashable {
    /// The request line plus all header lines.
    public var maxHeaderBytes = 16 * 1024
    public var maxRequestLineBytes = 8 * 1024
    public var maxHeaderCount = 100
    public var maxBodyBytes = 5 * 1024 * 1024

    public init() {}
}

/// A request the server refuses: answered with `status` (400, 413 or 431) and the connection closed.
public struct HTTPParseError: Error, Hashable, Sendable, CustomStringConvertible {
    public let status: Int
    public let reason: String
    public init(_ status: Int, _ reason: String) {
        self.status = status
        self.reason = reason
    }
    public var description: String { "\(status): \(reason)" }
}

/// What the parser produced from the bytes so far.
public enum HTTPParserOutput: Sendable, Hashable {
    /// The head of a request that sent `Expect: 100-continue` is complete; its body has not started.
    case continueExpected
    /// A complete request.
    case request(HTTPRequest)
}

/// An incremental, strict HTTP/1.1 request parser.
///
/// Refuses with 400: bare CR or LF, obsolete line folding, invalid header names or values, both
/// `Content-Length` and `Transfer-Encoding`, a repeated or non-numeric `Content-Length`, a transfer coding
/// other than `chunked`, malformed chunks, a missing `Host` in HTTP/1.1. With 431: an oversized request
/// line or header block, too many headers. With 413: a body over the limit, decided from `Content-Length`
/// before any of the body is read.
public struct HTTPRequestParser: Sendable {
    public let limits: HTTPLimits

    /// Where the parser is in the current request. The request itself (``current``, ``body``) is kept
    /// outside the state, so appending to the body never copies what was received before: parsing is linear
    /// in the bytes received however the body is split into reads or chunks.
    private enum State: Sendable {
        case head
        case lengthBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers(count: Int, bytes: Int)
    }

    private var state: State = .head
    /// The head of the request whose body is being received.
    private var current: HTTPRequest?
    /// The body received so far.
    private var body: [UInt8] = []
    /// Where the search for the end of the head (or of a chunk-size or trailer line) resumes, from the
    /// buffer's start: each byte is scanned once however the bytes arrive.
    private var scanned = 0
    /// Whether the head scanned so far has a line feed (so the request line is complete).
    private var sawLineFeed = false
    /// Blank lines skipped before a request line, counted against the head limit.
    private var leadingBlankBytes = 0

    public init(limits: HTTPLimits) { self.limits = limits }

    /// True between requests (nothing of the next request has been parsed).
    public var isIdle: Bool {
        if case .head = state { return scanned == 0 && leadingBlankBytes == 0 }
        return false
    }

    /// True while a request's body is being received.
    public var isReadingBody: Bool {
        if case .head = state { return false }
        return true
    }

    /// Bytes of memory the unfinished request's body holds so far (0 between requests): its capacity, not
    /// its count, so that what the budget is charged is what the process holds.
    public var bodyBytesHeld: Int { body.capacity }

    /// Bytes a `Content-Length` body still needs; nil when unknown (chunked, or no body in progress).
    public var bodyBytesStillExpected: Int? {
        if case .lengthBody(let remaining) = state { return remaining }
        return nil
    }

    /// Consumes what it can from `buffer` (from `buffer.start`) and returns the next output, or nil when it
    /// needs more bytes.
    public mutating func next(_ buffer: inout HTTPByteBuffer) throws(HTTPParseError) -> HTTPParserOutput? {
        while true {
            switch state {
            case .head:
                guard let (request, end) = try parseHead(&buffer) else { return nil }
                buffer.consume(upTo: end)
                scanned = 0
                sawLineFeed = false
                leadingBlankBytes = 0
                let expectsContinue = request.headers["Expect"]?.lowercased() == "100-continue"
                let chunked = request.headers["Transfer-Encoding"] != nil
                if chunked {
                    state = .chunkSize
                } else {
                    // `validateFraming` has checked the digits and the limit, so this cannot fail or overflow.
                    let length = Int(request.headers["Content-Length"] ?? "0") ?? 0
                    if length == 0 { return .request(request) }
                    state = .lengthBody(remaining: length)
                }
                current = request
                if expectsContinue && buffer.readable == 0 { return .continueExpected }
            case .lengthBody(let remaining):
                let take = min(remaining, buffer.readable)
                guard take > 0 else { return nil }
                takeBody(from: &buffer, count: take)
                if take == remaining { return finish() }
                state = .lengthBody(remaining: remaining - take)
            case .chunkSize:
                guard let (line, end) = try line(in: buffer, limit: 1024, what: "chunk size line") else { return nil }
                buffer.consume(upTo: end)
                let sizeText = line.prefix { $0 != UInt8(ascii: ";") }
                guard !sizeText.isEmpty, sizeText.allSatisfy(Self.isHexDigit) else {
                    throw HTTPParseError(400, "malformed chunk size")
                }
                let extensionBytes = line.dropFirst(sizeText.count)
                guard extensionBytes.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7f) }) else {
                    throw HTTPParseError(400, "malformed chunk extension")
                }
                // Read digit by digit against what the body may still take, so no size can overflow.
                let room = limits.maxBodyBytes - body.count
                var size = 0
                for digit in sizeText {
                    size = size * 16 + Int(Self.hexValue(digit))
                    if size > room {
                        throw HTTPParseError(413, "the chunked body is larger than \(limits.maxBodyBytes) bytes")
                    }
                }
                state = size == 0 ? .trailers(count: 0, bytes: 0) : .chunkData(remaining: size)
            case .chunkData(let remaining):
                let take = min(remaining, buffer.readable)
                guard take > 0 else { return nil }
                takeBody(from: &buffer, count: take)
                state = take == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - take)
            case .chunkDataEnd:
                guard buffer.readable >= 2 else { return nil }
                guard buffer.bytes[buffer.start] == 0x0d, buffer.bytes[buffer.start + 1] == 0x0a else {
                    throw HTTPParseError(400, "chunk data is not followed by CRLF")
                }
                buffer.consume(count: 2)
                state = .chunkSize
            case .trailers(let count, let bytes):
                let room = limits.maxHeaderBytes - bytes
                guard let (line, end) = try line(in: buffer, limit: room, what: "trailer section") else { return nil }
                buffer.consume(upTo: end)
                if line.isEmpty { return finish() }
                guard count < limits.maxHeaderCount else { throw HTTPParseError(431, "too many trailer fields") }
                _ = try Self.parseField(line)
                state = .trailers(count: count + 1, bytes: bytes + line.count + 2)
            }
        }
    }

    private mutating func takeBody(from buffer: inout HTTPByteBuffer, count: Int) {
        if body.count + count > body.capacity {
            // Grow by doubling (amortised copies) but never past what a Content-Length body still needs, so a
            // finished body holds its own size and not up to twice it.
            var wanted = max(body.capacity * 2, body.count + count, 4096)
            if case .lengthBody(let remaining) = state { wanted = min(wanted, body.count + remaining) }
            body.reserveCapacity(wanted)
        }
        body.append(contentsOf: buffer.bytes[buffer.start..<(buffer.start + count)])
        buffer.consume(count: count)
    }

    /// The complete request; the parser is ready for the next one.
    private mutating func finish() -> HTTPParserOutput {
        var request = current ?? HTTPRequest(method: "", target: "")
        request.body = body
        body = []
        current = nil
        state = .head
        return .request(request)
    }

    /// A CRLF-terminated line at the buffer's start: its bytes (without CRLF) and the index after it. A line
    /// longer than `limit` is refused with 431; the scan resumes where it stopped, so a line that arrives a
    /// byte at a time is scanned once.
    private mutating func line(in buffer: HTTPByteBuffer, limit: Int, what: String) throws(HTTPParseError) -> ([UInt8], Int)? {
        var index = buffer.start + scanned
        while index < buffer.end {
            let byte = buffer.bytes[index]
            if byte == 0x0a { throw HTTPParseError(400, "bare LF in \(what)") }
            if byte == 0x0d {
                guard index + 1 < buffer.end else { break }
                guard buffer.bytes[index + 1] == 0x0a else { throw HTTPParseError(400, "bare CR in \(what)") }
                scanned = 0
                return (Array(buffer.bytes[buffer.start..<index]), index + 2)
            }
            index += 1
            if index - buffer.start > limit { throw HTTPParseError(431, "\(what) is too long") }
        }
        scanned = index - buffer.start
        return nil
    }

    /// Finds and parses a complete head; nil when more bytes are needed. Blank lines before the request
    /// line are consumed (RFC 9112 section 2.2 allows them) and counted against the head limit.
    private mutating func parseHead(_ buffer: inout HTTPByteBuffer) throws(HTTPParseError) -> (HTTPRequest, Int)? {
        if scanned == 0 {
            while buffer.readable >= 2, buffer.bytes[buffer.start] == 0x0d, buffer.bytes[buffer.start + 1] == 0x0a {
                buffer.consume(count: 2)
                leadingBlankBytes += 2
                if leadingBlankBytes > limits.maxHeaderBytes {
                    throw HTTPParseError(431, "the request head is larger than \(limits.maxHeaderBytes) bytes")
                }
            }
            // A lone CR may be the start of one more blank line.
            if buffer.readable == 1, buffer.bytes[buffer.start] == 0x0d { return nil }
        }
        let start = buffer.start
        // Scan for the blank line, refusing bare CR/LF as we go.
        var index = start + scanned
        var headEnd: Int? = nil
        while index < buffer.end {
            // The limits are checked at each byte, before what the byte is: the verdict on a head must not
            // depend on how its bytes were split into reads (a fuzz target checks exactly that).
            if index - start + leadingBlankBytes >= limits.maxHeaderBytes {
                throw HTTPParseError(431, "the request head is larger than \(limits.maxHeaderBytes) bytes")
            }
            if !sawLineFeed && index - start >= limits.maxRequestLineBytes {
                throw HTTPParseError(431, "the request line is longer than \(limits.maxRequestLineBytes) bytes")
            }
            let byte = buffer.bytes[index]
            if byte == 0x0a {
                guard index > start, buffer.bytes[index - 1] == 0x0d else { throw HTTPParseError(400, "bare LF in the request head") }
                sawLineFeed = true
                if index - start >= 3, buffer.bytes[index - 2] == 0x0a, buffer.bytes[index - 3] == 0x0d {
                    headEnd = index + 1
                    break
                }
            } else if byte == 0x0d, index + 1 < buffer.end, buffer.bytes[index + 1] != 0x0a {
                throw HTTPParseError(400, "bare CR in the request head")
            }
            index += 1
        }
        guard let headEnd else {
            // Resume a little before the end, so a CRLFCRLF split across reads is still found; a CR at the
            // very end was not judged yet either.
            scanned = max(0, index - start - 3)
            return nil
        }
        guard headEnd - start + leadingBlankBytes <= limits.maxHeaderBytes else {
            throw HTTPParseError(431, "the request head is larger than \(limits.maxHeaderBytes) bytes")
        }
        // Lines of the head, without CRLF.
        var lines: [ArraySlice<UInt8>] = []
        var lineStart = start
        var cursor = start
        while cursor < headEnd - 2 {
            if buffer.bytes[cursor] == 0x0d {
                lines.append(buffer.bytes[lineStart..<cursor])
                cursor += 2
                lineStart = cursor
            } else {
                cursor += 1
            }
        }
        guard let requestLine = lines.first else { throw HTTPParseError(400, "empty request") }
        guard requestLine.count <= limits.maxRequestLineBytes else {
            throw HTTPParseError(431, "the request line is longer than \(limits.maxRequestLineBytes) bytes")
        }
        var request = try Self.parseRequestLine(requestLine)
        guard lines.count - 1 <= limits.maxHeaderCount else {
            throw HTTPParseError(431, "more than \(limits.maxHeaderCount) header fields")
        }
        for line in lines.dropFirst() {
            if let first = line.first, first == 0x20 || first == 0x09 {
                throw HTTPParseError(400, "obsolete line folding is not accepted")
            }
            let (name, value) = try Self.parseField(line)
            request.headers.append(name: name, value: value)
        }
        try validateFraming(request)
        return (request, headEnd)
    }

    private func validateFraming(_ request: HTTPRequest) throws(HTTPParseError) {
        let lengths = request.headers.values("Content-Length")
        let codings = request.headers.values("Transfer-Encoding")
        if !lengths.isEmpty && !codings.isEmpty {
            throw HTTPParseError(400, "both Content-Length and Transfer-Encoding")
        }
        if lengths.count > 1 { throw HTTPParseError(400, "repeated Content-Length") }
        if let length = lengths.first {
            guard !length.isEmpty, length.utf8.count <= 18, length.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let value = Int(length) else {
                throw HTTPParseError(400, "Content-Length is not a number")
            }
            if value > limits.maxBodyBytes {
                throw HTTPParseError(413, "the body is \(value) bytes; the limit is \(limits.maxBodyBytes)")
            }
        }
        if !codings.isEmpty {
            guard codings.count == 1, codings[0].lowercased() == "chunked" else {
                throw HTTPParseError(400, "unsupported Transfer-Encoding (only chunked)")
            }
            if request.minorVersion == 0 { throw HTTPParseError(400, "Transfer-Encoding in an HTTP/1.0 request") }
        }
        if request.minorVersion == 1 && request.headers.values("Host").count != 1 {
            throw HTTPParseError(400, "an HTTP/1.1 request needs exactly one Host header")
        }
    }

    static func parseRequestLine(_ line: ArraySlice<UInt8>) throws(HTTPParseError) -> HTTPRequest {
        let parts = line.split(separator: 0x20, omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw HTTPParseError(400, "malformed request line") }
        let method = parts[0], target = parts[1], version = parts[2]
        guard !method.isEmpty, method.allSatisfy(isTokenCharacter) else { throw HTTPParseError(400, "invalid method") }
        guard !target.isEmpty, target.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { throw HTTPParseError(400, "invalid request target") }
        let minor: Int
        switch String(decoding: version, as: UTF8.self) {
        case "HTTP/1.1": minor = 1
        case "HTTP/1.0": minor = 0
        default: throw HTTPParseError(400, "unsupported HTTP version")
        }
        return HTTPRequest(method: String(decoding: method, as: UTF8.self), target: String(decoding: target, as: UTF8.self), minorVersion: minor)
    }

    static func parseField(_ line: [UInt8]) throws(HTTPParseError) -> (String, String) {
        try parseField(line[...])
    }

    static func parseField(_ line: ArraySlice<UInt8>) throws(HTTPParseError) -> (String, String) {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw HTTPParseError(400, "header line without a colon") }
        let name = line[line.startIndex..<colon]
        guard !name.isEmpty, name.allSatisfy(isTokenCharacter) else { throw HTTPParseError(400, "invalid header name") }
        var value = line[(colon + 1)...]
        while let first = value.first, first == 0x20 || first == 0x09 { value = value.dropFirst() }
        while let last = value.last, last == 0x20 || last == 0x09 { value = value.dropLast() }
        guard value.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7f) }) else {
            throw HTTPParseError(400, "invalid character in a header value")
        }
        return (String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self))
    }

    static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"): true
        default: false
        }
    }

    static func isHexDigit(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= UInt8(ascii: "a") && byte | 0x20 <= UInt8(ascii: "f"))
    }

    static func hexValue(_ byte: UInt8) -> UInt8 {
        byte <= 0x39 ? byte - 0x30 : (byte | 0x20) - UInt8(ascii: "a") + 10
    }
}

/// Bytes received on a connection and not yet parsed.
public struct HTTPByteBuffer: Sendable {
    public private(set) var bytes: [UInt8] = []
    public private(set) var start = 0
    public var end: Int { bytes.count }
    public var readable: Int { bytes.count - start }

    public init() {}
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public mutating func append(_ data: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: data)
    }

    public mutating func append(_ data: [UInt8]) { bytes.append(contentsOf: data) }

    mutating func consume(count: Int) { start += count; compactIfWorthIt() }
    mutating func consume(upTo index: Int) { start = index; compactIfWorthIt() }

    private mutating func compactIfWorthIt() {
        if start == bytes.count {
            // An idle connection keeps no large buffer: thousands of them must cost little memory.
            bytes.removeAll(keepingCapacity: bytes.capacity <= 16 * 1024)
            start = 0
        } else if start > 64 * 1024 && start * 2 > bytes.count {
            bytes.removeSubrange(0..<start)
            start = 0
        }
    }
}
