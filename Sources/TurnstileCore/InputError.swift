/// Bad input from outside (a config file, a delivery file, a command line), named by where it is.
///
/// Each error has a stable ``Code``, a message that says what is wrong, and a location: a file, a line
/// and a field path such as `providers.sync.secrets[1]`. Messages never include secret values.
public struct InputError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Stable reason codes for bad input.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let unreadableFile = Code(rawValue: "unreadable_file")
        public static let invalidJSON = Code(rawValue: "invalid_json")
        public static let schemaViolation = Code(rawValue: "schema_violation")
        public static let invalidValue = Code(rawValue: "invalid_value")
        public static let missingSecret = Code(rawValue: "missing_secret")
        public static let invalidSecret = Code(rawValue: "invalid_secret")
        public static let retentionTooShort = Code(rawValue: "retention_too_short")
        public static let usage = Code(rawValue: "usage")
        public static let missingSchema = Code(rawValue: "missing_schema")
    }

    public let code: Code
    public let message: String
    public let file: String?
    public let line: Int?
    public let field: String?

    public init(_ code: Code, _ message: String, file: String? = nil, line: Int? = nil, field: String? = nil) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
        self.field = field
    }

    /// The same error, placed in `file` at `line` (keeps a location already set).
    public func located(file: String, line: Int? = nil) -> InputError {
        InputError(code, message, file: self.file ?? file, line: self.line ?? line, field: field)
    }

    /// `FILE:LINE: FIELD: message [code]`, leaving out what is unknown.
    public var description: String {
        var parts: [String] = []
        if let file { parts.append(line.map { "\(file):\($0)" } ?? file) }
        if let field, !field.isEmpty { parts.append(field) }
        parts.append(message + " [\(code)]")
        return parts.joined(separator: ": ")
    }
}
