public import TurnstileCore
public import TurnstilePipeline

extension HandlerRegistry {
    /// The registry a config describes: its built-in handlers (`jsonl`, `http`, `exec`), then the Swift
    /// handlers `configure` registers, then the config's `swift` entries applied to those by name.
    /// - Throws: ``InputError`` naming the entry (`handlers[2].url`) for a handler that cannot be set up.
    public static func configured(by handlers: [HandlerConfig], file: String? = nil,
                                  configure: (inout HandlerRegistry) -> Void = { _ in }) throws(InputError) -> HandlerRegistry {
        var registry = HandlerRegistry()
        func located(_ error: InputError, _ index: Int) -> InputError {
            InputError(error.code, error.message, file: error.file ?? file, line: error.line,
                       field: "handlers[\(index)]" + (error.field.map { ".\($0)" } ?? ""))
        }
        for (index, handler) in handlers.enumerated() {
            let events = handler.events ?? []
            do throws(InputError) {
                switch handler.kind {
                case .jsonl(let path):
                    do { registry.register(try JSONLHandler(path: path), name: handler.name, events: events, filter: handler.filter,
                                           limits: handler.limits) }
                    catch { throw InputError(error.code, error.message, field: "path") }
                case .http(let url, let secret, let timeout):
                    registry.register(try HTTPHandler(name: handler.name, url: url, secret: secret, timeoutSeconds: timeout),
                                      name: handler.name, events: events, filter: handler.filter, limits: handler.limits)
                case .exec(let command, let timeout):
                    registry.register(ExecHandler(name: handler.name, command: command, timeoutSeconds: timeout),
                                      name: handler.name, events: events, filter: handler.filter, limits: handler.limits)
                case .swift:
                    break
                }
            } catch {
                throw located(error, index)
            }
        }
        configure(&registry)
        for (index, handler) in handlers.enumerated() where handler.kind == .swift {
            do { try registry.apply(handler) } catch { throw located(error, index) }
        }
        return registry
    }
}
