import TurnstileCrypto
public import TurnstileCore

/// Where and how often an event reached a handler.
public struct DispatchContext: Sendable, Hashable {
    /// This store's queue id of the (event, handler) delivery: stable across its retries, but only within one
    /// store. For an id that means the same everywhere, use ``eventIdentity`` or ``deliveryIdentity``.
    public var eventID: Int64
    public var provider: String
    public var eventType: String
    public var eventKey: String
    public var receivedAt: Instant
    /// 1 on the first try.
    public var attempt: Int
    /// True when `replay --reprocess` sent an already-seen event again.
    public var isReprocess: Bool
    /// The name the handler was registered under.
    public var handlerName: String

    public init(eventID: Int64, provider: String, eventType: String, eventKey: String, receivedAt: Instant, attempt: Int,
                isReprocess: Bool, handlerName: String) {
        self.eventID = eventID
        self.provider = provider
        self.eventType = eventType
        self.eventKey = eventKey
        self.receivedAt = receivedAt
        self.attempt = attempt
        self.isReprocess = isReprocess
        self.handlerName = handlerName
    }

    /// The event's identity everywhere: `evt_` and 32 hex digits of a SHA-256 of the provider and the event
    /// key, so the same at every handler, on every retry, in every store and instance, after an export and
    /// `replay --reprocess`, and after a move from SQLite to PostgreSQL; different for different events.
    public var eventIdentity: String { Self.eventIdentity(provider: provider, eventKey: eventKey) }

    /// ``eventIdentity`` of the event `eventKey` of `provider`.
    public static func eventIdentity(provider: String, eventKey: String) -> String { identity("evt_", [provider, eventKey]) }

    /// This event's delivery to this handler: `msg_` and 32 hex digits of a SHA-256 of the provider, the event
    /// key and the handler's name. The `http` handler sends it as `webhook-id`, which Standard Webhooks
    /// receivers deduplicate on; a deliberate re-drive (``isReprocess``) keeps it and says so in the envelope's
    /// `reprocess` and the `turnstile-reprocess` header.
    public var deliveryIdentity: String { Self.identity("msg_", [provider, eventKey, handlerName]) }

    private static func identity(_ prefix: String, _ parts: [String]) -> String {
        var bytes: [UInt8] = Array("turnstile identity v1".utf8)
        for part in parts {
            bytes.append(0)
            bytes += Array(part.utf8)
        }
        return prefix + Hex.encode(Array(SHA256.hash(bytes).prefix(16)))
    }
}

/// A handler of one typed event. Written in Swift, registered with a ``HandlerRegistry``:
///
/// ```swift
/// struct Notify: EventHandler {
///     func handle(_ event: CallEvent, context: DispatchContext) async throws {
///         try await crm.logCall(event.call.callID.value, status: event.call.status)
///     }
/// }
/// var registry = HandlerRegistry()
/// registry.register(Notify(), name: "notify", events: ["synthflow.post_call"])
/// ```
///
/// Delivery is at least once: a handler may see an event again after a crash or a failed attempt, so it
/// should be idempotent (``DispatchContext/eventID`` and ``DispatchContext/eventKey`` are stable).
/// Throwing schedules a retry with backoff; after the configured attempts the event is dead-lettered
/// with the last error.
public protocol EventHandler: Sendable {
    associatedtype Event: DispatchableEvent
    func handle(_ event: Event, context: DispatchContext) async throws
    /// Called after a batch of `handle` calls succeeded and before their events are marked done: make their
    /// effects durable here (the `jsonl` handler fsyncs). Defaults to nothing.
    func commit() async throws
}

extension EventHandler {
    public func commit() async throws {}
}

/// A commit that made some of the batch's events durable and not others: only `failedEventIDs` are
/// retried; the batch's other events handled by that handler are done.
public struct PartialCommitError: Error, CustomStringConvertible {
    public let failedEventIDs: Set<Int64>
    public let underlying: any Error

    public init(failedEventIDs: Set<Int64>, underlying: any Error) {
        self.failedEventIDs = failedEventIDs
        self.underlying = underlying
    }

    public var description: String { String(describing: underlying) }
}

/// A failure of the handler's sink itself (its disk is full, its mount is gone), not of the event. `serve`'s
/// dispatcher retries such events with back-off for as long as it lasts and never dead-letters them for it,
/// so they go through once the sink works again; failures show in the handler metrics and the log. A batch
/// run (`replay`, `dispatch`) dead-letters them after `max_attempts` with `sink_unavailable`, to retry later.
public protocol SinkUnavailable: Error {}

/// A payload that does not decode as the type a handler asked for.
public struct EventDecodingError: Error, CustomStringConvertible {
    public let handler: String
    public let expected: String
    public let underlying: String
    public var description: String { "handler \(handler) expects \(expected), and the payload does not decode as one: \(underlying)" }
}

/// Routes events to handlers. Patterns are `*` (everything), a prefix ending in `.*` (`sync.*`), or an
/// exact type (`synthflow.post_call`); a handler's ``PayloadFilter`` narrows them by the payload.
///
/// Registration erases each handler to closures, so a handler compiled in another module (a plugin)
/// registers through the same generic call.
public struct HandlerRegistry: Sendable {
    struct Entry: Sendable {
        let name: String
        var patterns: [String]
        var filter: PayloadFilter
        var limits: HandlerLimits
        let handle: @Sendable (QueuedEvent, DispatchContext) async throws -> Void
        let commit: @Sendable () async throws -> Void
    }

    private(set) var entries: [Entry] = []
    /// Answers Synthflow inbound calls (request/response), if set.
    public private(set) var inboundResponder: (any InboundCallResponder)?

    public init() {}

    /// Sets the responder that answers Synthflow inbound calls within their deadline.
    public mutating func answerInboundCalls(with responder: some InboundCallResponder) {
        inboundResponder = responder
    }

    /// Registers `handler` under `name` (unique: a second registration of a name replaces the first) for the
    /// event types matching `patterns` whose payload passes `filter`, within `limits`.
    public mutating func register<Handler: EventHandler>(_ handler: Handler, name: String, events patterns: [String],
                                                         filter: PayloadFilter = PayloadFilter(), limits: HandlerLimits = HandlerLimits()) {
        let entry = Entry(
            name: name, patterns: patterns, filter: filter, limits: limits,
            handle: { queued, context in
                let event: Handler.Event
                do { event = try Handler.Event(queued: queued) } catch {
                    throw EventDecodingError(handler: name, expected: String(describing: Handler.Event.self), underlying: "\(error)")
                }
                try await handler.handle(event, context: context)
            },
            commit: { try await handler.commit() })
        if let index = entries.firstIndex(where: { $0.name == name }) { entries[index] = entry } else { entries.append(entry) }
    }

    /// Applies a config entry of type `swift` to the handler registered under its name: its events (when
    /// given), filter and limits replace those it was registered with.
    /// - Throws: ``InputError`` when no handler of that name was registered.
    public mutating func apply(_ config: HandlerConfig) throws(InputError) {
        guard let index = entries.firstIndex(where: { $0.name == config.name }) else {
            let known = names.isEmpty ? "none is registered" : "registered: \(names.joined(separator: ", "))"
            throw InputError(.invalidValue, "no handler named \"\(config.name)\" was registered from Swift (\(known))", field: "name")
        }
        if let events = config.events { entries[index].patterns = events }
        if !config.filter.isEmpty { entries[index].filter = config.filter }
        entries[index].limits = config.limits
    }

    /// The names of the handlers registered.
    public var names: [String] { entries.map(\.name) }

    func entry(named name: String) -> Entry? { entries.first { $0.name == name } }

    /// The names of the handlers `event` goes to, in registration order. The payload is parsed once, and only
    /// when a matching handler has a filter; a payload that is not JSON passes only handlers without one.
    public func route(_ event: RoutableEvent) -> [String] {
        let candidates = entries.filter { entry in entry.patterns.contains { Self.matches($0, event.eventType) } }
        guard candidates.contains(where: { !$0.filter.isEmpty }) else { return candidates.map(\.name) }
        let payload = try? JSONParser.parse(event.payload, repeatedKeys: .lastWins)
        return candidates.filter { $0.filter.passes(payload) }.map(\.name)
    }

    /// True when `pattern` covers `eventType`.
    public static func matches(_ pattern: String, _ eventType: String) -> Bool {
        if pattern == "*" { return true }
        if pattern.hasSuffix(".*") { return eventType.hasPrefix(pattern.dropLast()) }
        return pattern == eventType
    }
}
