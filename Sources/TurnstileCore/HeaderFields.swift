/// Request headers as received: names compare case-insensitively, values are kept exactly.
public struct HeaderFields: Sendable, Hashable, Sequence {
    public struct Field: Sendable, Hashable {
        public let name: String
        public let value: String
        /// `name` lower-cased (ASCII), for look-ups.
        public let canonicalName: String

        /// True when this field's lower-cased name is `canonical`. Lengths are compared first: that settles
        /// most mismatches without comparing text, and this runs several times for every delivery.
        @inline(__always)
        public func isNamed(_ canonical: String) -> Bool {
            canonicalName.utf8.count == canonical.utf8.count && canonicalName == canonical
        }
    }

    public private(set) var fields: [Field] = []

    public init() {}

    public init(_ pairs: [(String, String)]) {
        for (name, value) in pairs { append(name: name, value: value) }
    }

    public mutating func append(name: String, value: String) {
        fields.append(Field(name: name, value: value, canonicalName: HeaderFields.canonical(name)))
    }

    /// The first value of the header `name` (any case), or nil.
    public subscript(name: String) -> String? {
        let wanted = HeaderFields.canonical(name)
        return fields.first { $0.isNamed(wanted) }?.value
    }

    /// The first value of the header whose lower-cased name is `canonicalName` (no case folding is done).
    public func value(canonicalName: String) -> String? {
        for field in fields where field.isNamed(canonicalName) { return field.value }
        return nil
    }

    /// Every value of the header `name` (any case), in order.
    public func values(_ name: String) -> [String] {
        let wanted = HeaderFields.canonical(name)
        return fields.filter { $0.isNamed(wanted) }.map(\.value)
    }

    public func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }

    public var count: Int { fields.count }

    /// Headers that carry a client's credentials to the receiver or a proxy, not the provider's signature: never
    /// archived, exported or shown.
    public static let credentialNames: Set<String> = ["authorization", "cookie", "proxy-authorization"]

    /// These headers without ``credentialNames``.
    public var withoutCredentials: HeaderFields {
        guard fields.contains(where: { Self.credentialNames.contains($0.canonicalName) }) else { return self }
        var kept = HeaderFields()
        kept.fields = fields.filter { !Self.credentialNames.contains($0.canonicalName) }
        return kept
    }

    /// `name` with ASCII letters lower-cased.
    public static func canonical(_ name: String) -> String {
        if !name.utf8.contains(where: { $0 >= 0x41 && $0 <= 0x5a }) { return name }
        return String(decoding: name.utf8.map { $0 >= 0x41 && $0 <= 0x5a ? $0 + 0x20 : $0 }, as: UTF8.self)
    }
}
