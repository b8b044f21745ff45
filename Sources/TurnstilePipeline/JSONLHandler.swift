#if canImport(Glibc)
import Glibc
#endif
public import TurnstileCore
import Synchronization

/// The built-in `jsonl` handler: appends one JSON line per dispatched event to a file, and fsyncs in
/// ``commit()``, which the dispatcher calls before it marks the events done.
///
/// Each line: `{"event_id":…,"provider":…,"event_type":…,"event_key":…,"received_at":…,"attempt":…,
/// "reprocess":…,"handler":…,"payload":<the body as JSON, or null>,"body":<the body as text when it is not JSON>}`.
public final class JSONLHandler: EventHandler {
    public typealias Event = GenericEvent

    public let path: String
    private let descriptor: Mutex<Int32>

    /// Opens `path` for appending, creating it (mode 0644) if needed.
    /// - Throws: ``InputError`` naming the file when it cannot be opened.
    public init(path: String) throws(InputError) {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw InputError(.unreadableFile, "cannot open for appending: \(String(cString: strerror(errno)))", file: path)
        }
        self.path = path
        self.descriptor = Mutex(fd)
    }

    deinit {
        descriptor.withLock { fd in _ = close(fd) }
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
        try descriptor.withLock { fd in try Self.writeAll(fd, line, path: path) }
    }

    /// Makes every line written so far durable.
    public func commit() async throws {
        try descriptor.withLock { fd in
            guard fsync(fd) == 0 else { throw HandlerIOError(path: path, operation: "fsync", code: errno) }
        }
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
