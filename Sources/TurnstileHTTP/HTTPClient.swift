#if canImport(Glibc)
import Glibc
#endif
internal import CTurnstileLinux
import Foundation

/// A small blocking HTTP/1.1 client for `turnstile send`: one keep-alive connection, reopened when the
/// server closes it. Reads answers framed by Content-Length, chunked, or the end of the connection.
public final class HTTPClient {
    public let host: String
    public let port: Int
    private var fd: Int32 = -1
    private var buffer = HTTPByteBuffer()

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    deinit { disconnect() }

    /// Sends `request` (Host and Content-Length are set here) and returns the answer.
    public func send(_ request: HTTPRequest) throws(HTTPServerError) -> HTTPResponse {
        for attempt in 0..<2 {
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
            if attempt == 1 { break }
        }
        throw HTTPServerError(message: "\(host):\(port) closed the connection without answering")
    }

    private func connect() throws(HTTPServerError) {
        fd = CTurnstileLinux_connect(host, Int32(port))
        guard fd >= 0 else { throw HTTPServerError(message: "cannot connect to \(host):\(port): \(String(cString: strerror(errno)))") }
        buffer = HTTPByteBuffer()
    }

    private func disconnect() {
        if fd >= 0 { close(fd) }
        fd = -1
    }

    private func writeAll(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if written < 0 && errno == EINTR { continue }
            if written <= 0 { return false }
            offset += written
        }
        return true
    }

    /// Reads more bytes; false at the end of the connection.
    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
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
                if let lengthText = headers["Content-Length"], let length = Int(lengthText) {
                    while buffer.bytes.count - bodyStart < length { guard fill() else { return nil } }
                    let body = Array(buffer.bytes[bodyStart..<(bodyStart + length)])
                    buffer = HTTPByteBuffer(Array(buffer.bytes[(bodyStart + length)...]))
                    if closes { disconnect() }
                    return HTTPResponse(status: status, headers: headers, body: body, closeConnection: closes)
                }
                // No length: the body runs to the end of the connection.
                while fill() {}
                let body = Array(buffer.bytes[bodyStart...])
                disconnect()
                return HTTPResponse(status: status, headers: headers, body: body, closeConnection: true)
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
