#if canImport(Glibc)
import Glibc
#endif
public import TurnstileCore
import Synchronization

/// The built-in `jsonl` handler: appends one JSON line per dispatched event to a file, and fsyncs in
/// ``commit()``, which the dispatcher calls before it marks the events done. Lines wait in memory until
/// then (or until a megabyte has gathered), so a batch costs one write and one fsync.
///
/// Each line: `{"event_id":…,"provider":…,"event_type":…,"event_key":…,"received_at":…,"attempt":…,
/// "reprocess":…,"handler":…,"payload":<the body as JSON, or null>,"body":<the body as text when it is not JSON>}`.
public final class JSONLHandler: EventHandler {
    public typealias Event = GenericEvent

    public let path: String
    /// The file, and the lines handled but not yet written.
    private let file: Mutex<(descriptor: Int32, pending: [UInt8])>
    static let flushThreshold = 1 << 20

    /// Opens `path` for appending, creating it (mode 0644) if needed.
    /// - Throws: ``InputError`` naming the file when it cannot be opened.
    public init(path: String) throws(InputError) {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw InputError(.unreadableFile, "cannot open for appending: \(String(cString: strerror(errno)))", file: path)
        }
        self.path = path
        self.file = Mutex((fd, []))
    }

    deinit {
        file.withLock { file in _ = close(file.descriptor) }
    }

    public func handle(_ event: GenericEvent, context: DispatchContext) async throws {
        var object = JSONObject()
        object["event_id"] = .number(JSONNumber(context.eventID))
        object["provider"] = .string(event.provider)
        object["event_type"] = .string(event.type)
        object["event_key"] = .string(event.key)
        object["received_at"] = .string(event.receivedAt.iso8601)
        object["attempt"] = .number(JSONNumber(Int64(context.attempt)))
        object["reprocess"] = .bool(context.isReprocess)
        object["handler"] = .string(context.handlerName)
        var line: [UInt8]
        if event.payload != nil, !event.body.contains(0x0a), !event.body.contains(0x0d) {
            // The body is JSON on one line already: copy its bytes instead of re-serialising it.
            object["payload"] = .null
            line = JSONValue.object(object).javaScriptStringified()
            line.removeLast("null}".utf8.count)
            line += event.body
            line.append(UInt8(ascii: "}"))
        } else {
            object["payload"] = event.payload ?? .null
            if event.payload == nil { object["body"] = .string(String(decoding: event.body, as: UTF8.self)) }
            line = JSONValue.object(object).javaScriptStringified()
        }
        line.append(0x0a)
        try file.withLock { file in
            file.pending += line
            if file.pending.count >= Self.flushThreshold { try flush(&file) }
        }
    }

    /// Writes the pending lines and makes every line so far durable.
    public func commit() async throws {
        try file.withLock { file in
            try flush(&file)
            guard fsync(file.descriptor) == 0 else { throw HandlerIOError(path: path, operation: "fsync", code: errno) }
        }
    }

    /// Writes the pending lines. On failure they are dropped: the commit fails, so their events are retried
    /// and handled again.
    private func flush(_ file: inout (descriptor: Int32, pending: [UInt8])) throws {
        defer { file.pending.removeAll(keepingCapacity: true) }
        guard !file.pending.isEmpty else { return }
        try Self.writeAll(file.descriptor, file.pending, path: path)
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw HandlerIOError(path: path, operation: "write", code: errno)
                }
                offset += written
            }
        }
    }
}

/// A handler's file operation failed (a full disk, a removed folder): the event is retried.
public struct HandlerIOError: Error, CustomStringConvertible {
    public let path: String
    public let operation: String
    public let code: Int32
    public var description: String { "\(operation) \(path): \(String(cString: strerror(code)))" }
}

extension HandlerRegistry {
    /// The registry of the standalone receiver's built-in handlers, as config lists them.
    public static func builtIn(_ handlers: [HandlerConfig]) throws(InputError) -> HandlerRegistry {
        var registry = HandlerRegistry()
        for (index, handler) in handlers.enumerated() {
            switch handler.type {
            case "jsonl":
                do {
                    registry.register(try JSONLHandler(path: handler.path ?? ""), name: handler.name, events: handler.events)
                } catch {
                    throw InputError(error.code, error.message, file: error.file, field: "handlers[\(index)].path")
                }
            default:
                throw InputError(.invalidValue, "unknown handler type \"\(handler.type)\"", field: "handlers[\(index)].type")
            }
        }
        return registry
    }
}
