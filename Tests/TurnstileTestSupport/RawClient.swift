#if canImport(Glibc)
import Glibc
#endif
import Foundation

// Helpers shared by the test targets that speak HTTP to a real server on 127.0.0.1.

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One parsed HTTP response.
public struct RawResponse {
    public let status: Int
    public let headers: [(String, String)]
    public let body: String

    public init(status: Int, headers: [(String, String)], body: String) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
}

/// A plain TCP client for exact bytes on the wire.
public final class RawClient {
    public let fd: Int32
    private var received: [UInt8] = []

    public init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw TestFailure("connect failed: \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    public func send(_ text: String) { send(Array(text.utf8)) }

    public func send(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written <= 0 { return }
            offset += written
        }
    }

    /// Reads until `count` responses are complete, the peer closes, or `timeout` passes.
    public func responses(_ count: Int, timeout: Double = 10) -> [RawResponse] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let parsed = Self.parse(received)
            if parsed.responses.count >= count { return parsed.responses }
            if !readSome(until: deadline) { return Self.parse(received).responses }
        }
        return Self.parse(received).responses
    }

    /// Reads until at least `count` bytes have arrived in all, the peer closes, or `timeout` passes; returns every
    /// byte received so far, unparsed (for answers a parser of its own would misread, such as HEAD's).
    public func bytes(atLeast count: Int, timeout: Double = 10) -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        while received.count < count && Date() < deadline {
            if !readSome(until: deadline) { break }
        }
        return received
    }

    /// Reads and throws away what arrives for `seconds`; returns how many bytes that was.
    public func drain(seconds: Double) -> Int {
        let deadline = Date().addingTimeInterval(seconds)
        var total = 0
        while Date() < deadline {
            if !readSome(until: deadline) { break }
            total += received.count
            received.removeAll(keepingCapacity: true)
        }
        return total
    }

    /// True when the server closed the connection within `timeout`.
    public func closedByPeer(timeout: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if !readSome(until: deadline) { return true }
        }
        return false
    }

    /// Reads what is available; false when the peer closed.
    private func readSome(until deadline: Date) -> Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let wait = Int32(max(1, deadline.timeIntervalSinceNow * 1000))
        guard poll(&poller, 1, min(wait, 200)) > 0 else { return true }
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count <= 0 { return false }
        received += chunk[0..<count]
        return true
    }

    public static func parse(_ bytes: [UInt8]) -> (responses: [RawResponse], rest: Int) {
        var responses: [RawResponse] = []
        var index = 0
        while true {
            guard let headEnd = find([13, 10, 13, 10], in: bytes, from: index) else { break }
            let head = String(decoding: bytes[index..<headEnd], as: UTF8.self).components(separatedBy: "\r\n")
            let status = Int(head[0].split(separator: " ")[1]) ?? 0
            let headers = head.dropFirst().compactMap { line -> (String, String)? in
                guard let colon = line.firstIndex(of: ":") else { return nil }
                return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            }
            let length = Int(headers.first { $0.0.lowercased() == "content-length" }?.1 ?? "0") ?? 0
            let bodyStart = headEnd + 4
            if status == 100 { index = bodyStart; continue }
            guard bytes.count >= bodyStart + length else { break }
            responses.append(RawResponse(status: status, headers: headers, body: String(decoding: bytes[bodyStart..<(bodyStart + length)], as: UTF8.self)))
            index = bodyStart + length
        }
        return (responses, index)
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        var index = start
        while index + needle.count <= haystack.count {
            if haystack[index..<(index + needle.count)].elementsEqual(needle) { return index }
            index += 1
        }
        return nil
    }
}

