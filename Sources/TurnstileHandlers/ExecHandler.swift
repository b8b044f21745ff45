#if canImport(Glibc)
import Glibc
#endif
import TurnstileCore
public import TurnstilePipeline
import Dispatch
internal import CTurnstileLinux
import Foundation

/// The built-in `exec` handler: runs a command (an argv list, no shell, no PATH lookup) once per event, with
/// the event's envelope (``EventEnvelope``) on stdin and its metadata in environment variables; exit 0 is
/// success, anything else fails the call (which retries with the dispatcher's backoff).
///
/// - Environment: only `PATH`, `HOME`, `LANG` and `TZ` of Turnstile's own (never its secrets), plus
///   `TURNSTILE_EVENT_ID`, `TURNSTILE_PROVIDER`, `TURNSTILE_EVENT_TYPE`, `TURNSTILE_EVENT_KEY`,
///   `TURNSTILE_RECEIVED_AT`, `TURNSTILE_ATTEMPT`, `TURNSTILE_REPROCESS` and `TURNSTILE_HANDLER`.
/// - The command runs in a process group of its own; at the timeout the whole group is killed (SIGKILL),
///   children included.
/// - Its stdout and stderr are read as it runs; the last 2 KiB are kept for the error of a failed call.
/// - Each call waits on a thread of the handler's own, never on the cooperative pool.
public final class ExecHandler: EventHandler {
    public typealias Event = GenericEvent

    public let name: String
    public let command: [String]
    public let timeoutSeconds: Double
    private let queue: DispatchQueue
    static let keptOutputBytes = 2048

    public init(name: String, command: [String], timeoutSeconds: Double) {
        self.name = name
        self.command = command
        self.timeoutSeconds = timeoutSeconds
        self.queue = DispatchQueue(label: "ts-exec-\(name)", attributes: .concurrent)
    }

    public func handle(_ event: GenericEvent, context: DispatchContext) async throws {
        let input = EventEnvelope.json(event, context: context) + [0x0a]
        var variables: [String] = []
        for name in ["PATH", "HOME", "LANG", "TZ"] {
            if let value = getenv(name) { variables.append("\(name)=\(String(cString: value))") }
        }
        let environment = variables + [
            "TURNSTILE_EVENT_ID=\(context.eventID)", "TURNSTILE_EVENT=\(context.eventIdentity)", "TURNSTILE_DELIVERY=\(context.deliveryIdentity)", "TURNSTILE_PROVIDER=\(context.provider)",
            "TURNSTILE_EVENT_TYPE=\(context.eventType)", "TURNSTILE_EVENT_KEY=\(context.eventKey)",
            "TURNSTILE_RECEIVED_AT=\(context.receivedAt.iso8601)", "TURNSTILE_ATTEMPT=\(context.attempt)",
            "TURNSTILE_REPROCESS=\(context.isReprocess ? "1" : "0")", "TURNSTILE_HANDLER=\(context.handlerName)",
        ]
        let command = self.command
        let timeout = timeoutSeconds
        let outcome: ExecOutcome = await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: Self.run(command, input: input, environment: environment, timeoutSeconds: timeout)) }
        }
        switch outcome.ending {
        case .exited(0): return
        default: throw ExecHandlerError(program: command[0], ending: outcome.ending, output: outcome.output)
        }
    }

    struct ExecOutcome: Sendable {
        var ending: ExecHandlerError.Ending
        var output: String
    }

    /// A pipe whose ends are close-on-exec from the moment they exist (the child gets them through dup2 only),
    /// so a command spawned by another worker at that moment does not inherit them.
    private static func openPipe(_ ends: inout [Int32]) -> Bool {
        ends.withUnsafeMutableBufferPointer { CTurnstileLinux_pipe_cloexec($0.baseAddress) } == 0
    }

    /// Spawns, feeds stdin, collects output, and waits until the command exits or its time is up.
    static func run(_ command: [String], input: [UInt8], environment: [String], timeoutSeconds: Double) -> ExecOutcome {
        var toChild: [Int32] = [-1, -1]
        var fromChild: [Int32] = [-1, -1]
        guard openPipe(&toChild) else { return ExecOutcome(ending: .notStarted(errno), output: "") }
        guard openPipe(&fromChild) else {
            let code = errno
            close(toChild[0]); close(toChild[1])
            return ExecOutcome(ending: .notStarted(code), output: "")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toChild[0], 0)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 2)
        // Every other descriptor closes in the child, whether or not it was opened close-on-exec.
        _ = CTurnstileLinux_spawn_close_from(&actions, 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A group of its own (to kill it whole), and the signals Turnstile ignores (SIGPIPE) back to default.
        posix_spawnattr_setpgroup(&attributes, 0)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        posix_spawnattr_setsigmask(&attributes, &unblocked)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var pid: pid_t = 0
        let argv = command.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let spawned = posix_spawn(&pid, command[0], &actions, &attributes, argv, envp)
        close(toChild[0])
        close(fromChild[1])
        guard spawned == 0 else {
            close(toChild[1]); close(fromChild[0])
            return ExecOutcome(ending: .notStarted(spawned), output: "")
        }
        _ = fcntl(toChild[1], F_SETFL, fcntl(toChild[1], F_GETFL) | O_NONBLOCK)
        _ = fcntl(fromChild[0], F_SETFL, fcntl(fromChild[0], F_GETFL) | O_NONBLOCK)
        var stdinFD = toChild[1]
        let outputFD = fromChild[0]
        var outputOpen = true
        var written = 0
        var output: [UInt8] = []
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(min(max(timeoutSeconds, 0.001), 86_400) * 1e9)
        var ending: ExecHandlerError.Ending? = nil
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while ending == nil {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                ending = (status & 0x7f) == 0 ? .exited((status >> 8) & 0xff) : .signalled(status & 0x7f)
                // The command's process group ends with it: a child it left running in the background
                // (a daemonised helper) would otherwise outlive the attempt, and serve.
                kill(-pid, SIGKILL)
                break
            }
            let now = DispatchTime.now().uptimeNanoseconds
            if now >= deadline {
                kill(-pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                ending = .timedOut(timeoutSeconds)
                break
            }
            var descriptors: [pollfd] = []
            if stdinFD >= 0 { descriptors.append(pollfd(fd: stdinFD, events: Int16(POLLOUT), revents: 0)) }
            if outputOpen { descriptors.append(pollfd(fd: outputFD, events: Int16(POLLIN), revents: 0)) }
            // Wakes at least every 10 ms to see whether the command exited (its children may keep the pipes open).
            _ = poll(&descriptors, nfds_t(descriptors.count), Int32(min((deadline - now) / 1_000_000 + 1, 10)))
            if stdinFD >= 0 {
                let count = input.withUnsafeBytes { raw in write(stdinFD, raw.baseAddress! + written, raw.count - written) }
                if count > 0 { written += count }
                if written == input.count || (count < 0 && errno != EAGAIN && errno != EINTR) {
                    // All of it, or the command closed its stdin: either way it has what it will read.
                    close(stdinFD)
                    stdinFD = -1
                }
            }
            if outputOpen {
                let count = buffer.withUnsafeMutableBytes { read(outputFD, $0.baseAddress, $0.count) }
                if count > 0 {
                    output += buffer[0..<count]
                    if output.count > 2 * keptOutputBytes { output.removeFirst(output.count - keptOutputBytes) }
                } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                    outputOpen = false
                }
            }
        }
        if stdinFD >= 0 { close(stdinFD) }
        // Whatever is already in the pipe, without waiting for children that still hold it.
        while outputOpen {
            let count = buffer.withUnsafeMutableBytes { read(outputFD, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            output += buffer[0..<count]
            if output.count > 2 * keptOutputBytes { output.removeFirst(output.count - keptOutputBytes) }
        }
        close(outputFD)
        let text = String(decoding: output.suffix(keptOutputBytes), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return ExecOutcome(ending: ending ?? .exited(0), output: text)
    }
}

/// An `exec` handler's command that did not exit 0.
public struct ExecHandlerError: Error, CustomStringConvertible {
    public enum Ending: Sendable, Hashable {
        case exited(Int32)
        case signalled(Int32)
        case timedOut(Double)
        /// `posix_spawn` failed with this errno (no such program, not executable, …).
        case notStarted(Int32)
    }

    public let program: String
    public let ending: Ending
    /// The end of what it wrote on stdout and stderr.
    public let output: String

    public var description: String {
        let what = switch ending {
        case .exited(let code): "exited with status \(code)"
        case .signalled(let signal): "was killed by signal \(signal)"
        case .timedOut(let seconds): "ran past its timeout of \(seconds) s; its process group was killed"
        case .notStarted(let code): "could not start: \(String(cString: strerror(code)))"
        }
        return "\(program) \(what)" + (output.isEmpty ? "" : ": \(output)")
    }
}
