#if canImport(Glibc)
import Glibc
#endif
import TurnstileSync

/// A point in time as seconds since 1970-01-01T00:00:00Z, with the ISO 8601 forms providers use.
public struct Instant: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var secondsSince1970: Double

    public init(secondsSince1970: Double) { self.secondsSince1970 = secondsSince1970 }

    public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.secondsSince1970 < rhs.secondsSince1970 }

    /// Whole seconds, rounded down; clamped to about ±292 billion years (a time read from a signed payload
    /// may be any double, and `Int64(Double)` traps out of range).
    public var unixSeconds: Int64 { Self.clampedInt64(secondsSince1970.rounded(.down)) }

    /// The integer nearest `value` within Int64's range (0 for NaN), without trapping.
    public static func clampedInt64(_ value: Double) -> Int64 {
        if value.isNaN { return 0 }
        if value >= 9.2e18 { return .max }
        if value <= -9.2e18 { return .min }
        return Int64(value)
    }

    /// A span of seconds as whole seconds for a message: `301`, or `1e+300` when no integer holds it.
    public static func wholeSecondsText(_ seconds: Double) -> String {
        guard seconds.isFinite, abs(seconds) < 1e15 else { return seconds.isFinite ? "\(seconds)" : "an unbounded number of" }
        return String(Int64(seconds))
    }

    public func adding(seconds: Double) -> Instant { Instant(secondsSince1970: secondsSince1970 + seconds) }

    /// `YYYY-MM-DDTHH:MM:SSZ` (with milliseconds when there is a fraction).
    public var description: String { iso8601 }

    public var iso8601: String {
        // Years beyond 9999 or before 0000 have no RFC 3339 form: show the nearest one that has.
        let whole = min(max(unixSeconds, -62_167_219_200), 253_402_300_799)
        let fraction = secondsSince1970 - Double(whole)
        let millis = fraction >= 0 && fraction < 1 ? Int((fraction * 1000).rounded()) : 0
        var days = whole >= 0 ? whole / 86_400 : (whole - 86_399) / 86_400
        let secondOfDay = Int(whole - days * 86_400)
        // Civil date from days since the epoch (Howard Hinnant's algorithm).
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let dayOfEra = days - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        var text = "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(Int64(secondOfDay / 3600), 2)):"
            + "\(pad(Int64(secondOfDay / 60 % 60), 2)):\(pad(Int64(secondOfDay % 60), 2))"
        if millis > 0 && millis < 1000 { text += "." + pad(Int64(millis), 3) }
        return text + "Z"
    }

    /// Parses RFC 3339 / ISO 8601 date-times: `2026-01-15T14:03:27Z`, with any number of fraction digits,
    /// and `Z` or a `±HH:MM` offset. A lower-case `t`/`z` or a space separator is refused. Returns nil when
    /// the text is not such a date-time or names an impossible date.
    public init?(iso8601 text: some StringProtocol) {
        let bytes = Array(text.utf8)
        var index = 0
        func number(_ count: Int) -> Int? {
            guard index + count <= bytes.count else { return nil }
            var value = 0
            for offset in 0..<count {
                let byte = bytes[index + offset]
                guard byte >= 0x30 && byte <= 0x39 else { return nil }
                value = value * 10 + Int(byte - 0x30)
            }
            index += count
            return value
        }
        func literal(_ character: UInt8) -> Bool {
            guard index < bytes.count, bytes[index] == character else { return false }
            index += 1
            return true
        }
        guard let year = number(4), literal(0x2d), let month = number(2), literal(0x2d), let day = number(2),
              literal(UInt8(ascii: "T")), let hour = number(2), literal(0x3a), let minute = number(2),
              literal(0x3a), let second = number(2) else { return nil }
        guard (1...12).contains(month), day >= 1, day <= Instant.daysIn(month: month, year: year),
              hour < 24, minute < 60, second < 61 else { return nil }
        var fraction = 0.0
        if literal(UInt8(ascii: ".")) {
            var scale = 0.1
            let start = index
            while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 {
                fraction += Double(bytes[index] - 0x30) * scale
                scale /= 10
                index += 1
            }
            guard index > start else { return nil }
        }
        var offsetSeconds = 0
        if literal(UInt8(ascii: "Z")) {
            offsetSeconds = 0
        } else if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
            let sign = bytes[index] == UInt8(ascii: "-") ? -1 : 1
            index += 1
            guard let offsetHours = number(2), literal(0x3a), let offsetMinutes = number(2),
                  offsetHours < 24, offsetMinutes < 60 else { return nil }
            offsetSeconds = sign * (offsetHours * 3600 + offsetMinutes * 60)
        } else {
            return nil
        }
        guard index == bytes.count else { return nil }
        let days = Instant.daysFromCivil(year: year, month: month, day: day)
        let seconds = Double(days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds)
        self.secondsSince1970 = seconds + fraction
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}

/// Where "now" comes from. Tests and `--now` inject a fixed clock; nothing in Turnstile sleeps to test time.
public protocol WallClock: Sendable {
    func now() -> Instant
}

/// Wall time that never runs backwards: the real-time clock when it is ahead, otherwise the last reading
/// carried forward by the monotonic clock. Dispatch schedules retries and leases with it, so a wall clock
/// stepped back (an hour, by NTP or an operator) does not hold due retries back by as much; a step forward is
/// followed at once. What is stored for people and compared with providers' timestamps reads the real clock.
public final class ForwardWallClock: WallClock, Sendable {
    private struct Anchor {
        var wall: Double
        var monotonic: UInt64
    }
    private let anchor: Locked<Anchor>
    private let real: any WallClock
    private let monotonic: @Sendable () -> UInt64

    /// - Parameters: `real` and `monotonic` (nanoseconds) are the system's clocks unless a test drives them.
    public init(real: any WallClock = SystemWallClock(), monotonic: @escaping @Sendable () -> UInt64 = ForwardWallClock.monotonicNanoseconds) {
        self.real = real
        self.monotonic = monotonic
        anchor = Locked(Anchor(wall: real.now().secondsSince1970, monotonic: monotonic()))
    }

    public func now() -> Instant {
        let real = self.real.now().secondsSince1970
        let monotonic = self.monotonic()
        return Instant(secondsSince1970: anchor.withLock { anchor in
            let carried = anchor.wall + Double(monotonic &- anchor.monotonic) / 1e9
            if real >= carried {
                anchor = Anchor(wall: real, monotonic: monotonic)
                return real
            }
            return carried
        })
    }

    /// CLOCK_MONOTONIC in nanoseconds.
    public static func monotonicNanoseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }
}

/// The system's real-time clock.
public struct SystemWallClock: WallClock {
    public init() {}
    public func now() -> Instant {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Instant(secondsSince1970: Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9)
    }
}

/// A clock that always answers the same instant.
public struct FixedWallClock: WallClock {
    public let instant: Instant
    public init(_ instant: Instant) { self.instant = instant }
    public func now() -> Instant { instant }
}
