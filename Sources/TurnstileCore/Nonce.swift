/// One nonce as stores key it: a signed message (category 0, kept under the provider's nonce group and scoped
/// by the kind where the signature covers it) or an event identity (category 1, no scope), per provider.
public struct Nonce: Hashable, Sendable {
    public var provider: String
    /// 0: a signature, 1: an event identity.
    public var category: Int64
    public var scope: String
    public var value: [UInt8]

    public init(provider: String, category: Int64, scope: String, value: [UInt8]) {
        self.provider = provider
        self.category = category
        self.scope = scope
        self.value = value
    }

    /// FNV-1a over the fields, each closed by a 0xff byte: the same in every process and every version (Swift's
    /// `Hasher` is seeded per process), so it can be stored and shared. PostgreSQL's advisory locks and
    /// SQLite's nonce index both key on it; equal hashes do not mean equal nonces.
    public var stableHash: UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ bytes: some Sequence<UInt8>) {
            for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            hash = (hash ^ 0xff) &* 0x100_0000_01b3
        }
        mix(provider.utf8)
        mix(String(category).utf8)
        mix(scope.utf8)
        mix(value)
        return hash
    }
}

extension Admission {
    /// The event's identity, per provider.
    public var eventNonce: Nonce {
        Nonce(provider: provider, category: 1, scope: "", value: Array(eventKey.utf8))
    }
}
