import Foundation
import Synchronization
import TurnstileCore
import TurnstileIngest
import TurnstilePipeline
import TurnstileSQLite

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

func temporaryFolder() throws -> String {
    let path = NSTemporaryDirectory() + "turnstile-pipeline-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

let signedAt = Instant(iso8601: "2026-01-15T19:04:06Z")!

/// A pipeline over a fresh SQLite file with one provider per built-in scheme.
struct Harness {
    let folder: String
    let config: TurnstileConfig
    let ingest: Ingest
    let store: SQLiteEventStore
    let pipeline: Pipeline

    init(retention: Int? = nil) throws {
        folder = try temporaryFolder()
        let secrets = ["synthflow": "sf_secret", "autify": "au_secret", "sync": "whsec_sync", "stripe": "whsec_stripe",
                       "github": "gh_secret", "standard-webhooks": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
        let providers = secrets.sorted { $0.key < $1.key }.map { scheme, secret in
            ProviderConfig(name: scheme, scheme: scheme, secrets: [Secret(reference: "env:X", value: Array(secret.utf8))],
                           retentionSeconds: scheme == "autify" ? nil : retention)
        }
        config = TurnstileConfig(file: folder + "/turnstile.json", store: .sqlite(path: folder + "/t.db"), providers: providers)
        ingest = try Ingest(config: config)
        store = try SQLiteEventStore(path: folder + "/t.db")
        pipeline = try Pipeline(config: config, ingest: ingest, store: store, catalog: try SchemaCatalog.shared())
    }

    /// A delivery for `provider` signed now-ish with its secret.
    func signed(_ provider: String, _ body: String, at instant: Instant = signedAt, id: String? = nil) throws -> Delivery {
        let headers = try ingest.scheme(for: provider)!.signatureHeaders(body: Array(body.utf8), at: instant, id: id, eventType: "push")
        return Delivery(provider: provider, receivedAt: instant.adding(seconds: 1), headers: headers, body: Array(body.utf8))
    }

    func process(_ deliveries: [Delivery], reprocess: Bool = false) -> [DeliveryVerdict] {
        pipeline.process(deliveries, reprocess: reprocess)
    }

    func dispatcher(_ registry: HandlerRegistry, maxAttempts: Int = 5, clock: any WallClock = SystemWallClock()) -> Dispatcher {
        var settings = DispatchSettings()
        settings.maxAttempts = maxAttempts
        settings.backoffBaseSeconds = 0.001
        settings.backoffMaxSeconds = 0.01
        settings.leaseSeconds = 30
        return Dispatcher(store: store, registry: registry, settings: settings, clock: clock)
    }
}

/// Records what a handler saw.
final class Recorder<Event: DispatchableEvent>: EventHandler, @unchecked Sendable {
    private let seen = Mutex<[(Event, DispatchContext)]>([])
    /// Fail this many times before succeeding (per event id); -1 always fails.
    private let failures: Int
    private let delay: Double
    private let active = Mutex<(now: [String: Int], peak: Int)>(([:], 0))

    init(failures: Int = 0, delay: Double = 0) {
        self.failures = failures
        self.delay = delay
    }

    func handle(_ event: Event, context: DispatchContext) async throws {
        let ordering = context.eventKey.split(separator: ":").prefix(2).joined(separator: ":")
        active.withLock { state in
            state.now[ordering, default: 0] += 1
            state.peak = max(state.peak, state.now[ordering]!)
        }
        defer { active.withLock { $0.now[ordering, default: 1] -= 1 } }
        if delay > 0 { try await Task.sleep(nanoseconds: UInt64(delay * 1e9)) }
        seen.withLock { $0.append((event, context)) }
        if failures < 0 || context.attempt <= failures { throw TestFailure(attempt: context.attempt) }
    }

    var contexts: [DispatchContext] { seen.withLock { $0.map(\.1) } }
    var events: [Event] { seen.withLock { $0.map(\.0) } }
    /// The most handler calls that ran at once for one ordering key.
    var peakPerOrderingKey: Int { active.withLock { $0.peak } }
}

struct TestFailure: Error, CustomStringConvertible {
    let attempt: Int
    var description: String { "injected failure on attempt \(attempt)" }
}
