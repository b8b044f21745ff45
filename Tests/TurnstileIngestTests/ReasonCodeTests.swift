import Foundation
import Testing
import TurnstileCore
import TurnstileIngest

/// One scheme under test: how to sign for it, and what breaks it in each way.
struct SchemeCase: Sendable, CustomStringConvertible {
    let scheme: String
    let secret: String
    let oldSecret: String
    let wrongSecret: String
    let body: String
    /// A signed body that lacks what the scheme keys on; nil when no such body exists.
    let payloadWithoutIdentity: String?
    /// A header value that cannot be parsed.
    let malformedSignature: String
    let timestamped: Bool
    let future: Int
    let stale: Int

    var description: String { scheme }

    static let signedAt = at(1_768_503_846)

    static let all: [SchemeCase] = [
        SchemeCase(scheme: "synthflow", secret: "sf_new", oldSecret: "sf_old", wrongSecret: "sf_wrong",
                   body: #"{"status":"completed","call":{"call_id":"c1","status":"completed"}}"#,
                   payloadWithoutIdentity: #"{"call_id":"c1"}"#, malformedSignature: "***", timestamped: false, future: 0, stale: 0),
        SchemeCase(scheme: "autify", secret: "au_new", oldSecret: "au_old", wrongSecret: "au_wrong",
                   body: #"{"action":"finished","id":7,"finished_at":"2026-01-15T19:04:06.000Z","status":"passed","scenario_id":3}"#,
                   payloadWithoutIdentity: #"{"action":"finished","finished_at":"2026-01-15T19:04:06.000Z","scenario_id":3}"#,
                   malformedSignature: "sha1=xyz", timestamped: true, future: 61, stale: 259_201),
        SchemeCase(scheme: "sync", secret: "whsec_new", oldSecret: "whsec_old", wrongSecret: "whsec_wrong",
                   body: #"{"id":"g1","status":"COMPLETED"}"#, payloadWithoutIdentity: #"{"status":"COMPLETED"}"#,
                   malformedSignature: "t=abc,v1=00", timestamped: true, future: 61, stale: 301),
        SchemeCase(scheme: "standard-webhooks", secret: "whsec_bmV3IHNpZ25pbmcga2V5IGZvciB0ZXN0cw==",
                   oldSecret: "whsec_b2xkIHNpZ25pbmcga2V5IGZvciB0ZXN0cw==", wrongSecret: "whsec_d3Jvbmcgc2lnbmluZyBrZXkgZm9yIHRlc3Rz",
                   body: #"{"type":"invoice.paid"}"#, payloadWithoutIdentity: nil, malformedSignature: "v1,@@@@", timestamped: true,
                   future: 301, stale: 301),
        SchemeCase(scheme: "stripe", secret: "whsec_s_new", oldSecret: "whsec_s_old", wrongSecret: "whsec_s_wrong",
                   body: #"{"id":"evt_1","type":"invoice.paid"}"#, payloadWithoutIdentity: #"{"type":"invoice.paid"}"#,
                   malformedSignature: "t", timestamped: true, future: 61, stale: 301),
        SchemeCase(scheme: "github", secret: "gh_new", oldSecret: "gh_old", wrongSecret: "gh_wrong",
                   body: #"{"zen":"Keep it logically awesome."}"#, payloadWithoutIdentity: nil, malformedSignature: "sha256=",
                   timestamped: false, future: 0, stale: 0),
    ]

    func verifier() throws -> SchemeVerifier {
        try TurnstileIngestTests.verifier(scheme, secrets: [secret, oldSecret])
    }

    func sign(_ body: String, with secret: String, at instant: Instant = SchemeCase.signedAt) throws -> HeaderFields {
        try TurnstileIngestTests.verifier(scheme, secrets: [secret])
            .signatureHeaders(body: Array(body.utf8), at: instant, id: "delivery-1", eventType: "push")
    }

    func verify(_ headers: HeaderFields, _ body: String, now: Instant = SchemeCase.signedAt.adding(seconds: 5)) throws -> Result<VerifiedDelivery, Rejection> {
        try verifier().verify(headers: headers, body: Array(body.utf8), now: now)
    }

    func replacingSignature(_ headers: HeaderFields, with value: String?) -> HeaderFields {
        let signatureNames = ["synthflow-signature", "x-autify-signature", "sync-signature", "webhook-signature", "stripe-signature", "x-hub-signature-256"]
        var out = HeaderFields()
        for field in headers {
            if signatureNames.contains(field.canonicalName) {
                if let value { out.append(name: field.name, value: value) }
            } else {
                out.append(name: field.name, value: field.value)
            }
        }
        return out
    }
}

@Suite struct ReasonCodeTests {
    @Test(arguments: SchemeCase.all)
    func accepted(_ scheme: SchemeCase) throws {
        let verified = try #require(try scheme.verify(try scheme.sign(scheme.body, with: scheme.secret), scheme.body).verified)
        #expect(verified.secretIndex == 0)
        #expect(verified.eventType.hasPrefix("\(scheme.scheme)."))
        #expect(!verified.eventKey.isEmpty)
    }

    @Test(arguments: SchemeCase.all)
    func rotatedSecretIsAccepted(_ scheme: SchemeCase) throws {
        let verified = try #require(try scheme.verify(try scheme.sign(scheme.body, with: scheme.oldSecret), scheme.body).verified)
        #expect(verified.secretIndex == 1)
    }

    @Test(arguments: SchemeCase.all)
    func missingSignature(_ scheme: SchemeCase) throws {
        let headers = scheme.replacingSignature(try scheme.sign(scheme.body, with: scheme.secret), with: nil)
        #expect(try scheme.verify(headers, scheme.body).reason == .missingSignature)
    }

    @Test(arguments: SchemeCase.all)
    func malformedSignature(_ scheme: SchemeCase) throws {
        let headers = scheme.replacingSignature(try scheme.sign(scheme.body, with: scheme.secret), with: scheme.malformedSignature)
        #expect(try scheme.verify(headers, scheme.body).reason == .malformedSignature)
        let empty = scheme.replacingSignature(try scheme.sign(scheme.body, with: scheme.secret), with: "")
        #expect(try scheme.verify(empty, scheme.body).reason == .malformedSignature)
    }

    @Test(arguments: SchemeCase.all)
    func invalidSignature(_ scheme: SchemeCase) throws {
        #expect(try scheme.verify(try scheme.sign(scheme.body, with: scheme.wrongSecret), scheme.body).reason == .invalidSignature)
    }

    @Test(arguments: SchemeCase.all.filter { $0.scheme != "synthflow" })
    func tamperedBodyIsInvalid(_ scheme: SchemeCase) throws {
        let headers = try scheme.sign(scheme.body, with: scheme.secret)
        let tampered = scheme.body.replacingOccurrences(of: "}", with: ",\"x\":1}", options: [], range: scheme.body.range(of: "}", options: .backwards))
        #expect(try scheme.verify(headers, tampered).reason == .invalidSignature)
    }

    @Test(arguments: SchemeCase.all.filter(\.timestamped))
    func staleAndFutureTimestamps(_ scheme: SchemeCase) throws {
        let headers = try scheme.sign(scheme.body, with: scheme.secret)
        #expect(try scheme.verify(headers, scheme.body, now: SchemeCase.signedAt.adding(seconds: Double(scheme.stale))).reason == .staleTimestamp)
        #expect(try scheme.verify(headers, scheme.body, now: SchemeCase.signedAt.adding(seconds: Double(-scheme.future))).reason == .futureTimestamp)
        #expect(try scheme.verify(headers, scheme.body, now: SchemeCase.signedAt.adding(seconds: Double(scheme.stale - 2))).verified != nil)
        #expect(try scheme.verify(headers, scheme.body, now: SchemeCase.signedAt.adding(seconds: Double(-scheme.future + 2))).verified != nil)
    }

    @Test(arguments: SchemeCase.all.filter { $0.payloadWithoutIdentity != nil })
    func malformedPayload(_ scheme: SchemeCase) throws {
        let body = try #require(scheme.payloadWithoutIdentity)
        let headers = try scheme.sign(body, with: scheme.secret)
        #expect(try scheme.verify(headers, body).reason == .malformedPayload)
    }

    /// A correctly signed delivery of `scheme` without the header `dropped` gets `reason`.
    @Test(arguments: [("github", "x-github-delivery", Reason.malformedPayload), ("standard-webhooks", "webhook-id", .malformedSignature)])
    func withoutAnIdHeader(scheme name: String, dropped: String, reason: Reason) throws {
        let scheme = try #require(SchemeCase.all.first { $0.scheme == name })
        var headers = HeaderFields()
        for field in try scheme.sign(scheme.body, with: scheme.secret) where field.canonicalName != dropped {
            headers.append(name: field.name, value: field.value)
        }
        #expect(try scheme.verify(headers, scheme.body).reason == reason)
    }

    @Test func synthflowKindsAndIdentities() throws {
        let scheme = try verifier("synthflow", secrets: ["s"])
        func check(_ body: String) throws -> VerifiedDelivery? {
            let headers = try scheme.signatureHeaders(body: Array(body.utf8), at: at(0))
            return scheme.verify(headers: headers, body: Array(body.utf8), now: at(0)).verified
        }
        #expect(try check(#"{"call":{"call_id":"c9"}}"#)?.eventKey == "post_call:c9")
        #expect(try check(#"{"event":"call_inbound","call_id":"c9","call_inbound":{"from_number":"+1"}}"#)?.eventKey == "inbound_call:c9")
        #expect(try check(#"{"call_inbound":{"call_id":"c9"}}"#)?.eventKey == "inbound_call:c9")
        // The same call's two webhooks carry the same signature, scoped apart by kind.
        let post = try scheme.signatureHeaders(body: Array(#"{"call":{"call_id":"c9"}}"#.utf8), at: at(0))
        let inbound = try scheme.signatureHeaders(body: Array(#"{"event":"call_inbound","call_id":"c9"}"#.utf8), at: at(0))
        #expect(post["Synthflow-Signature"] == inbound["Synthflow-Signature"])
    }

    @Test func synthflowBodyWithARepeatedKeyIsRefused() throws {
        // Synthflow signs only the call id, so a body could carry a second `call` for a handler to read.
        let scheme = try verifier("synthflow", secrets: ["s"])
        let headers = try scheme.signatureHeaders(body: Array(#"{"call":{"call_id":"c1"}}"#.utf8), at: at(0))
        let smuggled = Array(#"{"call":{"call_id":"c1"},"call":{"call_id":"c2"}}"#.utf8)
        #expect(scheme.verify(headers: headers, body: smuggled, now: at(0)).reason == .malformedPayload)
    }

    @Test func syncBatchKinds() throws {
        let scheme = try verifier("sync", secrets: ["whsec_x"])
        for (body, key) in [(#"{"id":"batch_1","status":"COMPLETED"}"#, "batch:batch_1:COMPLETED"),
                            (#"{"id":"b2","status":"FAILED","metrics":{"totalGenerations":1}}"#, "batch:b2:FAILED"),
                            (#"{"id":"g3","status":"REJECTED"}"#, "generation:g3:REJECTED")] {
            let headers = try scheme.signatureHeaders(body: Array(body.utf8), at: at(100))
            #expect(scheme.verify(headers: headers, body: Array(body.utf8), now: at(100)).verified?.eventKey == key)
        }
    }

    @Test func autifyKindsAndIntegerIds() throws {
        let scheme = try verifier("autify", secrets: ["a"])
        let plan = #"{"id":90210,"finished_at":"2026-01-15T09:04:12.875Z","scenarios":[]}"#
        let headers = try scheme.signatureHeaders(body: Array(plan.utf8), at: at(0))
        let verified = scheme.verify(headers: headers, body: Array(plan.utf8), now: Instant(iso8601: "2026-01-15T09:05:00Z")!).verified
        #expect(verified?.eventKey == "test_plan_result:90210")
        #expect(verified?.signedAt == Instant(iso8601: "2026-01-15T09:04:12.875Z"))
    }

    /// A signed `finished_at` that no integer holds used to trap while the rejection was worded.
    @Test(arguments: [("1e300", Reason.futureTimestamp), ("-1e300", .staleTimestamp), ("1e400", .futureTimestamp),
                      ("-1e400", .staleTimestamp), ("179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000", .futureTimestamp)])
    func autifyTimestampsOutOfEveryIntegerRangeAreRejected(finishedAt: String, reason: Reason) throws {
        let scheme = try verifier("autify", secrets: ["a"])
        let body = #"{"id":1,"finished_at":\#(finishedAt),"scenario_id":3}"#
        let headers = try scheme.signatureHeaders(body: Array(body.utf8), at: at(0))
        let result = scheme.verify(headers: headers, body: Array(body.utf8), now: at(1_768_503_846))
        guard case .failure(let rejection) = result else { Issue.record("accepted \(finishedAt)"); return }
        #expect(rejection.reason == reason)
        #expect(!rejection.detail.isEmpty)
    }

    @Test func instantsOutOfRangeStillFormat() {
        #expect(Instant(secondsSince1970: 1e300).iso8601 == "9999-12-31T23:59:59Z")
        #expect(Instant(secondsSince1970: -.infinity).iso8601 == "0000-01-01T00:00:00Z")
        #expect(Instant(secondsSince1970: .nan).unixSeconds == 0)
        #expect(Instant.wholeSecondsText(1e300) == "1e+300")
    }
}
