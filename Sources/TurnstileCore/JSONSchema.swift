/// A JSON Schema, in the small subset Turnstile's `schemas/` use and enforce:
/// `type` (one name or a list), `required`, `properties`, `additionalProperties` (boolean or schema),
/// `items`, `enum`, `const`, `format: date-time`, `minimum`, `maximum`, `minLength`, `maxLength`, `minItems`, `maxItems`,
/// and `$ref` to `#/$defs/NAME`. Annotations (`title`, `description`, `$schema`, `$id`, `examples`) are ignored.
/// Any other keyword is refused when the schema loads, so a schema cannot silently ask for a check that
/// does not happen.
public struct JSONSchema: Sendable {
    /// One place where a value breaks the schema.
    public struct Violation: Sendable, Hashable, CustomStringConvertible {
        /// Where: `providers.sync.secrets[1]`; empty for the document itself.
        public let path: String
        public let message: String
        public var description: String { path.isEmpty ? message : "\(path): \(message)" }
    }

    private static let keywords: Set<String> = [
        "type", "required", "properties", "additionalProperties", "items", "enum", "const", "format",
        "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "$ref", "$defs",
        "title", "description", "$schema", "$id", "examples", "$comment", "default",
    ]

    public let root: JSONValue
    private let definitions: [String: JSONValue]
    public let name: String

    /// Compiles `document`, refusing keywords outside the subset.
    public init(_ document: JSONValue, name: String) throws(InputError) {
        self.root = document
        self.name = name
        var definitions: [String: JSONValue] = [:]
        if let defs = document["$defs"]?.objectValue {
            for (key, value) in defs { definitions[key] = value }
        }
        self.definitions = definitions
        try JSONSchema.checkKeywords(document, path: "", name: name)
    }

    private static func checkKeywords(_ schema: JSONValue, path: String, name: String) throws(InputError) {
        guard let object = schema.objectValue else {
            if schema.boolValue != nil { return }
            throw InputError(.schemaViolation, "a schema must be an object", file: name, field: path)
        }
        for (key, value) in object {
            guard keywords.contains(key) else {
                throw InputError(.schemaViolation, "keyword \"\(key)\" is outside the supported subset", file: name, field: path)
            }
            switch key {
            case "properties", "$defs":
                for (child, sub) in value.objectValue ?? JSONObject() {
                    try checkKeywords(sub, path: JSONSchema.join(path, key: child), name: name)
                }
            case "items", "additionalProperties":
                try checkKeywords(value, path: path + "." + key, name: name)
            case "format":
                guard value.stringValue == "date-time" else {
                    throw InputError(.schemaViolation, "only format date-time is supported", file: name, field: path)
                }
            default: break
            }
        }
    }

    /// Every violation of the schema by `value`, in document order (empty when it conforms).
    public func violations(of value: JSONValue) -> [Violation] {
        var found: [Violation] = []
        check(value, against: root, path: "", into: &found)
        return found
    }

    /// Throws the first violation as an ``InputError``.
    public func validate(_ value: JSONValue, file: String? = nil, line: Int? = nil) throws(InputError) {
        if let first = violations(of: value).first {
            throw InputError(.schemaViolation, first.message, file: file, line: line, field: first.path)
        }
    }

    static func join(_ path: String, key: String) -> String { path.isEmpty ? key : path + "." + key }

    private func resolve(_ schema: JSONValue) -> JSONValue {
        if let reference = schema["$ref"]?.stringValue, reference.hasPrefix("#/$defs/") {
            return definitions[String(reference.dropFirst("#/$defs/".count))] ?? .bool(true)
        }
        return schema
    }

    private func check(_ value: JSONValue, against raw: JSONValue, path: String, into found: inout [Violation]) {
        if raw.boolValue == true { return }
        if raw.boolValue == false {
            found.append(Violation(path: path, message: "is not allowed here"))
            return
        }
        let schema = resolve(raw)
        if let types = typeNames(schema["type"]) {
            let actual = value.typeName
            let matches = types.contains(actual) || (actual == "integer" && types.contains("number"))
            guard matches else {
                found.append(Violation(path: path, message: "expected \(types.joined(separator: " or ")), got \(actual)"))
                return
            }
        }
        if let options = schema["enum"]?.arrayValue, !options.contains(where: { JSONSchema.sameValue($0, value) }) {
            let listed = options.map { $0.serialized() }.joined(separator: ", ")
            found.append(Violation(path: path, message: "value \(value.serialized()) is not one of \(listed)"))
        }
        if let constant = schema["const"], !JSONSchema.sameValue(constant, value) {
            found.append(Violation(path: path, message: "value must be \(constant.serialized())"))
        }
        switch value {
        case .string(let text):
            if schema["format"]?.stringValue == "date-time", Instant(iso8601: text) == nil {
                found.append(Violation(path: path, message: "\"\(text)\" is not an RFC 3339 date-time"))
            }
            if let minimum = schema["minLength"]?.numberValue?.int64Value, text.unicodeScalars.count < minimum {
                found.append(Violation(path: path, message: "must be at least \(minimum) characters long"))
            }
            if let maximum = schema["maxLength"]?.numberValue?.int64Value, text.unicodeScalars.count > maximum {
                found.append(Violation(path: path, message: "must be at most \(maximum) characters long"))
            }
        case .number(let number):
            if let minimum = schema["minimum"]?.numberValue?.doubleValue, number.doubleValue < minimum {
                found.append(Violation(path: path, message: "\(number.text) is below the minimum \(schema["minimum"]!.serialized())"))
            }
            if let maximum = schema["maximum"]?.numberValue?.doubleValue, number.doubleValue > maximum {
                found.append(Violation(path: path, message: "\(number.text) is above the maximum \(schema["maximum"]!.serialized())"))
            }
        case .array(let items):
            if let minimum = schema["minItems"]?.numberValue?.int64Value, items.count < minimum {
                found.append(Violation(path: path, message: "must have at least \(minimum) item\(minimum == 1 ? "" : "s")"))
            }
            if let maximum = schema["maxItems"]?.numberValue?.int64Value, items.count > maximum {
                found.append(Violation(path: path, message: "must have at most \(maximum) items"))
            }
            if let itemSchema = schema["items"] {
                for (index, item) in items.enumerated() {
                    check(item, against: itemSchema, path: "\(path)[\(index)]", into: &found)
                }
            }
        case .object(let object):
            for key in schema["required"]?.arrayValue ?? [] {
                if let name = key.stringValue, object[name] == nil {
                    found.append(Violation(path: JSONSchema.join(path, key: name), message: "is required but missing"))
                }
            }
            let properties = schema["properties"]?.objectValue ?? JSONObject()
            for (key, member) in object {
                let childPath = JSONSchema.join(path, key: key)
                if let propertySchema = properties[key] {
                    check(member, against: propertySchema, path: childPath, into: &found)
                } else if let additional = schema["additionalProperties"] {
                    if additional.boolValue == false {
                        let allowed = properties.keys.joined(separator: ", ")
                        found.append(Violation(path: childPath, message: "unknown key (allowed here: \(allowed))"))
                    } else {
                        check(member, against: additional, path: childPath, into: &found)
                    }
                }
            }
        default:
            break
        }
    }

    private func typeNames(_ value: JSONValue?) -> [String]? {
        switch value {
        case .string(let name): [name]
        case .array(let names): names.compactMap(\.stringValue)
        default: nil
        }
    }

    /// JSON equality where `1` and `1.0` are the same number.
    static func sameValue(_ lhs: JSONValue, _ rhs: JSONValue) -> Bool {
        if case .number(let a) = lhs, case .number(let b) = rhs { return a.doubleValue == b.doubleValue }
        return lhs == rhs
    }
}
