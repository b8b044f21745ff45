#if canImport(Glibc)
import Glibc
#endif
import TurnstileSync
public import TurnstileCore

/// The built-in `jsonl` handler: appends one JSON line per dispatched event to a file, and fsyncs in
/// ``commit()``, which the dispatcher calls before it marks the events done. Lines wait in memory until
/// then (or until a megabyte has gathered), so a batch costs one write and one fsync.
///
/// It never reports an event done whose line is not durable, however many processes append to one file: each
/// append (the write and its fsync) holds an exclusive `flock` on the file, and so does the repair of a torn
/// last line at open, so a cut-back only ever removes this append's own bytes. A write that fails or stops
/// part-way, or a failed fsync, is cut back (`ftruncate`) to where the file ended before the append, so no torn
/// line stays, and only the events whose lines were not made durable fail the commit (``PartialCommitError``). A full or lost sink is ``SinkUnavailable``: its
/// events are retried with back-off for as long as that lasts, never dead-lettered for it.
///
/// Each line: `{"event_id":…,"provider":…,"event_type":…,"event_key":…,"received_at":…,"attempt":…,
/// "reprocess":…,"handler":…,"payload":<the body as JSON, or null>,"body":<the body as text when it is not JSON>}`.
public final class JSONLHandler: EventHandler {
    public typealias Event = GenericEvent

    public let path: String
    private let file: Locked<SinkFile>
    static let flushThreshold = 1 << 20

    /// The file and what is known of it, used under the mutex only.
    private struct SinkFile {
        let descriptor: Int32
        /// Lines handled and not yet written, and the events they belong to.
        var pending: [UInt8] = []
        var pendingEvents: [Int64] = []
        /// Events whose lines are durable since the last commit.
        var writtenEvents: [Int64] = []
        /// Events whose lines could not be written since the last commit, and why.
        var failedEvents: [Int64] = []
        var failure: HandlerIOError? = nil
    }

    /// Opens `path` for appending, creating it (mode 0600) if needed. A torn last line (a process killed during
    /// its write: no event of it was marked done, so they all run again) is cut away first, under the file's
    /// lock, so that the next line does not run on from it.
    /// - Throws: ``InputError`` naming the file when it cannot be opened.
    public init(path: String) throws(InputError) {
        let fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw InputError(.unreadableFile, "cannot open for appending: \(String(cString: strerror(errno)))", file: path)
        }
        Self.withFileLock(fd) {
            let length = Self.lengthOfWholeLines(fd)
            if length < lseek(fd, 0, SEEK_END) { _ = ftruncate(fd, length) }
        }
        self.path = path
        self.file = Locked(SinkFile(descriptor: fd))
    }

    /// Runs `body` holding an exclusive `flock` on `fd` (shared by every process that appends to the file).
    private static func withFileLock<R>(_ fd: Int32, _ body: () -> R) -> R {
        while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
        defer { _ = flock(fd, LOCK_UN) }
        return body()
    }

    /// The length of the file up to and including its last newline (0 when it has none), read backwards in 4 KiB steps.
    private static func lengthOfWholeLines(_ fd: Int32) -> off_t {
        var end = lseek(fd, 0, SEEK_END)
        var chunk = [UInt8](repeating: 0, count: 4096)
        while end > 0 {
            let start = max(0, end - off_t(chunk.count))
            let count = Int(end - start)
            let read = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, count, start) }
            guard read == count else { return lseek(fd, 0, SEEK_END) }  // Unreadable: leave the file as it is.
            if let newline = chunk[..<count].lastIndex(of: 0x0a) { return start + off_t(newline) + 1 }
            end = start
        }
        return 0
    }

    deinit {
        file.withLock { file in _ = close(file.descriptor) }
    }

    public func handle(_ event: GenericEvent, context: DispatchContext) async throws {
        var line = EventEnvelope.json(event, context: context)
        JSONWriter.escapeLineSeparators(&line)
        line.append(0x0a)
        file.withLock { file in
            file.pending += line
            file.pendingEvents.append(context.eventID)
            if file.pending.count >= Self.flushThreshold { flush(&file) }
        }
    }

    /// Writes the pending lines and makes every line so far durable.
    /// - Throws: ``PartialCommitError`` naming the events whose lines are not durable; the others are.
    public func commit() async throws {
        try file.withLock { file throws(PartialCommitError) in
            flush(&file)
            file.writtenEvents = []
            guard let failure = file.failure else { return }
            let failed = Set(file.failedEvents)
            file.failedEvents = []
            file.failure = nil
            throw PartialCommitError(failedEventIDs: failed, underlying: failure)
        }
    }

    /// Appends the pending lines in one write and fsyncs them, under the file's lock. On failure, a write that
    /// stops part-way, or a failed fsync, the file is cut back to its length before (no other process wrote
    /// since: it holds the lock too), and the lines' events are recorded as failed for ``commit()``.
    private func flush(_ file: inout SinkFile) {
        guard !file.pending.isEmpty else { return }
        defer {
            file.pending.removeAll(keepingCapacity: file.pending.capacity <= Self.flushThreshold * 2)
            file.pendingEvents.removeAll(keepingCapacity: true)
        }
        let fd = file.descriptor
        let pending = file.pending
        let outcome = Self.withFileLock(fd) { () -> HandlerIOError? in
            let before = lseek(fd, 0, SEEK_END)
            var failure: HandlerIOError? = nil
            do throws(HandlerIOError) { try Self.writeAll(fd, pending, path: path) } catch { failure = error }
            if failure == nil, fsync(fd) != 0 { failure = HandlerIOError(path: path, operation: "fsync", code: errno) }
            if failure != nil, before >= 0 { _ = ftruncate(fd, before) }
            return failure
        }
        if let outcome {
            file.failedEvents += file.pendingEvents
            file.failure = file.failure ?? outcome
        } else {
            file.writtenEvents += file.pendingEvents
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(HandlerIOError) {
        let failure = bytes.withUnsafeBytes { raw -> Int32? in
            var offset = 0
            while offset < raw.count {
                let written = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                if written == 0 { return EIO }
                offset += written
            }
            return nil
        }
        if let failure { throw HandlerIOError(path: path, operation: "write", code: failure) }
    }
}

/// A handler's file operation failed (a full disk, a removed folder): its events are retried, for as long
/// as the sink is unavailable, never dead-lettered for it.
public struct HandlerIOError: Error, CustomStringConvertible, SinkUnavailable {
    public let path: String
    public let operation: String
    public let code: Int32

    public init(path: String, operation: String, code: Int32) {
        self.path = path
        self.operation = operation
        self.code = code
    }

    public var description: String { "\(operation) \(path): \(String(cString: strerror(code)))" }
}
