import Foundation
import Testing
import TurnstileCore

/// A fresh temporary folder for one test.
func temporaryFolder() throws -> String {
    let path = NSTemporaryDirectory() + "turnstile-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func write(_ text: String, to path: String) throws {
    try text.write(toFile: path, atomically: true, encoding: .utf8)
}

@Suite struct JSONSchemaTests {
    let schema: JSONSchema

    init() throws {
        schema = try JSONSchema(try JSONParser.parse(#"""
            {"type":"object","required":["name"],"additionalProperties":false,
             "properties":{"name":{"type":"string","minLength":1},"size":{"type":"integer","minimum":1},
                           "tags":{"type":"array","items":{"enum":["a","b"]}},"at":{"type":"string","format":"date-time"},
                           "ref":{"$ref":"#/$defs/thing"}},
             "$defs":{"thing":{"type":"object","required":["id"]}}}
            """#), name: "test")
    }

    @Test func acceptsAConformingDocument() throws {
        #expect(schema.violations(of: try JSONParser.parse(#"{"name":"x","size":2,"tags":["a"],"at":"2026-01-15T19:04:06Z","ref":{"id":1}}"#)).isEmpty)
    }

    @Test(arguments: [
        (#"{"size":1}"#, "name", "required"),
        (#"{"name":""}"#, "name", "at least 1"),
        (#"{"name":"x","size":0}"#, "size", "minimum"),
        (#"{"name":"x","size":1.5}"#, "size", "expected integer"),
        (#"{"name":"x","tags":["c"]}"#, "tags[0]", "not one of"),
        (#"{"name":"x","at":"yesterday"}"#, "at", "date-time"),
        (#"{"name":"x","nmae":1}"#, "nmae", "unknown key"),
        (#"{"name":"x","ref":{}}"#, "ref.id", "required"),
    ])
    func namesThePathOfEachViolation(json: String, path: String, message: String) throws {
        let violations = schema.violations(of: try JSONParser.parse(json))
        #expect(violations.contains { $0.path == path && $0.message.contains(message) }, "\(violations)")
    }

    @Test func refusesKeywordsOutsideTheSubset() {
        #expect(throws: InputError.self) { try JSONSchema(try JSONParser.parse(#"{"type":"string","pattern":"^a"}"#), name: "x") }
    }

    /// The schemas compiled into the binary are the files under `schemas/`, byte for byte (regenerate with
    /// `python3 .ci/embed-schemas.py`).
    @Test func embeddedSchemasEqualTheFiles() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("schemas")
        var files: [String: String] = [:]
        let walker = try #require(FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil))
        for case let url as URL in walker where url.lastPathComponent.hasSuffix(".schema.json") {
            var name = String(url.standardizedFileURL.path.dropFirst(root.standardizedFileURL.path.count + 1))
            name.removeLast(".schema.json".count)
            files[name] = try String(contentsOf: url, encoding: .utf8)
        }
        let embedded = Dictionary(uniqueKeysWithValues: SchemaCatalog.embeddedTexts.map { ($0.name, $0.text) })
        #expect(embedded.keys.sorted() == files.keys.sorted())
        for (name, text) in files {
            var expected = text
            while expected.hasSuffix("\n") { expected.removeLast() }
            #expect(embedded[name] == expected, "\(name) differs: run python3 .ci/embed-schemas.py")
        }
        #expect(try SchemaCatalog.embedded().names == (try SchemaCatalog(directory: root.path)).names)
    }

    @Test func shippedSchemasLoad() throws {
        let catalog = try SchemaCatalog.shared()
        #expect(catalog.names.contains("config"))
        #expect(catalog.names.contains("delivery"))
    }
}

@Suite struct ConfigTests {
    private func load(_ json: String, environment: [String: String] = ["SYNC_SECRET": "whsec_abc"], files: [String: String] = [:]) throws -> TurnstileConfig {
        let folder = try temporaryFolder()
        for (name, content) in files { try write(content, to: folder + "/" + name) }
        try write(json, to: folder + "/turnstile.json")
        return try TurnstileConfig.load(path: folder + "/turnstile.json", environment: environment)
    }

    private func loadError(_ json: String, environment: [String: String] = ["SYNC_SECRET": "whsec_abc"], files: [String: String] = [:]) -> InputError? {
        do {
            _ = try load(json, environment: environment, files: files)
            return nil
        } catch let error as InputError {
            return error
        } catch {
            return nil
        }
    }

    @Test func loadsTheContractExampleShape() throws {
        let config = try load(#"""
            {"store":"sqlite:./t.db","listen":"127.0.0.1:8080","max_body_bytes":1024,
             "providers":{"sync":{"scheme":"sync","secrets":["env:SYNC_SECRET","file:old.secret"],"tolerance_seconds":300}},
             "handlers":[{"name":"all","type":"jsonl","path":"./events.jsonl","events":["*"]}]}
            """#, files: ["old.secret": "whsec_old\n"])
        #expect(config.store == .sqlite(path: "./t.db"))
        #expect(config.maxBodyBytes == 1024)
        let sync = try #require(config.provider(named: "sync"))
        #expect(sync.secrets.map(\.text) == ["whsec_abc", "whsec_old"])
        #expect(sync.toleranceSeconds == 300)
        guard case .jsonl(let path)? = config.handlers.first?.kind else { Issue.record("not a jsonl handler"); return }
        #expect(path.hasSuffix("/events.jsonl"))
    }

    @Test func handlerEntriesAreCheckedAtLoadNamingTheKey() throws {
        let providers = #""providers":{"sync":{"scheme":"sync","secrets":["env:SYNC_SECRET"]}}"#
        func error(_ handler: String, environment: [String: String] = ["SYNC_SECRET": "whsec_abc"]) -> InputError? {
            loadError("{\(providers),\"handlers\":[\(handler)]}", environment: environment)
        }
        #expect(error(#"{"name":"crm","type":"http","events":["*"],"secret":"env:SYNC_SECRET"}"#)?.field == "handlers[0].url")
        #expect(error(#"{"name":"crm","type":"http","url":"https://x.example/h","secret":"env:SYNC_SECRET","events":["*"]}"#)?.field == "handlers[0].url")
        #expect(error(#"{"name":"crm","type":"http","url":"http://x/h","events":["*"]}"#)?.field == "handlers[0].secret")
        #expect(error(#"{"name":"crm","type":"http","url":"http://x/h","secret":"env:NOPE","events":["*"]}"#)?.field == "handlers[0].secret")
        #expect(error(#"{"name":"run","type":"exec","command":["notify"],"events":["*"]}"#)?.field == "handlers[0].command[0]")
        #expect(error(#"{"name":"run","type":"exec","command":["/bin/true"],"path":"x","events":["*"]}"#)?.field == "handlers[0].path")
        #expect(error(#"{"name":"run","type":"exec","command":["/bin/true"]}"#)?.field == "handlers[0].events")
        #expect(error(#"{"name":"a b","type":"exec","command":["/bin/true"],"events":["*"]}"#)?.field == "handlers[0].name")
        #expect(error(#"{"name":"run","type":"exec","command":["/bin/true"],"events":["*"],"filter":[{"path":"a.","equals":1}]}"#)?.field
                == "handlers[0].filter[0].path")
        #expect(error(#"{"name":"run","type":"exec","command":["/bin/true"],"events":["*"],"filter":[{"path":"a.","equals":1}]}"#)?.file?
                .hasSuffix("turnstile.json") == true, "a filter error names the file too")
        #expect(error(#"{"name":"run","type":"exec","command":["/bin/true"],"events":["*"],"rate_limit":{"burst":3}}"#)?.field
                == "handlers[0].rate_limit.per_second")
        #expect(error(#"{"name":"run","type":"exec","command":["/bin/true"],"events":["*"],"breaker":{"failures":0}}"#)?.field
                == "handlers[0].breaker.failures")
        let config = try load("{\(providers),\"handlers\":[" + #"""
            {"name":"crm","type":"http","url":"http://127.0.0.1:9000/hooks","secret":"env:CRM","events":["sync.*"],"timeout_seconds":2,
             "concurrency":2,"rate_limit":{"per_second":5,"burst":10},"breaker":{"failures":4,"cooldown_seconds":60},
             "filter":[{"path":"status","in":["FAILED","REJECTED"]}]},
            {"name":"notify-crm","type":"swift","events":["synthflow.*"]}]}
            """#, environment: ["SYNC_SECRET": "whsec_abc", "CRM": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
        #expect(config.handlers.count == 2)
        #expect(config.handlers[0].limits == HandlerLimits(concurrency: 2, ratePerSecond: 5, burst: 10, breakerFailures: 4, breakerCooldownSeconds: 60))
        #expect(config.handlers[0].filter.predicates.count == 1)
        #expect(config.handlers[1].kind == .swift && config.handlers[1].events == ["synthflow.*"])
    }

    @Test func anArchiveRetentionShorterThanANonceRetentionIsRefused() throws {
        let providers = #""providers":{"sync":{"scheme":"sync","secrets":["env:SYNC_SECRET"],"retention_seconds":86400}}"#
        let error = try #require(loadError("{\(providers),\"archive\":{\"retention_seconds\":3600}}"))
        #expect(error.field == "archive.retention_seconds")
        #expect(error.message.contains("86400") && error.message.contains("sync"))
        #expect(try load("{\(providers),\"archive\":{\"retention_seconds\":86400}}").archiveRetentionSeconds == 86400)
        #expect(try load("{\(providers)}").archiveRetentionSeconds == nil)
    }

    @Test func unknownKeysAreErrorsNamingTheirPath() throws {
        let error = try #require(loadError(#"{"providers":{"sync":{"scheme":"sync","secrets":["env:SYNC_SECRET"],"tolerence_seconds":300}}}"#))
        #expect(error.code == .schemaViolation)
        #expect(error.field == "providers.sync.tolerence_seconds")
        #expect(error.description.contains("turnstile.json"))
    }

    @Test func aRepeatedKeyIsAnErrorNamingItsLine() throws {
        let error = try #require(loadError("{\"store\":\"sqlite:a.db\",\n\"store\":\"sqlite:b.db\"}"))
        #expect(error.code == .invalidJSON)
        #expect(error.line == 2)
        #expect(error.message.contains("\"store\" appears more than once"))
    }

    @Test func aFolderGivenAsConfigOrSecretFileIsNamedAsSuch() throws {
        let folder = try temporaryFolder()
        do {
            _ = try TurnstileConfig.load(path: folder, environment: [:])
            Issue.record("a folder loaded as a config")
        } catch {
            #expect(error.message == "is a folder, not a file")
            #expect(!error.description.contains("NSCocoaErrorDomain"))
        }
        try FileManager.default.createDirectory(atPath: folder + "/secret.d", withIntermediateDirectories: true)
        try write(#"{"providers":{"sync":{"scheme":"sync","secrets":["file:secret.d"]}}}"#, to: folder + "/turnstile.json")
        do {
            _ = try TurnstileConfig.load(path: folder + "/turnstile.json", environment: [:])
            Issue.record("a folder loaded as a secret")
        } catch {
            #expect(error.field == "providers.sync.secrets[0]")
            #expect(error.description.contains("folder"), "\(error)")
        }
    }

    @Test func aQueueBoundBeyondAnyIntegerIsRefusedNotIgnored() throws {
        let error = try #require(loadError(#"{"queue_bound":99999999999999999999,"providers":{"sync":{"scheme":"sync","secrets":["env:SYNC_SECRET"]}}}"#))
        #expect(error.field == "queue_bound")
    }

    @Test func missingVariableIsNamedAndValuesNeverShow() throws {
        let error = try #require(loadError(#"{"providers":{"sync":{"scheme":"sync","secrets":["env:NOT_SET_ANYWHERE"]}}}"#))
        #expect(error.code == .missingSecret)
        #expect(error.message.contains("NOT_SET_ANYWHERE"))
        #expect(error.field == "providers.sync.secrets[0]")
    }

    @Test func literalSecretsAreRefused() throws {
        let error = try #require(loadError(#"{"providers":{"sync":{"scheme":"sync","secrets":["whsec_literal_value"]}}}"#))
        #expect(error.field == "providers.sync.secrets[0]")
        #expect(!error.description.contains("whsec_literal_value"))
    }

    @Test func emptySecretFileIsRefused() throws {
        let error = try #require(loadError(#"{"providers":{"sync":{"scheme":"sync","secrets":["file:empty"]}}}"#, files: ["empty": "\n"]))
        #expect(error.code == .invalidSecret)
    }

    @Test func envFileFillsInMissingVariables() throws {
        let config = try load(#"{"env_file":"test.env","providers":{"sync":{"scheme":"sync","secrets":["env:FROM_FILE"]}}}"#,
                              environment: [:], files: ["test.env": "# comment\nexport FROM_FILE=\"whsec_from_file\"\n"])
        #expect(config.providers[0].secrets[0].text == "whsec_from_file")
    }

    @Test func invalidJSONNamesTheLine() throws {
        let error = try #require(loadError("{\n\"providers\": {\n,\n}"))
        #expect(error.code == .invalidJSON)
        #expect(error.line == 3)
    }

    @Test func hmacFieldsOnlyWithSchemeHmac() throws {
        let error = try #require(loadError(#"{"providers":{"sync":{"scheme":"sync","secrets":["env:SYNC_SECRET"],"hmac":{"signature_header":"X"}}}}"#))
        #expect(error.field == "providers.sync.hmac")
    }

    @Test func providerNamesAreURLSafe() throws {
        let error = try #require(loadError(#"{"providers":{"a/b":{"scheme":"sync","secrets":["env:SYNC_SECRET"]}}}"#))
        #expect(error.field == "providers.a/b")
    }

    @Test func secretDescriptionHidesTheValue() {
        #expect(!Secret(reference: "env:X", value: Array("hunter2".utf8)).description.contains("hunter2"))
    }

    private let syncFromEnvFile = #"{"env_file":"secrets.env","providers":{"sync":{"scheme":"sync","secrets":["env:SYNC_FROM_FILE"]}}}"#

    /// An env file with CRLF line ends: the CR is not part of the value (it was, and every delivery failed).
    @Test func envFileLinesMayEndInCRLF() throws {
        let config = try load(syncFromEnvFile, environment: [:], files: ["secrets.env": "OTHER=x\r\nSYNC_FROM_FILE=whsec_crlf\r\n"])
        #expect(config.providers[0].secrets[0].text == "whsec_crlf")
    }

    /// A byte order mark would end up in a name or a secret: refused, saying why.
    @Test func byteOrderMarksAreRefused() throws {
        let env = try #require(loadError(syncFromEnvFile, environment: [:], files: ["secrets.env": "\u{FEFF}SYNC_FROM_FILE=whsec_a\n"]))
        #expect(env.message.contains("byte order mark") && env.file?.hasSuffix("secrets.env") == true)
        let file = try #require(loadError(#"{"providers":{"sync":{"scheme":"sync","secrets":["file:sync.secret"]}}}"#, files: ["sync.secret": "\u{FEFF}whsec_a\n"]))
        #expect(file.message.contains("byte order mark") && file.field == "providers.sync.secrets[0]")
    }

    /// A FIFO as env file (or config, or secret file) would block start-up until someone writes to it.
    @Test func aFIFOIsRefusedWithoutBlocking() throws {
        let folder = try temporaryFolder()
        #expect(mkfifo(folder + "/secrets.env", 0o600) == 0)
        try write(syncFromEnvFile, to: folder + "/turnstile.json")
        #expect(throws: InputError.self) { try TurnstileConfig.load(path: folder + "/turnstile.json", environment: [:]) }
        #expect(mkfifo(folder + "/fifo.json", 0o600) == 0)
        #expect(throws: InputError.self) { try TurnstileConfig.load(path: folder + "/fifo.json", environment: [:]) }
    }

    /// libpq decodes query parameter names: `?pass%77ord=` is a password too.
    @Test func aPercentEncodedPasswordParameterIsStillAPassword() throws {
        for url in ["postgres://u@h/db?pass%77ord=x", "postgres://u@h/db?sslmode=disable&PASSWORD=x", "postgres://u:x@h/db", "postgres://u@h/db?%70assword=x"] {
            #expect(TurnstileConfig.urlHasPassword(url), "\(url)")
        }
        for url in ["postgres://u@h/db", "postgres://u@h/db?sslmode=disable", "postgres://h:5432/db?user=u"] {
            #expect(!TurnstileConfig.urlHasPassword(url), "\(url)")
        }
    }
}

@Suite struct DeliveryTests {
    let schema: JSONSchema

    init() throws { schema = try SchemaCatalog.shared().schema("delivery") }

    @Test func readsBodyAndBase64Bodies() throws {
        let text = try Delivery(json: try JSONParser.parse(#"{"provider":"p","headers":{"A":"1","B":["2","3"]},"body":"{}"}"#), schema: schema)
        #expect(text.body == Array("{}".utf8))
        #expect(text.headers.values("b") == ["2", "3"])
        let binary = try Delivery(json: try JSONParser.parse(#"{"provider":"p","headers":{},"body_base64":"/wA="}"#), schema: schema)
        #expect(binary.body == [0xff, 0x00])
        #expect(binary.jsonValue["body_base64"]?.stringValue == "/wA=")
    }

    @Test(arguments: [
        (#"{"provider":"p","headers":{},"body":"","body_base64":""}"#, "body_base64"),
        (#"{"provider":"p","headers":{}}"#, "body"),
        (#"{"provider":"p","headers":{"Bad Name":"x"},"body":""}"#, "headers"),
        (#"{"provider":"p","headers":{"A":1},"body":""}"#, "headers.A"),
        (#"{"provider":"p","headers":{},"body":"","received_at":"soon"}"#, "received_at"),
        (#"{"provider":"p","headers":{},"body":"","expect":{"outcome":"maybe"}}"#, "expect.outcome"),
        (#"{"provider":"p","headers":{},"body_base64":"!!"}"#, "body_base64"),
    ])
    func invalidDeliveriesNameTheField(json: String, field: String) throws {
        do {
            _ = try Delivery(json: try JSONParser.parse(json), schema: schema)
            Issue.record("expected an error")
        } catch let error as InputError {
            #expect(error.field == field, "\(error)")
        }
    }

    @Test func sourceWalksFoldersInOrderAndNamesBadLines() throws {
        let folder = try temporaryFolder()
        try FileManager.default.createDirectory(atPath: folder + "/b", withIntermediateDirectories: true)
        try write(#"{"provider":"p","headers":{},"body":"1"}"#, to: folder + "/b/one.json")
        try write(#"{"providers":{}}"#, to: folder + "/a-config.json")
        try write("{\"provider\":\"p\",\"headers\":{},\"body\":\"2\"}\n\n{\"provider\":\"p\",\"headers\":{},\"body\":\"3\"}\n", to: folder + "/c.ndjson")
        var seen: [String] = []
        try DeliverySource(paths: [folder], schema: schema).forEach { item in
            switch item {
            case .delivery(let delivery, let source): seen.append(String(decoding: delivery.body, as: UTF8.self) + "@" + source.replacingOccurrences(of: folder, with: ""))
            case .skipped(let file, _): seen.append("skipped " + file.replacingOccurrences(of: folder, with: ""))
            }
        }
        #expect(seen == ["skipped /a-config.json", "1@/b/one.json:1", "2@/c.ndjson:1", "3@/c.ndjson:3"])

        try write("{\"provider\":\"p\",\"headers\":{},\"body\":\"2\"}\n{\"provider\":\"p\",\"headers\":{}}\n", to: folder + "/c.ndjson")
        do {
            try DeliverySource(paths: [folder + "/c.ndjson"], schema: schema).forEach { _ in }
            Issue.record("expected an error")
        } catch let error as InputError {
            #expect(error.line == 2)
            #expect(error.file?.hasSuffix("c.ndjson") == true)
        }
    }
}
