/// A handler entry of the config: a built-in handler (`jsonl`, `http`, `exec`) or, with type `swift`, a
/// handler registered from Swift whose events, filter and limits the config changes without recompiling.
public struct HandlerConfig: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// Appends one line per event to `path`.
        case jsonl(path: String)
        /// POSTs each event to `url`, signed in Standard Webhooks form with `secret`.
        case http(url: String, secret: Secret, timeoutSeconds: Double)
        /// Runs `command` (an argv list, no shell) with the event on stdin.
        case exec(command: [String], timeoutSeconds: Double)
        /// A handler registered from Swift under the entry's name.
        case swift
    }

    public var name: String
    public var kind: Kind
    /// Event type patterns; nil keeps what Swift registered (type `swift` only).
    public var events: [String]?
    public var filter: PayloadFilter
    public var limits: HandlerLimits

    public init(name: String, kind: Kind, events: [String]?, filter: PayloadFilter = PayloadFilter(), limits: HandlerLimits = HandlerLimits()) {
        self.name = name
        self.kind = kind
        self.events = events
        self.filter = filter
        self.limits = limits
    }

    /// The entry's `type` as written in the config.
    public var type: String {
        switch kind {
        case .jsonl: "jsonl"
        case .http: "http"
        case .exec: "exec"
        case .swift: "swift"
        }
    }
}

/// How much of the dispatcher one handler may use: its concurrency, a rate limit and a circuit breaker.
public struct HandlerLimits: Sendable, Hashable {
    /// Handler calls of this handler at once; nil: `dispatch.concurrency`.
    public var concurrency: Int?
    /// Calls started per second, on average; nil: unlimited.
    public var ratePerSecond: Double?
    /// Calls that may start at once after a quiet spell (the token bucket's size); nil: one second's worth.
    public var burst: Int?
    /// Failures in a row that open the breaker; nil: no breaker.
    public var breakerFailures: Int?
    /// How long an open breaker waits before one probe runs.
    public var breakerCooldownSeconds: Double

    public init(concurrency: Int? = nil, ratePerSecond: Double? = nil, burst: Int? = nil, breakerFailures: Int? = nil,
                breakerCooldownSeconds: Double = 30) {
        self.concurrency = concurrency
        self.ratePerSecond = ratePerSecond
        self.burst = burst
        self.breakerFailures = breakerFailures
        self.breakerCooldownSeconds = breakerCooldownSeconds
    }
}

/// Predicates on an event's JSON payload, all of which must hold for a handler to get the event. An empty
/// filter passes everything; a payload that is not JSON passes only an empty filter.
public struct PayloadFilter: Sendable, Hashable {
    public enum Test: Sendable, Hashable {
        /// The value at the path equals this one (numbers compare by value, `1.0` equals `1`).
        case equals(JSONValue)
        /// The value at the path equals one of these.
        case isIn([JSONValue])
        /// The path is present (true) or absent (false); `null` counts as present.
        case exists(Bool)
    }

    public struct Predicate: Sendable, Hashable {
        /// Object keys and array indices, e.g. `call.tags[0]` as `["call", "tags", "0"]`.
        public var path: JSONPath
        public var test: Test

        public init(path: JSONPath, test: Test) {
            self.path = path
            self.test = test
        }

        public func holds(for payload: JSONValue) -> Bool {
            let value = path.value(in: payload)
            switch test {
            case .exists(let present): return (value != nil) == present
            case .equals(let expected): return value.map { Self.same($0, expected) } ?? false
            case .isIn(let choices): return value.map { found in choices.contains { Self.same(found, $0) } } ?? false
            }
        }

        private static func same(_ a: JSONValue, _ b: JSONValue) -> Bool {
            if case .number(let x) = a, case .number(let y) = b { return x.doubleValue == y.doubleValue }
            return a == b
        }
    }

    public var predicates: [Predicate]

    public init(_ predicates: [Predicate] = []) { self.predicates = predicates }

    public var isEmpty: Bool { predicates.isEmpty }

    /// True when every predicate holds for `payload`.
    public func passes(_ payload: JSONValue?) -> Bool {
        guard !predicates.isEmpty else { return true }
        guard let payload else { return false }
        return predicates.allSatisfy { $0.holds(for: payload) }
    }

    /// Reads `[{"path": "status", "equals": "FAILED"}, {"path": "call.tags[0]", "in": [...]}, {"path": "x", "exists": true}]`.
    /// - Parameter field: where the list is in the file, for errors (`handlers[2].filter`).
    public static func read(_ value: JSONValue?, field: String) throws(InputError) -> PayloadFilter {
        guard let value else { return PayloadFilter() }
        guard let items = value.arrayValue else { throw InputError(.invalidValue, "a filter is a list of predicates", field: field) }
        var predicates: [Predicate] = []
        for (index, item) in items.enumerated() {
            let at = "\(field)[\(index)]"
            guard let object = item.objectValue else { throw InputError(.invalidValue, "a predicate is an object", field: at) }
            let pathText = object["path"]?.stringValue ?? ""
            let path: JSONPath
            do { path = try JSONPath(pathText) } catch { throw InputError(.invalidValue, error.message, field: "\(at).path") }
            let tests = ["equals", "in", "exists"].filter { object[$0] != nil }
            guard tests.count == 1 else {
                throw InputError(.invalidValue, "a predicate has exactly one of equals, in, exists", field: at)
            }
            for key in object.keys where !["path", "equals", "in", "exists"].contains(key) {
                throw InputError(.invalidValue, "unknown key \"\(key)\" (a predicate has path and one of equals, in, exists)", field: "\(at).\(key)")
            }
            switch tests[0] {
            case "equals": predicates.append(Predicate(path: path, test: .equals(object["equals"]!)))
            case "in":
                guard let choices = object["in"]?.arrayValue, !choices.isEmpty else {
                    throw InputError(.invalidValue, "in takes a non-empty list of values", field: "\(at).in")
                }
                predicates.append(Predicate(path: path, test: .isIn(choices)))
            default:
                guard case .bool(let present)? = object["exists"] else {
                    throw InputError(.invalidValue, "exists takes true or false", field: "\(at).exists")
                }
                predicates.append(Predicate(path: path, test: .exists(present)))
            }
        }
        return PayloadFilter(predicates)
    }
}

/// A path into a JSON document: keys separated by dots, array indices in brackets (`call.tags[0].name`).
public struct JSONPath: Sendable, Hashable, CustomStringConvertible {
    public enum Step: Sendable, Hashable {
        case key(String)
        case index(Int)
    }

    public let steps: [Step]
    public let description: String

    /// - Throws: ``JSONPathError`` naming what is wrong with `text`.
    public init(_ text: String) throws(JSONPathError) {
        guard !text.isEmpty else { throw JSONPathError(message: "the path is empty") }
        var steps: [Step] = []
        for (position, part) in text.split(separator: ".", omittingEmptySubsequences: false).enumerated() {
            var rest = Substring(part)
            let key = rest.prefix { $0 != "[" }
            guard !key.isEmpty || (position == 0 && rest.hasPrefix("[")) else {
                throw JSONPathError(message: "\"\(text)\" has an empty key (two dots, or a dot at an end)")
            }
            if !key.isEmpty { steps.append(.key(String(key))) }
            rest = rest.dropFirst(key.count)
            while !rest.isEmpty {
                guard rest.hasPrefix("["), let close = rest.firstIndex(of: "]") else {
                    throw JSONPathError(message: "\"\(text)\" has an index that is not [N]")
                }
                let digits = rest[rest.index(after: rest.startIndex)..<close]
                guard !digits.isEmpty, digits.count <= 9, digits.allSatisfy(\.isASCII), let index = Int(digits), index >= 0 else {
                    throw JSONPathError(message: "\"\(text)\" has an index that is not a whole number of at most 9 digits")
                }
                steps.append(.index(index))
                rest = rest[rest.index(after: close)...]
            }
        }
        self.steps = steps
        self.description = text
    }

    /// The value the path leads to, or nil when some step is missing.
    public func value(in document: JSONValue) -> JSONValue? {
        var current = document
        for step in steps {
            switch step {
            case .key(let key):
                guard let next = current[key] else { return nil }
                current = next
            case .index(let index):
                guard let items = current.arrayValue, index < items.count else { return nil }
                current = items[index]
            }
        }
        return current
    }
}

public struct JSONPathError: Error, Sendable {
    public let message: String
}
