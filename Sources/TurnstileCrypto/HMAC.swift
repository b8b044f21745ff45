internal import CCrypto
import Synchronization

/// The hash functions HMAC is offered with.
public enum HMACAlgorithm: String, Sendable, CaseIterable {
    case sha1, sha256, sha512

    /// Length of the authentication code in bytes.
    public var outputByteCount: Int {
        switch self {
        case .sha1: 20
        case .sha256: 32
        case .sha512: 64
        }
    }

    var digestName: String {
        switch self {
        case .sha1: "SHA1"
        case .sha256: "SHA256"
        case .sha512: "SHA512"
        }
    }
}

/// An HMAC key prepared once: libcrypto's keyed context is built at init and reused for every
/// message, so a verification costs the message's hashing and not the key schedule.
///
/// Safe to share between tasks: each computation borrows a context from a small pool guarded by a
/// `Mutex`, and returns it afterwards. `description` never shows key bytes.
///
/// ```swift
/// let key = try HMACKey(algorithm: .sha256, key: Array("secret".utf8))
/// let mac = key.authenticationCode { stream in
///     stream.update("1767225600.")
///     stream.update(body)
/// }
/// ```
public final class HMACKey: Sendable, CustomStringConvertible {
    public let algorithm: HMACAlgorithm
    private let pool: Mutex<ContextPool>

    /// - Throws: `CryptoError.Code.invalidKey` for an empty key.
    public init(algorithm: HMACAlgorithm, key: [UInt8]) throws(CryptoError) {
        guard !key.isEmpty else { throw CryptoError(.invalidKey, "an HMAC key must not be empty") }
        let context = key.withUnsafeBytes { raw in
            CCrypto_hmac_context_new(algorithm.digestName, raw.baseAddress, raw.count)
        }
        guard let context else {
            throw CryptoError(.libraryFailure, "libcrypto could not create an HMAC-\(algorithm.digestName) context")
        }
        self.algorithm = algorithm
        self.pool = Mutex(ContextPool(template: ContextHandle(pointer: context)))
    }

    deinit {
        pool.withLock { pool in
            for handle in pool.idle { EVP_MAC_CTX_free(handle.pointer) }
            EVP_MAC_CTX_free(pool.template.pointer)
            pool.idle.removeAll()
        }
    }

    public var description: String { "HMACKey(\(algorithm.rawValue), <redacted>)" }

    /// The authentication code of the message that `feed` writes into the stream.
    public func authenticationCode(_ feed: (inout HMACStream) -> Void) -> [UInt8] {
        let handle = checkOut()
        defer { checkIn(handle) }
        var stream = HMACStream(context: handle.pointer)
        feed(&stream)
        var out = [UInt8](repeating: 0, count: algorithm.outputByteCount)
        var written = 0
        let ok = out.withUnsafeMutableBytes { raw in
            EVP_MAC_final(handle.pointer, raw.baseAddress?.assumingMemoryBound(to: UInt8.self), &written, raw.count)
        }
        precondition(ok == 1 && written == algorithm.outputByteCount && stream.failed == false,
                     "EVP_MAC_final failed on a valid context")
        return out
    }

    /// Computes the code of the message `feed` writes (into a stack buffer) and compares it in constant time
    /// with each `codeLength`-byte candidate laid end to end in `candidates`; returns the first matching
    /// candidate's index.
    public func firstMatch(in candidates: [UInt8], _ feed: (inout HMACStream) -> Void) -> Int? {
        let length = algorithm.outputByteCount
        guard !candidates.isEmpty, candidates.count % length == 0 else { return nil }
        let handle = checkOut()
        defer { checkIn(handle) }
        var stream = HMACStream(context: handle.pointer)
        feed(&stream)
        return withUnsafeTemporaryAllocation(byteCount: length, alignment: 8) { code -> Int? in
            var written = 0
            let ok = EVP_MAC_final(handle.pointer, code.baseAddress?.assumingMemoryBound(to: UInt8.self), &written, length)
            precondition(ok == 1 && written == length && stream.failed == false, "EVP_MAC_final failed on a valid context")
            return candidates.withUnsafeBytes { all -> Int? in
                for index in 0..<(all.count / length) {
                    let candidate = UnsafeRawBufferPointer(rebasing: all[(index * length)..<((index + 1) * length)])
                    if ConstantTime.equals(UnsafeRawBufferPointer(code), candidate) { return index }
                }
                return nil
            }
        }
    }

    /// The authentication code of `message`.
    public func authenticationCode(for message: some ContiguousBytesView) -> [UInt8] {
        authenticationCode { $0.update(message) }
    }

    /// True when `code` is the authentication code of the message `feed` writes, compared in constant time.
    public func isValidAuthenticationCode(_ code: [UInt8], _ feed: (inout HMACStream) -> Void) -> Bool {
        ConstantTime.equals(authenticationCode(feed), code)
    }

    private func checkOut() -> ContextHandle {
        let handle = pool.withLock { pool -> ContextHandle? in
            if let idle = pool.idle.popLast() { return idle }
            guard let copy = EVP_MAC_CTX_dup(pool.template.pointer) else { return nil }
            return ContextHandle(pointer: copy)
        }
        guard let handle else { preconditionFailure("EVP_MAC_CTX_dup failed: out of memory") }
        // Re-initialise with the key already set on the context.
        let ok = EVP_MAC_init(handle.pointer, nil, 0, nil)
        precondition(ok == 1, "EVP_MAC_init failed on a keyed context")
        return handle
    }

    private func checkIn(_ handle: ContextHandle) {
        pool.withLock { pool in
            if pool.idle.count < ContextPool.maximumIdle {
                pool.idle.append(handle)
            } else {
                EVP_MAC_CTX_free(handle.pointer)
            }
        }
    }
}

/// Feeds message bytes into an HMAC computation. Only lives inside ``HMACKey/authenticationCode(_:)``.
public struct HMACStream: ~Copyable {
    fileprivate let context: OpaquePointer
    fileprivate var failed = false

    fileprivate init(context: OpaquePointer) { self.context = context }

    /// Appends raw bytes to the message.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if EVP_MAC_update(context, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count) != 1 {
            failed = true
        }
    }

    /// Appends bytes to the message.
    public mutating func update(_ bytes: some ContiguousBytesView) {
        bytes.withRawBytes { update($0) }
    }

    /// Appends the UTF-8 bytes of `text` to the message.
    public mutating func update(_ text: String) {
        var text = text
        text.withUTF8 { update(UnsafeRawBufferPointer($0)) }
    }
}

/// A libcrypto context pointer. `@unchecked Sendable` is safe because a handle is only ever used by
/// one thread at a time: it is either idle inside the `Mutex`-guarded pool or checked out by exactly
/// one computation.
private struct ContextHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}

private struct ContextPool {
    static let maximumIdle = 64
    let template: ContextHandle
    var idle: [ContextHandle] = []
}
