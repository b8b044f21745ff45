import Testing
import TurnstileCore
import TurnstilePipeline

/// The identities handed downstream depend only on the event (and the handler), never on a store's row ids.
@Suite struct IdentityTests {
    func context(_ key: String, provider: String = "stripe", handler: String = "crm", row: Int64 = 1, attempt: Int = 1,
                 reprocess: Bool = false) -> DispatchContext {
        DispatchContext(eventID: row, provider: provider, eventType: "\(provider).event", eventKey: key,
                        receivedAt: Instant(secondsSince1970: 1_767_225_600), attempt: attempt, isReprocess: reprocess, handlerName: handler)
    }

    @Test func sameEventSameIdentityWhateverTheRowAttemptOrReprocess() {
        let original = context("evt_1", row: 2)
        for other in [context("evt_1", row: 6), context("evt_1", row: 2, attempt: 5), context("evt_1", row: 99, reprocess: true)] {
            #expect(other.eventIdentity == original.eventIdentity)
            #expect(other.deliveryIdentity == original.deliveryIdentity)
        }
        #expect(original.eventIdentity.hasPrefix("evt_") && original.eventIdentity.count == 36)
        #expect(original.deliveryIdentity.hasPrefix("msg_") && original.deliveryIdentity.count == 36)
        // One event, two handlers: one event identity, two deliveries.
        let other = context("evt_1", handler: "audit")
        #expect(other.eventIdentity == original.eventIdentity && other.deliveryIdentity != original.deliveryIdentity)
    }

    @Test func tenThousandDifferentEventsHaveTenThousandDifferentIdentities() {
        var events = Set<String>()
        var deliveries = Set<String>()
        for index in 0..<10_000 {
            // Keys and providers that a plain concatenation would confuse ("a" + "bc" and "ab" + "c").
            let context = context(index % 2 == 0 ? "k\(index)" : "\(index)", provider: index % 3 == 0 ? "stripe" : "stripe\(index % 3)")
            events.insert(context.eventIdentity)
            deliveries.insert(context.deliveryIdentity)
        }
        #expect(events.count == 10_000 && deliveries.count == 10_000)
        #expect(context("bc", provider: "a").eventIdentity != context("c", provider: "ab").eventIdentity)
    }
}
