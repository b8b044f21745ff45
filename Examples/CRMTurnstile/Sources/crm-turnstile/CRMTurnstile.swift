#if canImport(Glibc)
import Glibc
#endif
import CRMHandlers
import Foundation
import Turnstile
import TurnstileCLI

/// The whole `turnstile` command line (serve, replay, dead-letters, …) with this team's handlers in it.
@main struct CRMTurnstile {
    static func main() async {
        let outbox = ProcessInfo.processInfo.environment["CRM_OUTBOX"] ?? "./crm-outbox.jsonl"
        exit(await TurnstileMain.main(arguments: Array(CommandLine.arguments.dropFirst())) { registry in
            registry.register(NotifyCRM(crm: OutboxCRM(path: outbox)), name: "notify-crm", events: ["synthflow.post_call"])
            registry.answerInboundCalls(with: InboundRouter())
        })
    }
}
