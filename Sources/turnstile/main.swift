#if canImport(Glibc)
import Glibc
#endif
import TurnstileCLI

signal(SIGPIPE, SIG_IGN)
exit(await TurnstileMain.main(arguments: Array(CommandLine.arguments.dropFirst())))
