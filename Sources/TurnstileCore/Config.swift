import Foundation

/// The receiver's configuration, loaded from the JSON file `schemas/config.schema.json` describes.
public struct TurnstileConfig: Sendable {
    /// Path of the file it came from.
    public var file: String
    public var store: StoreLocation
    public var listen: String
    public var maxBodyBytes: Int
    /// Providers in the order the file lists them.
    public var providers: [ProviderConfig]
    public var handlers: [HandlerConfig]
    public var dispatch = DispatchSettings()
    public var http = HTTPSettings()
    /// `serve` answers 503 while more events than this wait in the queue.
    public var queueBound = 1_000_000
    /// SQLite's `synchronous` pragma: `full` (default) or `normal`.
    public var sqliteSynchronous = "full"
    public var sqliteBusyTimeoutMilliseconds = 5_000
    /// The PostgreSQL password (`postgres.password`, `env:`/`file:`); never in the URL, argv or a log line.
    public var postgresPassword: Secret?
    /// How long archived raw deliveries are kept (`archive.retention_seconds`); nil keeps them forever.
    public var archiveRetentionSeconds: Int?
    /// Connections a PostgreSQL store keeps open at most (`postgres.pool_size`).
    public var postgresPoolSize = 8

    public init(file: String, store: StoreLocation = .sqlite(path: "./turnstile.db"), listen: String = "127.0.0.1:8080",
                maxBodyBytes: Int = TurnstileConfig.defaultMaxBodyBytes, providers: [ProviderConfig], handlers: [HandlerConfig] = []) {
        self.file = file
        self.store = store
        self.listen = listen
        self.maxBodyBytes = maxBodyBytes
        self.providers = providers
        self.handlers = handlers
    }

    public func provider(named name: String) -> ProviderConfig? {
        providers.first { $0.name == name }
    }

    public static let defaultMaxBodyBytes = 5 * 1024 * 1024
}

/// Limits and timeouts of `serve`'s HTTP receiver.
public struct HTTPSettings: Sendable, Hashable {
    public var maxHeaderBytes = 16 * 1024
    public var maxHeaderCount = 100
    public var maxConnections = 10_000
    public var headerTimeoutSeconds = 10.0
    public var bodyTimeoutSeconds = 30.0
    public var idleTimeoutSeconds = 60.0
    /// Bytes of request bodies that all connections together may hold in memory.
    public var bodyBudgetBytes = 256 << 20

    public init() {}
}

/// How dispatch workers behave.
public struct DispatchSettings: Sendable, Hashable {
    /// Handlers running at once.
    public var concurrency = 4
    /// Attempts before an event is dead-lettered.
    public var maxAttempts = 5
    /// The first retry waits about this long; each later one twice as long (with jitter), up to the maximum.
    public var backoffBaseSeconds = 1.0
    public var backoffMaxSeconds = 300.0
    /// How long a worker owns a leased event; a crashed worker's events are delivered again after it.
    public var leaseSeconds = 30.0
    /// Events leased at once.
    public var batchSize = 128
    /// How long shutdown waits for in-flight handlers.
    public var shutdownGraceSeconds = 10.0

    public init() {}
}

/// Where events, nonces and the archive are kept.
public enum StoreLocation: Sendable, Hashable, CustomStringConvertible {
    case sqlite(path: String)
    case postgres(url: String)

    public var description: String {
        switch self {
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres: "postgres://<redacted>"
        }
    }
}

/// One provider entry: its route name, its scheme, its secrets and time windows.
public struct ProviderConfig: Sendable {
    /// The route name (`POST /webhooks/<name>`) and the first part of event types.
    public var name: String
    /// The verifier: `synthflow`, `autify`, `sync`, `standard-webhooks`, `stripe`, `github` or `hmac`.
    public var scheme: String
    /// Secrets, tried in order.
    public var secrets: [Secret]
    public var toleranceSeconds: Int?
    public var maxFutureSkewSeconds: Int?
    public var maxAgeSeconds: Int?
    public var retentionSeconds: Int?
    /// The generic scheme's description (only with scheme `hmac`).
    public var hmac: JSONObject?
    /// Synthflow inbound calls: the answer sent when no responding handler answers in time.
    public var inboundDefaultAnswer: JSONValue?
    /// Synthflow inbound calls: how long a responding handler may take (default 3 s).
    public var inboundAnswerDeadlineSeconds: Double?
    public init(name: String, scheme: String, secrets: [Secret], toleranceSeconds: Int? = nil,
                maxFutureSkewSeconds: Int? = nil, maxAgeSeconds: Int? = nil, retentionSeconds: Int? = nil,
                hmac: JSONObject? = nil, inboundDefaultAnswer: JSONValue? = nil) {
        self.name = name
        self.scheme = scheme
        self.secrets = secrets
        self.toleranceSeconds = toleranceSeconds
        self.maxFutureSkewSeconds = maxFutureSkewSeconds
        self.maxAgeSeconds = maxAgeSeconds
        self.retentionSeconds = retentionSeconds
        self.hmac = hmac
        self.inboundDefaultAnswer = inboundDefaultAnswer
    }

    /// The key path of this entry in the file, for error messages (`providers.sync`).
    public var fieldPath: String { "providers.\(name)" }

    public static let defaultRetentionSeconds = 2_592_000
}

/// A resolved secret. Knows where it came from; `description` never shows the value.
public struct Secret: Sendable, Hashable, CustomStringConvertible {
    /// `env:NAME` or `file:PATH`, as written in the config.
    public let reference: String
    /// The secret's bytes (the string as UTF-8).
    public let value: [UInt8]

    public init(reference: String, value: [UInt8]) {
        self.reference = reference
        self.value = value
    }

    /// The value as text.
    public var text: String { String(decoding: value, as: UTF8.self) }

    public var description: String { "Secret(\(reference))" }
}

extension TurnstileConfig {
    /// True when a `postgres://` URL spells a password: in its user part (`user:password@host`) or as a query
    /// parameter (`?password=…`), whose name is percent-decoded first as libpq does (`?pass%77ord=…`).
    public static func urlHasPassword(_ url: String) -> Bool {
        guard let scheme = url.range(of: "://") else { return false }
        let rest = url[scheme.upperBound...]
        if let query = rest.firstIndex(of: "?") {
            for parameter in rest[rest.index(after: query)...].split(whereSeparator: { $0 == "&" }) {
                let name = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                let decoded = String(name).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(name)
                if decoded.trimmingCharacters(in: .whitespaces).lowercased() == "password" { return true }
            }
        }
        guard let at = rest.firstIndex(of: "@") else { return false }
        let authority = rest[..<at]
        return !authority.contains("/") && !authority.contains("?") && authority.contains(":")
    }


    /// Loads, schema-checks and resolves the config at `path`.
    ///
    /// - Parameters:
    ///   - environment: variables for `env:` references (the process environment by default);
    ///     an `env_file` named in the config fills in names the environment lacks.
    /// - Throws: ``InputError`` naming the file, line or key path and what is wrong. Secret values never
    ///   appear in it.
    public static func load(
        path: String, environment: [String: String]? = nil, schemas: SchemaCatalog? = nil
    ) throws(InputError) -> TurnstileConfig {
        let bytes = try FileInput.read(path, limit: 1 << 20, regularOnly: true)
        let document: JSONValue
        do { document = try JSONParser.parse(bytes, repeatedKeys: .refuse) } catch {
            throw InputError(.invalidJSON, "not valid JSON: \(error.message)", file: path,
                             line: FileInput.lineNumber(ofOffset: error.offset, in: bytes))
        }
        let catalog: SchemaCatalog
        if let schemas { catalog = schemas } else { catalog = try SchemaCatalog.shared() }
        try catalog.schema("config").validate(document, file: path)
        var reader = ConfigReader(file: path, environment: environment ?? ProcessInfo.processInfo.environment)
        return try reader.read(document)
    }
}

/// Turns a schema-valid config document into ``TurnstileConfig``, resolving secrets.
struct ConfigReader {
    let file: String
    var environment: [String: String]
    let folder: URL

    init(file: String, environment: [String: String]) {
        self.file = file
        self.environment = environment
        self.folder = URL(fileURLWithPath: file).deletingLastPathComponent()
    }

    func fail(_ code: InputError.Code, _ message: String, at field: String) -> InputError {
        InputError(code, message, file: file, field: field)
    }

    mutating func read(_ document: JSONValue) throws(InputError) -> TurnstileConfig {
        if let envFile = document["env_file"]?.stringValue {
            let path = resolvePath(envFile)
            for (name, value) in try DotEnv.read(path) where environment[name] == nil {
                environment[name] = value
            }
        }
        let store = try readStore(document["store"]?.stringValue ?? "sqlite:./turnstile.db")
        var providers: [ProviderConfig] = []
        for (name, entry) in document["providers"]?.objectValue ?? JSONObject() {
            providers.append(try readProvider(name: name, entry))
        }
        var handlers: [HandlerConfig] = []
        var handlerNames = Set<String>()
        for (index, entry) in (document["handlers"]?.arrayValue ?? []).enumerated() {
            let handler = try readHandler(entry, at: "handlers[\(index)]")
            guard handlerNames.insert(handler.name).inserted else {
                throw fail(.invalidValue, "handler name \"\(handler.name)\" is used twice", at: "handlers[\(index)].name")
            }
            handlers.append(handler)
        }
        var config = TurnstileConfig(
            file: file, store: store, listen: document["listen"]?.stringValue ?? "127.0.0.1:8080",
            maxBodyBytes: Int(document["max_body_bytes"]?.numberValue?.int64Value ?? Int64(TurnstileConfig.defaultMaxBodyBytes)),
            providers: providers, handlers: handlers)
        if let dispatch = document["dispatch"] {
            func number(_ key: String) -> Double? { dispatch[key]?.numberValue?.doubleValue }
            config.dispatch.concurrency = number("concurrency").map { Int($0) } ?? config.dispatch.concurrency
            config.dispatch.maxAttempts = number("max_attempts").map { Int($0) } ?? config.dispatch.maxAttempts
            config.dispatch.backoffBaseSeconds = number("backoff_base_seconds") ?? config.dispatch.backoffBaseSeconds
            config.dispatch.backoffMaxSeconds = number("backoff_max_seconds") ?? config.dispatch.backoffMaxSeconds
            config.dispatch.leaseSeconds = number("lease_seconds") ?? config.dispatch.leaseSeconds
            config.dispatch.batchSize = number("batch_size").map { Int($0) } ?? config.dispatch.batchSize
            config.dispatch.shutdownGraceSeconds = number("shutdown_grace_seconds") ?? config.dispatch.shutdownGraceSeconds
            if config.dispatch.backoffMaxSeconds < config.dispatch.backoffBaseSeconds {
                throw fail(.invalidValue, "backoff_max_seconds is below backoff_base_seconds", at: "dispatch.backoff_max_seconds")
            }
        }
        if let http = document["http"] {
            func number(_ key: String) -> Double? { http[key]?.numberValue?.doubleValue }
            config.http.maxHeaderBytes = number("max_header_bytes").map { Int($0) } ?? config.http.maxHeaderBytes
            config.http.maxHeaderCount = number("max_header_count").map { Int($0) } ?? config.http.maxHeaderCount
            config.http.maxConnections = number("max_connections").map { Int($0) } ?? config.http.maxConnections
            config.http.headerTimeoutSeconds = number("header_timeout_seconds") ?? config.http.headerTimeoutSeconds
            config.http.bodyTimeoutSeconds = number("body_timeout_seconds") ?? config.http.bodyTimeoutSeconds
            config.http.idleTimeoutSeconds = number("idle_timeout_seconds") ?? config.http.idleTimeoutSeconds
            config.http.bodyBudgetBytes = number("body_budget_bytes").map { Int($0) } ?? config.http.bodyBudgetBytes
        }
        if let bound = document["queue_bound"]?.numberValue?.int64Value { config.queueBound = Int(bound) }
        if let seconds = document["archive"]?["retention_seconds"]?.numberValue?.int64Value {
            // Queued events and dead letters keep their body in the archive, and a delivery whose nonces are
            // still kept may be replayed from it: the archive must outlive every provider's nonce retention.
            let longest = providers.map { $0.retentionSeconds ?? ProviderConfig.defaultRetentionSeconds }.max() ?? 0
            guard seconds >= Int64(longest) else {
                let provider = providers.first { ($0.retentionSeconds ?? ProviderConfig.defaultRetentionSeconds) == longest }?.name ?? "-"
                throw fail(.invalidValue, "archive retention of \(seconds) s is shorter than the nonce retention of \(longest) s of provider \(provider)",
                           at: "archive.retention_seconds")
            }
            config.archiveRetentionSeconds = Int(seconds)
        }
        if let postgres = document["postgres"] {
            if let reference = postgres["password"]?.stringValue {
                config.postgresPassword = try readSecret(reference, at: "postgres.password")
            }
            config.postgresPoolSize = Int(postgres["pool_size"]?.numberValue?.int64Value ?? 8)
        }
        if case .postgres(let url) = store, TurnstileConfig.urlHasPassword(url) {
            throw fail(.invalidValue, "the store URL carries a password; give it as postgres.password (env:NAME or file:PATH) instead",
                       at: "store")
        }
        if let sqlite = document["sqlite"] {
            config.sqliteSynchronous = sqlite["synchronous"]?.stringValue ?? config.sqliteSynchronous
            config.sqliteBusyTimeoutMilliseconds = Int(sqlite["busy_timeout_ms"]?.numberValue?.int64Value ?? 5_000)
        }
        return config
    }

    func readHandler(_ entry: JSONValue, at path: String) throws(InputError) -> HandlerConfig {
        let name = entry["name"]?.stringValue ?? ""
        guard name.utf8.allSatisfy({ byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
        }) else {
            throw fail(.invalidValue, "a handler name may use only letters, digits, '-', '_' and '.' (it names metrics and dead letters)", at: "\(path).name")
        }
        let type = entry["type"]?.stringValue ?? ""
        func needs(_ key: String, _ what: String) throws(InputError) -> JSONValue {
            guard let value = entry[key] else { throw fail(.invalidValue, "a\(type == "exec" ? "n" : "") \(type) handler needs \(what)", at: "\(path).\(key)") }
            return value
        }
        let allowed: Set<String> = switch type {
        case "jsonl": ["path"]
        case "http": ["url", "secret", "timeout_seconds"]
        case "exec": ["command", "timeout_seconds"]
        default: []
        }
        for key in ["path", "url", "secret", "command", "timeout_seconds"] where entry[key] != nil && !allowed.contains(key) {
            throw fail(.invalidValue, "\(key) does not apply to a handler of type \(type)", at: "\(path).\(key)")
        }
        let timeout = entry["timeout_seconds"]?.numberValue?.doubleValue ?? (type == "http" ? 10 : 30)
        let kind: HandlerConfig.Kind
        switch type {
        case "jsonl":
            kind = .jsonl(path: resolvePath(try needs("path", "a path").stringValue ?? ""))
        case "http":
            let url = try needs("url", "a url").stringValue ?? ""
            guard url.hasPrefix("http://") else {
                throw fail(.invalidValue, "url must be an http:// URL (plain HTTP to an internal service; https is not supported yet)", at: "\(path).url")
            }
            let secret = try readSecret(try needs("secret", "a secret (env:NAME or file:PATH holding a whsec_ secret)").stringValue ?? "", at: "\(path).secret")
            kind = .http(url: url, secret: secret, timeoutSeconds: timeout)
        case "exec":
            let command = (try needs("command", "a command (an argv list)").arrayValue ?? []).compactMap(\.stringValue)
            guard let program = command.first, program.hasPrefix("/") || program.contains("/") else {
                throw fail(.invalidValue, "command[0] must be a path to the program (no shell, no PATH lookup)", at: "\(path).command[0]")
            }
            kind = .exec(command: [resolvePath(program)] + command.dropFirst(), timeoutSeconds: timeout)
        default:
            kind = .swift
        }
        let events = entry["events"]?.arrayValue?.compactMap(\.stringValue)
        if events == nil && type != "swift" { throw fail(.invalidValue, "a \(type) handler needs events", at: "\(path).events") }
        let filter: PayloadFilter
        do { filter = try PayloadFilter.read(entry["filter"], field: "\(path).filter") } catch { throw error.located(file: file) }
        var limits = HandlerLimits()
        limits.concurrency = entry["concurrency"]?.numberValue?.int64Value.map { Int($0) }
        if let rate = entry["rate_limit"] {
            limits.ratePerSecond = rate["per_second"]?.numberValue?.doubleValue
            limits.burst = rate["burst"]?.numberValue?.int64Value.map { Int($0) }
        }
        if let breaker = entry["breaker"] {
            limits.breakerFailures = breaker["failures"]?.numberValue?.int64Value.map { Int($0) }
            limits.breakerCooldownSeconds = breaker["cooldown_seconds"]?.numberValue?.doubleValue ?? limits.breakerCooldownSeconds
        }
        return HandlerConfig(name: name, kind: kind, events: events, filter: filter, limits: limits)
    }

    /// A relative path is relative to the config file's folder.
    func resolvePath(_ path: String) -> String {
        path.hasPrefix("/") ? path : folder.appendingPathComponent(path).standardizedFileURL.path
    }

    func readStore(_ text: String) throws(InputError) -> StoreLocation {
        if text.hasPrefix("sqlite:") {
            let path = String(text.dropFirst("sqlite:".count))
            guard !path.isEmpty else { throw fail(.invalidValue, "sqlite: needs a file path", at: "store") }
            // The contract: a relative store path is relative to the working directory.
            return .sqlite(path: path)
        }
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") { return .postgres(url: text) }
        throw fail(.invalidValue, "store must be sqlite:PATH or a postgres:// URL", at: "store")
    }

    func readProvider(name: String, _ entry: JSONValue) throws(InputError) -> ProviderConfig {
        let path = "providers.\(name)"
        guard !name.isEmpty, name.utf8.allSatisfy({ byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
        }) else {
            throw fail(.invalidValue, "a provider name may use only letters, digits, '-' and '_' (it is a URL path segment)", at: path)
        }
        let scheme = entry["scheme"]?.stringValue ?? ""
        var secrets: [Secret] = []
        for (index, reference) in (entry["secrets"]?.arrayValue ?? []).enumerated() {
            secrets.append(try readSecret(reference.stringValue ?? "", at: "\(path).secrets[\(index)]"))
        }
        func seconds(_ key: String) -> Int? { entry[key]?.numberValue?.int64Value.map { Int($0) } }
        let hmac = entry["hmac"]?.objectValue
        if scheme == "hmac" && hmac == nil {
            throw fail(.invalidValue, "scheme hmac needs an \"hmac\" object describing the signature", at: "\(path).hmac")
        }
        if scheme != "hmac" && hmac != nil {
            throw fail(.invalidValue, "\"hmac\" is only for scheme hmac (this provider uses \(scheme))", at: "\(path).hmac")
        }
        let inboundDefault = entry["inbound_default_answer"]
        for key in ["inbound_default_answer", "inbound_answer_deadline_ms"] where entry[key] != nil && scheme != "synthflow" {
            throw fail(.invalidValue, "\(key) is only for scheme synthflow", at: "\(path).\(key)")
        }
        if let answer = inboundDefault, answer["call_inbound"]?.objectValue == nil {
            throw fail(.invalidValue, "inbound_default_answer must be {\"call_inbound\":{…}}", at: "\(path).inbound_default_answer")
        }
        var provider = ProviderConfig(
            name: name, scheme: scheme, secrets: secrets, toleranceSeconds: seconds("tolerance_seconds"),
            maxFutureSkewSeconds: seconds("max_future_skew_seconds"), maxAgeSeconds: seconds("max_age_seconds"),
            retentionSeconds: seconds("retention_seconds"), hmac: hmac, inboundDefaultAnswer: inboundDefault)
        provider.inboundAnswerDeadlineSeconds = entry["inbound_answer_deadline_ms"]?.numberValue.map { $0.doubleValue / 1000 }
        return provider
    }

    func readSecret(_ reference: String, at field: String) throws(InputError) -> Secret {
        if reference.hasPrefix("env:") {
            let name = String(reference.dropFirst(4))
            guard DotEnv.isValidName(name) else {
                throw fail(.invalidValue, "\"env:\" must be followed by a variable name", at: field)
            }
            guard let value = environment[name] else {
                throw fail(.missingSecret, "environment variable \(name) is not set", at: field)
            }
            guard !value.isEmpty else { throw fail(.invalidSecret, "environment variable \(name) is empty", at: field) }
            return Secret(reference: reference, value: Array(value.utf8))
        }
        if reference.hasPrefix("file:") {
            let given = String(reference.dropFirst(5))
            guard !given.isEmpty else { throw fail(.invalidValue, "\"file:\" must be followed by a path", at: field) }
            let path = resolvePath(given)
            var bytes: [UInt8]
            do { bytes = try FileInput.read(path, limit: 64 * 1024, regularOnly: true) } catch {
                throw fail(.missingSecret, "secret file \(path) cannot be read: \(error.message)", at: field)
            }
            if bytes.starts(with: DotEnv.byteOrderMark) {
                throw fail(.invalidSecret, "secret file \(path) starts with a UTF-8 byte order mark, which would become part of the secret; save it without one", at: field)
            }
            if bytes.last == 0x0a {
                bytes.removeLast()
                if bytes.last == 0x0d { bytes.removeLast() }
            }
            if bytes.contains(0x0d) || bytes.contains(0x0a) {
                throw fail(.invalidSecret, "secret file \(path) holds more than one line (or a carriage return); a secret is one line", at: field)
            }
            guard !bytes.isEmpty else { throw fail(.invalidSecret, "secret file \(path) is empty", at: field) }
            return Secret(reference: reference, value: bytes)
        }
        throw fail(.invalidValue, "a secret must be env:NAME or file:PATH (secrets are never written in the config itself)", at: field)
    }
}

/// `KEY=VALUE` files, as `env_file` names them: `#` comments, blank lines, optional `export `, and
/// values optionally in single or double quotes.
public enum DotEnv {
    static let byteOrderMark: [UInt8] = [0xef, 0xbb, 0xbf]

    /// The `NAME=VALUE` lines of an env file. Lines may end in LF or CRLF (the CR is never part of a value);
    /// a UTF-8 byte order mark at the start is refused, since it would end up in the first name or value.
    public static func read(_ path: String) throws(InputError) -> [(String, String)] {
        let bytes = try FileInput.read(path, limit: 1 << 20, regularOnly: true)
        if bytes.starts(with: byteOrderMark) {
            throw InputError(.invalidValue, "starts with a UTF-8 byte order mark; save it without one", file: path, line: 1)
        }
        var pairs: [(String, String)] = []
        // Split on LF bytes: as a String, CRLF is one character and would not split on "\n".
        for (index, rawBytes) in bytes.split(separator: 0x0a, omittingEmptySubsequences: false).enumerated() {
            var lineBytes = rawBytes
            if lineBytes.last == 0x0d { lineBytes = lineBytes.dropLast() }
            var line = String(decoding: lineBytes, as: UTF8.self).trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst(7)) }
            guard let equals = line.firstIndex(of: "=") else {
                throw InputError(.invalidValue, "expected NAME=VALUE", file: path, line: index + 1)
            }
            let name = String(line[..<equals])
            guard isValidName(name) else {
                throw InputError(.invalidValue, "\"\(name)\" is not a variable name", file: path, line: index + 1)
            }
            var value = String(line[line.index(after: equals)...])
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            }
            guard !value.utf8.contains(0x0d) else {
                throw InputError(.invalidValue, "the value of \(name) holds a carriage return", file: path, line: index + 1)
            }
            pairs.append((name, value))
        }
        return pairs
    }

    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(first >= 0x30 && first <= 0x39) else { return false }
        return name.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x5f }
    }
}

/// Reading input files with a size limit and errors that name the file.
public enum FileInput {
    /// The whole file, refusing one larger than `limit` bytes.
    ///
    /// - Parameter regularOnly: refuse anything but a regular file (a FIFO would block start-up until someone
    ///   writes to it): for config, `env_file` and secret files.
    public static func read(_ path: String, limit: Int, regularOnly: Bool = false) throws(InputError) -> [UInt8] {
        var status = stat()
        if stat(path, &status) == 0 {
            let kind = status.st_mode & S_IFMT
            if kind == S_IFDIR { throw InputError(.unreadableFile, "is a folder, not a file", file: path) }
            if regularOnly, kind != S_IFREG {
                throw InputError(.unreadableFile, "is not a regular file (a FIFO, socket or device), so it is not read", file: path)
            }
        }
        guard let handle = FileHandle(forReadingAtPath: path) else {
            let exists = FileManager.default.fileExists(atPath: path)
            throw InputError(.unreadableFile, exists ? "file cannot be opened" : "no such file", file: path)
        }
        defer { try? handle.close() }
        let data: Data?
        do { data = try handle.read(upToCount: limit + 1) } catch {
            throw InputError(.unreadableFile, "read failed: \(error.localizedDescription)", file: path)
        }
        let bytes = [UInt8](data ?? Data())
        guard bytes.count <= limit else {
            throw InputError(.invalidValue, "file is larger than \(limit) bytes", file: path)
        }
        return bytes
    }

    /// The 1-based line on which byte `offset` of `bytes` lies.
    public static func lineNumber(ofOffset offset: Int, in bytes: [UInt8]) -> Int {
        1 + bytes.prefix(max(0, min(offset, bytes.count))).reduce(0) { $0 + ($1 == 0x0a ? 1 : 0) }
    }
}
