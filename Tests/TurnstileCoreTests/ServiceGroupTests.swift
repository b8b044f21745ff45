import Foundation
import Testing
import TurnstileCore
import TurnstileSync

/// Records what a service saw.
final class Journal: Sendable {
    private let entries = Locked<[String]>([])
    func add(_ entry: String) { entries.withLock { $0.append(entry) } }
    var all: [String] { entries.withLock { $0 } }
}

struct Polite: Service {
    let name: String
    let journal: Journal
    func run(until shutdown: GracefulShutdown) async {
        journal.add("start \(name)")
        await shutdown.wait()
        journal.add("stop \(name)")
    }
}

/// Ignores shutdown; only cancellation ends it.
struct Stubborn: Service {
    let journal: Journal
    var name: String { "stubborn" }
    func run(until shutdown: GracefulShutdown) async {
        while !Task.isCancelled { try? await Task.sleep(nanoseconds: 10_000_000) }
        journal.add("cancelled")
    }
}

/// Returns at once, twice, then behaves.
final class Flaky: Service, Sendable {
    let journal: Journal
    private let runs = Locked(0)
    init(journal: Journal) { self.journal = journal }
    var name: String { "flaky" }
    var count: Int { runs.withLock { $0 } }
    func run(until shutdown: GracefulShutdown) async {
        let run = runs.withLock { $0 += 1; return $0 }
        journal.add("run \(run)")
        if run <= 2 { return }
        await shutdown.wait()
    }
}

@Suite struct ServiceGroupTests {
    @Test func servicesStopInReverseOrderEachWaitedFor() async {
        let journal = Journal()
        let group = ServiceGroup([Polite(name: "store", journal: journal), Polite(name: "dispatch", journal: journal),
                                  Polite(name: "http", journal: journal)], gracePeriodSeconds: 5)
        await group.run(until: {
            while journal.all.count < 3 { try? await Task.sleep(nanoseconds: 1_000_000) }
        })
        #expect(journal.all.suffix(3) == ["stop http", "stop dispatch", "stop store"])
    }

    @Test func aServiceStillRunningAtTheEndOfTheGracePeriodIsCancelled() async {
        let journal = Journal()
        await ServiceGroup([Stubborn(journal: journal)], gracePeriodSeconds: 0.1).run(until: {})
        #expect(journal.all == ["cancelled"])
    }

    @Test func aServiceThatEndsBeforeShutdownIsLoggedAndStartedAgain() async {
        let journal = Journal()
        let flaky = Flaky(journal: journal)
        let lines = LinesLog()
        await ServiceGroup([flaky], gracePeriodSeconds: 1, logger: Logger(handler: lines)).run(until: {
            while flaky.count < 3 { try? await Task.sleep(nanoseconds: 5_000_000) }
        })
        #expect(journal.all == ["run 1", "run 2", "run 3"])
        #expect(lines.messages.filter { $0 == "flaky ended unexpectedly; restarting it" }.count == 2)
    }

    @Test func theGracePeriodIsShared() async {
        let shutdown = GracefulShutdown()
        #expect(shutdown.secondsLeft == .infinity && !shutdown.isRequested)
        shutdown.request(graceSeconds: 2)
        #expect(shutdown.isRequested && shutdown.secondsLeft <= 2)
        // A second request does not extend it.
        shutdown.request(graceSeconds: 100)
        #expect(shutdown.secondsLeft <= 2)
        await shutdown.wait()
    }
}

/// Keeps the messages logged.
final class LinesLog: LogHandler, Sendable {
    private let lines = Locked<[String]>([])
    var messages: [String] { lines.withLock { $0 } }
    func log(level: LogLevel, message: String, metadata: [(String, String)]) { lines.withLock { $0.append(message) } }
}
