import Foundation
import Testing
import TurnstileCore

/// The built-in handlers and the config's handler entries, through the real binary.
@Suite struct HandlerBinaryTests {
    func config(_ handlers: String, folder: String) throws -> String {
        let fixtures = try JSONParser.parse(String(contentsOfFile: repositoryRoot + "/fixtures/turnstile.json", encoding: .utf8))
        let path = folder + "/turnstile.json"
        try """
            {"store":"sqlite:\(folder)/t.db","env_file":"\(repositoryRoot)/fixtures/secrets.env",
             "providers":\(fixtures["providers"]!.serialized()),
             "dispatch":{"max_attempts":2,"backoff_base_seconds":0.01,"backoff_max_seconds":0.02},
             "handlers":[\(handlers)]}
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func aSwiftEntryNamingNoRegisteredHandlerIsRefusedAtLoad() throws {
        let folder = try temporaryFolder()
        let path = try config(#"{"name":"notify-crm","type":"swift","events":["*"]}"#, folder: folder)
        let result = try run(["replay", "--config", path, "fixtures/deliveries/github.ndjson"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("handlers[0]"))
        #expect(result.stderr.contains("no handler named \"notify-crm\" was registered from Swift"))
    }

    @Test func execHandlersRunPerEventOnlyWhereTheirFilterPassesAndDeadLettersNameTheHandler() throws {
        let folder = try temporaryFolder()
        let out = folder + "/pushes.ndjson"
        let path = try config("""
            {"name":"pushes","type":"exec","command":["/bin/sh","-c","cat >> '\(out)'; echo >> '\(out)'"],"events":["github.*"],
             "filter":[{"path":"ref","exists":true}]},
            {"name":"broken","type":"exec","command":["/bin/sh","-c","echo downstream refused >&2; exit 7"],"events":["github.*"]}
            """, folder: folder)
        let replay = try run(["replay", "--config", path, "fixtures/deliveries/github.ndjson"])
        #expect(replay.status == 0 || replay.status == 3, "\(replay.stderr)")
        let lines = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map { try JSONParser.parse(String($0)) }
        #expect(!lines.isEmpty)
        #expect(lines.allSatisfy { $0["handler"]?.stringValue == "pushes" && $0["payload"]?["ref"] != nil })
        let letters = try run(["dead-letters", "--config", path, "list"])
        #expect(letters.status == 0)
        let parsed = try letters.lines.map { try JSONParser.parse($0) }
        #expect(!parsed.isEmpty)
        // Only the failing handler's deliveries are dead letters: the working one's state is its own.
        #expect(parsed.allSatisfy { $0["handler"]?.stringValue == "broken" && ($0["last_error"]?.stringValue ?? "").contains("downstream refused") })
    }

    /// Commands run four at a time inherit no descriptor but stdin, stdout and stderr (they inherited other
    /// children's pipes), and a helper a command leaves running in the background ends with it.
    @Test func execCommandsInheritOnlyTheirStandardDescriptorsAndLeaveNoOrphan() throws {
        let folder = try temporaryFolder()
        let marker = folder + "/orphan.pid"
        // The command checks its own descriptors (besides the one listing them), then leaves a helper running.
        let check = folder + "/check.py"
        try """
            import os, subprocess, sys
            inherited = []
            for name in os.listdir("/proc/self/fd"):
                try:
                    target = os.readlink("/proc/self/fd/" + name)
                except OSError:
                    continue  # the listing's own descriptor, closed by now
                if int(name) > 2 and not target.startswith("/proc/"):
                    inherited.append(name + " -> " + target)
            if inherited:
                sys.stderr.write("inherited descriptors: " + ", ".join(inherited))
                sys.exit(3)
            sys.stdin.read()
            helper = subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open("\(marker)", "a") as marker:
                marker.write(str(helper.pid) + "\\n")
            """.write(toFile: check, atomically: true, encoding: .utf8)
        let path = try config("""
            {"name":"fds","type":"exec","command":["/usr/bin/python3","\(check)"],"events":["*"],"concurrency":4}
            """, folder: folder)
        let replay = try run(["replay", "--config", path, "fixtures/deliveries/"])
        #expect(replay.status == 0 || replay.status == 3, "\(replay.stderr.suffix(1000))")
        let letters = try run(["dead-letters", "--config", path, "list"]).lines
        #expect(letters.filter { !$0.contains("schema_violation") }.isEmpty, "\(letters.prefix(3))")
        let pids = try String(contentsOfFile: marker, encoding: .utf8).split(separator: "\n").compactMap { Int32($0) }
        #expect(pids.count >= 10)
        // Gone, or a zombie waiting for init to reap it: either way no longer running.
        func running(_ pid: Int32) -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
        }
        for _ in 0..<100 where pids.contains(where: running) { usleep(50_000) }
        #expect(!pids.contains(where: running), "the background helpers ended with their commands")
    }
}
