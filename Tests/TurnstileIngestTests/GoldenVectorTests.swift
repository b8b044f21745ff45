import Testing
import TurnstileCore
import TurnstileCrypto
import TurnstileIngest

/// The published vectors of providers.md sections 1-3 and 5, verified byte for byte.
@Suite struct GoldenVectorTests {
    // MARK: Standard Webhooks (5.1)

    static let swBody = Array(#"{"test": 2432232314}"#.utf8)
    static let swSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

    func standardWebhooks(_ signature: String, prefix: String = "webhook") throws -> Result<VerifiedDelivery, Rejection> {
        let scheme = try verifier("standard-webhooks", secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], name: "svix")
        return scheme.verify(
            headers: HeaderFields([("\(prefix)-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"), ("\(prefix)-timestamp", "1614265330"),
                                   ("\(prefix)-signature", signature)]),
            body: Self.swBody, now: at(1_614_265_330 + 10))
    }

    @Test func standardWebhooksV1Vector() throws {
        #expect(Self.swBody.count == 20)
        let verified = try #require(try standardWebhooks(Self.swSignature).verified)
        #expect(verified.eventKey == "msg_p5jXN8AQM9LWM0D4loKWxJek")
        #expect(verified.eventType == "svix.event")
        #expect(verified.signedAt == at(1_614_265_330))
        #expect(try standardWebhooks(Self.swSignature, prefix: "svix").verified != nil)
    }

    @Test func standardWebhooksV1VectorFailures() throws {
        #expect(try standardWebhooks("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=").reason == .invalidSignature)
        #expect(try standardWebhooks("v1,").reason == .malformedSignature)
        #expect(try standardWebhooks("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1").reason == .malformedSignature)
        #expect(try standardWebhooks("v1,g0hM9SsE+OTPJTGt").reason == .malformedSignature)
    }

    @Test func standardWebhooksListWithBogusEntriesPasses() throws {
        let list = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= \(Self.swSignature)"
        #expect(try standardWebhooks(list).verified != nil)
        #expect(try standardWebhooks("v2,abc v1,not*base64").reason == .malformedSignature)
        #expect(try standardWebhooks("v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=").reason == .invalidSignature)
    }

    @Test func standardWebhooksV1aVector() throws {
        let scheme = try verifier("standard-webhooks", secrets: ["whpk_ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g="])
        let signature = "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="
        let request = headers(["webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330", "webhook-signature": signature])
        #expect(scheme.verify(headers: request, body: Self.swBody, now: at(1_614_265_330)).verified != nil)
        #expect(scheme.verify(headers: request, body: Self.swBody + [0x20], now: at(1_614_265_330)).reason == .invalidSignature)
    }

    @Test func standardWebhooksV1aSeedMatchesThePublishedPublicKey() throws {
        let seed = try Base64.decode("VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=")
        #expect(Base64.encode(try Ed25519PrivateKey(seed: seed).publicKey.rawRepresentation) == "ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g=")
    }

    // MARK: Stripe (5.2)

    static let stripeHeader = "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7"

    func stripe(_ header: String, now: Int) throws -> Result<VerifiedDelivery, Rejection> {
        try verifier("stripe", secrets: ["webhook_secret"])
            .verify(headers: headers(["Stripe-Signature": header]), body: try fixturePayload("stripe", "vector-customer-created"), now: at(now))
    }

    @Test func stripeVectorBodyIsExact() throws {
        let body = try fixturePayload("stripe", "vector-customer-created")
        #expect(body.count == 484)
        #expect(Hex.encode(SHA256.hash(body)) == "98cc89412549ca7faf118fca984763bdb6f81e13d1ce8c528dbbb5be602ec1be")
    }

    @Test func stripeVector() throws {
        let verified = try #require(try stripe(Self.stripeHeader, now: 1_533_204_620 + 100).verified)
        #expect(verified.eventType == "stripe.customer.created")
        #expect(verified.eventKey == "evt_123")
        #expect(try stripe(Self.stripeHeader, now: 1_533_204_620 + 400).reason == .staleTimestamp)
    }

    @Test(arguments: ["t=,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7", "t,v1=,v0=", ",,", "t"])
    func stripeMalformedHeaders(header: String) throws {
        #expect(try stripe(header, now: 1_533_204_720).reason == .malformedSignature)
    }

    @Test func stripeNeverAcceptsV0() throws {
        let v0 = "t=1533204620,v0=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7"
        #expect(try stripe(v0, now: 1_533_204_720).reason == .invalidSignature)
        let rolled = "t=1533204620,v1=\(String(repeating: "0", count: 64)),v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,v0=00"
        #expect(try stripe(rolled, now: 1_533_204_720).verified != nil)
    }

    // MARK: GitHub (5.3)

    @Test func githubVector() throws {
        let scheme = try verifier("github", secrets: ["It's a Secret to Everybody"])
        let request = headers(["X-Hub-Signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
                               "X-GitHub-Event": "ping", "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"])
        let verified = try #require(scheme.verify(headers: request, body: Array("Hello, World!".utf8), now: at(0)).verified)
        #expect(verified.eventType == "github.ping")
        #expect(verified.eventKey == "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        #expect(scheme.verify(headers: request, body: Array("Hello, World?".utf8), now: at(0)).reason == .invalidSignature)
    }

    // MARK: Synthflow (1.8)

    @Test(arguments: ["Synthflow-Signature", "x-synthflow-signature", "HTTP_SYNTHFLOW_SIGNATURE", "synthflow-signature"])
    func synthflowVectorUnderEverySpelling(header: String) throws {
        let scheme = try verifier("synthflow", secrets: ["sf_test_secret_key"])
        let body = Array(#"{"status":"completed","call":{"call_id":"c0ffee00-1234-4abc-8def-0123456789ab","status":"completed"}}"#.utf8)
        let request = HeaderFields([(header, "sErW5j8e+ISH7oKt2s3AmzN9xZBIyER+VahXJlxGPUw=")])
        let verified = try #require(scheme.verify(headers: request, body: body, now: at(0)).verified)
        #expect(verified.eventType == "synthflow.post_call")
        #expect(verified.eventKey == "post_call:c0ffee00-1234-4abc-8def-0123456789ab")
        #expect(verified.signatureHeader == header)
    }

    // MARK: Autify (2.4)

    @Test func autifyVector() throws {
        let scheme = try verifier("autify", secrets: ["autify_test_secret"])
        let body = Array(#"{"action":"finished","id":42,"status":"failed"}"#.utf8)
        let good = headers(["X-Autify-Signature": "sha1=e9e389d57edad8f917ff791a401b9d04fac5dadf"])
        // The signature checks out; the vector's body has neither `scenarios` nor `scenario_id`, so its kind is unknown.
        #expect(scheme.verify(headers: good, body: body, now: at(0)).reason == .malformedPayload)
        let bad = headers(["X-Autify-Signature": "sha1=e9e389d57edad8f917ff791a401b9d04fac5dadE"])
        #expect(scheme.verify(headers: bad, body: body, now: at(0)).reason == .invalidSignature)
        let key = try HMACKey(algorithm: .sha1, key: Array("autify_test_secret".utf8))
        #expect(Hex.encode(key.authenticationCode(for: body)) == "e9e389d57edad8f917ff791a401b9d04fac5dadf")
    }

    // MARK: Sync (3.5)

    @Test func syncVector() throws {
        let scheme = try verifier("sync", secrets: ["whsec_test_secret"])
        let request = headers(["Sync-Signature": "t=1767225600,v1=6b88c02986f47f715fbc72ab1a03407e8283324527d5a8284ae049832b2b93ba"])
        let body = Array(#"{"id":"gen_test_1","status":"COMPLETED","outputDuration":10}"#.utf8)
        let verified = try #require(scheme.verify(headers: request, body: body, now: at(1_767_225_600 + 10)).verified)
        #expect(verified.eventType == "sync.generation")
        #expect(verified.eventKey == "generation:gen_test_1:COMPLETED")
        #expect(!verified.usedStringifyFallback)
        #expect(scheme.verify(headers: request, body: body, now: at(1_767_225_600 + 301)).reason == .staleTimestamp)
        #expect(scheme.verify(headers: request, body: body, now: at(1_767_225_600 - 61)).reason == .futureTimestamp)
    }

    @Test func syncStringifyFallbackOnNonASCIISlashAndTenPointZero() throws {
        let raw = try fixturePayload("sync", "fallback-raw")
        let stringified = try fixturePayload("sync", "fallback-stringified")
        #expect(try JSONParser.parse(raw).javaScriptStringified() == stringified)
        #expect(String(decoding: raw, as: UTF8.self).contains("10.0"))
        #expect(String(decoding: raw, as: UTF8.self).contains("\\/"))
        let key = try HMACKey(algorithm: .sha256, key: Array("whsec_test_secret".utf8))
        let code = key.authenticationCode { $0.update("1767225600."); $0.update(stringified) }
        let request = headers(["Sync-Signature": "t=1767225600,v1=\(Hex.encode(code))"])
        let scheme = try verifier("sync", secrets: ["whsec_test_secret"])
        let verified = try #require(scheme.verify(headers: request, body: raw, now: at(1_767_225_600)).verified)
        #expect(verified.usedStringifyFallback)
        #expect(verified.eventKey == "generation:gen_fallback_1:COMPLETED")
        // Stripe has no such fallback: the same trick fails there.
        let stripe = try verifier("stripe", secrets: ["whsec_test_secret"])
        #expect(stripe.verify(headers: headers(["Stripe-Signature": "t=1767225600,v1=\(Hex.encode(code))"]), body: raw,
                              now: at(1_767_225_600)).reason == .invalidSignature)
    }
}
