public import TurnstileCore
import TurnstileCrypto

/// The verifier of every built-in scheme and of the generic `hmac` scheme: a ``SchemeSpec`` plus the
/// provider's prepared keys and time windows.
public final class SchemeVerifier: SignatureScheme {
    public let provider: String
    public let spec: SchemeSpec
    let keys: [VerificationKey]
    /// How old a signed header timestamp may be.
    public let toleranceSeconds: Int
    /// How far ahead of now a signed timestamp may be.
    public let maxFutureSkewSeconds: Int
    /// How old a signed payload timestamp (Autify's `finished_at`) may be.
    public let maxAgeSeconds: Int
    /// First components of every body path the spec reads, scanned in one pass.
    private let topLevelKeys: [String]
    /// The spec's header names, lower-cased once.
    private let headerSets: [CanonicalHeaderSet]
    private let syntax: SignatureSyntax
    /// Every body byte is under the signature (not so for Synthflow, which signs only the call id).
    private let bodyIsSigned: Bool
    /// The signed bytes start with the id header (Standard Webhooks): it must be present.
    private let signsID: Bool
    /// Whether the event kind may scope the signature nonce: only when the signature covers it, or when it is
    /// one of a fixed set of shapes (Synthflow's post-call and inbound-call webhooks of one call carry the same
    /// signature, and each passes once). A kind from a header or from unsigned free text never does.
    let kindScopesNonce: Bool
    /// The name signature nonces are kept under: the first provider in config order of those that share a
    /// secret with this one (see ``Ingest``), so a delivery replayed to another route under the same secret
    /// is still a seen signature.
    let nonceGroup: String
    /// One fingerprint per configured secret (SHA-256 of the scheme's key derivation and the secret's bytes):
    /// providers sharing a fingerprint share a nonce group. Never shown.
    let keyFingerprints: [[UInt8]]

    /// The fixed key of the replay digest: an HMAC under a public key is a collision-resistant hash of the
    /// signed message, fed in pieces like the signature itself.
    private static let replayDigestKey: HMACKey = {
        do { return try HMACKey(algorithm: .sha256, key: Array("turnstile signed-message digest v1".utf8)) } catch {
            preconditionFailure("libcrypto could not prepare the replay digest: \(error)")
        }
    }()

    /// The largest body the `JSON.stringify` fallback parses (Sync bodies are a few KB).
    public static let stringifyFallbackMaxBytes = 1 << 20

    public static let defaultToleranceSeconds = 300
    public static let defaultMaxAgeSeconds = 259_200

    /// Prepares the verifier for `config`, deriving every secret's key once.
    /// - Throws: ``InputError`` for a secret that cannot be right or a bad generic description.
    public convenience init(config: ProviderConfig, file: String? = nil) throws(InputError) {
        let spec: SchemeSpec
        if config.scheme == "hmac" {
            spec = try SchemeSpec.generic(config.hmac ?? JSONObject(), file: file, field: "\(config.fieldPath).hmac")
        } else if let preset = SchemePresets.spec(named: config.scheme) {
            spec = preset
        } else {
            throw InputError(.invalidValue, "unknown scheme \"\(config.scheme)\"", file: file, field: "\(config.fieldPath).scheme")
        }
        guard !config.secrets.isEmpty else {
            throw InputError(.invalidSecret, "at least one secret is needed", file: file, field: "\(config.fieldPath).secrets")
        }
        var keys: [VerificationKey] = []
        for (index, secret) in config.secrets.enumerated() {
            keys.append(try VerificationKey.derive(secret, spec: spec, file: file, field: "\(config.fieldPath).secrets[\(index)]"))
        }
        let derivation = Array("\(spec.algorithm.rawValue)|\(spec.key)|".utf8)
        self.init(provider: config.name, spec: spec, keys: keys,
                  toleranceSeconds: config.toleranceSeconds ?? Self.defaultToleranceSeconds,
                  maxFutureSkewSeconds: config.maxFutureSkewSeconds ?? spec.defaultFutureSkewSeconds,
                  maxAgeSeconds: config.maxAgeSeconds ?? Self.defaultMaxAgeSeconds,
                  keyFingerprints: config.secrets.map { SHA256.hash(derivation + $0.value) })
    }

    init(provider: String, spec: SchemeSpec, keys: [VerificationKey], toleranceSeconds: Int,
         maxFutureSkewSeconds: Int, maxAgeSeconds: Int, keyFingerprints: [[UInt8]] = [], nonceGroup: String? = nil) {
        self.provider = provider
        self.spec = spec
        self.keys = keys
        self.toleranceSeconds = toleranceSeconds
        self.maxFutureSkewSeconds = maxFutureSkewSeconds
        self.maxAgeSeconds = maxAgeSeconds
        self.keyFingerprints = keyFingerprints
        self.nonceGroup = nonceGroup ?? provider
        self.headerSets = spec.headerSets.map(CanonicalHeaderSet.init)
        self.syntax = SignatureSyntax(spec)
        if case .jsonString = spec.signed { self.bodyIsSigned = false } else { self.bodyIsSigned = true }
        self.signsID = spec.signed == .idDotTimestampDotBody
        switch spec.kind {
        case .none, .header: self.kindScopesNonce = false
        case .json: self.kindScopesNonce = self.bodyIsSigned
        case .rules: self.kindScopesNonce = true
        }
        self.topLevelKeys = spec.bodyPaths.reduce(into: [String]()) { keys, path in
            if let first = path.first, !keys.contains(first) { keys.append(first) }
        }
    }

    /// This verifier with its signature nonces kept under `group`.
    func inNonceGroup(_ group: String) -> SchemeVerifier {
        SchemeVerifier(provider: provider, spec: spec, keys: keys, toleranceSeconds: toleranceSeconds,
                       maxFutureSkewSeconds: maxFutureSkewSeconds, maxAgeSeconds: maxAgeSeconds,
                       keyFingerprints: keyFingerprints, nonceGroup: group)
    }

    /// The longest time after a delivery is sent that it can still pass the timestamp checks, or nil when
    /// the scheme signs no timestamp (then only the nonce table stops a replay).
    public var replayWindowSeconds: Int? {
        switch spec.timestamp {
        case .none: nil
        case .json: (spec.timestampIsPayloadAge ? maxAgeSeconds : toleranceSeconds) + maxFutureSkewSeconds
        case .header, .signatureEntry: toleranceSeconds + maxFutureSkewSeconds
        }
    }

    /// When a signature nonce may be forgotten: once the timestamp check alone would reject a delivery
    /// bearing it. Nil for schemes that sign no timestamp (their nonces live `retention_seconds`).
    public func signatureNonceExpiry(signedAt: Instant?) -> Instant? {
        guard let signedAt, spec.timestamp != .none else { return nil }
        return signedAt.adding(seconds: Double(spec.timestampIsPayloadAge ? maxAgeSeconds : toleranceSeconds))
    }

    public func verify(headers: HeaderFields, body: [UInt8], now: Instant) -> Result<VerifiedDelivery, Rejection> {
        do {
            return .success(try body.withBytes { raw throws(Rejection) in try verify(headers: headers, raw: raw, now: now) })
        } catch {
            return .failure(error)
        }
    }

    private func verify(headers: HeaderFields, raw: UnsafeRawBufferPointer, now: Instant) throws(Rejection) -> VerifiedDelivery {
        // 1. The signature header, under any of the scheme's spellings.
        guard let (set, headerValue, headerSpelling) = findSignatureHeader(headers) else {
            let names = spec.headerSets.map(\.signature).joined(separator: ", ")
            throw Rejection(.missingSignature, "no \(names) header")
        }
        let parsed = try ParsedSignature.parse(headerValue, syntax: syntax)

        // 2. The timestamp and id that are part of the signed bytes.
        var timestampText: String? = nil
        switch spec.timestamp {
        case .header:
            guard let name = set.timestamp, let value = headers.value(canonicalName: name) else {
                throw Rejection(.malformedSignature, "no \(set.spelled.timestamp ?? "timestamp") header")
            }
            timestampText = value.trimmedOWS()
        case .signatureEntry:
            guard let value = parsed.timestamp else { throw Rejection(.malformedSignature, "the signature header has no timestamp entry") }
            timestampText = value
        case .none, .json:
            break
        }
        var signedAt: Instant? = nil
        if let timestampText {
            guard let seconds = parseUnixSeconds(timestampText) else {
                throw Rejection(.malformedSignature, "the signed timestamp is not unix seconds")
            }
            signedAt = Instant(secondsSince1970: Double(seconds))
        }
        var id: String? = nil
        if let idHeader = set.id {
            id = headers.value(canonicalName: idHeader).map { $0.trimmedOWS() }
            if signsID, id?.isEmpty ?? true {
                throw Rejection(.malformedSignature, "no \(set.spelled.id ?? idHeader) header, which the signature covers")
            }
        }
        var body = BodyView(raw: raw, topLevelKeys: topLevelKeys, bodyIsSigned: bodyIsSigned)

        // 3. The signed bytes, and the match against every entry under every secret.
        var signedField: String? = nil
        if case .jsonString(let paths) = spec.signed {
            signedField = try body.firstScalar(paths, what: "the signed value").value
        }
        let message = SignedMessage(content: spec.signed, timestamp: timestampText, id: id, field: signedField)
        var match = firstMatch(parsed, message: message, body: raw)
        var stringified: [UInt8]? = nil
        if match == nil, spec.stringifyFallback, raw.count <= Self.stringifyFallbackMaxBytes,
           let value = try? JSONParser.parse(raw, repeatedKeys: .refuse) {
            // A repeated key is refused here: `JSON.parse` keeps the last copy while a reader of the raw bytes
            // may take the first, so the signed reading and the one the event is built from could differ.
            let form = value.javaScriptStringified()
            if !form.elementsEqual(raw), let found = form.withUnsafeBytes({ firstMatch(parsed, message: message, body: $0) }) {
                match = found
                stringified = form
            }
        }
        guard let match else {
            throw Rejection(.invalidSignature, "no signature entry matched under any of the \(keys.count) configured secret\(keys.count == 1 ? "" : "s")")
        }

        // 4. The event is read from exactly the bytes that were verified: under the fallback, the
        // `JSON.stringify` form (one reading, no repeated key, numbers and escapes written one way).
        if let stringified {
            return try stringified.withBytes { verifiedBody throws(Rejection) in
                var view = BodyView(raw: verifiedBody, topLevelKeys: topLevelKeys, bodyIsSigned: true)
                return try identify(&view, verifiedBody: verifiedBody, message: message, headers: headers, set: set, id: id,
                                    signedAt: signedAt, now: now, match: match, headerSpelling: headerSpelling, usedFallback: true)
            }
        }
        return try identify(&body, verifiedBody: raw, message: message, headers: headers, set: set, id: id,
                            signedAt: signedAt, now: now, match: match, headerSpelling: headerSpelling, usedFallback: false)
    }

    /// Steps 4 and 5 of ``verify(headers:raw:now:)``: the event's kind and identity, the replay nonce, then the
    /// timestamps, all from `verifiedBody`, the bytes the signature matched.
    private func identify(_ body: inout BodyView, verifiedBody: UnsafeRawBufferPointer, message: SignedMessage, headers: HeaderFields,
                          set: CanonicalHeaderSet, id: String?, signedAt: Instant?, now: Instant, match: Match,
                          headerSpelling: String, usedFallback: Bool) throws(Rejection) -> VerifiedDelivery {
        var signedAt = signedAt
        let kind = try eventKind(&body, headers: headers, set: set)
        var eventKey = ""
        var orderingKey: String? = nil
        for (index, part) in spec.identity.enumerated() {
            if index == spec.orderingPartCount { orderingKey = eventKey }
            let value: String
            switch part {
            case .kind: value = kind ?? "event"
            case .header:
                guard let id, !id.isEmpty else { throw Rejection(.malformedPayload, "no \(set.spelled.id ?? "id") header to key the event on") }
                value = id
            case .json(let paths):
                value = try body.firstScalar(paths, what: "the event identity").value
            }
            eventKey = eventKey.isEmpty ? value : eventKey + ":" + value
        }
        if spec.identity.isEmpty {
            eventKey = Hex.encode(SHA256.hash(verifiedBody))
        }

        // The replay nonce is a digest of the signed message, not the matched entry: stripping one of several
        // entries (a sender signing under an old and a new secret) or matching under another configured secret
        // leaves it the same.
        let digest = Self.replayDigestKey.authenticationCode { message.feed(into: &$0, body: verifiedBody) }
        let nonce = Nonce(provider: nonceGroup, category: 0, scope: kindScopesNonce ? kind ?? "" : "", value: digest)

        // 5. Timestamps, checked only once the signature has vouched for them.
        if case .json(let path) = spec.timestamp {
            signedAt = try body.instant(at: path)
        }
        if let signedAt {
            let window = spec.timestampIsPayloadAge ? maxAgeSeconds : toleranceSeconds
            let age = now.secondsSince1970 - signedAt.secondsSince1970
            if age > Double(window) {
                throw Rejection(.staleTimestamp, "signed \(Instant.wholeSecondsText(age)) s before now; at most \(window) s allowed")
            }
            if -age > Double(maxFutureSkewSeconds) {
                throw Rejection(.futureTimestamp, "signed \(Instant.wholeSecondsText(-age)) s after now; at most \(maxFutureSkewSeconds) s allowed")
            }
        }
        return VerifiedDelivery(
            provider: provider, kind: kind,
            eventKey: eventKey, orderingKey: orderingKey ?? eventKey, signedAt: signedAt, secretIndex: match.secretIndex,
            signatureNonce: nonce, signatureHeader: headerSpelling,
            usedStringifyFallback: usedFallback)
    }

    /// The first of the scheme's header sets whose signature header is present, with that header's value and
    /// its name as the sender spelled it.
    private func findSignatureHeader(_ headers: HeaderFields) -> (CanonicalHeaderSet, value: String, spelling: String)? {
        for set in headerSets {
            for field in headers.fields where field.isNamed(set.signature) { return (set, field.value, field.name) }
        }
        return nil
    }

    private struct Match {
        let secretIndex: Int
    }

    private func firstMatch(_ parsed: ParsedSignature, message: SignedMessage, body: UnsafeRawBufferPointer) -> Match? {
        var contiguous: [UInt8]? = nil
        for (index, key) in keys.enumerated() {
            switch key {
            case .hmac(let hmac):
                guard !parsed.hmac.isEmpty else { continue }
                if hmac.firstMatch(in: parsed.hmac, { message.feed(into: &$0, body: body) }) != nil {
                    return Match(secretIndex: index)
                }
            case .ed25519(let publicKey, _):
                for start in stride(from: 0, to: parsed.ed25519.count, by: 64) {
                    if contiguous == nil { contiguous = message.bytes(body: body) }
                    let entry = Array(parsed.ed25519[start..<start + 64])
                    if publicKey.isValidSignature(entry, for: contiguous!) { return Match(secretIndex: index) }
                }
            }
        }
        return nil
    }

    private func eventKind(_ body: inout BodyView, headers: HeaderFields, set: CanonicalHeaderSet) throws(Rejection) -> String? {
        switch spec.kind {
        case .none:
            return nil
        case .header:
            return set.eventType.flatMap { headers.value(canonicalName: $0) }.map { $0.trimmedOWS() }.flatMap { $0.isEmpty ? nil : $0 }
        case .json(let path):
            return (try? body.field(path))??.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        case .rules(let rules):
            for rule in rules where try body.matches(rule.test) { return rule.kind }
            throw Rejection(.malformedPayload, "the body matches none of the shapes of \(spec.name) events (\(Set(rules.map(\.kind)).sorted().joined(separator: ", ")))")
        }
    }
}

/// A ``HeaderSet`` with its names lower-cased once, for look-ups without case folding. A class, so that
/// handing it around per delivery costs one reference count rather than one per name.
final class CanonicalHeaderSet: Sendable {
    let spelled: HeaderSet
    let signature: String
    let id: String?
    let timestamp: String?
    let eventType: String?

    init(_ set: HeaderSet) {
        spelled = set
        signature = HeaderFields.canonical(set.signature)
        id = set.id.map(HeaderFields.canonical)
        timestamp = set.timestamp.map(HeaderFields.canonical)
        eventType = set.eventType.map(HeaderFields.canonical)
    }
}

extension SchemeSpec {
    /// Every body path the spec reads.
    var bodyPaths: [[String]] {
        var paths: [[String]] = []
        if case .jsonString(let list) = signed { paths += list }
        if case .json(let path) = timestamp { paths.append(path) }
        switch kind {
        case .json(let path): paths.append(path)
        case .rules(let rules):
            for rule in rules {
                switch rule.test {
                case .present(let path), .object(let path), .equals(let path, _), .hasPrefix(let path, _): paths.append(path)
                case .always: break
                }
            }
        default: break
        }
        for case .json(let list) in identity { paths += list }
        return paths
    }
}

/// The bytes a signature covers, fed to HMAC in pieces so that nothing is concatenated.
struct SignedMessage {
    let content: SignedContent
    let timestamp: String?
    let id: String?
    let field: String?

    func feed(into stream: inout HMACStream, body: UnsafeRawBufferPointer) {
        switch content {
        case .body:
            stream.update(body)
        case .timestampDotBody, .idDotTimestampDotBody:
            // The short prefix goes in as one update from a stack buffer: each update call has a fixed
            // cost in libcrypto, and joining strings would allocate.
            var id = content == .idDotTimestampDotBody ? self.id ?? "" : ""
            var timestamp = self.timestamp ?? ""
            let idBytes = content == .idDotTimestampDotBody ? id.utf8.count + 1 : 0
            let timestampBytes = timestamp.utf8.count
            withUnsafeTemporaryAllocation(byteCount: idBytes + timestampBytes + 1, alignment: 1) { buffer in
                var position = 0
                if content == .idDotTimestampDotBody {
                    id.withUTF8 { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                    buffer[idBytes - 1] = 0x2e
                    position = idBytes
                }
                timestamp.withUTF8 { text in
                    if text.count > 0 { (buffer.baseAddress! + position).copyMemory(from: text.baseAddress!, byteCount: text.count) }
                }
                position += timestampBytes
                buffer[position] = 0x2e
                stream.update(UnsafeRawBufferPointer(rebasing: buffer[0..<position + 1]))
            }
            stream.update(body)
        case .jsonString:
            stream.update(field ?? "")
        }
    }

    func bytes(body: UnsafeRawBufferPointer) -> [UInt8] {
        switch content {
        case .body: Array(body)
        case .timestampDotBody: Array((timestamp ?? "").utf8) + [0x2e] + Array(body)
        case .idDotTimestampDotBody: Array("\(id ?? "").\(timestamp ?? "")".utf8) + [0x2e] + Array(body)
        case .jsonString: Array((field ?? "").utf8)
        }
    }
}

/// Lazy access to the fields of a JSON body: the top-level keys a scheme reads are found in one scan.
struct BodyView {
    let raw: UnsafeRawBufferPointer
    let topLevelKeys: [String]
    /// When the signature covers the whole body, the scan may stop once every key is found; otherwise it
    /// reads the whole object and refuses a repeated key (an unsigned body could smuggle a second value).
    let bodyIsSigned: Bool
    /// Where each top-level key's value starts and ends (-1: absent), once scanned.
    private var top: JSONSpans? = nil
    private var topError: JSONError? = nil

    init(raw: UnsafeRawBufferPointer, topLevelKeys: [String], bodyIsSigned: Bool) {
        self.raw = raw
        self.topLevelKeys = topLevelKeys
        self.bodyIsSigned = bodyIsSigned
    }

    mutating func field(_ path: [String]) throws(JSONError) -> JSONField? {
        guard let first = path.first else { return nil }
        guard let index = topLevelKeys.firstIndex(of: first) else { return try JSONScanner.field(at: path, in: raw) }
        if let topError { throw topError }
        if top == nil {
            do { top = try JSONScanner.spans(of: topLevelKeys, in: raw, stopWhenAllFound: bodyIsSigned) } catch {
                topError = error
                throw error
            }
        }
        let start = top!.start(of: index)
        guard start >= 0 else { return nil }
        var current: JSONField? = try JSONScanner.field(from: start, to: top!.end(of: index), in: raw)
        for key in path.dropFirst() {
            guard case .object(let range) = current else { return nil }
            let inner = try JSONScanner.spans(of: [key], in: raw, object: range)
            current = inner.start(of: 0) < 0 ? nil : try JSONScanner.field(from: inner.start(of: 0), to: inner.end(of: 0), in: raw)
        }
        return current
    }

    /// The first of `paths` holding a non-empty string or a number, as text.
    mutating func firstScalar(_ paths: [[String]], what: String) throws(Rejection) -> (value: String, path: [String]) {
        for path in paths {
            let found: JSONField?
            do { found = try field(path) } catch {
                throw Rejection(.malformedPayload, "the body is not a readable JSON object (\(error)), so \(what) cannot be read")
            }
            switch found {
            case .string(let text) where !text.isEmpty: return (text, path)
            case .number(let text): return (text, path)
            default: continue
            }
        }
        let names = paths.map { $0.joined(separator: ".") }.joined(separator: " or ")
        throw Rejection(.malformedPayload, "the body has no \(names) for \(what)")
    }

    mutating func matches(_ test: KindRule.Test) throws(Rejection) -> Bool {
        func lookup(_ path: [String]) throws(Rejection) -> JSONField? {
            do { return try field(path) } catch {
                throw Rejection(.malformedPayload, "the body is not a readable JSON object (\(error))")
            }
        }
        switch test {
        case .always: return true
        case .present(let path):
            let value = try lookup(path)
            return value != nil && value != .null
        case .object(let path):
            if case .object = try lookup(path) { return true }
            return false
        case .equals(let path, let expected):
            return try lookup(path)?.stringValue == expected
        case .hasPrefix(let path, let prefix):
            return try lookup(path)?.stringValue?.hasPrefix(prefix) ?? false
        }
    }

    mutating func instant(at path: [String]) throws(Rejection) -> Instant {
        let name = path.joined(separator: ".")
        let value: JSONField?
        do { value = try field(path) } catch {
            throw Rejection(.malformedPayload, "the body is not a readable JSON object (\(error)), so \(name) cannot be read")
        }
        switch value {
        case .string(let text):
            guard let instant = Instant(iso8601: text) else {
                throw Rejection(.malformedPayload, "\(name) is not an RFC 3339 date-time")
            }
            return instant
        case .number(let text):
            // A number too large for a double reads as infinity: still a time, judged (and refused) as stale or
            // future, never converted to an integer.
            guard let seconds = Double(text), !seconds.isNaN else { throw Rejection(.malformedPayload, "\(name) is not unix seconds") }
            return Instant(secondsSince1970: seconds)
        default:
            throw Rejection(.malformedPayload, "the body has no \(name), the signed timestamp")
        }
    }
}
