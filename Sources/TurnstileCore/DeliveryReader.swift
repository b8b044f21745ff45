import Foundation

/// Streams deliveries from files and folders: a `.json` file holds one delivery, an `.ndjson` file one per
/// line; folders are walked recursively in sorted order. Memory stays flat in the number of deliveries:
/// `.ndjson` files are read line by line.
public struct DeliverySource: Sendable {
    /// Paths given on the command line.
    public let paths: [String]
    /// The longest line or `.json` file accepted.
    public let maximumRecordBytes: Int
    private let schema: JSONSchema

    public init(paths: [String], schema: JSONSchema, maximumRecordBytes: Int = 64 << 20) {
        self.paths = paths
        self.schema = schema
        self.maximumRecordBytes = maximumRecordBytes
    }

    /// One item read from the input.
    public enum Item: Sendable {
        /// A delivery and where it came from (`FILE:LINE`).
        case delivery(Delivery, source: String)
        /// A `.json` file that is plainly not a delivery (no `provider` key), skipped.
        case skipped(file: String, why: String)
    }

    /// Every file the paths name, in the order they will be read.
    /// - Throws: ``InputError`` for a path that does not exist.
    public func files() throws(InputError) -> [String] {
        var files: [String] = []
        let manager = FileManager.default
        for path in paths {
            var isDirectory: ObjCBool = false
            guard manager.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw InputError(.unreadableFile, "no such file or folder", file: path)
            }
            if !isDirectory.boolValue {
                files.append(path)
                continue
            }
            guard let walker = manager.enumerator(atPath: path) else {
                throw InputError(.unreadableFile, "cannot list the folder", file: path)
            }
            var found: [String] = []
            for case let relative as String in walker where relative.hasSuffix(".json") || relative.hasSuffix(".ndjson") {
                found.append(relative)
            }
            let base = path.hasSuffix("/") ? String(path.dropLast()) : path
            files += found.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }.map { base + "/" + $0 }
        }
        return files
    }

    /// Calls `body` with each item in input order; stops at the first invalid delivery by throwing.
    public func forEach(_ body: (Item) throws -> Void) throws {
        for file in try files() {
            if file.hasSuffix(".ndjson") {
                try readLines(file, body)
            } else {
                let bytes = try FileInput.read(file, limit: maximumRecordBytes)
                let document: JSONValue
                do { document = try JSONParser.parse(bytes) } catch {
                    throw InputError(.invalidJSON, "not valid JSON: \(error.message)", file: file,
                                     line: FileInput.lineNumber(ofOffset: error.offset, in: bytes))
                }
                guard document.objectValue?["provider"] != nil else {
                    try body(.skipped(file: file, why: "no top-level \"provider\" key, so not a delivery"))
                    continue
                }
                let delivery: Delivery
                do throws(InputError) { delivery = try Delivery(json: document, schema: schema) } catch {
                    throw error.located(file: file, line: 1)
                }
                try body(.delivery(delivery, source: "\(file):1"))
            }
        }
    }

    private func readLines(_ file: String, _ body: (Item) throws -> Void) throws {
        guard let handle = FileHandle(forReadingAtPath: file) else {
            throw InputError(.unreadableFile, "file cannot be opened", file: file)
        }
        defer { try? handle.close() }
        var reader = LineReader(handle: handle, maximumLineBytes: maximumRecordBytes)
        var lineNumber = 0
        while let line = try reader.next() {
            lineNumber += 1
            guard let line = line else {
                throw InputError(.invalidValue, "line is longer than \(maximumRecordBytes) bytes", file: file, line: lineNumber)
            }
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0d }) { continue }
            let document: JSONValue
            do { document = try JSONParser.parse(line) } catch {
                throw InputError(.invalidJSON, "not valid JSON: \(error.message)", file: file, line: lineNumber)
            }
            let delivery: Delivery
            do throws(InputError) { delivery = try Delivery(json: document, schema: schema) } catch {
                throw error.located(file: file, line: lineNumber)
            }
            try body(.delivery(delivery, source: "\(file):\(lineNumber)"))
        }
    }
}

/// Reads `\n`-terminated lines from a file in chunks. A line over the limit comes back as `.some(nil)`
/// (and is skipped to its end) so the caller can name it.
struct LineReader {
    private let handle: FileHandle
    private let maximumLineBytes: Int
    private var buffer: [UInt8] = []
    private var start = 0
    private var finished = false

    init(handle: FileHandle, maximumLineBytes: Int) {
        self.handle = handle
        self.maximumLineBytes = maximumLineBytes
    }

    mutating func next() throws -> [UInt8]?? {
        var tooLong = false
        while true {
            if let newline = buffer[start...].firstIndex(of: 0x0a) {
                let line = Array(buffer[start..<newline])
                start = newline + 1
                if tooLong { return .some(nil) }
                return .some(line)
            }
            if finished {
                guard start < buffer.count else { return tooLong ? .some(nil) : nil }
                let line = Array(buffer[start...])
                start = buffer.count
                return tooLong ? .some(nil) : .some(line)
            }
            if buffer.count - start > maximumLineBytes {
                tooLong = true
                buffer.removeAll(keepingCapacity: true)
                start = 0
            }
            if start > 0 && start * 2 >= buffer.count {
                buffer.removeSubrange(0..<start)
                start = 0
            }
            let chunk = try handle.read(upToCount: 1 << 20) ?? Data()
            if chunk.isEmpty { finished = true } else { buffer.append(contentsOf: chunk) }
        }
    }
}
