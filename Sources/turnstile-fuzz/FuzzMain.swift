#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TurnstileFuzz

#if FUZZING
/// The target libFuzzer drives, named by `TURNSTILE_FUZZ_TARGET` (read once).
private let fuzzTarget: String = ProcessInfo.processInfo.environment["TURNSTILE_FUZZ_TARGET"] ?? "http-parser"

@_cdecl("LLVMFuzzerTestOneInput")
public func turnstileFuzzOne(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    FuzzTargets.run(fuzzTarget, Array(UnsafeBufferPointer(start: data, count: count)))
    return 0
}
#else
/// Without libFuzzer: `turnstile-fuzz TARGET FILE...` runs each file through the target once (to replay a
/// crash input, or a whole corpus).
@main struct FuzzReplay {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard let target = arguments.first, FuzzTargets.names.contains(target) else {
            FileHandle.standardError.write(Data("usage: turnstile-fuzz \(FuzzTargets.names.joined(separator: "|")) FILE...\n".utf8))
            exit(2)
        }
        for path in arguments.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else {
                FileHandle.standardError.write(Data("\(path): cannot be read\n".utf8))
                exit(2)
            }
            FuzzTargets.run(target, [UInt8](data))
        }
    }
}
#endif
