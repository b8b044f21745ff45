#if canImport(Glibc)
import Glibc
#endif
import TurnstileCore
import TurnstileIngest
import TurnstilePipeline
import TurnstileSQLite

/// The pieces a command wires from one config file: ingest, store, pipeline, handlers, dispatcher.
struct Runtime {
    let config: TurnstileConfig
    let ingest: Ingest
    let store: any EventStore

    /// Loads `path`, builds the verifiers and opens the store.
    /// - Throws: ``InputError`` (exit 2) for a bad config or a store that cannot be opened.
    static func load(_ path: String) throws(InputError) -> Runtime {
        let config = try TurnstileConfig.load(path: path)
        let ingest = try Ingest(config: config)
        return Runtime(config: config, ingest: ingest, store: try openStore(config))
    }

    static func openStore(_ config: TurnstileConfig) throws(InputError) -> any EventStore {
        switch config.store {
        case .sqlite(let path):
            let options = SQLiteEventStore.Options(
                synchronous: SQLiteEventStore.Synchronous(rawValue: config.sqliteSynchronous) ?? .full,
                busyTimeoutMilliseconds: config.sqliteBusyTimeoutMilliseconds)
            do { return try SQLiteEventStore(path: path, options: options) } catch {
                throw InputError(.unreadableFile, error.message, file: config.file, field: "store")
            }
        case .postgres:
            throw InputError(.invalidValue, "this build of Turnstile has no PostgreSQL store yet; use sqlite:PATH",
                             file: config.file, field: "store")
        }
    }

    func pipeline() throws(InputError) -> Pipeline {
        try Pipeline(config: config, ingest: ingest, store: store, catalog: try SchemaCatalog.shared())
    }

    func dispatcher(logger: Logger) throws(InputError) -> Dispatcher {
        let registry: HandlerRegistry
        do { registry = try HandlerRegistry.builtIn(config.handlers) } catch {
            throw error.located(file: config.file)
        }
        return Dispatcher(store: store, registry: registry, settings: config.dispatch, logger: logger)
    }
}

/// Counts-per-second and elapsed time for summaries and progress lines.
struct Stopwatch {
    private let start = DispatchTimeNow.seconds()
    var elapsed: Double { DispatchTimeNow.seconds() - start }

    func rate(_ count: Int) -> String {
        let seconds = max(elapsed, 1e-9)
        return String(Int((Double(count) / seconds).rounded()))
    }

    var elapsedText: String { Self.format(elapsed) }

    static func format(_ seconds: Double) -> String { "\((seconds * 100).rounded() / 100) s" }
}

enum DispatchTimeNow {
    static func seconds() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}
