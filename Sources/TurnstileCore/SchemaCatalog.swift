import Foundation

/// Finds and loads the JSON Schemas in the repository's `schemas/` folder, which are the contract
/// the code enforces.
///
/// The folder is looked for in this order: `$TURNSTILE_SCHEMAS`; `schemas/` in the folder of the running
/// executable or any folder above it (a build inside the checkout); `schemas/` in the working directory
/// or any folder above it.
public final class SchemaCatalog: Sendable {
    /// The folder the schemas were loaded from.
    public let directory: String
    private let cache: [String: JSONSchema]

    /// The catalogue for this process, found once.
    public static func shared() throws(InputError) -> SchemaCatalog {
        try sharedResult.get()
    }

    private static let sharedResult: Result<SchemaCatalog, InputError> = {
        do throws(InputError) {
            return .success(try SchemaCatalog(directory: try locate()))
        } catch {
            return .failure(error)
        }
    }()

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

    static func locate() throws(InputError) -> String {
        let manager = FileManager.default
        if let override = ProcessInfo.processInfo.environment["TURNSTILE_SCHEMAS"], !override.isEmpty {
            let url = URL(fileURLWithPath: override)
            guard manager.fileExists(atPath: url.appendingPathComponent("config.schema.json").path) else {
                throw InputError(.missingSchema, "TURNSTILE_SCHEMAS names a folder without config.schema.json", file: override)
            }
            return url.path
        }
        var starts: [URL] = []
        if let executable = try? manager.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            starts.append(URL(fileURLWithPath: executable).deletingLastPathComponent())
        }
        starts.append(URL(fileURLWithPath: manager.currentDirectoryPath))
        for start in starts {
            var folder = start.standardizedFileURL
            while true {
                let candidate = folder.appendingPathComponent("schemas")
                if manager.fileExists(atPath: candidate.appendingPathComponent("config.schema.json").path) {
                    return candidate.path
                }
                let parent = folder.deletingLastPathComponent()
                if parent.path == folder.path { break }
                folder = parent
            }
        }
        throw InputError(.missingSchema,
                         "cannot find the schemas/ folder near the executable or the working directory; set TURNSTILE_SCHEMAS")
    }
}
