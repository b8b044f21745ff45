#if canImport(Glibc)
import Glibc
#endif
import TurnstileSync

/// Where a command writes: standard output for results, standard error for diagnostics.
public protocol Console: Sendable {
    func out(_ line: String)
    func err(_ line: String)
    /// Writes anything buffered.
    func flush()
}

extension Console {
    public func flush() {}
}

/// The process's standard output (buffered, flushed before anything goes to standard error and at the
/// end) and standard error (unbuffered).
public struct StandardConsole: Console {
    private static let buffer = Locked<[UInt8]>([])
    private static let limit = 1 << 16

    public init() {}

    public func out(_ line: String) {
        Self.buffer.withLock { buffer in
            buffer.append(contentsOf: line.utf8)
            buffer.append(0x0a)
            if buffer.count >= Self.limit { Self.drain(&buffer, to: 1) }
        }
    }

    public func err(_ line: String) {
        flush()
        var bytes = Array(line.utf8)
        bytes.append(0x0a)
        Self.drain(&bytes, to: 2)
    }

    public func flush() {
        Self.buffer.withLock { Self.drain(&$0, to: 1) }
    }

    private static func drain(_ bytes: inout [UInt8], to descriptor: Int32) {
        var offset = 0
        bytes.withUnsafeBytes { raw in
            while offset < raw.count {
                let written = write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return  // EPIPE and the like: the reader is gone; drop the output.
                }
                offset += written
            }
        }
        bytes.removeAll(keepingCapacity: true)
    }
}

/// Captures output, for tests.
public final class CapturingConsole: Console {
    private let lines = Locked<(out: [String], err: [String])>(([], []))
    public init() {}
    public func out(_ line: String) { lines.withLock { $0.out.append(line) } }
    public func err(_ line: String) { lines.withLock { $0.err.append(line) } }
    public var standardOutput: [String] { lines.withLock { $0.out } }
    public var standardError: [String] { lines.withLock { $0.err } }
}
