import Foundation

/// The JSON Schemas the code enforces: the files under the repository's `schemas/` folder (the source),
/// compiled into the binary (``EmbeddedSchemas``), so that an installed or plugin binary runs from any
/// folder with no environment variable.
///
/// `$TURNSTILE_SCHEMAS` may name a folder to load instead (to try a changed schema without rebuilding).
public final class SchemaCatalog: Sendable {
    /// Where the schemas came from: a folder, or `embedded`.
    public let directory: String
    private let cache: [String: JSONSchema]

    /// The catalogue for this process, made once.
    public static func shared() throws(InputError) -> SchemaCatalog {
        try sharedResult.get()
    }

    private static let sharedResult: Result<SchemaCatalog, InputError> = {
        do throws(InputError) {
            if let override = ProcessInfo.processInfo.environment["TURNSTILE_SCHEMAS"], !override.isEmpty {
                return .success(try SchemaCatalog(directory: try checkedOverride(override)))
            }
            return .success(try embedded())
        } catch {
            return .failure(error)
        }
    }()

    /// The copies compiled into the binary.
    public static func embedded() throws(InputError) -> SchemaCatalog {
        var cache: [String: JSONSchema] = [:]
        for (name, text) in EmbeddedSchemas.all {
            let document: JSONValue
            do { document = try JSONParser.parse(text) } catch {
                throw InputError(.invalidJSON, "embedded schema \(name) is not valid JSON: \(error)")
            }
            cache[name] = try JSONSchema(document, name: name + ".schema.json")
        }
        return SchemaCatalog(directory: "embedded", cache: cache)
    }

    /// The embedded schemas' names and texts, for the test that compares them with `schemas/`.
    public static var embeddedTexts: [(name: String, text: String)] { EmbeddedSchemas.all }

    private init(directory: String, cache: [String: JSONSchema]) {
        self.directory = directory
        self.cache = cache
    }

    /// Loads every `*.schema.json` below `directory`, keyed by relative path (`config`, `synthflow/post_call`).
    public init(directory path: String) throws(InputError) {
        self.directory = path
        let directory = URL(fileURLWithPath: path)
        var cache: [String: JSONSchema] = [:]
        let manager = FileManager.default
        guard let walker = manager.enumerator(at: directory, includingPropertiesForKeys: nil) else {
            throw InputError(.missingSchema, "cannot list the schema folder", file: path)
        }
        let base = directory.standardizedFileURL.path
        for case let url as URL in walker where url.lastPathComponent.hasSuffix(".schema.json") {
            let file = url.standardizedFileURL.path
            var relative = file.hasPrefix(base + "/") ? String(file.dropFirst(base.count + 1)) : url.lastPathComponent
            relative.removeLast(".schema.json".count)
            let bytes = try FileInput.read(file, limit: 1 << 20)
            let document: JSONValue
            do { document = try JSONParser.parse(bytes) } catch {
                throw InputError(.invalidJSON, "schema is not valid JSON: \(error)", file: file)
            }
            cache[relative] = try JSONSchema(document, name: file)
        }
        self.cache = cache
    }

    /// The schema named `name` (`config`, `delivery`, `sync/generation`, …).
    public func schema(_ name: String) throws(InputError) -> JSONSchema {
        guard let schema = cache[name] else {
            throw InputError(.missingSchema, "schema \(name).schema.json is missing", file: directory)
        }
        return schema
    }

    /// The names of every loaded schema.
    public var names: [String] { cache.keys.sorted() }

    static func checkedOverride(_ override: String) throws(InputError) -> String {
        let url = URL(fileURLWithPath: override)
        guard FileManager.default.fileExists(atPath: url.appendingPathComponent("config.schema.json").path) else {
            throw InputError(.missingSchema, "TURNSTILE_SCHEMAS names a folder without config.schema.json", file: override)
        }
        return url.path
    }
}
