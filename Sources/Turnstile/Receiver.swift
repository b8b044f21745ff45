@_exported public import TurnstileCore
@_exported public import TurnstileIngest
@_exported public import TurnstilePipeline
@_exported public import TurnstileHandlers
import TurnstileSQLite
import TurnstilePostgres
import Foundation

/// Turnstile as a library: one config file wired into ingest, the store, the pipeline and the dispatcher.
///
/// Call ``receive(provider:headers:body:now:)`` from any web framework's route (Vapor, Hummingbird): a
/// delivery in, an outcome and the HTTP answer out, with exactly `serve`'s semantics (the same group commit,
/// the same inbound-call answers). Its 2xx comes back only after the event's transaction has committed; no
/// SQLite call runs on the caller's task. Run ``services(logger:)`` (dispatch, store maintenance,
/// checkpoints) in a ``ServiceGroup`` beside the host's server.
///
/// ```swift
/// struct NotifyCRM: EventHandler {
///     func handle(_ event: CallEvent, context: DispatchContext) async throws { … }
/// }
/// let receiver = try Receiver.load(configPath: "turnstile.json") { registry in
///     registry.register(NotifyCRM(), name: "notify-crm", events: ["synthflow.post_call"])
/// }
/// let answer = await receiver.receive(provider: "synthflow", headers: headers, body: body)
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
    /// The group commit and inbound answers every delivery goes through.
    public let front: DeliveryFront
    /// Whether the store takes writes, as the last check found (`/healthz`).
    public let health: StoreHealth
    /// The dispatcher over this receiver's store and handlers, woken by every commit that enqueues.
    public let dispatcher: Dispatcher
    /// Deliveries, handler runs and latencies, for `/metrics`.
    public let metrics: PipelineMetrics
    public let logger: Logger

    /// Loads `configPath`, builds the verifiers, opens the store and registers the config's built-in
    /// handlers, then lets `configure` register Swift handlers.
    /// - Throws: ``InputError`` for a bad config or a store that cannot be opened.
    /// - Parameter existingStoreOnly: refuse to create a new, empty store (for commands that only read or
    ///   manage one: a mistyped path must not look like an empty store).
    /// - Parameter logger: where dispatch, maintenance and checkpoints log (silent by default).
    public static func load(configPath: String, existingStoreOnly: Bool = false, logger: Logger = .silent,
                            configure: (inout HandlerRegistry) -> Void = { _ in }) throws(InputError) -> Receiver {
        let config = try TurnstileConfig.load(path: configPath)
        if existingStoreOnly { try requireExistingStore(config) }
        let registry = try HandlerRegistry.configured(by: config.handlers, file: config.file, configure: configure)
        return try Receiver(config: config, registry: registry, logger: logger)
    }

    /// Wires an already-loaded config.
    public init(config: TurnstileConfig, registry: HandlerRegistry, logger: Logger = .silent) throws(InputError) {
        // Everything that can throw happens before any stored property is set.
        let ingest = try Ingest(config: config)
        let store = try Self.openStore(config)
        // A private in-memory database cannot be shared between connections: dispatch uses the same one.
        let dispatchStore = config.store == .sqlite(path: ":memory:") ? store : try Self.openStore(config, forDispatch: true)
        var pipeline = try Pipeline(config: config, ingest: ingest, store: store, catalog: try SchemaCatalog.shared())
        let health = StoreHealth()
        pipeline.health = health
        pipeline.router = { [registry] event in registry.route(event) }
        let metrics = PipelineMetrics(providers: ingest.providerNames)
        let dispatcher = Dispatcher(store: dispatchStore, registry: registry, settings: config.dispatch, logger: logger,
                                    observer: { event, handler, succeeded, seconds in
                                        // From the event's arrival to this run's start, for first attempts.
                                        let started = SystemWallClock().now().secondsSince1970 - seconds
                                        metrics.recordHandlerRun(handler: handler, succeeded: succeeded, seconds: seconds,
                                                                 startDelay: event.attempt == 1 ? started - event.receivedAt.secondsSince1970 : nil)
                                    })
        self.metrics = metrics
        self.logger = logger
        self.front = DeliveryFront(committer: GroupCommitter(pipeline: pipeline),
                                   inbound: InboundCallAnswers(store: store, responder: registry.inboundResponder, config: config),
                                   accepted: { dispatcher.wake() })
        self.health = health
        self.dispatcher = dispatcher
        self.config = config
        self.ingest = ingest
        self.store = store
        self.dispatchStore = dispatchStore
        self.pipeline = pipeline
        self.registry = registry
    }

    /// Throws unless the store `config` names exists already (an in-memory store always passes).
    public static func requireExistingStore(_ config: TurnstileConfig) throws(InputError) {
        switch config.store {
        case .sqlite(let path):
            guard path != ":memory:" else { return }
            guard FileManager.default.fileExists(atPath: path) else {
                throw InputError(.unreadableFile, "there is no store at \(path), and this command does not create one; check store",
                                 file: config.file, field: "store")
            }
        case .postgres(let url):
            let password = config.postgresPassword.map { String(decoding: $0.value, as: UTF8.self) }
            let exists: Bool
            do { exists = try PostgresEventStore.storeExists(url: url, password: password) } catch {
                throw InputError(.unreadableFile, error.message, file: config.file, field: "store")
            }
            guard exists else {
                throw InputError(.unreadableFile, "the PostgreSQL database has no Turnstile store (no turnstile_schema table in its schema), and this command does not create one; run turnstile migrate or serve first",
                                 file: config.file, field: "store")
            }
        }
    }

    /// The schema version this binary writes for a store at `location`.
    public static func schemaVersion(of location: StoreLocation) -> Int {
        switch location {
        case .sqlite: SQLiteEventStore.schemaVersion
        case .postgres: PostgresEventStore.schemaVersion
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
                throw InputError(.unreadableFile, error.code == .incompatible ? error.description : error.message, file: config.file, field: "store")
            }
        case .postgres(let url):
            let password = config.postgresPassword.map { String(decoding: $0.value, as: UTF8.self) }
            do { return try PostgresEventStore(url: url, password: password, maximumConnections: config.postgresPoolSize) } catch {
                throw InputError(.unreadableFile, error.code == .incompatible ? error.description : error.message, file: config.file, field: "store")
            }
        }
    }

    /// A dispatcher of its own over this receiver's store and handlers (for a batch run such as `replay`).
    public func batchDispatcher(logger: Logger = .silent) -> Dispatcher {
        Dispatcher(store: dispatchStore, registry: registry, settings: config.dispatch, logger: logger)
    }

    /// Verifies, dedups and durably enqueues one delivery through the group commit; returns the contract's
    /// HTTP answer once it is durable (an inbound call's answer once its responder answered).
    public func receive(provider: String, headers: HeaderFields, body: [UInt8], now: Instant? = nil) async -> ReceiveResponse {
        let delivery = Delivery(provider: provider, receivedAt: now ?? SystemWallClock().now(), headers: headers, body: body,
                                path: "/webhooks/\(provider)")
        return await front.receive(delivery, now: now)
    }

    /// The long-running parts a host runs beside its own server, in start order: WAL checkpoints (SQLite
    /// files), store maintenance, the group-commit writer, the listener that wakes dispatch when another
    /// instance queues work (PostgreSQL), and dispatch. A ``ServiceGroup`` shuts them down
    /// in reverse: commits finish first, then dispatch drains within the grace period.
    /// - Parameter gauges: told what each maintenance round read (`serve` feeds `/metrics` with it).
    public func services(gauges: @escaping @Sendable (StoreMaintenance.Gauges) -> Void = { _ in })
        throws(InputError) -> [any Service] {
        var services: [any Service] = []
        // A long-running receiver loads the nonce index before its first delivery, not during it (best effort: a
        // failure here recurs at the first admission, which reports it). Batch commands load it when they admit.
        try? (store as? SQLiteEventStore)?.loadNonceIndex()
        if let file = store as? SQLiteEventStore, file.path != ":memory:" {
            do {
                services.append(try WALCheckpointer(store: file, others: [dispatchStore as? SQLiteEventStore].compactMap { $0 }, logger: logger))
            } catch {
                throw InputError(.unreadableFile, error.message, file: config.file, field: "store")
            }
        }
        services.append(StoreMaintenance(store: store, health: health, logger: logger, archiveRetentionSeconds: config.archiveRetentionSeconds,
                                         gauges: gauges))
        services.append(front.committer)
        if let shared = store as? PostgresEventStore {
            // Commits of every instance wake this one's workers.
            let dispatcher = self.dispatcher
            services.append(shared.listener(logger: logger, wake: { dispatcher.wake() }))
        }
        services.append(dispatcher)
        return services
    }
}

/// The HTTP answer to one delivery, as the contract's table fixes it.
public struct ReceiveResponse: Sendable, Hashable {
    public let verdict: DeliveryVerdict
    public let status: Int
    /// `{"outcome":…,"event_key":…}` or `{"outcome":…,"reason":…}`; never a secret, a body or an expected signature.
    public let body: String

    /// The answer a request/response webhook (a Synthflow inbound call) got, sent as the body with a 200.
    public let inboundAnswer: String?

    public init(_ verdict: DeliveryVerdict, inboundAnswer: String? = nil) {
        self.verdict = verdict
        self.inboundAnswer = inboundAnswer
        status = inboundAnswer == nil ? Self.status(for: verdict) : 200
        if let inboundAnswer {
            body = inboundAnswer
            return
        }
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
