#if canImport(Glibc)
import Glibc
#endif
import Synchronization

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
public struct StandardErrorLogHandler: LogHandler {
    private let clock: any WallClock

    public init(clock: any WallClock = SystemWallClock()) { self.clock = clock }

    public func log(level: LogLevel, message: String, metadata: [(String, String)]) {
        var object = JSONObject()
        object["ts"] = .string(clock.now().iso8601)
        object["level"] = .string(level.rawValue)
        object["msg"] = .string(message)
        for (key, value) in metadata { object[key] = .string(value) }
        var bytes = JSONValue.object(object).javaScriptStringified()
        bytes.append(0x0a)
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = write(2, raw.baseAddress! + offset, raw.count - offset)
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

    private let storage = Mutex<[Entry]>([])

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
