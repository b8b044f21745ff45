#if canImport(Glibc)
import Glibc
#endif

/// Elapsed monotonic time, for summaries and progress lines.
struct Stopwatch {
    private let start = Stopwatch.now()
    var elapsed: Double { Stopwatch.now() - start }

    func rate(_ count: Int) -> String {
        String(Int((Double(count) / max(elapsed, 1e-9)).rounded()))
    }

    var elapsedText: String { Self.format(elapsed) }

    static func format(_ seconds: Double) -> String { "\((seconds * 100).rounded() / 100) s" }

    private static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}
