#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TurnstileCore

/// A running `turnstile serve` on 127.0.0.1 with a port the kernel chose.
final class RunningServer: @unchecked Sendable {
    let process = Process()
    let config: TemporaryConfig
    let logPath: String
    private(set) var port: Int = 0

    init(config: TemporaryConfig) throws {
        self.config = config
        logPath = config.folder + "/serve.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: turnstileBinary)
        process.arguments = ["serve", "--config", config.path]
        process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: logPath)
        try process.run()
        for _ in 0..<500 {
            if let line = try log().first(where: { $0.contains(#""msg":"listening""#) }),
               let address = try JSONParser.parse(line)["address"]?.stringValue, let port = Int(address.split(separator: ":").last ?? "") {
                self.port = port
                return
            }
            usleep(20_000)
        }
        process.terminate()
        throw TestFailure("serve did not start: \(try log().joined(separator: "\n"))")
    }

    func log() throws -> [String] {
        try String(contentsOfFile: logPath, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    /// Sends SIGTERM and waits for the exit status.
    func stop() -> Int32 {
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One parsed HTTP response.
struct RawResponse {
    let status: Int
    let headers: [(String, String)]
    let body: String

    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
}

/// A plain TCP client for exact bytes on the wire.
final class RawClient {
    let fd: Int32
    private var received: [UInt8] = []

    init(port: Int) throws {
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

    func send(_ text: String) { send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written <= 0 { return }
            offset += written
        }
    }

    /// Reads until `count` responses are complete, the peer closes, or `timeout` passes.
    func responses(_ count: Int, timeout: Double = 10) -> [RawResponse] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let parsed = Self.parse(received)
            if parsed.responses.count >= count { return parsed.responses }
            if !readSome(until: deadline) { return Self.parse(received).responses }
        }
        return Self.parse(received).responses
    }

    /// True when the server closed the connection within `timeout`.
    func closedByPeer(timeout: Double = 10) -> Bool {
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

    static func parse(_ bytes: [UInt8]) -> (responses: [RawResponse], rest: Int) {
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

/// A signed delivery from the fixtures, as an HTTP request.
func httpRequest(for delivery: JSONValue, keepAlive: Bool = true) -> String {
    let provider = delivery["provider"]?.stringValue ?? ""
    let body = delivery["body"]?.stringValue ?? ""
    var text = "POST /webhooks/\(provider) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    for (name, value) in delivery["headers"]?.objectValue ?? JSONObject() {
        text += "\(name): \(value.stringValue ?? "")\r\n"
    }
    text += "Content-Length: \(body.utf8.count)\r\n"
    if !keepAlive { text += "Connection: close\r\n" }
    return text + "\r\n" + body
}

/// A freshly signed GitHub delivery with a distinct body.
func signedGitHub(_ index: Int, folder: String) throws -> JSONValue {
    let bodyPath = folder + "/body-\(index)"
    try #"{"ref":"refs/heads/main","n":\#(index)}"#.write(toFile: bodyPath, atomically: true, encoding: .utf8)
    let signed = try run(["sign", "--config", "fixtures/turnstile.json", "--provider", "github", "--body-file", bodyPath,
                          "--id", "delivery-\(index)", "--event", "push"])
    return try JSONParser.parse(signed.stdout)
}
