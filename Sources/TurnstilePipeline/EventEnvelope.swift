import TurnstileCore

/// An event as Turnstile hands it outside the process (a `jsonl` line, an `http` request body, an `exec`
/// command's stdin): `{"event":"evt_…","delivery":"msg_…","event_id":…,"provider":…,"event_type":…,"event_key":…,"received_at":…,"attempt":…,
/// "reprocess":…,"handler":…,"payload":<the body as JSON, or null>,"body":<the body as text when it is not JSON>}`.
public enum EventEnvelope {
    /// The envelope as one line of JSON (no newline).
    public static func json(_ event: GenericEvent, context: DispatchContext) -> [UInt8] {
        var line = JSONWriter(reservingCapacity: event.body.count + 320)
        line.add("event", string: context.eventIdentity)
        line.add("delivery", string: context.deliveryIdentity)
        line.add("event_id", integer: context.eventID)
        line.add("provider", string: event.provider)
        line.add("event_type", string: event.type)
        line.add("event_key", string: event.key)
        line.add("received_at", string: event.receivedAt.iso8601)
        line.add("attempt", integer: Int64(context.attempt))
        line.add("reprocess", bool: context.isReprocess)
        line.add("handler", string: context.handlerName)
        if let payload = event.payload {
            if !event.body.contains(0x0a), !event.body.contains(0x0d) {
                // The body is JSON on one line already: its bytes are copied instead of re-serialised.
                line.add("payload", json: event.body)
            } else {
                line.add("payload", payload)
            }
        } else {
            line.add("payload", .null)
            line.add("body", string: String(decoding: event.body, as: UTF8.self))
        }
        return line.finish()
    }

}
