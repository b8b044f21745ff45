import TurnstileCore

/// An event as Turnstile hands it outside the process (a `jsonl` line, an `http` request body, an `exec`
/// command's stdin): `{"event_id":…,"provider":…,"event_type":…,"event_key":…,"received_at":…,"attempt":…,
/// "reprocess":…,"handler":…,"payload":<the body as JSON, or null>,"body":<the body as text when it is not JSON>}`.
public enum EventEnvelope {
    /// The envelope as one line of JSON (no newline).
    public static func json(_ event: GenericEvent, context: DispatchContext) -> [UInt8] {
        var object = JSONObject()
        object["event_id"] = .number(JSONNumber(context.eventID))
        object["provider"] = .string(event.provider)
        object["event_type"] = .string(event.type)
        object["event_key"] = .string(event.key)
        object["received_at"] = .string(event.receivedAt.iso8601)
        object["attempt"] = .number(JSONNumber(Int64(context.attempt)))
        object["reprocess"] = .bool(context.isReprocess)
        object["handler"] = .string(context.handlerName)
        if event.payload != nil, !event.body.contains(0x0a), !event.body.contains(0x0d) {
            // The body is JSON on one line already: copy its bytes instead of re-serialising it.
            object["payload"] = .null
            var line = JSONValue.object(object).javaScriptStringified()
            line.removeLast("null}".utf8.count)
            line += event.body
            line.append(UInt8(ascii: "}"))
            return line
        }
        object["payload"] = event.payload ?? .null
        if event.payload == nil { object["body"] = .string(String(decoding: event.body, as: UTF8.self)) }
        return JSONValue.object(object).javaScriptStringified()
    }

}
