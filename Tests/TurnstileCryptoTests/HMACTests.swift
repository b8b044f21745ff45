import Testing
import TurnstileCrypto

private func hex(_ bytes: [UInt8]) -> String { bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined() }
private func bytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        out.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return out
}

@Suite struct HMACTests {
    // RFC 4231 test cases 1, 2 and 6 (key longer than the block size).
    static let rfc4231: [(key: [UInt8], data: [UInt8], sha256: String, sha512: String)] = [
        ([UInt8](repeating: 0x0b, count: 20), Array("Hi There".utf8),
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
         "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"),
        (Array("Jefe".utf8), Array("what do ya want for nothing?".utf8),
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
         "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"),
        ([UInt8](repeating: 0xaa, count: 131), Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8),
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
         "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"),
    ]

    @Test(arguments: 0..<3)
    func rfc4231Vectors(index: Int) throws {
        let vector = Self.rfc4231[index]
        let sha256 = try HMACKey(algorithm: .sha256, key: vector.key)
        let sha512 = try HMACKey(algorithm: .sha512, key: vector.key)
        #expect(hex(sha256.authenticationCode(for: vector.data)) == vector.sha256)
        #expect(hex(sha512.authenticationCode(for: vector.data)) == vector.sha512)
    }

    @Test func rfc2202SHA1() throws {
        let key = try HMACKey(algorithm: .sha1, key: Array("Jefe".utf8))
        #expect(hex(key.authenticationCode(for: Array("what do ya want for nothing?".utf8))) == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
    }

    @Test func streamingEqualsOneShot() throws {
        let key = try HMACKey(algorithm: .sha256, key: Array("k".utf8))
        let whole = key.authenticationCode(for: Array("1767225600.{\"a\":1}".utf8))
        let parts = key.authenticationCode { stream in
            stream.update("1767225600")
            stream.update(".")
            stream.update(Array("{\"a\":1}".utf8))
        }
        #expect(whole == parts)
        #expect(key.isValidAuthenticationCode(whole) { $0.update("1767225600.{\"a\":1}") })
        var flipped = whole
        flipped[31] ^= 1
        #expect(!key.isValidAuthenticationCode(flipped) { $0.update("1767225600.{\"a\":1}") })
    }

    @Test func emptyKeyIsRefusedAndDescriptionHidesTheKey() throws {
        #expect(throws: CryptoError.self) { try HMACKey(algorithm: .sha256, key: []) }
        let key = try HMACKey(algorithm: .sha256, key: Array("super-secret-value".utf8))
        #expect(!key.description.contains("super-secret-value"))
    }

    @Test func sharedKeyGivesTheSameCodeUnderConcurrency() async throws {
        let key = try HMACKey(algorithm: .sha256, key: bytes("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"))
        let expected = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        let results = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    (0..<200).allSatisfy { _ in hex(key.authenticationCode(for: Array("Hi There".utf8))) == expected }
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.count == 64 && results.allSatisfy { $0 })
    }

    @Test func constantTimeEquality() {
        #expect(ConstantTime.equals([1, 2, 3], [1, 2, 3]))
        #expect(!ConstantTime.equals([1, 2, 3], [1, 2, 4]))
        #expect(!ConstantTime.equals([1, 2, 3], [1, 2]))
        #expect(ConstantTime.equals([], []))
    }

    @Test func sha256KnownAnswer() {
        #expect(hex(SHA256.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func libraryIsOpenSSL3() throws {
        try CryptoLibrary.checkVersion()
        #expect(CryptoLibrary.versionText.hasPrefix("OpenSSL 3"))
    }
}

@Suite struct Ed25519Tests {
    // The Standard Webhooks v1a vector: seed, public key and signature of `msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}`.
    @Test func seedDerivesThePublishedPublicKey() throws {
        let key = try Ed25519PrivateKey(seed: Array("TESTSIGNINGKEYDONOTUSETHISFORANY".utf8))
        #expect(hex(key.publicKey.rawRepresentation) == "6653787a0edd492aa2d26a17f61414937a2bacea2e2b74154129496b6e3c73f8")
    }

    @Test func signAndVerify() throws {
        let key = try Ed25519PrivateKey(seed: Array("TESTSIGNINGKEYDONOTUSETHISFORANY".utf8))
        let message = Array("msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}".utf8)
        let signature = try key.signature(for: message)
        #expect(key.publicKey.isValidSignature(signature, for: message))
        #expect(!key.publicKey.isValidSignature(signature, for: message + [0x20]))
        #expect(!key.publicKey.isValidSignature(Array(signature.dropLast()), for: message))
    }

    @Test func wrongSizedKeysAreRefused() {
        #expect(throws: CryptoError.self) { try Ed25519PublicKey(rawRepresentation: [UInt8](repeating: 1, count: 31)) }
        #expect(throws: CryptoError.self) { try Ed25519PrivateKey(seed: [UInt8](repeating: 1, count: 33)) }
    }
}
