public import TurnstileCore

/// A command-line usage error: exit status 2 with a one-line reason.
public struct UsageError: Error, Hashable, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One option a command accepts.
public struct OptionSpec: Sendable, Hashable {
    /// The long name without dashes (`config`).
    public let name: String
    /// The placeholder of its value (`FILE`), or nil for a flag.
    public let valueName: String?
    public let help: String
    public let isRequired: Bool

    public static func option(_ name: String, _ valueName: String, required: Bool = false, help: String) -> OptionSpec {
        OptionSpec(name: name, valueName: valueName, help: help, isRequired: required)
    }

    public static func flag(_ name: String, help: String) -> OptionSpec {
        OptionSpec(name: name, valueName: nil, help: help, isRequired: false)
    }
}

/// A command's static description: name, abstract, options and positional arguments, from which both
/// parsing and `--help` are derived.
public struct CommandSpec: Sendable {
    public let name: String
    public let abstract: String
    public let usage: String
    public let options: [OptionSpec]
    /// Positional arguments' placeholder (`PATH...`) and whether at least one is required.
    public let positionals: (name: String, required: Bool)?
    public let discussion: String?

    public init(name: String, abstract: String, usage: String, options: [OptionSpec],
                positionals: (name: String, required: Bool)? = nil, discussion: String? = nil) {
        self.name = name
        self.abstract = abstract
        self.usage = usage
        self.options = options
        self.positionals = positionals
        self.discussion = discussion
    }

    /// The `--help` text.
    public var helpText: String {
        var lines = ["OVERVIEW: \(abstract)", "", "USAGE: turnstile \(usage)", "", "OPTIONS:"]
        let rows = options.map { option in
            ("--\(option.name)" + (option.valueName.map { " \($0)" } ?? ""), option.help + (option.isRequired ? " (required)" : ""))
        } + [("-h, --help", "Show this help.")]
        let width = rows.map(\.0.count).max() ?? 0
        for (left, right) in rows {
            lines.append("  " + left + String(repeating: " ", count: width - left.count + 2) + right)
        }
        if let discussion { lines += ["", discussion] }
        return lines.joined(separator: "\n")
    }
}

/// Arguments after parsing against a ``CommandSpec``.
public struct ParsedArguments: Sendable, Equatable {
    public var values: [String: String] = [:]
    public var flags: Set<String> = []
    public var positionals: [String] = []
    public var wantsHelp = false

    public func value(_ name: String) -> String? { values[name] }
    public func flag(_ name: String) -> Bool { flags.contains(name) }

    /// Parses `arguments` (without the command name): `--name value`, `--name=value`, flags, `--` and
    /// positionals. Unknown options, repeated options, missing values and missing required options throw.
    public static func parse(_ arguments: [String], for spec: CommandSpec) throws(UsageError) -> ParsedArguments {
        var parsed = ParsedArguments()
        var index = 0
        var optionsEnded = false
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if optionsEnded || !argument.hasPrefix("-") || argument == "-" {
                parsed.positionals.append(argument)
                continue
            }
            if argument == "--" { optionsEnded = true; continue }
            if argument == "-h" || argument == "--help" { parsed.wantsHelp = true; continue }
            guard argument.hasPrefix("--") else { throw UsageError("unknown option \(argument) (options are --long; see --help)") }
            var name = String(argument.dropFirst(2))
            var inlineValue: String? = nil
            if let equals = name.firstIndex(of: "=") {
                inlineValue = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            guard let option = spec.options.first(where: { $0.name == name }) else {
                throw UsageError("unknown option --\(name) for \(spec.name) (see turnstile \(spec.name) --help)")
            }
            if option.valueName == nil {
                guard inlineValue == nil else { throw UsageError("--\(name) takes no value") }
                parsed.flags.insert(name)
                continue
            }
            guard parsed.values[name] == nil else { throw UsageError("--\(name) is given more than once") }
            if let inlineValue {
                parsed.values[name] = inlineValue
            } else {
                guard index < arguments.count, !arguments[index].hasPrefix("--") else {
                    throw UsageError("--\(name) needs a value (\(option.valueName ?? "VALUE"))")
                }
                parsed.values[name] = arguments[index]
                index += 1
            }
        }
        if parsed.wantsHelp { return parsed }
        for option in spec.options where option.isRequired && parsed.values[option.name] == nil {
            throw UsageError("--\(option.name) \(option.valueName ?? "VALUE") is required")
        }
        if let (name, required) = spec.positionals {
            if required && parsed.positionals.isEmpty { throw UsageError("\(name) is required") }
        } else if let first = parsed.positionals.first {
            throw UsageError("unexpected argument \"\(first)\"")
        }
        return parsed
    }

    /// The value of `name` as an ISO 8601 instant, if given.
    public func instant(_ name: String) throws(UsageError) -> Instant? {
        guard let text = values[name] else { return nil }
        guard let instant = Instant(iso8601: text) else {
            throw UsageError("--\(name) \"\(text)\" is not an ISO 8601 date-time such as 2026-01-15T19:04:06Z")
        }
        return instant
    }

    /// The value of `name` as a positive integer, if given.
    public func positiveInteger(_ name: String) throws(UsageError) -> Int? {
        guard let text = values[name] else { return nil }
        guard let value = Int(text), value > 0 else { throw UsageError("--\(name) must be a positive whole number, got \"\(text)\"") }
        return value
    }
}
