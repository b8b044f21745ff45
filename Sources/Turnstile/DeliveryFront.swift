import Foundation

/// The one way a delivery comes in, for `serve`'s HTTP routes and for a host web framework alike: verified on
/// the caller's thread, stored by the group-commit writer (concurrent deliveries share one transaction), and
/// answered only after its commit; a Synthflow inbound call is answered by the registry's responder (or the
/// provider's default), once, and repeats get the same answer.
public final class DeliveryFront: Sendable {
    public let committer: GroupCommitter
    public let inbound: InboundCallAnswers
    /// Told of every accepted delivery once it is durable (serve wakes its dispatcher).
    private let accepted: @Sendable () -> Void

    public init(committer: GroupCommitter, inbound: InboundCallAnswers, accepted: @escaping @Sendable () -> Void = {}) {
        self.committer = committer
        self.inbound = inbound
        self.accepted = accepted
    }

    /// Submits `delivery`; `completion` gets its answer: at once for a rejection, after the commit for the
    /// others (on the writer thread, so it must be quick), after the responder for an inbound call (on a task).
    public func submit(_ delivery: Delivery, now: Instant? = nil, completion: @escaping @Sendable (ReceiveResponse) -> Void) {
        committer.submit(delivery, now: now) { [self] verdict in
            if verdict.outcome == .accepted { accepted() }
            if inbound.applies(to: verdict, provider: delivery.provider) {
                Task {
                    let answer = await inbound.answer(provider: delivery.provider, verdict: verdict, body: delivery.body,
                                                      receivedAt: delivery.receivedAt ?? SystemWallClock().now())
                    completion(ReceiveResponse(verdict, inboundAnswer: answer))
                }
            } else {
                completion(ReceiveResponse(verdict))
            }
        }
    }

    /// The answer to `delivery`, once it is durable.
    public func receive(_ delivery: Delivery, now: Instant? = nil) async -> ReceiveResponse {
        await withCheckedContinuation { continuation in
            submit(delivery, now: now) { continuation.resume(returning: $0) }
        }
    }
}
