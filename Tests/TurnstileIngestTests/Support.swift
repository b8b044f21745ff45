import Foundation
import TurnstileCore
import TurnstileIngest

/// The repository root, found from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

func fixturePayload(_ provider: String, _ name: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(repositoryRoot)/fixtures/payloads/\(provider)/\(name).body")))
}

func provider(_ scheme: String, secrets: [String], name: String? = nil, tolerance: Int? = nil, skew: Int? = nil,
              maxAge: Int? = nil, retention: Int? = nil, hmac: String? = nil) throws -> ProviderConfig {
    ProviderConfig(
        name: name ?? scheme, scheme: scheme,
        secrets: secrets.enumerated().map { Secret(reference: "env:TEST_SECRET_\($0.offset)", value: Array($0.element.utf8)) },
        toleranceSeconds: tolerance, maxFutureSkewSeconds: skew, maxAgeSeconds: maxAge, retentionSeconds: retention,
        hmac: try hmac.map { try JSONParser.parse($0).objectValue! })
}

func verifier(_ scheme: String, secrets: [String], name: String? = nil, hmac: String? = nil) throws -> SchemeVerifier {
    try SchemeVerifier(config: try provider(scheme, secrets: secrets, name: name, hmac: hmac))
}

func headers(_ pairs: KeyValuePairs<String, String>) -> HeaderFields {
    HeaderFields(pairs.map { ($0.key, $0.value) })
}

func at(_ unix: Int) -> Instant { Instant(secondsSince1970: Double(unix)) }

extension Result {
    var reason: Reason? {
        if case .failure(let rejection as Rejection) = self { return rejection.reason }
        return nil
    }

    var verified: VerifiedDelivery? {
        if case .success(let value as VerifiedDelivery) = self { return value }
        return nil
    }
}
