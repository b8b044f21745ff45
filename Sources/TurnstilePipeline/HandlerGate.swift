public import TurnstileCore

/// How much of one handler the dispatcher may start now: a token bucket for its rate limit and a circuit
/// breaker that pauses it after a run of failures. A value driven by the instants it is given, so a manual
/// clock tests it without sleeping.
public struct HandlerGate: Sendable {
    /// The breaker's state machine: closed (counting failures in a row), open until an instant, then one
    /// probe whose result closes or reopens it.
    public enum Breaker: Sendable, Hashable {
        case closed(failuresInARow: Int)
        case open(until: Instant)
        case probing
    }

    public let limits: HandlerLimits
    public private(set) var breaker: Breaker = .closed(failuresInARow: 0)
    private var tokens: Double
    private var refilledAt: Instant?

    public init(limits: HandlerLimits) {
        self.limits = limits
        tokens = Double(limits.burst ?? max(1, Int((limits.ratePerSecond ?? 1).rounded(.up))))
    }

    private var bucketSize: Double { Double(limits.burst ?? max(1, Int((limits.ratePerSecond ?? 1).rounded(.up)))) }

    /// How many deliveries may start at `now`, at most `batch`: 0 while the breaker is open or the bucket is
    /// empty, 1 for the probe of a breaker whose cool-down is over.
    public mutating func allowance(now: Instant, batch: Int) -> Int {
        var cap = batch
        switch breaker {
        case .open(let until):
            guard now >= until else { return 0 }
            breaker = .probing
            cap = 1
        case .probing:
            cap = 1
        case .closed:
            break
        }
        if let rate = limits.ratePerSecond {
            if let last = refilledAt {
                let elapsed = max(0, now.secondsSince1970 - last.secondsSince1970)
                tokens = min(bucketSize, tokens + elapsed * rate)
            }
            refilledAt = now
            cap = min(cap, Int(tokens.rounded(.down)))
        }
        return max(0, cap)
    }

    /// Takes `count` tokens for deliveries just started.
    public mutating func started(_ count: Int) {
        if limits.ratePerSecond != nil { tokens -= Double(count) }
    }

    /// Records one run's result at `now`; returns true when the breaker is open after it (this failure
    /// opened it, or it was open already), so the delivery is put back rather than counted against the event.
    @discardableResult
    public mutating func record(succeeded: Bool, now: Instant) -> Bool {
        guard let threshold = limits.breakerFailures else { return false }
        switch (breaker, succeeded) {
        case (.closed, true), (.probing, true):
            breaker = .closed(failuresInARow: 0)
            return false
        case (.closed(let failures), false):
            if failures + 1 >= threshold {
                breaker = .open(until: now.adding(seconds: limits.breakerCooldownSeconds))
                return true
            }
            breaker = .closed(failuresInARow: failures + 1)
            return false
        case (.probing, false):
            breaker = .open(until: now.adding(seconds: limits.breakerCooldownSeconds))
            return true
        case (.open, _):
            return true
        }
    }

    /// When the breaker lets a probe through, while it is open.
    public var reopensAt: Instant? {
        if case .open(let until) = breaker { return until }
        return nil
    }

    /// When a delivery could start next, if none can at `now`: the end of the cool-down, or the next token.
    public func nextStart(after now: Instant) -> Instant? {
        if case .open(let until) = breaker { return until }
        if let rate = limits.ratePerSecond, tokens < 1 {
            return now.adding(seconds: (1 - tokens) / rate)
        }
        return nil
    }

    /// 0 closed, 1 open, 2 probing: the `turnstile_handler_breaker` gauge.
    public var breakerGauge: Int {
        switch breaker {
        case .closed: 0
        case .open: 1
        case .probing: 2
        }
    }
}
