public import TurnstileCore

/// A string enum that keeps values it does not know: providers add states without notice, and an
/// unknown status must not make an event undeliverable.
///
/// ```swift
/// if event.call.status == .completed { … }
/// if !event.call.status.isKnown { log("new status \(event.call.status.rawValue)") }
/// ```
public protocol LenientStringEnum: Codable, Hashable, Sendable, RawRepresentable, CustomStringConvertible where RawValue == String {
    init(rawValue: String)
    /// Every value the provider documents.
    static var documented: [Self] { get }
}

extension LenientStringEnum {
    public init(from decoder: any Decoder) throws {
        self.init(rawValue: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    /// True when the value is one the provider documents.
    public var isKnown: Bool { Self.documented.contains(self) }

    public var description: String { rawValue }
}

/// A provider's date-time: the instant, plus the text exactly as sent (microseconds and offsets survive).
/// Accepts RFC 3339 strings with or without a fraction and with `Z` or an offset, and unix seconds or
/// milliseconds as numbers.
public struct ProviderDate: Codable, Hashable, Sendable, CustomStringConvertible {
    public let text: String
    public let instant: Instant?

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            self.text = text
            self.instant = Instant(iso8601: text)
        } else {
            let number = try container.decode(Double.self)
            self.text = JSONNumber(number).text
            self.instant = Instant(secondsSince1970: number > 100_000_000_000 ? number / 1000 : number)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(text)
    }

    public var description: String { text }
}

/// An identifier kept as a string whether the provider sends a string or a number (Autify's ids are
/// integers, Synthflow's are not always UUIDs).
public struct ProviderID: Codable, Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let value: String

    public init(stringLiteral value: String) { self.value = value }
    public init(_ value: String) { self.value = value }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            value = text
        } else if let number = try? container.decode(Int64.self) {
            value = String(number)
        } else {
            value = JSONNumber(try container.decode(Double.self)).text
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }

    public var description: String { value }
}

extension JSONValue: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let flag = try? container.decode(Bool.self) {
            self = .bool(flag)
        } else if let integer = try? container.decode(Int64.self) {
            self = .number(JSONNumber(integer))
        } else if let number = try? container.decode(Double.self) {
            self = .number(JSONNumber(number))
        } else if let text = try? container.decode(String.self) {
            self = .string(text)
        } else if let items = try? container.decode([JSONValue].self) {
            self = .array(items)
        } else {
            let members = try container.decode([String: JSONValue].self)
            var object = JSONObject()
            for key in members.keys.sorted() { object[key] = members[key] }
            self = .object(object)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let flag): try container.encode(flag)
        case .number(let number): try container.encode(number.doubleValue)
        case .string(let text): try container.encode(text)
        case .array(let items): try container.encode(items)
        case .object(let object):
            var members: [String: JSONValue] = [:]
            for (key, value) in object { members[key] = value }
            try container.encode(members)
        }
    }
}
