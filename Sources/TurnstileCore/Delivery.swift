/// One webhook delivery exactly as received: the unit that `replay`, `verify`, `export`, `sign` and the
/// fixtures exchange (`schemas/delivery.schema.json`).
public struct Delivery: Sendable, Hashable {
    /// The provider's route name.
    public var provider: String
    /// When the receiver got it; `replay` and `verify` judge timestamps at this instant unless told `--now`.
    public var receivedAt: Instant?
    public var headers: HeaderFields
    /// The raw body bytes.
    public var body: [UInt8]
    /// An optional label.
    public var id: String?
    /// The request path, e.g. `/webhooks/sync`.
    public var path: String?
    /// What `--check` expects.
    public var expect: Expectation?

    public init(provider: String, receivedAt: Instant? = nil, headers: HeaderFields, body: [UInt8],
                id: String? = nil, path: String? = nil, expect: Expectation? = nil) {
        self.provider = provider
        self.receivedAt = receivedAt
        self.headers = headers
        self.body = body
        self.id = id
        self.path = path
        self.expect = expect
    }

    /// The delivery in the delivery format: `body` when the bytes are UTF-8, else `body_base64`.
    public var jsonValue: JSONValue {
        var object = JSONObject()
        if let id { object["id"] = .string(id) }
        object["provider"] = .string(provider)
        if let receivedAt { object["received_at"] = .string(receivedAt.iso8601) }
        if let path { object["path"] = .string(path) }
        var headerObject = JSONObject()
        for field in headers { headerObject[field.name] = .string(field.value) }
        object["headers"] = .object(headerObject)
        if let text = String(validating: body, as: UTF8.self) {
            object["body"] = .string(text)
        } else {
            object["body_base64"] = .string(Base64.encode(body))
        }
        if let expect {
            var expectation = JSONObject()
            expectation["outcome"] = .string(expect.outcome.rawValue)
            if let reason = expect.reason { expectation["reason"] = .string(reason.rawValue) }
            object["expect"] = .object(expectation)
        }
        return .object(object)
    }

    /// Reads a delivery from a schema-valid JSON object.
    /// - Throws: ``InputError`` naming the field (the caller adds file and line).
    public init(json: JSONValue, schema: JSONSchema) throws(InputError) {
        try schema.validate(json)
        let hasBody = json["body"] != nil
        let hasBase64 = json["body_base64"] != nil
        guard hasBody != hasBase64 else {
            throw InputError(.schemaViolation, hasBody ? "give body or body_base64, not both" : "body or body_base64 is required",
                             field: hasBody ? "body_base64" : "body")
        }
        var body: [UInt8]
        if let text = json["body"]?.stringValue {
            body = Array(text.utf8)
        } else {
            do { body = try Base64.decode(json["body_base64"]?.stringValue ?? "") } catch {
                throw InputError(.invalidValue, "not valid base64: \(error.message)", field: "body_base64")
            }
        }
        var headers = HeaderFields()
        for (name, value) in json["headers"]?.objectValue ?? JSONObject() {
            guard HTTPToken.isValidFieldName(name) else {
                throw InputError(.invalidValue, "\"\(name)\" is not a valid header name", field: "headers")
            }
            // The schema admits a string or a list of strings (a header sent more than once).
            if let list = value.arrayValue {
                for item in list { headers.append(name: name, value: item.stringValue ?? "") }
            } else {
                headers.append(name: name, value: value.stringValue ?? "")
            }
        }
        var receivedAt: Instant? = nil
        if let text = json["received_at"]?.stringValue { receivedAt = Instant(iso8601: text) }
        var expect: Expectation? = nil
        if let expectation = json["expect"] {
            let outcome = Outcome(rawValue: expectation["outcome"]?.stringValue ?? "") ?? .accepted
            expect = Expectation(outcome: outcome, reason: expectation["reason"]?.stringValue.map(Reason.init(rawValue:)))
        }
        self.init(provider: json["provider"]?.stringValue ?? "", receivedAt: receivedAt, headers: headers, body: body,
                  id: json["id"]?.stringValue, path: json["path"]?.stringValue, expect: expect)
    }
}

/// The outcome (and reason) a stored delivery is expected to get.
public struct Expectation: Sendable, Hashable {
    public var outcome: Outcome
    public var reason: Reason?

    public init(outcome: Outcome, reason: Reason? = nil) {
        self.outcome = outcome
        self.reason = reason
    }
}

/// RFC 9110 token rules for header names.
public enum HTTPToken {
    public static func isValidFieldName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy(isTokenCharacter)
    }

    @inline(__always)
    public static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }
}
