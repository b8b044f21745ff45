import Testing
import TurnstileServer
@testable import TurnstileCLI
import TurnstileCore

@Suite struct ArgumentTests {
    @Test func parsesOptionsFlagsAndPositionals() throws {
        let parsed = try ParsedArguments.parse(["--config", "c.json", "--check", "--now=2026-01-15T19:04:06Z", "a", "b"], for: VerifyCommand.spec)
        #expect(parsed.value("config") == "c.json")
        #expect(parsed.flag("check"))
        #expect(parsed.value("now") == "2026-01-15T19:04:06Z")
        #expect(parsed.positionals == ["a", "b"])
        let command = try VerifyCommand(parsed)
        #expect(command.now?.unixSeconds == 1_768_503_846)
    }

    @Test func doubleDashEndsOptions() throws {
        let parsed = try ParsedArguments.parse(["--config", "c", "--", "--weird-file-name"], for: VerifyCommand.spec)
        #expect(parsed.positionals == ["--weird-file-name"])
    }

    @Test(arguments: [
        (["a"], "--config FILE is required"),
        (["--config", "c"], "PATH... is required"),
        (["--config"], "--config needs a value"),
        (["--config", "c", "--config", "d", "p"], "more than once"),
        (["--config", "c", "--bogus", "p"], "unknown option --bogus"),
        (["--config", "c", "--check=yes", "p"], "--check takes no value"),
        (["-x"], "unknown option -x"),
    ])
    func usageErrorsSayWhatIsWrong(arguments: [String], message: String) {
        do {
            _ = try ParsedArguments.parse(arguments, for: VerifyCommand.spec)
            Issue.record("expected a usage error")
        } catch {
            #expect(error.message.contains(message), "\(error.message)")
        }
    }

    @Test func pruneRefusesAFutureNow() throws {
        // Pruning as of tomorrow would delete nonces that still guard against replays.
        let tomorrow = SystemWallClock().now().adding(seconds: 86_400).iso8601
        let future = try ParsedArguments.parse(["--config", "c", "--now", tomorrow], for: PruneCommand.spec)
        #expect(throws: UsageError.self) { try PruneCommand(future) }
        let past = try ParsedArguments.parse(["--config", "c", "--now", "2026-01-15T19:04:06Z"], for: PruneCommand.spec)
        #expect(try PruneCommand(past).now?.iso8601 == "2026-01-15T19:04:06Z")
    }

    @Test func badNowIsAUsageError() throws {
        let parsed = try ParsedArguments.parse(["--config", "c", "--now", "yesterday", "p"], for: VerifyCommand.spec)
        #expect(throws: UsageError.self) { try VerifyCommand(parsed) }
    }

    @Test func signValidatesExpect() throws {
        let base = ["--config", "c", "--provider", "p", "--body-file", "b"]
        #expect(try SignCommand(try ParsedArguments.parse(base + ["--expect", "rejected/stale_timestamp"], for: SignCommand.spec)).expect?.reason == .staleTimestamp)
        #expect(throws: UsageError.self) { try SignCommand(try ParsedArguments.parse(base + ["--expect", "rejected/nope"], for: SignCommand.spec)) }
        #expect(throws: UsageError.self) { try SignCommand(try ParsedArguments.parse(base + ["--expect", "maybe"], for: SignCommand.spec)) }
    }

    @Test func benchNeedsATarget() throws {
        #expect(throws: UsageError.self) { try BenchCommand(try ParsedArguments.parse(["--runs", "1"], for: BenchCommand.spec)) }
        #expect(throws: UsageError.self) { try BenchCommand(try ParsedArguments.parse(["verify", "--runs", "0"], for: BenchCommand.spec)) }
        #expect(try BenchCommand(try ParsedArguments.parse(["verify", "--runs", "2"], for: BenchCommand.spec)).runs == 2)
        #expect(throws: UsageError.self) { try BenchCommand(try ParsedArguments.parse(["http-reference"], for: BenchCommand.spec)) }
        #expect(try BenchCommand(try ParsedArguments.parse(["http-reference", "--listen", "127.0.0.1:0"], for: BenchCommand.spec)).listen == "127.0.0.1:0")
    }

    @Test func helpIsGeneratedFromTheSpec() async {
        let console = CapturingConsole()
        #expect(await TurnstileMain.main(arguments: ["verify", "--help"], console: console) == 0)
        let help = console.standardOutput.joined(separator: "\n")
        #expect(help.contains("USAGE: turnstile verify"))
        #expect(help.contains("--config FILE"))
        #expect(help.contains("--check"))
    }

    @Test func unknownCommandExitsTwo() async {
        let console = CapturingConsole()
        #expect(await TurnstileMain.main(arguments: ["frobnicate"], console: console) == 2)
        #expect(console.standardError.first?.contains("unknown command") == true)
    }

    @Test func deliveryLatencyIsLoggedAsMillisecondsWithTwoDecimals() {
        #expect(LogFormat.milliseconds(0.0123456) == "12.35")
        #expect(LogFormat.milliseconds(0.0001) == "0.10")
        #expect(LogFormat.milliseconds(0.00000001) == "0.00")
        #expect(LogFormat.milliseconds(1.5) == "1500.00")
    }
}
