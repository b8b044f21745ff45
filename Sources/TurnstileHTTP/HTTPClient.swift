#if canImport(Glibc)
import Glibc
#endif
internal import CTurnstileLinux
import Foundation

/// A small blocking HTTP/1.1 client (for `turnstile send` and the `http` handler): one keep-alive
/// connection, reopened when the server closes it. Reads answers framed by Content-Length or by the end of
/// the connection; a chunked answer's body is not read (its connection is closed instead). Bodies longer
/// than `maxResponseBytes` fail.
public final class HTTPClient {
    public let host: String
    public let port: Int
    /// Bounds connect, each send and each receive (nil: no bound).
    public let timeoutSeconds: Double?
    public let maxResponseBytes: Int
    private var fd: Int32 = -1
    private var buffer = HTTPByteBuffer()
    /// The end of the request in flight, on the monotonic clock, in nanoseconds (0: none).
    private var deadline: UInt64 = 0
    private var timedOut = false

    public init(host: String, port: Int, timeoutSeconds: Double? = nil, maxResponseBytes: Int = 64 << 20) {
        self.host = host
        self.port = port
        self.timeoutSeconds = timeoutSeconds
        self.maxResponseBytes = maxResponseBytes
    }

    deinit { disconnect() }

    /// Sends `request` (Host and Content-Length are set here) and returns the answer.
    public func send(_ request: HTTPRequest) throws(HTTPServerError) -> HTTPResponse {
        timedOut = false
        deadline = timeoutSeconds.map { DispatchTime.now().uptimeNanoseconds + UInt64(min(max($0, 0.001), 86_400) * 1e9) } ?? 0
        for attempt in 0..<2 {
            // A reused connection the server may have closed gets one retry on a new one; a fresh one none.
            let reused = fd >= 0
            if fd < 0 { try connect() }
            var head = "\(request.method) \(request.target) HTTP/1.1\r\nHost: \(host):\(port)\r\n"
            for field in request.headers where !["host", "content-length", "transfer-encoding", "connection"].contains(field.name.lowercased()) {
                head += "\(field.name): \(field.value)\r\n"
            }
            head += "Content-Length: \(request.body.count)\r\n\r\n"
            if writeAll(Array(head.utf8) + request.body), let response = try readResponse() {
                return response
            }
            disconnect()
            if timedOut {
                throw HTTPServerError(message: "\(host):\(port) did not answer within \(timeoutSeconds ?? 0) s")
            }
            if attempt == 1 || !reused { break }
        }
        throw HTTPServerError(message: "\(host):\(port) closed the connection without answering")
    }

    private func connect() throws(HTTPServerError) {
        // Within what is left of the request's time, not a whole timeout of its own.
        var milliseconds = 0
        if deadline > 0 {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < deadline else {
                timedOut = true
                throw HTTPServerError(message: "\(host):\(port) did not answer within \(timeoutSeconds ?? 0) s")
            }
            milliseconds = max(1, Int((deadline - now) / 1_000_000))
        }
        fd = CTurnstileLinux_connect_timeout(host, Int32(port), milliseconds)
        guard fd >= 0 else { throw HTTPServerError(message: "cannot connect to \(host):\(port): \(String(cString: strerror(errno)))") }
        buffer = HTTPByteBuffer()
    }

    private func disconnect() {
        if fd >= 0 { close(fd) }
        fd = -1
    }

    /// Sends all of `bytes` within the request's deadline: a receiver that stops reading the request holds the
    /// call no longer than the timeout (sends never block; the socket is polled for room until the deadline).
    private func writeAll(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let flags = Int32(MSG_NOSIGNAL) | (deadline > 0 ? Int32(MSG_DONTWAIT) : 0)
            let written = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, flags) }
            if written < 0 && errno == EINTR { continue }
            if written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && deadline > 0 {
                let now = DispatchTime.now().uptimeNanoseconds
                guard now < deadline else { timedOut = true; return false }
                var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let ready = poll(&descriptor, 1, Int32(min((deadline - now) / 1_000_000 + 1, 86_400_000)))
                if ready == 0 { timedOut = true; return false }
                continue
            }
            if written <= 0 { return false }
            offset += written
        }
        return true
    }

    /// Reads more bytes; false at the end of the connection.
    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            if deadline > 0 {
                // The whole answer within the request's time, however slowly it trickles in.
                let now = DispatchTime.now().uptimeNanoseconds
                guard now < deadline else { timedOut = true; return false }
                var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&descriptor, 1, Int32(min((deadline - now) / 1_000_000 + 1, 86_400_000)))
                if ready < 0 && errno == EINTR { continue }
                if ready == 0 { timedOut = true; return false }
            }
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { timedOut = true }
            if count <= 0 { return false }
            chunk.withUnsafeBytes { buffer.append(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            return true
        }
    }

    private func readResponse() throws(HTTPServerError) -> HTTPResponse? {
        while true {
            // Find the end of the head.
            let bytes = buffer.bytes[buffer.start...]
            if let end = Self.headEnd(bytes) {
                let head = String(decoding: bytes[bytes.startIndex..<end], as: UTF8.self).components(separatedBy: "\r\n")
                let statusParts = head[0].split(separator: " ")
                guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
                    throw HTTPServerError(message: "malformed status line from \(host):\(port)")
                }
                var headers = HTTPHeaders()
                for line in head.dropFirst() {
                    guard let colon = line.firstIndex(of: ":") else { continue }
                    headers.append(name: String(line[..<colon]), value: line[line.index(after: colon)...].trimmingSpaces())
                }
                let bodyStart = end + 4
                if status == 100 {
                    buffer = HTTPByteBuffer(Array(buffer.bytes[bodyStart...]))
                    continue
                }
                let closes = headers["Connection"]?.lowercased() == "close"
                if headers["Transfer-Encoding"] != nil {
                    disconnect()
                    return HTTPResponse(status: status, headers: headers, body: [], closeConnection: true)
                }
                if let lengthText = headers["Content-Length"], lengthText.count <= 12, let length = Int(lengthText), length >= 0 {
                    guard length <= maxResponseBytes else {
                        disconnect()
                        throw HTTPServerError(message: "\(host):\(port) answered with \(length) bytes, over the limit of \(maxResponseBytes)")
                    }
                    while buffer.bytes.count - bodyStart < length { guard fill() else { return nil } }
                    let body = Array(buffer.bytes[bodyStart..<(bodyStart + length)])
                    buffer = HTTPByteBuffer(Array(buffer.bytes[(bodyStart + length)...]))
                    if closes { disconnect() }
                    return HTTPResponse(status: status, headers: headers, body: body, closeConnection: closes)
                }
                // No length: the body runs to the end of the connection.
                while buffer.bytes.count - bodyStart <= maxResponseBytes, fill() {}
                let body = Array(buffer.bytes[bodyStart...])
                disconnect()
                return HTTPResponse(status: status, headers: headers, body: body, closeConnection: true)
            }
            guard buffer.bytes.count - buffer.start < 1 << 20 else {
                throw HTTPServerError(message: "\(host):\(port) sent a response head over 1 MiB")
            }
            guard fill() else { return nil }
        }
    }

    private static func headEnd(_ bytes: ArraySlice<UInt8>) -> Int? {
        var index = bytes.startIndex
        while index + 3 < bytes.endIndex {
            if bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 { return index }
            index += 1
        }
        return nil
    }
}
