#if canImport(Glibc)
import Glibc
#endif
import TurnstileCLI

// The plain `turnstile`: the same entry point a team's own binary calls, with no handlers of its own.
exit(await TurnstileMain.main(arguments: Array(CommandLine.arguments.dropFirst())))
