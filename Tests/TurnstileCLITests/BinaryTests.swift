import Foundation
import Testing
import TurnstileCore

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// The `turnstile` executable that `swift build` put beside the test bundle.
var turnstileBinary: String {
    let folder = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [folder, folder.deletingLastPathComponent()] {
        let path = candidate.appendingPathComponent("turnstile").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return repositoryRoot + "/.build/debug/turnstile"
}

struct RunResult {
    let status: Int32
    let stdout: String
    let stderr: String
    var lines: [String] { stdout.split(separator: "\n").map(String.init) }
}

/// Runs the real binary (or `program`) with `arguments`, in the repository root, with `environment` added.
func run(_ arguments: [String], environment: [String: String] = [:], directory: String = repositoryRoot,
         program: String = turnstileBinary) throws -> RunResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: program)
    process.arguments = arguments
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return RunResult(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                     stderr: String(decoding: errData, as: UTF8.self))
}

func temporaryFolder() throws -> String {
    let path = NSTemporaryDirectory() + "turnstile-cli-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite(.serialized) struct BinaryTests {
    /// The schemas are compiled in: a binary copied out of the checkout, run from another folder with no
    /// environment variable, checks the fixtures.
    @Test func aBinaryCopiedOutOfTheCheckoutRunsFromAnyFolder() throws {
        let folder = try temporaryFolder()
        let copy = folder + "/turnstile"
        try FileManager.default.copyItem(atPath: turnstileBinary, toPath: copy)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: copy)
        process.arguments = ["replay", "--config", repositoryRoot + "/fixtures/turnstile.json", "--check", repositoryRoot + "/fixtures/"]
        process.currentDirectoryURL = URL(fileURLWithPath: folder)
        // Nothing of ours in the environment; a sanitizer's own options (in CI's sanitizer runs) pass through.
        var environment = ["PATH": "/usr/bin:/bin"]
        for (name, value) in ProcessInfo.processInfo.environment where name.hasSuffix("SAN_OPTIONS") { environment[name] = value }
        process.environment = environment
        let err = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = err
        try process.run()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(stderr)")
        #expect(stderr.contains("0 differ from expect"))
    }

    @Test func verifyCheckPassesOnTheShippedFixtures() throws {
        let result = try run(["verify", "--config", "fixtures/turnstile.json", "--check", "fixtures/"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.lines
        #expect(lines.count >= 70)
        for line in lines {
            let value = try JSONParser.parse(line)
            #expect(value.objectValue?.keys == ["source", "provider", "outcome", "reason", "event_type", "event_key"])
        }
        #expect(result.stderr.contains("fixtures/turnstile.json: skipped"))
        #expect(result.stderr.contains("0 differ from expect"))
    }

    @Test func outputIsInInputOrder() throws {
        let result = try run(["verify", "--config", "fixtures/turnstile.json", "fixtures/deliveries/sync.ndjson", "fixtures/deliveries/autify.ndjson"])
        let sources = try result.lines.map { try JSONParser.parse($0)["source"]?.stringValue ?? "" }
        #expect(sources.first == "fixtures/deliveries/sync.ndjson:1")
        #expect(sources.last?.hasPrefix("fixtures/deliveries/autify.ndjson:") == true)
        let syncLines = sources.prefix { $0.contains("sync") }.map { Int($0.split(separator: ":").last!)! }
        #expect(syncLines == Array(1...syncLines.count))
    }

    @Test func checkExitsOneWhenAnExpectationDiffers() throws {
        let folder = try temporaryFolder()
        let original = try String(contentsOfFile: repositoryRoot + "/fixtures/deliveries/github.ndjson", encoding: .utf8)
        let wrong = original.split(separator: "\n")[0].replacingOccurrences(of: #""expect":{"outcome":"accepted"}"#,
                                                                          with: #""expect":{"outcome":"rejected","reason":"invalid_signature"}"#)
        try wrong.write(toFile: folder + "/one.ndjson", atomically: true, encoding: .utf8)
        let result = try run(["verify", "--config", "fixtures/turnstile.json", "--check", folder + "/one.ndjson"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("check failed: expected rejected/invalid_signature, got accepted"))
        let withoutCheck = try run(["verify", "--config", "fixtures/turnstile.json", folder + "/one.ndjson"])
        #expect(withoutCheck.status == 0)
    }

    @Test func nowOverridesReceivedAt() throws {
        let result = try run(["verify", "--config", "fixtures/turnstile.json", "--now", "2030-01-01T00:00:00Z", "fixtures/deliveries/sync.ndjson"])
        let first = try JSONParser.parse(result.lines[0])
        #expect(first["reason"]?.stringValue == "stale_timestamp")
    }

    @Test func badInputExitsTwoNamingFileLineAndField() throws {
        let folder = try temporaryFolder()
        try "{\"provider\":\"sync\",\"headers\":{},\"body\":\"{}\"}\n{\"provider\":\"sync\",\"headers\":{},\"body\":\"{}\",\"recieved_at\":\"x\"}\n"
            .write(toFile: folder + "/bad.ndjson", atomically: true, encoding: .utf8)
        let result = try run(["verify", "--config", "fixtures/turnstile.json", folder + "/bad.ndjson"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("bad.ndjson:2: recieved_at: unknown key"))
        #expect(result.lines.count == 1)
    }

    @Test func configErrorsExitTwoWithoutShowingSecrets() throws {
        let folder = try temporaryFolder()
        try #"{"providers":{"svix":{"scheme":"standard-webhooks","secrets":["env:SHORT_SECRET"]}}}"#
            .write(toFile: folder + "/c.json", atomically: true, encoding: .utf8)
        let result = try run(["verify", "--config", folder + "/c.json", "fixtures/"], environment: ["SHORT_SECRET": "whsec_c2VjcmV0"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("providers.svix.secrets[0]"))
        #expect(result.stderr.contains("env:SHORT_SECRET"))
        #expect(!result.stderr.contains("whsec_c2VjcmV0") && !result.stdout.contains("whsec_c2VjcmV0"))

        let missing = try run(["verify", "--config", folder + "/nope.json", "fixtures/"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("nope.json: no such file"))
    }

    @Test func secretsNeverAppearInOutput() throws {
        let secrets = try String(contentsOfFile: repositoryRoot + "/fixtures/secrets.env", encoding: .utf8)
            .split(separator: "\n").filter { !$0.hasPrefix("#") && $0.contains("=") }
            .map { String($0.split(separator: "=", maxSplits: 1)[1]) }
        let result = try run(["verify", "--config", "fixtures/turnstile.json", "fixtures/"])
        for secret in secrets {
            #expect(!result.stdout.contains(secret) && !result.stderr.contains(secret), "secret leaked")
        }
    }

    @Test func signedDeliveriesVerify() throws {
        let folder = try temporaryFolder()
        for (provider, payload) in [("sync", "sync/generation-failed"), ("svix", "svix/invoice-paid"), ("stripe", "stripe/invoice-paid"),
                                    ("github", "github/push"), ("acme", "acme/order-shipped"), ("synthflow", "synthflow/post-call"),
                                    ("autify", "autify/test-case-result")] {
            let signed = try run(["sign", "--config", "fixtures/turnstile.json", "--provider", provider,
                                  "--body-file", "fixtures/payloads/\(payload).body", "--at", "2026-01-15T09:03:00Z"])
            #expect(signed.status == 0, "\(signed.stderr)")
            try signed.stdout.write(toFile: folder + "/\(provider).json", atomically: true, encoding: .utf8)
            let verified = try run(["verify", "--config", "fixtures/turnstile.json", folder + "/\(provider).json"])
            #expect(try JSONParser.parse(verified.lines[0])["outcome"]?.stringValue == "accepted", "\(provider): \(verified.stderr)")
        }
        let unknown = try run(["sign", "--config", "fixtures/turnstile.json", "--provider", "nope", "--body-file", "fixtures/payloads/github/push.body"])
        #expect(unknown.status == 2)
    }
}
