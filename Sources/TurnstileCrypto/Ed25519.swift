internal import CCrypto

/// An Ed25519 public key (32 bytes) used to verify signatures, as Standard Webhooks `v1a` does.
public final class Ed25519PublicKey: Sendable, CustomStringConvertible {
    /// The raw 32-byte key.
    public let rawRepresentation: [UInt8]

    /// - Throws: `CryptoError.Code.invalidKey` unless `raw` is exactly 32 bytes libcrypto accepts.
    public init(rawRepresentation raw: [UInt8]) throws(CryptoError) {
        guard raw.count == 32 else {
            throw CryptoError(.invalidKey, "an Ed25519 public key is 32 bytes, got \(raw.count)")
        }
        let key = raw.withUnsafeBytes { bytes in
            EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), 32)
        }
        guard let key else { throw CryptoError(.invalidKey, "libcrypto rejected the Ed25519 public key") }
        EVP_PKEY_free(key)
        self.rawRepresentation = raw
    }

    public var description: String { "Ed25519PublicKey(32 bytes)" }

    /// True when `signature` is a valid Ed25519 signature of the message `feed` writes.
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        guard signature.count == 64 else { return false }
        guard let key = rawRepresentation.withUnsafeBytes({ bytes in
            EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), 32)
        }) else { return false }
        defer { EVP_PKEY_free(key) }
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestVerifyInit(context, nil, nil, nil, key) == 1 else { return false }
        return signature.withUnsafeBytes { sig in
            message.withUnsafeBytes { msg in
                EVP_DigestVerify(context, sig.baseAddress?.assumingMemoryBound(to: UInt8.self), 64,
                                 msg.baseAddress?.assumingMemoryBound(to: UInt8.self), msg.count) == 1
            }
        }
    }
}

/// An Ed25519 private key from its 32-byte seed, for the `sign` command's sender simulation.
public final class Ed25519PrivateKey: Sendable, CustomStringConvertible {
    private let seed: [UInt8]
    /// The matching public key.
    public let publicKey: Ed25519PublicKey

    /// - Throws: `CryptoError.Code.invalidKey` unless `seed` is 32 bytes.
    public init(seed: [UInt8]) throws(CryptoError) {
        guard seed.count == 32 else { throw CryptoError(.invalidKey, "an Ed25519 seed is 32 bytes, got \(seed.count)") }
        guard let key = Self.makeKey(seed) else { throw CryptoError(.invalidKey, "libcrypto rejected the Ed25519 seed") }
        defer { EVP_PKEY_free(key) }
        var publicBytes = [UInt8](repeating: 0, count: 32)
        var length = 32
        let ok = publicBytes.withUnsafeMutableBytes { raw in
            EVP_PKEY_get_raw_public_key(key, raw.baseAddress?.assumingMemoryBound(to: UInt8.self), &length)
        }
        guard ok == 1, length == 32 else { throw CryptoError(.libraryFailure, "could not derive the Ed25519 public key") }
        self.seed = seed
        self.publicKey = try Ed25519PublicKey(rawRepresentation: publicBytes)
    }

    public var description: String { "Ed25519PrivateKey(<redacted>)" }

    /// The 64-byte signature of `message`.
    public func signature(for message: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard let key = Self.makeKey(seed) else { throw CryptoError(.invalidKey, "libcrypto rejected the Ed25519 seed") }
        defer { EVP_PKEY_free(key) }
        guard let context = EVP_MD_CTX_new() else { throw CryptoError(.libraryFailure, "EVP_MD_CTX_new failed") }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestSignInit(context, nil, nil, nil, key) == 1 else {
            throw CryptoError(.libraryFailure, "EVP_DigestSignInit failed")
        }
        var out = [UInt8](repeating: 0, count: 64)
        var length = 64
        let ok = out.withUnsafeMutableBytes { sig in
            message.withUnsafeBytes { msg in
                EVP_DigestSign(context, sig.baseAddress?.assumingMemoryBound(to: UInt8.self), &length,
                               msg.baseAddress?.assumingMemoryBound(to: UInt8.self), msg.count)
            }
        }
        guard ok == 1, length == 64 else { throw CryptoError(.libraryFailure, "EVP_DigestSign failed") }
        return out
    }

    private static func makeKey(_ seed: [UInt8]) -> OpaquePointer? {
        seed.withUnsafeBytes { bytes in
            EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), 32)
        }
    }
}
