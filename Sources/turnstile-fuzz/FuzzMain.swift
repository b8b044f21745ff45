#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TurnstileFuzz

#if FUZZING
/// The target libFuzzer drives, named by `TURNSTILE_FUZZ_TARGET` (read once).
private let fuzzTarget: String = ProcessInfo.processInfo.environment["TURNSTILE_FUZZ_TARGET"] ?? "http-parser"

@_cdecl("LLVMFuzzerTestOneInput")
public func turnstileFuzzOne(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let data else { return 0 }
    FuzzTargets.run(fuzzTarget, Array(UnsafeBufferPointer(start: data, count: count)))
    return 0
}

/// libFuzzer's driver, for an executable whose `main` is not libFuzzer's.
@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links an executable's entry point as `<module>_main`; here it hands over to libFuzzer.
@_cdecl("turnstile_fuzz_main")
public func turnstileFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return runFuzzerDriver(&count, &arguments) { data, size in turnstileFuzzOne(data, size) }
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
