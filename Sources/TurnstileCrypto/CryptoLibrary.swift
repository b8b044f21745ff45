internal import CCrypto

/// The linked libcrypto, checked once at start-up.
public enum CryptoLibrary {
    /// The version text libcrypto reports, e.g. `OpenSSL 3.0.19 27 Jan 2026`.
    public static var versionText: String { String(cString: OpenSSL_version(OPENSSL_VERSION)) }

    /// Throws unless the linked libcrypto is OpenSSL 3.0 or newer (the EVP_MD_fetch and EVP_DigestInit_ex2 API this layer uses).
    public static func checkVersion() throws(CryptoError) {
        let number = OpenSSL_version_num()
        guard number >= 0x3000_0000 else {
            throw CryptoError(.unsupportedLibrary, "libcrypto \(versionText) is older than OpenSSL 3.0")
        }
    }
}
