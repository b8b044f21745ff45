internal import CLibPQ
import Foundation

/// A failed PostgreSQL call: its SQLSTATE (when the server sent one) and message. Bound values never appear here.
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    /// Five characters (`40001`, `23505`, `57P01`); nil when the failure is the connection's, not a statement's.
    public let sqlState: String?
    public let message: String

    public var description: String { "PostgreSQL error" + (sqlState.map { " \($0)" } ?? "") + ": \(message)" }

    /// Worth retrying: a lost or refused connection, a serialization failure or deadlock (class 40), the
    /// server shutting down or out of resources (classes 08, 53, 57P0x), a lock not available (55P03).
    public var isTransient: Bool {
        guard let state = sqlState else { return true }
        return state.hasPrefix("08") || state.hasPrefix("40") || state.hasPrefix("53") || state.hasPrefix("57P")
            || state == "55P03" || state == "58000" || state == "58030"
    }
}

/// A value bound to a statement parameter (sent as text, `bytea` as binary).
enum PostgresValue {
    case integer(Int64)
    case real(Double)
    case text(String)
    case bytes([UInt8])
    case null
}

/// One row of a result, read by column index. Keeps its result alive.
struct PostgresRow {
    fileprivate let owner: ResultOwner
    fileprivate let row: Int32
    private var result: OpaquePointer { owner.pointer }

    func isNull(_ column: Int) -> Bool { PQgetisnull(result, row, Int32(column)) == 1 }

    func text(_ column: Int) -> String? {
        guard !isNull(column), let value = PQgetvalue(result, row, Int32(column)) else { return nil }
        return String(cString: value)
    }

    func int64(_ column: Int) -> Int64 { text(column).flatMap { Int64($0) } ?? 0 }
    func double(_ column: Int) -> Double { text(column).flatMap { Double($0) } ?? 0 }

    /// A `bytea` column in the text result format (`\x` then hex).
    func bytes(_ column: Int) -> [UInt8] {
        guard let text = text(column) else { return [] }
        let hex = text.hasPrefix("\\x") ? text.dropFirst(2) : Substring(text)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hex.utf8.count / 2)
        var high: UInt8? = nil
        for byte in hex.utf8 {
            let nibble: UInt8
            switch byte {
            case 0x30...0x39: nibble = byte - 0x30
            case 0x61...0x66: nibble = byte - 0x61 + 10
            case 0x41...0x46: nibble = byte - 0x41 + 10
            default: continue
            }
            if let first = high { bytes.append(first << 4 | nibble); high = nil } else { high = nibble }
        }
        return bytes
    }
}

/// What a statement returned: its rows and how many rows it changed.
struct PostgresResult {
    let rows: [PostgresRow]
    let changed: Int
}

final class ResultOwner {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { PQclear(pointer) }
}

/// One libpq connection, used by one owner at a time (the pool hands it out). Statements are prepared once
/// per connection and reused; every query is parameterised. A lost connection is reset on the next use.
final class PostgresConnection {
    fileprivate let handle: OpaquePointer
    private var prepared: [String: String] = [:]

    /// Connects with `conninfo` (a `postgres://` URL as libpq reads it; TLS and other settings pass
    /// through) and `password`, which never goes through the URL, argv or a log line.
    init(url: String, password: String?) throws(PostgresError) {
        var keys: [String] = ["dbname", "application_name"]
        var values: [String] = [url, "turnstile"]
        if let password { keys.append("password"); values.append(password) }
        let pointer: OpaquePointer? = keys.withCStrings { keyPointers in
            values.withCStrings { valuePointers in
                // expand_dbname = 1: the first dbname is a URL whose parts fill the other keys.
                PQconnectdbParams(keyPointers, valuePointers, 1)
            }
        }
        guard let pointer else { throw PostgresError(sqlState: nil, message: "out of memory") }
        guard PQstatus(pointer) == CONNECTION_OK else {
            let message = Self.clean(String(cString: PQerrorMessage(pointer)))
            PQfinish(pointer)
            throw PostgresError(sqlState: nil, message: "cannot connect: \(message)")
        }
        handle = pointer
        // The server's NOTICEs ("relation already exists, skipping") would go to stderr, between log lines.
        PQsetNoticeProcessor(pointer, { _, _ in }, nil)
        _ = try? execute("SET TIME ZONE 'UTC'")
        // Our transactions are short: one left open (a process paused or killed mid-transaction) is ended by the
        // server after 5 s, so its row and advisory locks do not hold other instances up.
        _ = try? execute("SET idle_in_transaction_session_timeout = '5s'")
        // Plans are made for the tables as they are at each execution: a generic plan cached while a day's new
        // partition was empty would scan it whole once it holds millions of rows (no ANALYZE has run on it yet).
        _ = try? execute("SET plan_cache_mode = force_custom_plan")
    }

    deinit { PQfinish(handle) }

    var isBroken: Bool { PQstatus(handle) != CONNECTION_OK }

    /// Reconnects a broken connection (its prepared statements are gone with it).
    func reset() throws(PostgresError) {
        PQreset(handle)
        prepared = [:]
        guard PQstatus(handle) == CONNECTION_OK else {
            throw PostgresError(sqlState: nil, message: "cannot reconnect: \(Self.clean(String(cString: PQerrorMessage(handle))))")
        }
    }

    /// Runs one or more statements without parameters (schema changes, BEGIN, COMMIT).
    @discardableResult
    func execute(_ sql: String) throws(PostgresError) -> PostgresResult {
        guard let result = PQexec(handle, sql) else { throw connectionError() }
        return try check(result)
    }

    /// Runs `sql` with `parameters` as a prepared statement (prepared on first use on this connection).
    @discardableResult
    func query(_ sql: String, _ parameters: [PostgresValue] = []) throws(PostgresError) -> PostgresResult {
        let name: String
        if let known = prepared[sql] {
            name = known
        } else {
            name = "ts\(prepared.count)"
            guard let result = PQprepare(handle, name, sql, Int32(parameters.count), nil) else { throw connectionError() }
            _ = try check(result)
            prepared[sql] = name
        }
        var storage: [[UInt8]?] = []
        var formats: [Int32] = []
        for parameter in parameters {
            switch parameter {
            case .integer(let value): storage.append(Array(String(value).utf8) + [0]); formats.append(0)
            case .real(let value): storage.append(Array("\(value)".utf8) + [0]); formats.append(0)
            case .text(let value): storage.append(Array(value.utf8) + [0]); formats.append(0)
            case .bytes(let value): storage.append(value); formats.append(1)
            case .null: storage.append(nil); formats.append(0)
            }
        }
        let lengths = storage.map { Int32($0?.count ?? 0) }
        let result: OpaquePointer? = Self.withPointers(storage) { pointers in
            PQexecPrepared(handle, name, Int32(parameters.count), pointers, lengths, formats, 0)
        }
        guard let result else { throw connectionError() }
        return try check(result)
    }

    /// Runs `body` in one transaction (`BEGIN` … `COMMIT`, rolled back when it throws).
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN")
        do {
            let value = try body()
            try execute("COMMIT")
            return value
        } catch {
            _ = try? execute("ROLLBACK")
            throw error
        }
    }

    private func check(_ result: OpaquePointer) throws(PostgresError) -> PostgresResult {
        let owner = ResultOwner(result)
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            let count = PQntuples(result)
            let rows = (0..<count).map { PostgresRow(owner: owner, row: $0) }
            let changed = Int(String(cString: PQcmdTuples(result))) ?? 0
            return PostgresResult(rows: rows, changed: changed)
        default:
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let message = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
                ?? Self.clean(String(cString: PQresultErrorMessage(result)))
            throw PostgresError(sqlState: state, message: message)
        }
    }

    fileprivate func connectionError() -> PostgresError {
        PostgresError(sqlState: nil, message: Self.clean(String(cString: PQerrorMessage(handle))))
    }

    /// libpq's messages end with a newline and may span lines.
    private static func clean(_ message: String) -> String {
        message.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
    }

    private static func withPointers<R>(_ values: [[UInt8]?], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
        var buffers: [UnsafeMutablePointer<CChar>?] = []
        defer { buffers.forEach { $0?.deallocate() } }
        for value in values {
            guard let value else { buffers.append(nil); continue }
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, value.count))
            value.withUnsafeBytes { raw in
                if let base = raw.baseAddress { UnsafeMutableRawPointer(buffer).copyMemory(from: base, byteCount: value.count) }
            }
            buffers.append(buffer)
        }
        return body(buffers.map { $0.map { UnsafePointer($0) } })
    }
}

extension Array where Element == String {
    /// The strings as a NULL-terminated array of C strings, valid inside `body`.
    func withCStrings<R>(_ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
        let copies = map { strdup($0) }
        defer { copies.forEach { free($0) } }
        let pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } } + [nil]
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

extension PostgresConnection {
    /// The connection's socket, to wait on for notifications.
    var socket: Int32 { PQsocket(handle) }

    /// Reads what the server sent and returns the channels of the notifications that arrived.
    func notifications() throws(PostgresError) -> [String] {
        guard PQconsumeInput(handle) == 1 else { throw connectionError() }
        var channels: [String] = []
        while let notice = PQnotifies(handle) {
            channels.append(String(cString: notice.pointee.relname))
            PQfreemem(notice)
        }
        return channels
    }
}
