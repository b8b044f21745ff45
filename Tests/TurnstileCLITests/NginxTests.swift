#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TurnstileCore

/// nginx in front of `turnstile serve`, over TLS with a self-signed certificate, as the README describes.
/// Needs nginx, openssl and curl (`.ci/run` installs them).
@Suite(.serialized) struct NginxTests {
    static func tool(_ name: String) -> String? {
        for folder in ["/usr/sbin", "/usr/bin", "/usr/local/bin"] where FileManager.default.isExecutableFile(atPath: "\(folder)/\(name)") {
            return "\(folder)/\(name)"
        }
        return nil
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func execute(_ path: String, _ arguments: [String]) throws -> (Int32, String, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let error = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
    }

    @Test(.enabled(if: tool("nginx") != nil && tool("openssl") != nil && tool("curl") != nil))
    func aSynthflowWebhookThroughNginxOverTLS() throws {
        let config = try TemporaryConfig(extra: #","listen":"127.0.0.1:0""#)
        let server = try RunningServer(config: config)
        defer { _ = server.stop() }
        let prefix = config.folder + "/nginx"
        for folder in ["", "/client_body", "/proxy", "/fastcgi", "/uwsgi", "/scgi"] {
            try FileManager.default.createDirectory(atPath: prefix + folder, withIntermediateDirectories: true)
        }
        let (keyStatus, _, keyError) = try Self.execute(Self.tool("openssl")!, [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", prefix + "/key.pem", "-out", prefix + "/cert.pem",
        ])
        #expect(keyStatus == 0, "\(keyError)")
        let tlsPort = try Self.freePort()
        let template = try String(contentsOfFile: repositoryRoot + "/docs/nginx/turnstile.conf", encoding: .utf8)
        let conf = template.replacingOccurrences(of: "@PREFIX@", with: prefix)
            .replacingOccurrences(of: "@TURNSTILE_PORT@", with: String(server.port))
            .replacingOccurrences(of: "@TLS_PORT@", with: String(tlsPort))
            .replacingOccurrences(of: "@CERT@", with: prefix + "/cert.pem")
            .replacingOccurrences(of: "@KEY@", with: prefix + "/key.pem")
        try conf.write(toFile: prefix + "/nginx.conf", atomically: true, encoding: .utf8)
        let nginx = Process()
        nginx.executableURL = URL(fileURLWithPath: Self.tool("nginx")!)
        nginx.arguments = ["-p", prefix, "-c", prefix + "/nginx.conf", "-g", "daemon off; user root;"]
        nginx.standardError = FileHandle.nullDevice
        try nginx.run()
        defer {
            kill(nginx.processIdentifier, SIGQUIT)
            nginx.waitUntilExit()
        }

        // The literal underscore header name Synthflow's docs print, signed with the published vector.
        let body = try String(contentsOfFile: repositoryRoot + "/fixtures/payloads/synthflow/post-call.body", encoding: .utf8)
        try body.write(toFile: prefix + "/body.json", atomically: true, encoding: .utf8)
        var answer = ""
        for _ in 0..<100 {
            let (status, output, _) = try Self.execute(Self.tool("curl")!, [
                "-sS", "--cacert", prefix + "/cert.pem", "-H", "Content-Type: application/json",
                "-H", "HTTP_SYNTHFLOW_SIGNATURE: sErW5j8e+ISH7oKt2s3AmzN9xZBIyER+VahXJlxGPUw=",
                "--data-binary", "@" + prefix + "/body.json", "-w", " %{http_code}", "https://127.0.0.1:\(tlsPort)/webhooks/synthflow",
            ])
            if status == 0 && !output.isEmpty { answer = output; break }
            usleep(50_000)
        }
        #expect(answer == #"{"outcome":"accepted","event_key":"post_call:c0ffee00-1234-4abc-8def-0123456789ab"} 200"#)
        // End to end: the event reaches the jsonl handler.
        var delivered = false
        for _ in 0..<200 where !delivered {
            delivered = try config.eventLines().contains { $0["event_key"]?.stringValue == "post_call:c0ffee00-1234-4abc-8def-0123456789ab" }
            if !delivered { usleep(25_000) }
        }
        #expect(delivered)
    }
}
