internal import CCrypto
import Foundation

/// Reference rates of raw libcrypto, measured beside Turnstile's own figures by `turnstile bench`.
public enum CryptoBaseline {
    /// HMAC-SHA256 codes per second over `message` with one keyed `EVP_MAC_CTX` prepared once and re-initialised
    /// for each message: the fastest way libcrypto offers.
    public static func reusedContextRate(key: [UInt8], message: [UInt8], iterations: Int) -> Double {
        guard let context = key.withUnsafeBytes({ CCrypto_hmac_context_new("SHA256", $0.baseAddress, $0.count) }) else {
            return 0
        }
        defer { EVP_MAC_CTX_free(context) }
        var out = [UInt8](repeating: 0, count: 32)
        var written = 0
        var sink: UInt8 = 0
        let start = DispatchTime.now().uptimeNanoseconds
        message.withUnsafeBytes { msg in
            out.withUnsafeMutableBytes { raw in
                let output = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
                let input = msg.baseAddress!.assumingMemoryBound(to: UInt8.self)
                for _ in 0..<iterations {
                    _ = EVP_MAC_init(context, nil, 0, nil)
                    _ = EVP_MAC_update(context, input, msg.count)
                    _ = EVP_MAC_final(context, output, &written, 32)
                    sink &+= output[0]
                }
            }
        }
        let elapsed = DispatchTime.now().uptimeNanoseconds - start
        blackHole(sink)
        return Double(iterations) / (Double(elapsed) / 1e9)
    }

    /// HMAC-SHA256 codes per second with the one-shot `HMAC()` call, which sets up the key every time.
    public static func oneShotRate(key: [UInt8], message: [UInt8], iterations: Int) -> Double {
        var out = [UInt8](repeating: 0, count: 32)
        var written: UInt32 = 0
        var sink: UInt8 = 0
        let start = DispatchTime.now().uptimeNanoseconds
        key.withUnsafeBytes { k in
            message.withUnsafeBytes { msg in
                out.withUnsafeMutableBytes { raw in
                    let output = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    for _ in 0..<iterations {
                        _ = HMAC(EVP_sha256(), k.baseAddress, Int32(k.count),
                                 msg.baseAddress!.assumingMemoryBound(to: UInt8.self), msg.count, output, &written)
                        sink &+= output[0]
                    }
                }
            }
        }
        let elapsed = DispatchTime.now().uptimeNanoseconds - start
        blackHole(sink)
        return Double(iterations) / (Double(elapsed) / 1e9)
    }

    @inline(never)
    private static func blackHole(_ value: UInt8) {
        if value == 0xff && iterationsSeen < 0 { print(value) }
    }
    private static let iterationsSeen = 0
}
