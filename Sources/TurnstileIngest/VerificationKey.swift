import TurnstileCore
import TurnstileCrypto

/// A secret turned into key material the way its scheme says, once, at load.
enum VerificationKey: Sendable {
    case hmac(HMACKey)
    case ed25519(Ed25519PublicKey, signing: Ed25519PrivateKey?)

    /// Derives the key for `secret`, refusing secrets that cannot be right.
    /// - Parameter field: the secret's key path (`providers.svix.secrets[0]`) for errors; never its value.
    static func derive(_ secret: Secret, spec: SchemeSpec, file: String?, field: String) throws(InputError) -> VerificationKey {
        func fail(_ message: String) -> InputError { InputError(.invalidSecret, message, file: file, field: field) }
        let text = secret.text
        enum Material { case hmac([UInt8]), publicKey([UInt8]), seed([UInt8]) }
        let material: Material
        switch spec.key {
        case .utf8:
            material = .hmac(secret.value)
        case .hex:
            guard let bytes = try? Hex.decode(text), !bytes.isEmpty else { throw fail("\(secret.reference) is not hex digits") }
            material = .hmac(bytes)
        case .base64(let prefix, let ed25519):
            if ed25519 && text.hasPrefix("whpk_") {
                guard let bytes = try? Base64.decode(text.dropFirst(5)), bytes.count == 32 else {
                    throw fail("\(secret.reference) is a whpk_ key whose base64 is not 32 bytes")
                }
                material = .publicKey(bytes)
            } else if ed25519 && text.hasPrefix("whsk_") {
                guard let bytes = try? Base64.decode(text.dropFirst(5)), bytes.count == 32 else {
                    throw fail("\(secret.reference) is a whsk_ seed whose base64 is not 32 bytes")
                }
                material = .seed(bytes)
            } else {
                let encoded = text.hasPrefix(prefix) ? text.dropFirst(prefix.count) : Substring(text)
                guard let bytes = try? Base64.decode(encoded) else {
                    throw fail("\(secret.reference) is not valid base64 after the optional \(prefix) prefix")
                }
                guard bytes.count >= 16 else {
                    throw fail("\(secret.reference) decodes to \(bytes.count) bytes; a signing secret has at least 16")
                }
                material = .hmac(bytes)
            }
        }
        do throws(CryptoError) {
            switch material {
            case .hmac(let bytes): return .hmac(try HMACKey(algorithm: spec.algorithm, key: bytes))
            case .publicKey(let bytes): return .ed25519(try Ed25519PublicKey(rawRepresentation: bytes), signing: nil)
            case .seed(let bytes):
                let signing = try Ed25519PrivateKey(seed: bytes)
                return .ed25519(signing.publicKey, signing: signing)
            }
        } catch {
            throw fail("\(secret.reference) cannot be used as a key: \(error.message)")
        }
    }
}
