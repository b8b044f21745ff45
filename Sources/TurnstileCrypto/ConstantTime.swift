internal import CCrypto

/// Comparison whose time does not depend on where two byte strings differ.
public enum ConstantTime {
    /// True when `lhs` and `rhs` hold the same bytes. Lengths are compared first (a length is not secret);
    /// equal-length contents are compared with `CRYPTO_memcmp`.
    public static func equals(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        lhs.withUnsafeBytes { left in rhs.withUnsafeBytes { right in equals(left, right) } }
    }

    /// True when `lhs` and the slice `rhs` hold the same bytes.
    public static func equals(_ lhs: [UInt8], _ rhs: ArraySlice<UInt8>) -> Bool {
        lhs.withUnsafeBytes { left in rhs.withUnsafeBytes { right in equals(left, right) } }
    }

    /// True when two byte buffers hold the same bytes.
    public static func equals(_ lhs: UnsafeRawBufferPointer, _ rhs: UnsafeRawBufferPointer) -> Bool {
        guard lhs.count == rhs.count else { return false }
        if lhs.isEmpty { return true }
        return CRYPTO_memcmp(lhs.baseAddress, rhs.baseAddress, lhs.count) == 0
    }
}
