import TurnstileCrypto

/// The built-in schemes, each a ``SchemeSpec``. The decisions the providers leave open are the ones
/// the contract's table fixes.
public enum SchemePresets {
    /// Scheme names config may use, besides `hmac`.
    public static let names = ["synthflow", "autify", "sync", "standard-webhooks", "stripe", "github"]

    public static func spec(named name: String) -> SchemeSpec? {
        switch name {
        case "synthflow": synthflow
        case "autify": autify
        case "sync": sync
        case "standard-webhooks": standardWebhooks
        case "stripe": stripe
        case "github": github
        default: nil
        }
    }

    static let synthflowCallID: [[String]] = [["call", "call_id"], ["call_id"], ["call_inbound", "call_id"]]

    /// Synthflow: base64 HMAC-SHA256 of the call id only; no timestamp, so nonces are the only defence.
    public static let synthflow = SchemeSpec(
        name: "synthflow",
        headerSets: ["Synthflow-Signature", "X-Synthflow-Signature", "HTTP_SYNTHFLOW_SIGNATURE"].map { HeaderSet(signature: $0) },
        algorithm: .sha256, encoding: .base64, format: .plain(prefix: ""),
        signed: .jsonString(synthflowCallID),
        timestamp: .none,
        kind: .rules([
            KindRule("inbound_call", when: .equals(["event"], "call_inbound")),
            KindRule("post_call", when: .object(["call"])),
            KindRule("inbound_call", when: .object(["call_inbound"])),
        ]),
        identity: [.kind, .json(synthflowCallID)],
        key: .utf8)

    /// Autify: `sha1=<hex>` over the raw body; the signed `finished_at` is checked against `max_age_seconds`.
    public static let autify = SchemeSpec(
        name: "autify",
        headerSets: [HeaderSet(signature: "X-Autify-Signature")],
        algorithm: .sha1, encoding: .hex, format: .plain(prefix: "sha1="),
        signed: .body,
        timestamp: .json(["finished_at"]),
        kind: .rules([
            KindRule("test_plan_result", when: .present(["scenarios"])),
            KindRule("test_case_result", when: .present(["scenario_id"])),
        ]),
        identity: [.kind, .json([["id"]])],
        key: .utf8,
        timestampIsPayloadAge: true)

    /// Sync: `t=<unix>,v1=<hex>` over `<t>.<body>`, keyed with the whole `whsec_…` string; a logged
    /// `JSON.stringify` fallback when the raw bytes fail.
    public static let sync = SchemeSpec(
        name: "sync",
        headerSets: [HeaderSet(signature: "Sync-Signature")],
        algorithm: .sha256, encoding: .hex, format: .keyValue(signatureKey: "v1", timestampKey: "t"),
        signed: .timestampDotBody,
        timestamp: .signatureEntry,
        kind: .rules([
            KindRule("batch", when: .hasPrefix(["id"], "batch_")),
            KindRule("batch", when: .object(["metrics"])),
            KindRule("generation", when: .always),
        ]),
        identity: [.kind, .json([["id"]]), .json([["status"]])],
        key: .utf8,
        orderingPartCount: 2,
        stringifyFallback: true)

    /// Standard Webhooks and Svix: `v1,<base64>` HMAC-SHA256 or `v1a,<base64>` Ed25519 over
    /// `<id>.<timestamp>.<body>`; ±300 s.
    public static let standardWebhooks = SchemeSpec(
        name: "standard-webhooks",
        headerSets: ["webhook", "svix"].map {
            HeaderSet(signature: "\($0)-signature", id: "\($0)-id", timestamp: "\($0)-timestamp")
        },
        algorithm: .sha256, encoding: .base64, format: .versioned(hmacVersion: "v1", ed25519Version: "v1a"),
        signed: .idDotTimestampDotBody,
        timestamp: .header,
        kind: .json(["type"]),
        identity: [.header],
        key: .base64(prefix: "whsec_", ed25519: true),
        defaultFutureSkewSeconds: 300)

    /// Stripe: `t=<unix>,v1=<hex>` over `<t>.<body>`; only `v1` counts.
    public static let stripe = SchemeSpec(
        name: "stripe",
        headerSets: [HeaderSet(signature: "Stripe-Signature")],
        algorithm: .sha256, encoding: .hex, format: .keyValue(signatureKey: "v1", timestampKey: "t"),
        signed: .timestampDotBody,
        timestamp: .signatureEntry,
        kind: .json(["type"]),
        identity: [.json([["id"]])],
        key: .utf8)

    /// GitHub: `sha256=<hex>` over the raw body; `X-GitHub-Delivery` is the identity, `X-GitHub-Event` the kind.
    public static let github = SchemeSpec(
        name: "github",
        headerSets: [HeaderSet(signature: "X-Hub-Signature-256", id: "X-GitHub-Delivery", eventType: "X-GitHub-Event")],
        algorithm: .sha256, encoding: .hex, format: .plain(prefix: "sha256="),
        signed: .body,
        timestamp: .none,
        kind: .header,
        identity: [.header],
        key: .utf8)
}
