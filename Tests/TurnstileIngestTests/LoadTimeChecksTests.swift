import Testing
import TurnstileCore
import TurnstileIngest

/// Checks that happen when config loads, so a bad setting fails at start-up and not on traffic.
@Suite struct LoadTimeChecksTests {
    private func ingestError(_ providers: [ProviderConfig]) -> InputError? {
        do {
            _ = try Ingest(config: TurnstileConfig(file: "test.json", providers: providers))
            return nil
        } catch {
            return error
        }
    }

    @Test func retentionShorterThanTheWindowIsRefused() throws {
        let error = try #require(ingestError([try provider("sync", secrets: ["whsec_a"], tolerance: 300, skew: 60, retention: 100)]))
        #expect(error.code == .retentionTooShort)
        #expect(error.field == "providers.sync.retention_seconds")
        #expect(error.message.contains("sync") && error.message.contains("100") && error.message.contains("360"))
    }

    @Test func autifyRetentionCoversMaxAge() throws {
        let error = try #require(ingestError([try provider("autify", secrets: ["a"], maxAge: 259_200, retention: 259_200)]))
        #expect(error.message.contains("259260"))
        #expect(ingestError([try provider("autify", secrets: ["a"], maxAge: 259_200, retention: 259_260)]) == nil)
    }

    /// GitHub and Synthflow sign no timestamp: the nonce table is their only defence, so a retention below
    /// the floor (7 days) is refused, naming the provider (at 1 s one GitHub delivery passed 4 times).
    @Test func untimedSchemesRefuseARetentionBelowTheFloor() throws {
        #expect(ingestError([try provider("synthflow", secrets: ["s"], retention: 0)])?.code == .retentionTooShort)
        let error = try #require(ingestError([try provider("github", secrets: ["s"], retention: 1)]))
        #expect(error.code == .retentionTooShort && error.field == "providers.github.retention_seconds")
        #expect(error.message.contains("github") && error.message.contains("604800"))
        #expect(ingestError([try provider("github", secrets: ["s"], retention: 604_799)]) != nil)
        #expect(ingestError([try provider("github", secrets: ["s"], retention: 604_800)]) == nil)
        #expect(ingestError([try provider("sync", secrets: ["whsec_a"], retention: 3600)]) == nil, "timestamped schemes keep their own bound")
    }

    @Test(arguments: [
        ("whsec_!!!!", "not valid base64"),
        ("whsec_c2hvcnQ=", "decodes to 5 bytes"),
        ("whpk_c2hvcnQ=", "not 32 bytes"),
        ("whsk_c2hvcnQ=", "not 32 bytes"),
    ])
    func standardWebhooksSecretsThatCannotBeRightAreRefused(secret: String, message: String) throws {
        let error = try #require(ingestError([try provider("standard-webhooks", secrets: [secret])]))
        #expect(error.code == .invalidSecret)
        #expect(error.field == "providers.standard-webhooks.secrets[0]")
        #expect(error.message.contains(message))
        #expect(!error.description.contains(secret))
    }

    @Test func syncAndStripeUseTheWholeWhsecString() throws {
        // `whsec_test_secret` is not valid base64 after its prefix, and must not need to be.
        #expect(ingestError([try provider("sync", secrets: ["whsec_test_secret"]), try provider("stripe", secrets: ["whsec_x"])]) == nil)
    }

    @Test(arguments: [
        (#"{"signature_header":"X-Sig","signed":"everything"}"#, "hmac.signed"),
        (#"{"signature_header":"X-Sig","timestamp":"signature"}"#, "hmac.timestamp"),
        (#"{"signature_header":"X-Sig","signed":"timestamp.body"}"#, "hmac.signed"),
        (#"{"signature_header":"Bad Header"}"#, "hmac.signature_header"),
        (#"{"signature_header":"X-Sig","event_id":"body:id"}"#, "hmac.event_id"),
        (#"{"signature_header":"X-Sig","prefix":"v1=","format":"key-value"}"#, "hmac.prefix"),
    ])
    func genericSchemeErrorsNameTheKey(hmac: String, field: String) throws {
        let error = try #require(ingestError([try provider("hmac", secrets: ["k"], name: "acme", hmac: hmac)]))
        #expect(error.field == "providers.acme.\(field)", "\(error)")
    }

    @Test func genericSchemeAsAProviderPreset() throws {
        // GitHub described as data with the generic scheme verifies GitHub's published vector.
        let scheme = try verifier("hmac", secrets: ["It's a Secret to Everybody"], name: "gh", hmac: #"""
            {"signature_header":"X-Hub-Signature-256","algorithm":"sha256","encoding":"hex","prefix":"sha256=",
             "event_id":"header:X-GitHub-Delivery","event_type":"header:X-GitHub-Event"}
            """#)
        let request = headers(["X-Hub-Signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
                               "X-GitHub-Event": "ping", "X-GitHub-Delivery": "d-1"])
        let verified = try #require(scheme.verify(headers: request, body: Array("Hello, World!".utf8), now: at(0)).verified)
        #expect(verified.eventType == "gh.ping")
        #expect(verified.eventKey == "d-1")
    }

    @Test func genericKeyValueSchemeWithTimestamp() throws {
        // Stripe described as data.
        let scheme = try verifier("hmac", secrets: ["webhook_secret"], name: "st", hmac: #"""
            {"signature_header":"Stripe-Signature","format":"key-value","signed":"timestamp.body","timestamp":"signature",
             "event_id":"json:id","event_type":"json:type"}
            """#)
        let request = headers(["Stripe-Signature": "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7"])
        let body = try fixturePayload("stripe", "vector-customer-created")
        #expect(scheme.verify(headers: request, body: body, now: at(1_533_204_720)).verified?.eventType == "st.customer.created")
        #expect(scheme.verify(headers: request, body: body, now: at(1_533_205_020)).reason == .staleTimestamp)
    }

    @Test func genericSchemeWithoutEventIdKeysOnTheBodyDigest() throws {
        let scheme = try verifier("hmac", secrets: ["k"], name: "plain", hmac: #"{"signature_header":"X-Sig","algorithm":"sha512","encoding":"base64"}"#)
        let body = Array("payload".utf8)
        let headers = try scheme.signatureHeaders(body: body, at: at(0))
        let verified = try #require(scheme.verify(headers: headers, body: body, now: at(0)).verified)
        #expect(verified.eventKey == "239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5")
        #expect(verified.eventType == "plain.event")
    }

    @Test func ingestRoutesAndLimits() throws {
        let ingest = try Ingest(config: TurnstileConfig(file: "t.json", maxBodyBytes: 8, providers: [try provider("github", secrets: ["s"])]))
        #expect(ingest.verify(provider: "nope", headers: HeaderFields(), body: [], now: at(0)).reason == .unknownProvider)
        #expect(ingest.verify(provider: "github", headers: HeaderFields(), body: [UInt8](repeating: 0, count: 9), now: at(0)).reason == .bodyTooLarge)
        #expect(ingest.verify(provider: "github", headers: HeaderFields(), body: [], now: at(0)).reason == .missingSignature)
    }

    @Test func rejectionsNeverContainSecretsOrExpectedSignatures() throws {
        let secret = "very-secret-value-123"
        let scheme = try verifier("github", secrets: [secret])
        let body = Array("{}".utf8)
        let good = try scheme.signatureHeaders(body: body, at: at(0))
        let expected = good["X-Hub-Signature-256"]!
        for request in [headers(["X-Hub-Signature-256": "sha256=" + String(repeating: "0", count: 64), "X-GitHub-Delivery": "d"]),
                        headers(["X-Hub-Signature-256": "garbage"])] {
            guard case .failure(let rejection) = scheme.verify(headers: request, body: body, now: at(0)) else {
                Issue.record("expected a rejection")
                continue
            }
            #expect(!rejection.detail.contains(secret))
            #expect(!rejection.detail.contains(String(expected.dropFirst(7))))
        }
    }
}
