import Foundation

/// The PostgreSQL server the tests run against, from `TURNSTILE_TEST_POSTGRES_URL` and
/// `TURNSTILE_TEST_POSTGRES_PASSWORD` (`eval "$(bash .ci/postgres.sh start)"` sets them; CI does, and sets
/// `TURNSTILE_REQUIRE_POSTGRES=1` so that a missing server fails the tests instead of skipping them).
public struct TestPostgres: Sendable {
    public let url: String
    public let password: String?

    /// The configured server; nil when there is none (the test then skips, or fails when ``isRequired``).
    public static var configured: TestPostgres? {
        let environment = ProcessInfo.processInfo.environment
        guard let url = environment["TURNSTILE_TEST_POSTGRES_URL"] else { return nil }
        return TestPostgres(url: url, password: environment["TURNSTILE_TEST_POSTGRES_PASSWORD"])
    }

    /// Whether this run must have a server.
    public static var isRequired: Bool { ProcessInfo.processInfo.environment["TURNSTILE_REQUIRE_POSTGRES"] == "1" }

    /// What a skipped test prints.
    public static let skipNote = "skipped on PostgreSQL: set TURNSTILE_TEST_POSTGRES_URL (eval \"$(bash .ci/postgres.sh start)\")"

    /// A new schema name: `prefix` and 16 random hexadecimal digits.
    public static func schemaName(_ prefix: String) -> String {
        prefix + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
    }

    /// The server's URL with its search path set to `schema`.
    public func url(inSchema schema: String) -> String {
        url + (url.contains("?") ? "&" : "?") + "options=-csearch_path%3D\(schema)"
    }
}
