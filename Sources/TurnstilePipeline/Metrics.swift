public import TurnstileCore
import TurnstileSync
import Foundation

/// Counters and histograms for `/metrics`, in the Prometheus text format.
public final class PipelineMetrics: Sendable {
    /// Upper bounds (seconds) of the handler latency histogram.
    public static let latencyBuckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    private struct Histogram {
        var buckets = [Int](repeating: 0, count: PipelineMetrics.latencyBuckets.count)
        var count = 0
        var sum = 0.0
    }

    private struct State {
        var deliveries: [String: Int] = [:]          // "provider|outcome|reason"
        var secretMatches: [String: Int] = [:]       // "provider|index"
        var handlerRuns: [String: Int] = [:]         // "handler|result"
        var handlerLatency: [String: Histogram] = [:]
        var handlerStartDelay: [String: Histogram] = [:]
        var requestLatency = Histogram()
    }

    private let state = Locked(State())
    /// The configured provider names: the only `provider` label values besides ``unknownProvider``.
    private let providers: Set<String>

    /// The label value every provider name outside the config shares, so that requests to made-up names
    /// cannot grow the exposition.
    public static let unknownProvider = "_unknown"

    /// - Parameter providers: the configured provider names; every label set is bounded by them.
    public init(providers: [String] = []) {
        self.providers = Set(providers)
    }

    /// The label value for `provider`: itself when configured, else ``unknownProvider``.
    public func providerLabel(_ provider: String) -> String {
        providers.contains(provider) ? provider : Self.unknownProvider
    }

    /// Counts one delivery, and which secret verified it when one did.
    public func recordDelivery(provider: String, outcome: Outcome, reason: Reason?, seconds: Double, secretIndex: Int? = nil) {
        let label = providerLabel(provider)
        state.withLock { state in
            state.deliveries["\(label)|\(outcome.rawValue)|\(reason?.rawValue ?? "")", default: 0] += 1
            if let secretIndex { state.secretMatches["\(label)|\(secretIndex)", default: 0] += 1 }
            Self.observe(&state.requestLatency, seconds)
        }
    }

    /// Counts one handler run (an observer for ``Dispatcher``); `startDelay` is the time from the event's
    /// arrival to this run's start (first attempts only, so retries' backoff does not blur it).
    public func recordHandlerRun(handler: String, succeeded: Bool, seconds: Double, startDelay: Double? = nil) {
        state.withLock { state in
            state.handlerRuns["\(handler)|\(succeeded ? "success" : "failure")", default: 0] += 1
            Self.observe(&state.handlerLatency[handler, default: Histogram()], seconds)
            if let startDelay { Self.observe(&state.handlerStartDelay[handler, default: Histogram()], max(0, startDelay)) }
        }
    }

    private static func observe(_ histogram: inout Histogram, _ seconds: Double) {
        for (index, bound) in latencyBuckets.enumerated() where seconds <= bound { histogram.buckets[index] += 1 }
        histogram.count += 1
        histogram.sum += seconds
    }

    /// The exposition text, with the gauges read now.
    /// - Parameter handlers: each handler's backlog (deliveries waiting or leased) and breaker (0 closed,
    ///   1 open, 2 probing); the names are the registry's, so the label set is bounded.
    public func render(queueDepth: Int?, deadLetters: Int?, openConnections: Int,
                       handlers: [String: (backlog: Int, breaker: Int)] = [:]) -> String {
        let snapshot = state.withLock { $0 }
        var lines: [String] = []
        lines.append("# HELP turnstile_deliveries_total Deliveries by provider, outcome and reason.")
        lines.append("# TYPE turnstile_deliveries_total counter")
        for (key, count) in snapshot.deliveries.sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            lines.append("turnstile_deliveries_total{provider=\(quote(parts[0])),outcome=\(quote(parts[1])),reason=\(quote(parts[2]))} \(count)")
        }
        lines.append("# HELP turnstile_secret_matches_total Verified deliveries by provider and the index of the secret that matched.")
        lines.append("# TYPE turnstile_secret_matches_total counter")
        for (key, count) in snapshot.secretMatches.sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            lines.append("turnstile_secret_matches_total{provider=\(quote(parts[0])),secret_index=\(quote(parts[1]))} \(count)")
        }
        lines.append("# HELP turnstile_log_lines_dropped_total Log lines dropped because standard error was not read fast enough.")
        lines.append("# TYPE turnstile_log_lines_dropped_total counter")
        lines.append("turnstile_log_lines_dropped_total \(StandardErrorLogHandler.droppedLines)")
        lines.append("# HELP turnstile_queue_depth Events waiting for or in dispatch.")
        lines.append("# TYPE turnstile_queue_depth gauge")
        lines.append("turnstile_queue_depth \(queueDepth.map(String.init) ?? "NaN")")
        lines.append("# HELP turnstile_dead_letters Events in the dead letters.")
        lines.append("# TYPE turnstile_dead_letters gauge")
        lines.append("turnstile_dead_letters \(deadLetters.map(String.init) ?? "NaN")")
        lines.append("# HELP turnstile_open_connections Open HTTP connections.")
        lines.append("# TYPE turnstile_open_connections gauge")
        lines.append("turnstile_open_connections \(openConnections)")
        lines.append("# HELP turnstile_handler_runs_total Handler runs by handler and result.")
        lines.append("# TYPE turnstile_handler_runs_total counter")
        for (key, count) in snapshot.handlerRuns.sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: "|").map(String.init)
            lines.append("turnstile_handler_runs_total{handler=\(quote(parts[0])),result=\(quote(parts[1]))} \(count)")
        }
        lines.append("# HELP turnstile_handler_duration_seconds Handler run time.")
        lines.append("# TYPE turnstile_handler_duration_seconds histogram")
        for (handler, histogram) in snapshot.handlerLatency.sorted(by: { $0.key < $1.key }) {
            lines += render("turnstile_handler_duration_seconds", histogram, labels: "handler=\(quote(handler))")
        }
        lines.append("# HELP turnstile_handler_start_delay_seconds Time from an event's arrival to its handler's first start.")
        lines.append("# TYPE turnstile_handler_start_delay_seconds histogram")
        for (handler, histogram) in snapshot.handlerStartDelay.sorted(by: { $0.key < $1.key }) {
            lines += render("turnstile_handler_start_delay_seconds", histogram, labels: "handler=\(quote(handler))")
        }
        lines.append("# HELP turnstile_handler_backlog Deliveries waiting for or in a handler.")
        lines.append("# TYPE turnstile_handler_backlog gauge")
        for (handler, gauges) in handlers.sorted(by: { $0.key < $1.key }) {
            lines.append("turnstile_handler_backlog{handler=\(quote(handler))} \(gauges.backlog)")
        }
        lines.append("# HELP turnstile_handler_breaker A handler's circuit breaker: 0 closed, 1 open, 2 probing.")
        lines.append("# TYPE turnstile_handler_breaker gauge")
        for (handler, gauges) in handlers.sorted(by: { $0.key < $1.key }) {
            lines.append("turnstile_handler_breaker{handler=\(quote(handler))} \(gauges.breaker)")
        }
        lines.append("# HELP turnstile_request_duration_seconds Time from a delivery's arrival to its answer.")
        lines.append("# TYPE turnstile_request_duration_seconds histogram")
        lines += render("turnstile_request_duration_seconds", snapshot.requestLatency, labels: nil)
        return lines.joined(separator: "\n") + "\n"
    }

    private func render(_ name: String, _ histogram: Histogram, labels: String?) -> [String] {
        let prefix = labels.map { "\($0)," } ?? ""
        var lines: [String] = []
        for (index, bound) in Self.latencyBuckets.enumerated() {
            lines.append("\(name)_bucket{\(prefix)le=\"\(JSONNumber(bound).text)\"} \(histogram.buckets[index])")
        }
        lines.append("\(name)_bucket{\(prefix)le=\"+Inf\"} \(histogram.count)")
        let suffix = labels.map { "{\($0)}" } ?? ""
        lines.append("\(name)_sum\(suffix) \(histogram.sum)")
        lines.append("\(name)_count\(suffix) \(histogram.count)")
        return lines
    }

    private func quote(_ value: String) -> String {
        "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n") + "\""
    }
}
