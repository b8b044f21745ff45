public import TurnstileCore
import TurnstileSync

/// A clock that moves only when told: drive the dispatcher's backoff, rate limits and breakers, and the
/// timestamp checks, without sleeping.
public final class ManualClock: WallClock, Sendable {
    private let instant: Locked<Instant>

    public init(_ start: Instant = Instant(secondsSince1970: 1_767_225_600)) {
        instant = Locked(start)
    }

    public func now() -> Instant { instant.withLock { $0 } }

    /// Moves the clock `seconds` forward.
    public func advance(by seconds: Double) {
        instant.withLock { $0 = $0.adding(seconds: seconds) }
    }

    /// Sets the clock to `instant`.
    public func set(_ new: Instant) {
        instant.withLock { $0 = new }
    }
}
