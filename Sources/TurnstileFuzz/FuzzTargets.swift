#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TurnstileCore
import TurnstileHTTP
import TurnstileIngest

/// The fuzz targets: each takes arbitrary bytes and must neither crash nor break the invariant it checks
/// (a broken invariant is a `preconditionFailure`, which libFuzzer reports as a crash). The `turnstile-fuzz`
/// executable runs them under libFuzzer (`Tests/Fuzz/run.sh`); the test suite runs every kept input
/// (`Tests/Fuzz/corpus/<target>/`) through them, so a crash once found stays fixed.
public enum FuzzTargets {
    /// Target names, as the corpus folders are named.
    public static let names = ["http-parser", "verify", "json", "stringify", "delivery", "config", "encoding"]

    /// Runs target `name` on `input`. Unknown names are a usage error of the caller.
    public static func run(_ name: String, _ input: [UInt8]) {
        switch name {
        case "http-parser": httpParser(input)
        case "verify": verify(input)
        case "json": json(input)
        case "stringify": stringify(input)
        case "delivery": delivery(input)
        case "config": config(input)
        case "encoding": encoding(input)
        default: preconditionFailure("no fuzz target \(name)")
        }
    }

    // MARK: HTTP

    /// The request parser fed the input whole, a byte at a time, and in pieces the first byte sizes: every way
    /// gives the same requests and the same refusal.
    static func httpParser(_ input: [UInt8]) {
        var limits = HTTPLimits()
        limits.maxBodyBytes = 4096
        limits.maxHeaderBytes = 2048
        limits.maxRequestLineBytes = 1024
        limits.maxHeaderCount = 20
        let whole = parse(input, limits: limits, piece: input.count)
        let bytewise = parse(input, limits: limits, piece: 1)
        let sized = parse(input, limits: limits, piece: 1 + Int(input.first ?? 0) % 61)
        precondition(whole == bytewise, "whole and byte-at-a-time parses differ: \(whole.summary) against \(bytewise.summary)")
        precondition(whole == sized, "whole and piecewise parses differ: \(whole.summary) against \(sized.summary)")
    }

    private struct ParseResult: Equatable {
        var requests: [HTTPRequest] = []
        var refusal: Int? = nil
        var summary: String { "\(requests.count) requests, refusal \(refusal.map(String.init) ?? "none")" }
    }

    private static func parse(_ input: [UInt8], limits: HTTPLimits, piece: Int) -> ParseResult {
        var parser = HTTPRequestParser(limits: limits)
        var buffer = HTTPByteBuffer()
        var result = ParseResult()
        var index = 0
        repeat {
            let end = min(input.count, index + max(1, piece))
            buffer.append(Array(input[index..<end]))
            index = end
            do {
                while let output = try parser.next(&buffer) {
                    if case .request(let request) = output { result.requests.append(request) }
                }
            } catch {
                result.refusal = error.status
                return result
            }
        } while index < input.count
        return result
    }

    // MARK: Verification

    /// Fixed secrets for every scheme, so the whole verify path runs under one key.
    private static let ingest: Ingest = {
        let schemes = ["synthflow": "sf_fuzz", "autify": "au_fuzz", "sync": "whsec_fuzz", "stripe": "whsec_fuzz",
                       "github": "gh_fuzz", "standard-webhooks": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
        let providers = schemes.sorted { $0.key < $1.key }.map { scheme, secret in
            ProviderConfig(name: scheme, scheme: scheme, secrets: [Secret(reference: "env:FUZZ", value: Array(secret.utf8))])
        }
        return try! Ingest(config: TurnstileConfig(file: "fuzz.json", providers: providers))
    }()

    private static let headerNames = ["Synthflow-Signature", "X-Autify-Signature", "Sync-Signature", "webhook-signature",
                                      "Stripe-Signature", "X-Hub-Signature-256"]

    /// Input: a scheme selector byte, then header lines (`name: value`, up to a blank line), then the body.
    /// Each scheme's signature-header parser and the whole verify path run over it; a delivery signed by the
    /// scheme's own signer with the body must always verify.
    static func verify(_ input: [UInt8]) {
        guard let selector = input.first else { return }
        let schemes = ["synthflow", "autify", "sync", "stripe", "github", "standard-webhooks"]
        let scheme = schemes[Int(selector) % schemes.count]
        let rest = Array(input.dropFirst())
        var headers = HeaderFields()
        var body: [UInt8] = rest
        if let split = find([0x0a, 0x0a], in: rest) {
            body = Array(rest[(split + 2)...])
            for line in rest[..<split].split(separator: 0x0a) {
                guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
                let name = String(decoding: line[line.startIndex..<colon], as: UTF8.self)
                let value = String(decoding: line[(colon + 1)...], as: UTF8.self)
                headers.append(name: name.isEmpty ? headerNames[Int(selector) % headerNames.count] : name, value: value)
            }
        }
        let now = Instant(secondsSince1970: 1_768_503_846)
        _ = ingest.verify(provider: scheme, headers: headers, body: body, now: now)
        // What the signer signs, the verifier accepts (unless the body is not something the scheme can key on).
        guard let verifier = ingest.scheme(for: scheme),
              let signed = try? verifier.signatureHeaders(body: body, at: now, id: "fuzz-id", eventType: "push") else { return }
        var all = signed
        all.append(name: "X-GitHub-Delivery", value: "fuzz-id")
        if case .failure(let rejection) = ingest.verify(provider: scheme, headers: all, body: body, now: now) {
            precondition(rejection.reason != .invalidSignature && rejection.reason != .malformedSignature,
                         "\(scheme): its own signature was refused: \(rejection)")
        }
    }

    // MARK: JSON

    private static let scannedNames = ["id", "type", "status", "call", "event", "finished_at"]

    /// The parser and the scanner over the same bytes: the scanner never accepts a value the parser would
    /// refuse or read differently, for the fields it reads.
    static func json(_ input: [UInt8]) {
        let parsed = try? JSONParser.parse(input)
        input.withUnsafeBytes { raw in
            // The scanner may refuse more than the parser (a repeated key it reads): nothing to compare then.
            guard let spans = try? JSONScanner.spans(of: scannedNames, in: raw) else { return }
            for (index, name) in scannedNames.enumerated() {
                let start = spans.start(of: index)
                guard start >= 0 else {
                    if let object = parsed?.objectValue { precondition(object[name] == nil, "the scanner missed \(name)") }
                    continue
                }
                guard let field = try? JSONScanner.field(at: start, in: raw) else { continue }
                let value = Array(UnsafeRawBufferPointer(rebasing: raw[start..<spans.end(of: index)]))
                let alone = try? JSONParser.parse(value)
                switch field {
                case .string(let text):
                    precondition(alone?.stringValue == text, "the scanner read \(name) as a string the parser reads differently")
                case .number(let text):
                    precondition(alone?.numberValue?.text == text, "the scanner read \(name) as a number the parser refuses")
                case .bool(let flag):
                    precondition(alone == .bool(flag), "the scanner read \(name) as a boolean the parser refuses")
                case .null:
                    precondition(alone == .null, "the scanner read \(name) as null the parser refuses")
                case .object, .array:
                    break  // Skipped for structure only; read in full when needed.
                }
                if let parsed, let whole = parsed[name], let alone { precondition(whole == alone, "\(name) differs between the scanner and the parser") }
            }
        }
    }

    /// `JSON.stringify` is a fixed point: what it writes parses back to a value it writes the same way.
    static func stringify(_ input: [UInt8]) {
        guard let value = try? JSONParser.parse(input) else { return }
        let once = value.javaScriptStringified()
        guard let again = try? JSONParser.parse(once) else { preconditionFailure("stringify wrote what the parser refuses") }
        precondition(again.javaScriptStringified() == once, "stringify is not stable")
    }

    // MARK: Inputs from files

    private static let deliverySchema = try! SchemaCatalog.shared().schema("delivery")

    /// One delivery line, as `replay` reads it: parse, then the delivery schema and the body rules.
    static func delivery(_ input: [UInt8]) {
        guard let document = try? JSONParser.parse(input) else { return }
        _ = try? Delivery(json: document, schema: deliverySchema)
    }

    private static let configPath = NSTemporaryDirectory() + "turnstile-fuzz-config-\(getpid()).json"

    /// A config file, through the loader and the JSON Schema validator.
    static func config(_ input: [UInt8]) {
        guard FileManager.default.createFile(atPath: configPath, contents: Data(input)) else { return }
        _ = try? TurnstileConfig.load(path: configPath, environment: ["FUZZ_SECRET": "whsec_fuzz"])
    }

    /// Hex and base64: decoding never crashes, and what decodes encodes back to the same text (strict forms).
    static func encoding(_ input: [UInt8]) {
        let text = String(decoding: input, as: UTF8.self)
        if let bytes = try? Hex.decode(text) {
            precondition(Hex.encode(bytes) == text.lowercased(), "hex decoding accepted a non-canonical form")
        }
        if let bytes = try? Base64.decode(text) {
            precondition(Base64.encode(bytes) == text, "base64 decoding accepted a non-canonical form")
        }
        precondition((try? Hex.decode(Hex.encode(input))) == input, "hex round trip")
        precondition((try? Base64.decode(Base64.encode(input))) == input, "base64 round trip")
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for index in 0...(haystack.count - needle.count) where haystack[index..<(index + needle.count)].elementsEqual(needle) {
            return index
        }
        return nil
    }
}
