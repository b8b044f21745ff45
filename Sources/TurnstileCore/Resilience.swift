#if canImport(Glibc)
import Glibc
#endif
import TurnstileSync

/// Exponential back-off for a loop that retries after a failure: `initial`, doubled after every failure up
/// to `maximum`, and back to `initial` after a success.
public struct Backoff: Sendable {
    public let initial: Double
    public let maximum: Double
    private var current: Double

    public init(initial: Double = 0.05, maximum: Double = 5) {
        self.initial = initial
        self.maximum = maximum
        self.current = initial
    }

    /// The wait after one more failure, in seconds.
    public mutating func next() -> Double {
        defer { current = min(current * 2, maximum) }
        return current
    }

    public mutating func reset() { current = initial }
}

/// A failure that may recur, such as a store that is locked or full, logged so that an outage neither goes
/// unseen nor floods the log: the first failure of an episode is logged at once, later ones at most once per
/// `interval` (with how many were left out), and the end of the episode once.
public final class FailureEpisode: Sendable {
    private let what: String
    private let logger: Logger
    private let interval: Double
    private let state = Locked<(failing: Bool, lastLogged: Double, unlogged: Int, failures: Int)>((false, 0, 0, 0))

    /// - Parameters:
    ///   - what: the failing activity, as log lines name it (`dispatch`, `checkpoint`, …).
    ///   - interval: seconds between two log lines of one episode.
    public init(_ what: String, logger: Logger, interval: Double = 60) {
        self.what = what
        self.logger = logger
        self.interval = interval
    }

    /// True while the last attempt failed.
    public var isFailing: Bool { state.withLock { $0.failing } }

    /// Records a failure; logs it unless one was logged less than `interval` ago in this episode.
    public func failed(_ error: any Error, _ detail: String = "will retry") {
        let moment = Self.monotonicSeconds()
        let report = state.withLock { state -> (first: Bool, unlogged: Int)? in
            state.failures += 1
            defer { state.failing = true }
            if state.failing && moment - state.lastLogged < interval {
                state.unlogged += 1
                return nil
            }
            defer {
                state.lastLogged = moment
                state.unlogged = 0
            }
            return (!state.failing, state.unlogged)
        }
        guard let report else { return }
        var metadata: KeyValuePairs<String, String> = ["error": String(describing: error), "then": detail]
        if !report.first {
            metadata = ["error": String(describing: error), "then": detail, "failures_not_logged": String(report.unlogged)]
        }
        logger.error(report.first ? "\(what) failed" : "\(what) still failing", metadata)
    }

    /// Records a success; logs the end of an episode.
    public func succeeded() {
        let ended = state.withLock { state -> Int? in
            guard state.failing else { return nil }
            defer {
                state.failing = false
                state.failures = 0
                state.unlogged = 0
            }
            return state.failures
        }
        if let ended { logger.info("\(what) recovered", ["failures": String(ended)]) }
    }

    static func monotonicSeconds() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}
