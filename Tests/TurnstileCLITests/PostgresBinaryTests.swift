import Foundation
import Testing
import TurnstileCore
import TurnstileTestSupport
@testable import TurnstilePostgres

/// The real binary on a PostgreSQL store (in a schema of its own), the password from the environment.
@Suite struct PostgresBinaryTests {
    /// A config for a fresh schema of the test server; nil (skipped) when none is configured outside CI.
    func config() throws -> (path: String, folder: String)? {
        guard let server = TestPostgres.configured else {
            #expect(!TestPostgres.isRequired, "PostgreSQL is required here")
            print(TestPostgres.skipNote)
            return nil
        }
        let (url, password) = (server.url, server.password)
        let schema = TestPostgres.schemaName("cli_")
        try PostgresConnection(url: url, password: password).execute("CREATE SCHEMA \(schema)")
        let folder = try temporaryFolder()
        let fixtures = try JSONParser.parse(String(contentsOfFile: repositoryRoot + "/fixtures/turnstile.json", encoding: .utf8))
        let path = folder + "/turnstile.json"
        try """
            {"store":"\(server.url(inSchema: schema))","postgres":{"password":"env:TURNSTILE_TEST_POSTGRES_PASSWORD"},
             "env_file":"\(repositoryRoot)/fixtures/secrets.env","max_body_bytes":65536,"providers":\(fixtures["providers"]!.serialized()),
             "handlers":[{"name":"all-events","type":"jsonl","path":"\(folder)/events.jsonl","events":["*"]}]}
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return (path, folder)
    }

    /// `webhook-id` (the envelope's `delivery`) and `event` name the event, not a store's row: one fixture set
    /// through a SQLite file, through PostgreSQL, and exported from SQLite and reprocessed into a fresh store,
    /// gives every event the same identities (`turnstile_<row id>` collided across stores).
    @Test func identitiesAreTheSameInEveryStoreAndAfterAReprocess() throws {
        guard let (postgresPath, postgresFolder) = try config() else { return }
        func identities(_ folder: String) throws -> [String: String] {
            var found: [String: String] = [:]
            for line in try String(contentsOfFile: folder + "/events.jsonl", encoding: .utf8).split(separator: "\n") {
                let event = try JSONParser.parse(String(line))
                let key = (event["provider"]?.stringValue ?? "") + "|" + (event["event_key"]?.stringValue ?? "")
                found[key] = (event["event"]?.stringValue ?? "") + " " + (event["delivery"]?.stringValue ?? "")
            }
            return found
        }
        func sqliteConfig() throws -> (path: String, folder: String) {
            let folder = try temporaryFolder()
            let fixtures = try JSONParser.parse(String(contentsOfFile: repositoryRoot + "/fixtures/turnstile.json", encoding: .utf8))
            try """
                {"store":"sqlite:\(folder)/t.db","env_file":"\(repositoryRoot)/fixtures/secrets.env","max_body_bytes":65536,
                 "providers":\(fixtures["providers"]!.serialized()),
                 "handlers":[{"name":"all-events","type":"jsonl","path":"\(folder)/events.jsonl","events":["*"]}]}
                """.write(toFile: folder + "/turnstile.json", atomically: true, encoding: .utf8)
            return (folder + "/turnstile.json", folder)
        }
        let sqlite = try sqliteConfig()
        #expect(try run(["replay", "--config", sqlite.path, "fixtures/"]).status == 0)
        #expect(try run(["replay", "--config", postgresPath, "fixtures/"]).status == 0)
        let export = try run(["export", "--config", sqlite.path])
        let exported = sqlite.folder + "/export.ndjson"
        try export.stdout.write(toFile: exported, atomically: true, encoding: .utf8)
        let fresh = try sqliteConfig()
        // A store that has seen other events first, so its row ids differ from the original's.
        #expect(try run(["replay", "--config", fresh.path, "fixtures/deliveries/stripe.ndjson"]).status == 0)
        try FileManager.default.removeItem(atPath: fresh.folder + "/events.jsonl")
        #expect(try run(["replay", "--config", fresh.path, "--reprocess", exported]).status == 0)
        let (original, shared, reprocessed) = (try identities(sqlite.folder), try identities(postgresFolder), try identities(fresh.folder))
        #expect(original.count >= 20)
        #expect(shared == original)
        #expect(reprocessed == original)
        #expect(Set(original.values).count == original.count, "different events, different identities")
    }

    /// Store commands against a database with no store refuse (exit 2) and create nothing, as on SQLite.
    @Test func storeCommandsRefuseAnEmptyDatabase() throws {
        guard let (path, _) = try config() else { return }
        for command in [["dead-letters", "--config", path, "list"], ["export", "--config", path], ["dispatch", "--config", path]] {
            let result = try run(command)
            #expect(result.status == 2, "\(command[0]): \(result.stderr)")
            #expect(result.stderr.contains("no Turnstile store"), "\(result.stderr)")
        }
        // Nothing was created: migrate still finds an empty schema and makes the store.
        #expect(try run(["dead-letters", "--config", path, "list"]).status == 2)
        #expect(try run(["migrate", "--config", path]).status == 0)
        #expect(try run(["dead-letters", "--config", path, "list"]).status == 0)
    }

    /// `migrate` reports the version the database is at (it printed 1 while the database was at 2).
    @Test func migrateReportsTheVersionTheDatabaseIsAt() throws {
        guard let (path, _) = try config() else { return }
        let migrated = try run(["migrate", "--config", path])
        #expect(migrated.status == 0, "\(migrated.stderr)")
        let reported = try JSONParser.parse(migrated.stdout)["schema_version"]?.numberValue?.int64Value
        #expect(reported == Int64(PostgresEventStore.migrations.count))
        #expect((reported ?? 0) >= 2)
    }

    @Test func theMainJobPassesOnPostgreSQL() throws {
        guard let (path, folder) = try config() else { return }
        let replay = try run(["replay", "--config", path, "--check", "fixtures/"])
        #expect(replay.status == 0, "\(replay.stderr.suffix(2_000))")
        #expect(replay.stderr.contains("0 differ from expect"))
        #expect(!replay.stderr.contains("turnstile-test"), "the password never shows")
        // The same fixtures again: everything that was accepted is now a duplicate, across processes.
        let again = try run(["replay", "--config", path, "fixtures/deliveries/sync.ndjson"])
        #expect(again.status == 0)
        #expect(!again.lines.contains { $0.contains(#""outcome":"accepted""#) })
        let lines = try String(contentsOfFile: folder + "/events.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(!lines.isEmpty)
    }

    @Test func aPasswordInTheURLIsRefused() throws {
        let folder = try temporaryFolder()
        let path = folder + "/turnstile.json"
        try #"{"store":"postgres://turnstile:hunter2@127.0.0.1:5432/db","providers":{"github":{"scheme":"github","secrets":["env:GH"]}}}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        let result = try run(["replay", "--config", path, "fixtures/deliveries/github.ndjson"], environment: ["GH": "x"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("postgres.password"))
        #expect(!result.stderr.contains("hunter2"))
    }
}

/// `turnstile migrate`, and stores newer than the binary.
@Suite struct MigrateTests {
    @Test func migrateCreatesTheSchemaAndANewerStoreIsRefusedAsIncompatible() throws {
        let folder = try temporaryFolder()
        let path = folder + "/turnstile.json"
        try #"{"store":"sqlite:\#(folder)/t.db","providers":{"github":{"scheme":"github","secrets":["env:GH"]}}}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        let migrated = try run(["migrate", "--config", path], environment: ["GH": "x"])
        #expect(migrated.status == 0, "\(migrated.stderr)")
        #expect(try JSONParser.parse(migrated.stdout)["schema_version"]?.numberValue?.int64Value == 7)
        #expect(try run(["migrate", "--config", path], environment: ["GH": "x"]).status == 0, "migrating twice is harmless")
        // A newer binary has been here.
        let bump = try run(["\(folder)/t.db", "PRAGMA user_version = 99"], program: "/usr/bin/sqlite3")
        #expect(bump.status == 0)
        let refused = try run(["migrate", "--config", path], environment: ["GH": "x"])
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("store_incompatible"))
        #expect(refused.stderr.contains("schema version 99"))
    }

    @Test func aPostgreSQLStoreNewerThanTheBinaryIsIncompatible() throws {
        guard let server = TestPostgres.configured else {
            #expect(!TestPostgres.isRequired, "PostgreSQL is required here")
            return
        }
        let (url, password) = (server.url, server.password)
        let schema = TestPostgres.schemaName("migrate_")
        let admin = try PostgresConnection(url: url, password: password)
        try admin.execute("CREATE SCHEMA \(schema)")
        let scoped = server.url(inSchema: schema)
        _ = try PostgresEventStore(url: scoped, password: password)
        try admin.execute("UPDATE \(schema).turnstile_schema SET version = 99")
        do {
            _ = try PostgresEventStore(url: scoped, password: password)
            Issue.record("a newer schema was opened")
        } catch {
            #expect(error.code == .incompatible)
            #expect(error.message.contains("schema version 99"))
        }
    }
}
