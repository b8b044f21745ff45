internal import CCrypto
import TurnstileSync

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

/// An HMAC key prepared once: the key's padded blocks are absorbed into two digest states at init, and every
/// message starts from copies of them, so a verification costs the message's hashing and not the key schedule
/// (nor libcrypto's per-message `EVP_MAC` re-initialisation).
///
/// Safe to share between tasks: each computation borrows a private state from a small pool guarded by a
/// `Locked` pool, and returns it afterwards. `description` never shows key bytes.
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
    private let pool: Locked<StatePool>

    /// - Throws: `CryptoError.Code.invalidKey` for an empty key.
    public init(algorithm: HMACAlgorithm, key: [UInt8]) throws(CryptoError) {
        guard !key.isEmpty else { throw CryptoError(.invalidKey, "an HMAC key must not be empty") }
        let state = key.withUnsafeBytes { raw in CCrypto_hmac_new(algorithm.digestName, raw.baseAddress, raw.count) }
        guard let state, Int(CCrypto_hmac_size(state)) == algorithm.outputByteCount else {
            CCrypto_hmac_free(state)
            throw CryptoError(.libraryFailure, "libcrypto could not prepare HMAC-\(algorithm.digestName)")
        }
        self.algorithm = algorithm
        self.pool = Locked(StatePool(template: StateHandle(pointer: state)))
    }

    deinit {
        pool.withLock { pool in
            for handle in pool.idle { CCrypto_hmac_free(handle.pointer) }
            CCrypto_hmac_free(pool.template.pointer)
            pool.idle.removeAll()
        }
    }

    public var description: String { "HMACKey(\(algorithm.rawValue), <redacted>)" }

    /// The authentication code of the message that `feed` writes into the stream.
    public func authenticationCode(_ feed: (inout HMACStream) -> Void) -> [UInt8] {
        let handle = checkOut()
        defer { checkIn(handle) }
        var stream = HMACStream(state: handle.pointer)
        feed(&stream)
        var out = [UInt8](repeating: 0, count: algorithm.outputByteCount)
        let ok = out.withUnsafeMutableBufferPointer { CCrypto_hmac_finish(handle.pointer, $0.baseAddress) }
        precondition(ok == 1 && stream.failed == false, "HMAC failed on a prepared state")
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
        var stream = HMACStream(state: handle.pointer)
        feed(&stream)
        return withUnsafeTemporaryAllocation(byteCount: length, alignment: 8) { code -> Int? in
            let ok = CCrypto_hmac_finish(handle.pointer, code.baseAddress?.assumingMemoryBound(to: UInt8.self))
            precondition(ok == 1 && stream.failed == false, "HMAC failed on a prepared state")
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

    private func checkOut() -> StateHandle {
        let handle = pool.withLock { pool -> StateHandle? in
            if let idle = pool.idle.popLast() { return idle }
            return CCrypto_hmac_dup(pool.template.pointer).map(StateHandle.init)
        }
        guard let handle else { preconditionFailure("copying an HMAC state failed: out of memory") }
        precondition(CCrypto_hmac_begin(handle.pointer) == 1, "starting an HMAC message failed on a prepared state")
        return handle
    }

    private func checkIn(_ handle: StateHandle) {
        pool.withLock { pool in
            if pool.idle.count < StatePool.maximumIdle {
                pool.idle.append(handle)
            } else {
                CCrypto_hmac_free(handle.pointer)
            }
        }
    }
}

/// Feeds message bytes into an HMAC computation. Only lives inside ``HMACKey/authenticationCode(_:)``.
public struct HMACStream: ~Copyable {
    fileprivate let state: UnsafeMutablePointer<CCrypto_hmac>
    fileprivate var failed = false

    fileprivate init(state: UnsafeMutablePointer<CCrypto_hmac>) { self.state = state }

    /// Appends raw bytes to the message.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if CCrypto_hmac_update(state, bytes.baseAddress, bytes.count) != 1 {
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

/// A prepared HMAC state. `@unchecked Sendable` is safe because a handle is only ever used by one thread at a
/// time: it is either idle inside the `Locked` pool or checked out by exactly one computation (the
/// template is only read, under the pool's lock, to make copies).
private struct StateHandle: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<CCrypto_hmac>
}

private struct StatePool {
    static let maximumIdle = 64
    let template: StateHandle
    var idle: [StateHandle] = []
}
