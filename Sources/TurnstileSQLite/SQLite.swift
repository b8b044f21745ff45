#if canImport(Glibc)
import Glibc
#endif
internal import CSQLite

/// A failed SQLite call: its result code, extended code and message. Bound values never appear here.
struct SQLiteError: Error, CustomStringConvertible, Sendable {
    let code: Int32
    let extendedCode: Int32
    let message: String
    let sql: String?
    /// The store's schema is newer than this code (no SQLite code says so).
    var isSchemaTooNew = false

    var description: String {
        // The statement is named by its start only: a migration is kilobytes of SQL, not a diagnosis.
        "SQLite error \(extendedCode) (\(String(cString: sqlite3_errstr(extendedCode)))): \(message)"
            + (sql.map { " in `\($0.count > 60 ? $0.prefix(60) + "…" : $0)`" } ?? "")
    }

    /// The disk (or a file size limit) has no room for the write.
    /// (`SQLITE_IOERR_WRITE` and `SQLITE_IOERR_FSYNC` are macros Swift does not import: 10 | 3 << 8, 10 | 4 << 8.)
    var isFull: Bool { code == SQLITE_FULL || extendedCode == 778 || extendedCode == 1034 }

    /// Busy, locked, full, I/O and the like: the store is unavailable right now, not broken.
    var isTransient: Bool {
        [SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL, SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_READONLY, SQLITE_PROTOCOL].contains(code)
    }
}

/// A value bound to a statement parameter.
enum SQLiteValue {
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])
    case null
}

/// One SQLite connection, owned by exactly one serialising owner (``SQLiteEventStore``'s mutex).
/// Closes in `deinit`, and also when opening fails half-way.
final class SQLiteConnection {
    private let handle: OpaquePointer
    private var statements: [String: SQLiteStatement] = [:]

    /// Checks that the linked SQLite is new enough and thread-safe.
    static func checkLibrary() throws(SQLiteError) {
        guard sqlite3_libversion_number() >= 3_035_000 else {
            throw SQLiteError(code: SQLITE_ERROR, extendedCode: SQLITE_ERROR,
                              message: "SQLite \(String(cString: sqlite3_libversion())) is older than 3.35 (RETURNING, ON CONFLICT upserts)", sql: nil)
        }
        guard sqlite3_threadsafe() != 0 else {
            throw SQLiteError(code: SQLITE_ERROR, extendedCode: SQLITE_ERROR, message: "SQLite was built without thread safety", sql: nil)
        }
    }

    static var libraryVersion: String { String(cString: sqlite3_libversion()) }

    init(path: String) throws(SQLiteError) {
        var pointer: OpaquePointer? = nil
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        // The store holds every body received: a new file is made 0600 here (SQLite would make it 0644), and
        // SQLite gives its -wal and -shm files the database file's mode.
        if !path.isEmpty, path != ":memory:", !path.hasPrefix("file:") {
            let created = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if created >= 0 { close(created) }
        }
        let status = sqlite3_open_v2(path, &pointer, flags, nil)
        guard status == SQLITE_OK, let pointer else {
            let message = pointer.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            let extended = pointer.map { sqlite3_extended_errcode($0) } ?? status
            sqlite3_close_v2(pointer)
            throw SQLiteError(code: status, extendedCode: extended, message: "cannot open \(path): \(message)", sql: nil)
        }
        handle = pointer
        sqlite3_extended_result_codes(handle, 1)
    }

    deinit {
        statements.removeAll()
        sqlite3_close_v2(handle)
    }

    private func error(_ status: Int32, sql: String?) -> SQLiteError {
        SQLiteError(code: status & 0xff, extendedCode: sqlite3_extended_errcode(handle),
                    message: String(cString: sqlite3_errmsg(handle)), sql: sql)
    }

    /// How long a write waits for another connection's lock before failing with SQLITE_BUSY: short sleeps
    /// first, then 1 ms ones (see `CSQLite_busy_wait`).
    func setBusyTimeout(milliseconds: Int) {
        _ = CSQLite_set_busy_wait(handle, milliseconds)
    }

    /// Stops checkpointing inside commits; `frames` receives the WAL's length after each commit of this
    /// connection (read it with `CSQLite_wal_frames`). It must stay allocated while the connection is open.
    func watchWAL(frames: UnsafeMutablePointer<Int32>) {
        CSQLite_watch_wal(handle, frames)
    }

    /// Removes the hook ``watchWAL(frames:)`` installed (checkpoints stay off).
    func unwatchWAL() {
        sqlite3_wal_hook(handle, nil, nil)
    }

    /// Runs a `PASSIVE` checkpoint (copies what it can without waiting for readers or writers); returns the
    /// WAL's frames and how many of them are now in the database.
    func checkpointPassively() throws(SQLiteError) -> (walFrames: Int, checkpointed: Int) {
        let statement = try prepare("PRAGMA wal_checkpoint(PASSIVE)")
        defer { statement.reset() }
        guard try statement.step() else { return (0, 0) }
        return (Int(statement.int64(1)), Int(statement.int64(2)))
    }

    /// Runs SQL that returns no rows (several statements allowed).
    func execute(_ sql: String) throws(SQLiteError) {
        let status = sqlite3_exec(handle, sql, nil, nil, nil)
        guard status == SQLITE_OK else { throw error(status, sql: sql) }
    }

    /// The first column of the first row of `sql`, as text.
    func scalarText(_ sql: String) throws(SQLiteError) -> String? {
        let statement = try prepare(sql)
        defer { statement.reset() }
        return try statement.step() ? statement.text(0) : nil
    }

    /// A cached prepared statement for `sql`, reset and with bindings cleared.
    func prepare(_ sql: String) throws(SQLiteError) -> SQLiteStatement {
        if let cached = statements[sql] {
            cached.reset()
            return cached
        }
        var pointer: OpaquePointer? = nil
        let status = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &pointer, nil)
        guard status == SQLITE_OK, let pointer else { throw error(status, sql: sql) }
        let statement = SQLiteStatement(pointer, connection: self, sql: sql)
        statements[sql] = statement
        return statement
    }

    /// Runs `body` in a transaction (IMMEDIATE, so the write lock is taken up front); commits when it
    /// returns and rolls back when it throws, rethrowing the first error.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try prepare("BEGIN IMMEDIATE").run()
        do {
            let value = try body()
            try prepare("COMMIT").run()
            return value
        } catch {
            try? prepare("ROLLBACK").run()
            throw error
        }
    }

    var changes: Int { Int(sqlite3_changes(handle)) }
    var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    fileprivate func failure(_ status: Int32, sql: String) -> SQLiteError { error(status, sql: sql) }
}

@available(*, unavailable)
extension SQLiteConnection: Sendable {}

/// A prepared statement, finalised in `deinit`.
final class SQLiteStatement {
    private let handle: OpaquePointer
    private unowned let connection: SQLiteConnection
    let sql: String

    fileprivate init(_ handle: OpaquePointer, connection: SQLiteConnection, sql: String) {
        self.handle = handle
        self.connection = connection
        self.sql = sql
    }

    deinit { sqlite3_finalize(handle) }

    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    /// Binds `values` to parameters 1, 2, … in order.
    @discardableResult
    func bind(_ values: SQLiteValue...) throws(SQLiteError) -> SQLiteStatement {
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let status: Int32
            switch value {
            case .integer(let number): status = sqlite3_bind_int64(handle, index, number)
            case .real(let number): status = sqlite3_bind_double(handle, index, number)
            case .text(let text): status = sqlite3_bind_text(handle, index, text, -1, CSQLite_transient())
            case .blob(let bytes):
                status = bytes.withUnsafeBytes { raw in
                    sqlite3_bind_blob64(handle, index, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1), UInt64(raw.count), CSQLite_transient())
                }
            case .null: status = sqlite3_bind_null(handle, index)
            }
            guard status == SQLITE_OK else { throw connection.failure(status, sql: sql) }
        }
        return self
    }

    /// Advances; true when a row is available.
    func step() throws(SQLiteError) -> Bool {
        let status = sqlite3_step(handle)
        switch status {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let failure = connection.failure(status, sql: sql)
            sqlite3_reset(handle)
            throw failure
        }
    }

    /// Runs a statement that returns no rows.
    func run() throws(SQLiteError) {
        while try step() {}
        sqlite3_reset(handle)
    }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
    func double(_ column: Int32) -> Double { sqlite3_column_double(handle, column) }
    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }

    func text(_ column: Int32) -> String? {
        guard let pointer = sqlite3_column_text(handle, column) else { return nil }
        let count = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeRawBufferPointer(start: pointer, count: count), as: UTF8.self)
    }

    func blob(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(handle, column))
        guard count > 0, let pointer = sqlite3_column_blob(handle, column) else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: pointer, count: count))
    }
}

@available(*, unavailable)
extension SQLiteStatement: Sendable {}
