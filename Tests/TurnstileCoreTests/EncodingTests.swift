import Testing
import TurnstileCore
import TurnstileSync

@Suite struct EncodingTests {
    @Test func hexRoundTripAndStrictness() throws {
        #expect(try Hex.decode("00ff10Ab") == [0x00, 0xff, 0x10, 0xab])
        #expect(Hex.encode([0x00, 0xff, 0x10, 0xab]) == "00ff10ab")
        #expect(throws: EncodingError.self) { try Hex.decode("abc") }
        #expect(throws: EncodingError.self) { try Hex.decode("zz") }
        #expect(throws: EncodingError.self) { try Hex.decode("ab cd") }
    }

    @Test(arguments: ["", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g="])
    func base64RoundTrip(text: String) throws {
        #expect(Base64.encode(try Base64.decode(text)) == text)
    }

    @Test(arguments: ["Zg", "Zg=", "Zm9v\n", "Zm 9v", "Zh==", "Z===", "Zm9v-_==", "====", "Zg==Zg=="])
    func base64RejectsMalformedText(text: String) {
        #expect(throws: EncodingError.self) { try Base64.decode(text) }
    }
}

@Suite struct InstantTests {
    @Test(arguments: [
        ("2026-01-15T19:04:06Z", 1_768_503_846.0),
        ("2026-01-15T19:04:06.5Z", 1_768_503_846.5),
        ("2026-01-15T14:03:27.512349-05:00", 1_768_503_807.512349),
        ("2020-07-14T06:37:39.598Z", 1_594_708_659.598),
        ("1970-01-01T00:00:00+00:00", 0),
        ("2024-02-29T00:00:00Z", 1_709_164_800),
    ])
    func parses(text: String, seconds: Double) throws {
        let instant = try #require(Instant(iso8601: text))
        #expect(abs(instant.secondsSince1970 - seconds) < 1e-5)
    }

    @Test(arguments: ["2026-01-15 19:04:06Z", "2026-01-15T19:04:06", "2026-13-01T00:00:00Z", "2023-02-29T00:00:00Z",
                      "2026-01-15T19:04:06.Z", "2026-01-15t19:04:06z", "yesterday", "2026-01-15T19:04:06+0500"])
    func refuses(text: String) {
        #expect(Instant(iso8601: text) == nil)
    }

    @Test func formatsBack() {
        #expect(Instant(secondsSince1970: 1_768_503_846).iso8601 == "2026-01-15T19:04:06Z")
        #expect(Instant(secondsSince1970: 1_594_708_659.598).iso8601 == "2020-07-14T06:37:39.598Z")
    }
}

@Suite struct ForwardWallClockTests {
    final class Stepped: WallClock, @unchecked Sendable {
        var seconds: Double = 1_767_225_600
        func now() -> Instant { Instant(secondsSince1970: seconds) }
    }

    /// The wall clock stepped back an hour: dispatch's clock carries on from where it was (retries due in a
    /// second are due in a second, not in an hour and a second); a step forward is followed at once.
    @Test func aWallClockSteppedBackDoesNotTurnBackDispatchTime() {
        let wall = Stepped()
        let ticks = Locked<UInt64>(0)
        let clock = ForwardWallClock(real: wall, monotonic: { ticks.withLock { $0 } })
        #expect(clock.now().secondsSince1970 == 1_767_225_600)
        wall.seconds -= 3600
        ticks.withLock { $0 = 2_000_000_000 }
        #expect(clock.now().secondsSince1970 == 1_767_225_602, "two monotonic seconds after the last reading")
        wall.seconds += 7200
        #expect(clock.now().secondsSince1970 == 1_767_225_600 + 3600, "a step forward is followed")
    }
}
