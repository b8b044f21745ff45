#if canImport(Glibc)
import Glibc
#endif
import TurnstileSync
import Foundation

/// Severity of a log line.
public enum LogLevel: String, Sendable, Comparable, CaseIterable {
    case debug, info, warning, error

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// Where log lines go. One requirement; ``StandardErrorLogHandler`` writes JSON lines, ``InMemoryLogHandler``
/// keeps them for tests.
public protocol LogHandler: Sendable {
    func log(level: LogLevel, message: String, metadata: [(String, String)])
}

/// A value-type logger passed into initialisers. Facts go in metadata, not in the message.
///
/// ```swift
/// logger.info("delivery", ["provider": "sync", "outcome": "accepted", "reason": "-"])
/// ```
public struct Logger: Sendable {
    public let handler: any LogHandler
    public var minimumLevel: LogLevel

    public init(handler: any LogHandler, minimumLevel: LogLevel = .info) {
        self.handler = handler
        self.minimumLevel = minimumLevel
    }

    /// A logger that drops everything.
    public static let silent = Logger(handler: SilentLogHandler(), minimumLevel: .error)

    public func log(_ level: LogLevel, _ message: String, _ metadata: KeyValuePairs<String, String> = [:]) {
        guard level >= minimumLevel else { return }
        handler.log(level: level, message: message, metadata: metadata.map { ($0.key, $0.value) })
    }

    public func debug(_ message: String, _ metadata: KeyValuePairs<String, String> = [:]) { log(.debug, message, metadata) }
    public func info(_ message: String, _ metadata: KeyValuePairs<String, String> = [:]) { log(.info, message, metadata) }
    public func warning(_ message: String, _ metadata: KeyValuePairs<String, String> = [:]) { log(.warning, message, metadata) }
    public func error(_ message: String, _ metadata: KeyValuePairs<String, String> = [:]) { log(.error, message, metadata) }
}

/// One JSON object per line on standard error: `{"ts":…,"level":…,"msg":…, metadata…}`.
///
/// Buffered, it collects lines and writes them every 50 ms (or at 64 KiB) from a background thread, so a
/// busy receiver does not pay one `write(2)` per delivery; ``flush()`` writes what is pending.
public struct StandardErrorLogHandler: LogHandler {
    private let clock: any WallClock
    private let buffer: LogBuffer?

    public init(clock: any WallClock = SystemWallClock(), buffered: Bool = false) {
        self.clock = clock
        self.buffer = buffered ? LogBuffer.shared : nil
    }

    /// Writes every buffered line now.
    public func flush() { buffer?.flush() }

    /// Lines the buffered handlers dropped because standard error was not read fast enough.
    public static var droppedLines: UInt64 { LogBuffer.shared.droppedLines }

    public func log(level: LogLevel, message: String, metadata: [(String, String)]) {
        var bytes: [UInt8]
        let keys = ["ts", "level", "msg"] + metadata.map(\.0)
        if JSONWriter.keysNeedJSONObject(keys) {
            var object = JSONObject()
            object["ts"] = .string(clock.now().iso8601)
            object["level"] = .string(level.rawValue)
            object["msg"] = .string(message)
            for (key, value) in metadata { object[key] = .string(value) }
            bytes = JSONValue.object(object).javaScriptStringified()
        } else {
            var line = JSONWriter()
            line.add("ts", string: clock.now().iso8601)
            line.add("level", string: level.rawValue)
            line.add("msg", string: message)
            for (key, value) in metadata { line.add(key, string: value) }
            bytes = line.finish()
        }
        JSONWriter.escapeLineSeparators(&bytes)
        bytes.append(0x0a)
        if let buffer { buffer.append(bytes) } else { LogBuffer.write(bytes) }
    }
}

/// Pending log bytes, written by one background thread. Logging never blocks the thread that logs (an event
/// loop, the group-commit writer): the lines wait here, at most ``capacity`` bytes of them, and a line that
/// would pass that while standard error is slow to read is dropped and counted (`/metrics`:
/// `turnstile_log_lines_dropped_total`) instead of waiting.
final class LogBuffer: Sendable {
    static let shared = LogBuffer()
    /// Bytes of lines that may wait for a slow standard error.
    static let capacity = 4 << 20
    private struct Pending {
        var bytes: [UInt8] = []
        var dropped: UInt64 = 0
    }
    private let pending = Locked(Pending())
    private let wake = DispatchSemaphore(value: 0)

    private init() {
        Thread { [self] in
            Thread.current.name = "ts-log"  // From inside, so that the OS thread has the name too.
            while true {
                _ = wake.wait(timeout: .now() + .milliseconds(50))
                flush()
            }
        }.start()
    }

    /// Lines dropped since start because the buffer was full.
    var droppedLines: UInt64 { pending.withLock { $0.dropped } }

    func append(_ bytes: [UInt8]) {
        let wakeWriter = pending.withLock { pending -> Bool in
            guard pending.bytes.count + bytes.count <= Self.capacity else {
                pending.dropped += 1
                return false
            }
            let before = pending.bytes.count
            pending.bytes += bytes
            return before < 64 * 1024 && pending.bytes.count >= 64 * 1024
        }
        if wakeWriter { wake.signal() }
    }

    /// Writes what is pending, on the calling thread (the background writer, or a command at its end).
    func flush() {
        let bytes = pending.withLock { pending -> [UInt8] in
            let taken = pending.bytes
            pending.bytes.removeAll(keepingCapacity: pending.bytes.capacity <= 1 << 20)
            return taken
        }
        if !bytes.isEmpty { Self.write(bytes) }
    }

    static func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.write(2, raw.baseAddress! + offset, raw.count - offset)
                if written <= 0 { if written < 0 && errno == EINTR { continue } else { return } }
                offset += written
            }
        }
    }
}

/// Keeps log lines in memory, for assertions.
public final class InMemoryLogHandler: LogHandler {
    public struct Entry: Sendable {
        public let level: LogLevel
        public let message: String
        public let metadata: [String: String]
    }

    private let storage = Locked<[Entry]>([])

    public init() {}

    public func log(level: LogLevel, message: String, metadata: [(String, String)]) {
        let entry = Entry(level: level, message: message, metadata: Dictionary(metadata, uniquingKeysWith: { $1 }))
        storage.withLock { $0.append(entry) }
    }

    public var entries: [Entry] { storage.withLock { $0 } }
}

struct SilentLogHandler: LogHandler {
    func log(level: LogLevel, message: String, metadata: [(String, String)]) {}
}
