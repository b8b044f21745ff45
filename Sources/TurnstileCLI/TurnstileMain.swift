#if canImport(Glibc)
import Glibc
#endif
public import Turnstile

/// One `turnstile` subcommand: a static spec (name, options, help), validation in `init`, work in `run`.
protocol TurnstileCommand {
    static var spec: CommandSpec { get }
    /// Checks the parsed arguments; throws ``UsageError`` for anything wrong.
    init(_ arguments: ParsedArguments) throws(UsageError)
    /// Runs the command and returns its exit status.
    func run(console: any Console, setup: HandlerSetup) async throws -> Int32
}

/// What a binary built on Turnstile adds to it: its Swift handlers and its inbound-call responder,
/// registered into the registry every command that dispatches builds from the config.
public struct HandlerSetup: Sendable {
    public let configure: @Sendable (inout HandlerRegistry) -> Void

    public init(_ configure: @escaping @Sendable (inout HandlerRegistry) -> Void = { _ in }) {
        self.configure = configure
    }
}

/// Exit statuses fixed by the contract.
public enum ExitStatus {
    public static let success: Int32 = 0
    /// `--check` found a delivery whose outcome differs from its `expect`.
    public static let checkFailed: Int32 = 1
    /// Bad usage, or an unreadable or invalid config or input file.
    public static let usage: Int32 = 2
    /// The work itself failed (a store or I/O failure that is not the input's fault).
    public static let failure: Int32 = 3
}

/// The `turnstile` command line: parses, runs, and maps every error to a message and an exit status
/// in one place.
public enum TurnstileMain {
    static var commands: [any TurnstileCommand.Type] { [
        ServeCommand.self, ReplayCommand.self, VerifyCommand.self, SignCommand.self, ExportCommand.self, DeadLettersCommand.self,
        PruneCommand.self, DispatchCommand.self, MigrateCommand.self, SendCommand.self, BenchCommand.self,
    ] }

    /// The top-level help.
    public static var helpText: String {
        var lines = ["OVERVIEW: Turnstile receives signed webhooks, lets each genuine event through once, and hands it to typed handlers.",
                     "", "USAGE: turnstile <command> [options]", "", "COMMANDS:"]
        let width = commands.map { $0.spec.name.count }.max() ?? 0
        for command in commands {
            lines.append("  \(command.spec.name)" + String(repeating: " ", count: width - command.spec.name.count + 2) + command.spec.abstract)
        }
        lines += ["", "See 'turnstile <command> --help' for a command's options."]
        return lines.joined(separator: "\n")
    }

    /// Runs `arguments` (without the program name) and returns the exit status: the whole `turnstile`
    /// command line, every command included. A team's own binary passes `configure` to add its handlers:
    ///
    /// ```swift
    /// @main struct CRMTurnstile {
    ///     static func main() async {
    ///         exit(await TurnstileMain.main(arguments: Array(CommandLine.arguments.dropFirst())) { registry in
    ///             registry.register(NotifyCRM(), name: "notify-crm", events: ["synthflow.post_call"])
    ///             registry.answerInboundCalls(with: InboundRouter())
    ///         })
    ///     }
    /// }
    /// ```
    ///
    /// The config can name such a handler in an entry of type `swift` to change its events, filter and limits.
    public static func main(arguments: [String], console: any Console = StandardConsole(),
                            configure: @escaping @Sendable (inout HandlerRegistry) -> Void = { _ in }) async -> Int32 {
        // A peer that closes its end must give an error on write, not kill the process.
        signal(SIGPIPE, SIG_IGN)
        let status = await dispatch(arguments, console: console, setup: HandlerSetup(configure))
        console.flush()
        return status
    }

    private static func dispatch(_ arguments: [String], console: any Console, setup: HandlerSetup) async -> Int32 {
        guard let name = arguments.first else {
            console.err(helpText)
            return ExitStatus.usage
        }
        if name == "--help" || name == "-h" || name == "help" {
            console.out(helpText)
            return ExitStatus.success
        }
        guard let command = commands.first(where: { $0.spec.name == name }) else {
            console.err("turnstile: unknown command \"\(name)\" (commands: \(commands.map { $0.spec.name }.joined(separator: ", ")))")
            return ExitStatus.usage
        }
        do {
            let parsed = try ParsedArguments.parse(Array(arguments.dropFirst()), for: command.spec)
            if parsed.wantsHelp {
                console.out(command.spec.helpText)
                return ExitStatus.success
            }
            return try await command.init(parsed).run(console: console, setup: setup)
        } catch let error as UsageError {
            console.err("turnstile \(name): \(error.message)")
            return ExitStatus.usage
        } catch let error as InputError {
            console.err("turnstile \(name): \(error)")
            return ExitStatus.usage
        } catch let error as StoreError {
            console.err("turnstile \(name): \(error)")
            return ExitStatus.failure
        } catch {
            console.err("turnstile \(name): \(error)")
            return ExitStatus.failure
        }
    }
}
