#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TurnstileCore
import TurnstileTestSupport

/// A running `turnstile serve` on 127.0.0.1 with a port the kernel chose.
final class RunningServer: @unchecked Sendable {
    let process = Process()
    let config: TemporaryConfig
    let logPath: String
    let port: Int

    /// - Parameter limitDescriptors: run under `prlimit --nofile=N` (the descriptor limit).
    init(config: TemporaryConfig, limitDescriptors: Int? = nil, logName: String = "serve.log") throws {
        self.config = config
        logPath = config.folder + "/" + logName
        var prefix: [String] = []
        if let limitDescriptors { prefix = ["/usr/bin/prlimit", "--nofile=\(limitDescriptors):\(limitDescriptors)"] }
        port = try launchTurnstile(process, ["serve", "--config", config.path], logPath: logPath, through: prefix) { line in
            guard line.contains(#""msg":"listening""#), let address = try? JSONParser.parse(line)["address"]?.stringValue else { return nil }
            return Int(address.split(separator: ":").last ?? "")
        }
    }

    var pid: Int32 { process.processIdentifier }

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

/// Runs the `turnstile` binary in `process` from the repository root, its stderr going to `logPath`, and waits
/// until `port` finds the port it listens on in a line of that log.
func launchTurnstile(_ process: Process, _ arguments: [String], logPath: String, through prefix: [String] = [],
                     port: (String) -> Int?) throws -> Int {
    _ = FileManager.default.createFile(atPath: logPath, contents: nil)
    // A prefix (such as prlimit) execs the binary, so the process keeps its pid.
    process.executableURL = URL(fileURLWithPath: prefix.first ?? turnstileBinary)
    process.arguments = prefix.isEmpty ? arguments : Array(prefix.dropFirst()) + [turnstileBinary] + arguments
    process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle(forWritingAtPath: logPath)
    try process.run()
    for _ in 0..<500 {
        for line in try String(contentsOfFile: logPath, encoding: .utf8).split(separator: "\n") {
            if let found = port(String(line)) { return found }
        }
        usleep(20_000)
    }
    process.terminate()
    throw TestFailure("turnstile \(arguments.first ?? "") did not start: \(try String(contentsOfFile: logPath, encoding: .utf8))")
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
