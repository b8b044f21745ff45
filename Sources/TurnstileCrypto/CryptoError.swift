/// A failure inside the crypto layer. Never carries key or signature bytes.
public struct CryptoError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Stable reason codes of the crypto layer.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Hashable, Sendable {
            case unsupportedLibrary = "unsupported_library"
            case invalidKey = "invalid_key"
            case libraryFailure = "library_failure"
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The linked libcrypto is older than OpenSSL 3.
        public static let unsupportedLibrary = Code(.unsupportedLibrary)
        /// Key material has the wrong size or cannot be used.
        public static let invalidKey = Code(.invalidKey)
        /// libcrypto reported an error it should not.
        public static let libraryFailure = Code(.libraryFailure)

        public var description: String { value.rawValue }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
