import TurnstileCore
import TurnstileIngest

/// `turnstile sign`: a sender simulator that prints a signed delivery.
struct SignCommand: TurnstileCommand {
    static let spec = CommandSpec(
        name: "sign",
        abstract: "Print a signed delivery for a provider, signed with its first secret (a sender simulator).",
        usage: "sign --config FILE --provider NAME --body-file FILE [--at ISO8601] [--id ID] [--event TYPE] [--expect OUTCOME[/REASON]]",
        options: [
            .option("config", "FILE", required: true, help: "The Turnstile config file (JSON)."),
            .option("provider", "NAME", required: true, help: "The provider to sign for."),
            .option("body-file", "FILE", required: true, help: "The exact body bytes to send."),
            .option("at", "ISO8601", help: "Signing time, also received_at (default: now)."),
            .option("id", "ID", help: "The delivery label, and the id header for schemes that send one (webhook-id, X-GitHub-Delivery)."),
            .option("event", "TYPE", help: "The event header for schemes that send one (X-GitHub-Event; default ping)."),
            .option("expect", "OUTCOME[/REASON]", help: "Record the expected outcome, for fixtures."),
        ],
        discussion: "Prints one delivery in the delivery format (schemas/delivery.schema.json) on stdout.")

    let configPath: String
    let provider: String
    let bodyFile: String
    let at: Instant?
    let id: String?
    let event: String?
    let expect: Expectation?

    init(_ arguments: ParsedArguments) throws(UsageError) {
        configPath = arguments.value("config") ?? ""
        provider = arguments.value("provider") ?? ""
        bodyFile = arguments.value("body-file") ?? ""
        at = try arguments.instant("at")
        id = arguments.value("id")
        event = arguments.value("event")
        if let text = arguments.value("expect") {
            let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
            guard let outcome = Outcome(rawValue: parts[0]) else {
                throw UsageError("--expect \"\(text)\": the outcome must be accepted, duplicate or rejected")
            }
            let reason = parts.count > 1 ? Reason(rawValue: parts[1]) : nil
            if let reason, !(Reason.rejections + Reason.duplicates).contains(reason) {
                throw UsageError("--expect \"\(text)\": \(parts[1]) is not a reason code")
            }
            expect = Expectation(outcome: outcome, reason: reason)
        } else {
            expect = nil
        }
    }

    func run(console: any Console, setup: HandlerSetup) async throws -> Int32 {
        let config = try TurnstileConfig.load(path: configPath)
        let ingest = try Ingest(config: config)
        guard let scheme = ingest.scheme(for: provider) else {
            throw UsageError("no provider named \"\(provider)\" in \(configPath) (providers: \(ingest.providerNames.joined(separator: ", ")))")
        }
        // A sender may send more than this receiver accepts: that is how body_too_large is tested.
        let body = try FileInput.read(bodyFile, limit: 64 << 20)
        let instant = at ?? SystemWallClock().now()
        let headers: HeaderFields
        do { headers = try scheme.signatureHeaders(body: body, at: instant, id: id, eventType: event) } catch {
            throw InputError(.invalidValue, error.detail, file: bodyFile)
        }
        var withContentType = HeaderFields([("Content-Type", "application/json")])
        for field in headers { withContentType.append(name: field.name, value: field.value) }
        let delivery = Delivery(provider: provider, receivedAt: Instant(secondsSince1970: Double(instant.unixSeconds)),
                                headers: withContentType, body: body, id: id, path: "/webhooks/\(provider)", expect: expect)
        console.out(delivery.jsonValue.serialized())
        return ExitStatus.success
    }
}
