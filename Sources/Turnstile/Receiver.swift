@_exported public import TurnstileCore
@_exported public import TurnstileIngest
@_exported public import TurnstilePipeline
@_exported public import TurnstileHandlers
import TurnstileSQLite
import Foundation

/// Turnstile as a library: one config file wired into ingest, the store, the pipeline and the dispatcher.
///
/// Call ``receive(provider:headers:body:now:)`` from any web framework's route: a delivery in, an outcome
/// and the HTTP answer out. Its 2xx comes back only after the event's transaction has committed.
///
/// ```swift
/// struct NotifyCRM: EventHandler {
///     func handle(_ event: CallEvent, context: DispatchContext) async throws { … }
/// }
/// let receiver = try Receiver.load(configPath: "turnstile.json") { registry in
///     registry.register(NotifyCRM(), name: "notify-crm", events: ["synthflow.post_call"])
/// }
/// let answer = receiver.receive(provider: "synthflow", headers: headers, body: body)
/// // respond with answer.status and answer.body
/// ```
public struct Receiver: Sendable {
    public let config: TurnstileConfig
    public let ingest: Ingest
    public let store: any EventStore
    /// A second connection for the dispatch workers' queue bookkeeping (leases, completions, retries).
    /// On SQLite it commits without fsync (`synchronous=NORMAL`): losing a completion in a power cut only
    /// redelivers an event, which at-least-once allows, and admissions keep their fsync on `store`.
    public let dispatchStore: any EventStore
    public let pipeline: Pipeline
    public let registry: HandlerRegistry

    /// Loads `configPath`, builds the verifiers, opens the store and registers the config's built-in
    /// handlers, then lets `configure` register Swift handlers.
    /// - Throws: ``InputError`` for a bad config or a store that cannot be opened.
    /// - Parameter existingStoreOnly: refuse to create a new, empty store (for commands that only read or
    ///   manage one: a mistyped path must not look like an empty store).
    public static func load(configPath: String, existingStoreOnly: Bool = false,
                            configure: (inout HandlerRegistry) -> Void = { _ in }) throws(InputError) -> Receiver {
        let config = try TurnstileConfig.load(path: configPath)
        if existingStoreOnly { try requireExistingStore(config) }
        let registry = try HandlerRegistry.configured(by: config.handlers, file: config.file, configure: configure)
        return try Receiver(config: config, registry: registry)
    }

    /// Wires an already-loaded config.
    public init(config: TurnstileConfig, registry: HandlerRegistry) throws(InputError) {
        // Everything that can throw happens before any stored property is set.
        let ingest = try Ingest(config: config)
        let store = try Self.openStore(config)
        // A private in-memory database cannot be shared between connections: dispatch uses the same one.
        let dispatchStore = config.store == .sqlite(path: ":memory:") ? store : try Self.openStore(config, forDispatch: true)
        let pipeline = try Pipeline(config: config, ingest: ingest, store: store, catalog: try SchemaCatalog.shared())
        self.config = config
        self.ingest = ingest
        self.store = store
        self.dispatchStore = dispatchStore
        self.pipeline = pipeline
        self.registry = registry
    }

    /// Throws unless the store `config` names exists already (an in-memory store always passes).
    public static func requireExistingStore(_ config: TurnstileConfig) throws(InputError) {
        guard case .sqlite(let path) = config.store, path != ":memory:" else { return }
        guard FileManager.default.fileExists(atPath: path) else {
            throw InputError(.unreadableFile, "there is no store at \(path), and this command does not create one; check store",
                             file: config.file, field: "store")
        }
    }

    /// Opens the store `config` names.
    public static func openStore(_ config: TurnstileConfig, forDispatch: Bool = false) throws(InputError) -> any EventStore {
        switch config.store {
        case .sqlite(let path):
            let options = SQLiteEventStore.Options(
                synchronous: forDispatch ? .normal : SQLiteEventStore.Synchronous(rawValue: config.sqliteSynchronous) ?? .full,
                busyTimeoutMilliseconds: config.sqliteBusyTimeoutMilliseconds)
            do { return try SQLiteEventStore(path: path, options: options) } catch {
                throw InputError(.unreadableFile, error.message, file: config.file, field: "store")
            }
        case .postgres:
            throw InputError(.invalidValue, "this build of Turnstile has no PostgreSQL store yet; use sqlite:PATH",
                             file: config.file, field: "store")
        }
    }

    /// A dispatcher over this receiver's store and handlers.
    public func dispatcher(logger: Logger = .silent) -> Dispatcher {
        Dispatcher(store: dispatchStore, registry: registry, settings: config.dispatch, logger: logger)
    }

    /// Verifies, dedups and durably enqueues one delivery; returns the contract's HTTP answer.
    public func receive(provider: String, headers: HeaderFields, body: [UInt8], now: Instant? = nil) -> ReceiveResponse {
        let delivery = Delivery(provider: provider, receivedAt: now ?? SystemWallClock().now(), headers: headers, body: body,
                                path: "/webhooks/\(provider)")
        return ReceiveResponse(pipeline.process([delivery])[0])
    }
}

/// The HTTP answer to one delivery, as the contract's table fixes it.
public struct ReceiveResponse: Sendable, Hashable {
    public let verdict: DeliveryVerdict
    public let status: Int
    /// `{"outcome":…,"event_key":…}` or `{"outcome":…,"reason":…}`; never a secret, a body or an expected signature.
    public let body: String

    public init(_ verdict: DeliveryVerdict) {
        self.verdict = verdict
        status = Self.status(for: verdict)
        var object = JSONObject()
        object["outcome"] = .string(verdict.outcome.rawValue)
        if let reason = verdict.reason { object["reason"] = .string(reason.rawValue) }
        if verdict.outcome == .accepted, let key = verdict.eventKey { object["event_key"] = .string(key) }
        body = JSONValue.object(object).serialized()
    }

    /// 200 for accepted and duplicate; 401 for signature and time reasons; 400, 404, 413 and 503 for the others.
    public static func status(for verdict: DeliveryVerdict) -> Int {
        switch verdict.outcome {
        case .accepted, .duplicate: return 200
        case .rejected:
            switch verdict.reason {
            case .malformedPayload?: return 400
            case .unknownProvider?: return 404
            case .bodyTooLarge?: return 413
            case .storeUnavailable?: return 503
            default: return 401
            }
        }
    }
}
