#if canImport(Glibc)
import Glibc
#endif
import TurnstileSync
internal import CTurnstileLinux
import Foundation
import Synchronization

/// How the server listens and what it tolerates.
public struct HTTPServerConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var limits = HTTPLimits()
    /// Time to receive a request's head, from the connection's first byte (or its opening).
    public var headerTimeoutSeconds = 10.0
    /// Time to receive a request's body once its head is in.
    public var bodyTimeoutSeconds = 30.0
    /// How long an idle keep-alive connection stays open, and how long a connection may go without its peer
    /// reading any of the answers that wait for it.
    public var idleTimeoutSeconds = 60.0
    /// Open connections beyond which new ones are refused at once (503, then closed). The server lowers it
    /// further so that connections never take the last descriptors of `RLIMIT_NOFILE`
    /// (``HTTPServer/connectionLimit``): the process needs some of its own (timers, store files), and
    /// running out of them there is fatal.
    public var maxConnections = 10_000
    /// Descriptors kept free for the process itself, besides those open when the server starts.
    public var reservedDescriptors = 32
    /// Requests one connection may have in flight (pipelined) before the server stops reading from it.
    public var maxPipelinedRequests = 16
    /// Bytes of answers written for one connection but not yet taken by its socket, past which the server
    /// neither reads nor parses more of its requests until the peer reads: a client that pipelines requests
    /// and never reads the answers holds at most this plus one answer, plus the answers of its at most
    /// `maxPipelinedRequests` requests in flight.
    public var maxUnsentResponseBytes = 256 << 10
    /// Bytes of request bodies that all connections together may hold in memory: bodies being received and
    /// bodies of requests not answered yet. A connection whose body needs more is not read (its socket
    /// buffers fill and TCP holds the sender back) until other requests are answered; its body timeout
    /// still runs. The last eighth is kept for bodies of at most 64 KiB, so small requests are still served
    /// while large ones hold the rest.
    public var bodyBudgetBytes = 256 << 20
    /// How long the listener is left alone after `accept` failed for lack of descriptors or memory.
    public var acceptBackoffSeconds = 0.1
    /// Told of conditions an operator should see (the descriptor limit reached, …): a message and a
    /// detail. Called at most once per episode.
    public var warn: @Sendable (_ message: String, _ detail: String) -> Void = { _, _ in }
    /// Event loops (threads); one per core by default.
    public var eventLoops = max(1, ProcessInfo.processInfo.activeProcessorCount)
    /// The answer to a request the parser refuses (the connection closes after it).
    public var errorResponse: @Sendable (HTTPParseError) -> HTTPResponse = { error in
        HTTPResponse.json(error.status, JSONText.object(["error": error.reason]))
    }

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

/// Answers a request. Runs as a task off the event loops, so a slow answer never stalls other connections.
public typealias HTTPResponder = @Sendable (HTTPRequest) async -> HTTPResponse

/// Answers a request by calling one of `writer`'s `respond` methods exactly once, from any thread, now or
/// later. It is called on an event loop thread, so it must return quickly: work that may wait (a store, a
/// deadline) belongs on a task or another thread, which then calls `writer`.
public typealias HTTPRequestHandler = @Sendable (HTTPRequest, HTTPResponseWriter) -> Void

/// Where the answer to one request goes: its connection, in the order the requests arrived.
public struct HTTPResponseWriter: Sendable {
    fileprivate let loop: EventLoop
    fileprivate let connection: UInt64
    fileprivate let sequence: Int

    /// Sends `response`.
    public func respond(_ response: HTTPResponse) {
        loop.complete(EventLoop.Completion(connection: connection, sequence: sequence, answer: .ready(response)))
    }

    /// Sends the response `build` makes, calling it on the connection's event loop thread: for a caller (such
    /// as a group-commit writer) whose own thread must not spend time formatting answers.
    public func respond(building build: @escaping @Sendable () -> HTTPResponse) {
        loop.complete(EventLoop.Completion(connection: connection, sequence: sequence, answer: .deferred(build)))
    }
}

/// The server could not start.
public struct HTTPServerError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// A small HTTP/1.1 server over non-blocking sockets driven by epoll: one event loop thread per core,
/// keep-alive, pipelining answered in order, Content-Length and chunked bodies, `Expect: 100-continue`,
/// strict parsing (``HTTPRequestParser``), limits and timeouts on every phase.
public final class HTTPServer: Sendable {
    public let configuration: HTTPServerConfiguration
    private let loops: [EventLoop]
    private let listener: Locked<Int32>
    private let counter = ConnectionCounter()
    private let budget: BodyBudget
    /// The port actually bound (useful with port 0).
    public let port: Int
    /// Connections taken at most: `maxConnections`, or fewer where the descriptor limit is lower.
    public let connectionLimit: Int

    /// Binds; ``start()`` starts the event loops. Each request is answered by `responder` on a task of its own.
    public convenience init(configuration: HTTPServerConfiguration, responder: @escaping HTTPResponder) throws(HTTPServerError) {
        try self.init(configuration: configuration, handler: { request, writer in
            Task { writer.respond(await responder(request)) }
        })
    }

    /// Binds (so the port is known at once); ``start()`` starts the event loops, one thread each. `handler` is
    /// called on a loop thread for each request.
    public init(configuration: HTTPServerConfiguration, handler: @escaping HTTPRequestHandler) throws(HTTPServerError) {
        var bound: Int32 = 0
        let fd = CTurnstileLinux_listen(configuration.host, Int32(configuration.port), 4096, &bound)
        guard fd >= 0 else {
            throw HTTPServerError(message: "cannot listen on \(configuration.host):\(configuration.port): \(String(cString: strerror(errno)))")
        }
        var effective = configuration
        effective.maxConnections = Self.connectionLimit(configured: configuration.maxConnections,
                                                        reserved: configuration.reservedDescriptors)
        self.connectionLimit = effective.maxConnections
        self.configuration = effective
        self.listener = Locked(fd)
        self.port = Int(bound)
        let budget = BodyBudget(limit: configuration.bodyBudgetBytes)
        self.budget = budget
        var loops: [EventLoop] = []
        for _ in 0..<configuration.eventLoops {
            loops.append(EventLoop(listener: fd, configuration: effective, handler: handler, counter: counter, budget: budget))
        }
        self.loops = loops
    }

    private let started = Locked(false)

    /// Starts the event loops (once; later calls do nothing).
    public func start() {
        let first = started.withLock { started -> Bool in
            defer { started = true }
            return !started
        }
        if first { for loop in loops { loop.start() } }
    }

    /// Connections open now.
    public var openConnections: Int { counter.value }

    /// `configured`, lowered so that connections leave `reserved` descriptors free beyond those open now
    /// (at least one connection is always allowed).
    static func connectionLimit(configured: Int, reserved: Int) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return configured }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        let room = Int(clamping: limit.rlim_cur) - open - reserved
        return max(1, min(configured, room))
    }

    /// Bytes of request bodies held now, counted against ``HTTPServerConfiguration/bodyBudgetBytes``.
    public var bodyBytesHeld: Int { budget.used }

    /// Stops accepting: the listening socket is closed; open connections carry on.
    public func stopAccepting() {
        for loop in loops { loop.stopAccepting() }
        listener.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
    }

    /// Stops accepting, lets requests in flight finish and their answers be written (up to `deadline`
    /// seconds), then closes every connection and stops the loops.
    public func shutdown(graceSeconds: Double) async {
        stopAccepting()
        guard started.withLock({ $0 }) else { return }
        let until = Date().addingTimeInterval(graceSeconds)
        while Date() < until, loops.contains(where: { $0.hasWorkInFlight }) {
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        for loop in loops { loop.stop() }
        for loop in loops { await loop.waitUntilStopped() }
    }
}

/// One epoll loop on its own thread. All connection state is touched only on that thread; other threads
/// reach it through the mutex-guarded inbox and the eventfd.
final class EventLoop: @unchecked Sendable {
    // `@unchecked Sendable`: `connections`, `counter` and the fds below are used only on the loop thread
    // (after `start`), except `inbox`, `flags` and `stopped`, which are synchronised.
    private let epoll: Int32
    private let wake: Int32
    private let listener: Int32
    private let configuration: HTTPServerConfiguration
    private let handler: HTTPRequestHandler
    private var connections: [UInt64: Connection] = [:]
    private var nextID: UInt64 = 2
    private let counter: ConnectionCounter
    private let budget: BodyBudget
    /// Connections not read until the body budget has room again; looked at every sweep.
    private var waitingForBudget = Set<UInt64>()
    /// While set, the listener is out of the epoll set until this moment (accept ran out of descriptors).
    private var acceptPausedUntil: Double? = nil
    /// Whether the current accept-failure episode was reported.
    private var acceptFailureReported = false
    private let inbox = Locked<[Completion]>([])
    /// Where `read(2)` puts bytes before a connection's buffer takes them; one per loop, used on its thread.
    private let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 16)
    /// The loop thread's `pthread_self()`, so that answers given on it need no wake-up.
    private let thread = Atomic<UInt>(0)
    /// `busy`: requests in flight or answers unwritten, as of the last sweep; `swept`: a sweep has run since
    /// accepting stopped, so `busy` is up to date for a shutdown.
    private let flags = Locked<(stop: Bool, accepting: Bool, busy: Bool, swept: Bool)>((false, true, false, false))
    private let stopped = DispatchSemaphore(value: 0)

    private static let listenerID: UInt64 = 0
    private static let wakeID: UInt64 = 1

    struct Completion {
        enum Answer {
            case ready(HTTPResponse)
            case deferred(@Sendable () -> HTTPResponse)
        }

        let connection: UInt64
        let sequence: Int
        let answer: Answer
    }

    init(listener: Int32, configuration: HTTPServerConfiguration, handler: @escaping HTTPRequestHandler, counter: ConnectionCounter,
         budget: BodyBudget) {
        self.listener = listener
        self.counter = counter
        self.budget = budget
        self.configuration = configuration
        self.handler = handler
        epoll = CTurnstileLinux_epoll_create()
        wake = CTurnstileLinux_eventfd()
        _ = CTurnstileLinux_epoll_ctl(epoll, CTurnstileLinux_EPOLL_CTL_ADD, wake, CTurnstileLinux_EPOLLIN, Self.wakeID)
        _ = CTurnstileLinux_epoll_ctl(epoll, CTurnstileLinux_EPOLL_CTL_ADD, listener,
                                      CTurnstileLinux_EPOLLIN | CTurnstileLinux_EPOLLEXCLUSIVE, Self.listenerID)
    }

    // The eventfd outlives the loop: an answer that arrives after the stop still signals this descriptor,
    // never one that a later open() received.
    deinit { Glibc.close(wake) }

    func start() {
        Thread { [self] in
            Thread.current.name = "ts-http-loop"  // From inside, so that the OS thread has the name too.
            run()
        }.start()
    }

    func stopAccepting() {
        flags.withLock { $0.accepting = false }
        signal()
    }

    func stop() {
        flags.withLock { $0.stop = true }
        signal()
    }

    func waitUntilStopped() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                self.stopped.wait()
                continuation.resume()
            }
        }
    }

    /// Requests being answered, or answers not yet written (true until the loop has looked at its
    /// connections since accepting stopped).
    var hasWorkInFlight: Bool { flags.withLock { $0.busy || !$0.swept } }

    private func signal() { _ = CTurnstileLinux_eventfd_signal(wake) }

    private var now: Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }

    // MARK: Loop

    private func run() {
        thread.store(UInt(pthread_self()), ordering: .releasing)
        var events = [CTurnstileLinux_event](repeating: CTurnstileLinux_event(), count: 256)
        var acceptingRegistered = true
        var lastSweep = 0.0
        while true {
            let (stop, accepting) = flags.withLock { ($0.stop, $0.accepting) }
            if stop { break }
            let acceptPaused = acceptPausedUntil.map { now < $0 } ?? false
            if (!accepting || acceptPaused) && acceptingRegistered {
                _ = CTurnstileLinux_epoll_ctl(epoll, CTurnstileLinux_EPOLL_CTL_DEL, listener, 0, Self.listenerID)
                acceptingRegistered = false
            } else if accepting && !acceptPaused && !acceptingRegistered {
                acceptPausedUntil = nil
                _ = CTurnstileLinux_epoll_ctl(epoll, CTurnstileLinux_EPOLL_CTL_ADD, listener,
                                              CTurnstileLinux_EPOLLIN | CTurnstileLinux_EPOLLEXCLUSIVE, Self.listenerID)
                acceptingRegistered = true
            }
            let count = events.withUnsafeMutableBufferPointer { buffer in
                CTurnstileLinux_epoll_wait(epoll, buffer.baseAddress, Int32(buffer.count), 100)
            }
            for index in 0..<max(0, Int(count)) {
                let event = events[index]
                switch event.data {
                case Self.listenerID: if acceptingRegistered { acceptingRegistered = acceptAll() }
                case Self.wakeID:
                    _ = CTurnstileLinux_eventfd_drain(wake)
                    deliverCompletions()
                default:
                    guard let connection = connections[event.data] else { continue }
                    if event.events & (CTurnstileLinux_EPOLLERR | CTurnstileLinux_EPOLLHUP) != 0 {
                        close(connection)
                        continue
                    }
                    if event.events & CTurnstileLinux_EPOLLIN != 0 {
                        readable(connection)
                    } else if event.events & CTurnstileLinux_EPOLLRDHUP != 0 {
                        peerStoppedSending(connection)
                    }
                    if event.events & CTurnstileLinux_EPOLLOUT != 0, connections[event.data] != nil {
                        flush(connection)
                        // Requests held back while their answers were unread are parsed now that the peer reads.
                        if connections[event.data] != nil, !connection.closing, !answersUnread(connection) {
                            parse(connection)
                            if connections[event.data] != nil {
                                updateInterest(connection)
                                updateTimers(connection)
                            }
                        }
                    }
                }
            }
            deliverCompletions()
            // Timeouts and the in-flight flag look at every connection: every 50 ms, not every round, so
            // thousands of idle keep-alive connections cost nothing per request (every round once a
            // shutdown waits on the flag).
            let moment = now
            if moment - lastSweep >= 0.05 || !accepting {
                lastSweep = moment
                expire()
                resumeWaitingForBudget()
                let busy = connections.values.contains { $0.inFlight > 0 || $0.outbound.count > $0.outboundOffset }
                flags.withLock {
                    $0.busy = busy
                    $0.swept = !accepting
                }
            }
        }
        for connection in Array(connections.values) { close(connection) }
        Glibc.close(epoll)
        readBuffer.deallocate()
        stopped.signal()
    }

    /// Accepts every pending connection. Returns false when the listener was taken out of the epoll set:
    /// `accept` failed for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM). The listener
    /// then stays readable, and polling it would spin; it is left alone for a short back-off while open
    /// connections are served, and the pending clients wait in the backlog.
    private func acceptAll() -> Bool {
        while true {
            let fd = CTurnstileLinux_accept(listener)
            if fd < 0 {
                let code = errno
                guard code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM else {
                    if acceptFailureReported && (code == EAGAIN || code == EWOULDBLOCK) {
                        acceptFailureReported = false
                        configuration.warn("accepting connections again", "")
                    }
                    return true  // EAGAIN, or the listener is gone.
                }
                acceptPausedUntil = now + configuration.acceptBackoffSeconds
                _ = CTurnstileLinux_epoll_ctl(epoll, CTurnstileLinux_EPOLL_CTL_DEL, listener, 0, Self.listenerID)
                if !acceptFailureReported {
                    acceptFailureReported = true
                    configuration.warn("cannot accept connections; pausing the listener", String(cString: strerror(code)))
                }
                return false
            }
            if acceptFailureReported {
                acceptFailureReported = false
                configuration.warn("accepting connections again", "")
            }
            let open = counter.increment()
            if open > configuration.maxConnections {
                counter.decrement()
                let refusal = HTTPResponse.json(503, #"{"error":"too many connections"}"#, headers: ["Retry-After": "1"])
                    .serialized(keepAlive: false, date: nil)
                _ = refusal.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                Glibc.close(fd)
                continue
            }
            _ = CTurnstileLinux_nodelay(fd)
            let id = nextID
            nextID += 1
            let connection = Connection(id: id, fd: fd, limits: configuration.limits, openedAt: now)
            connection.peer = Self.peerAddress(fd)
            connections[id] = connection
            connection.interest = CTurnstileLinux_EPOLLIN | CTurnstileLinux_EPOLLRDHUP
            _ = CTurnstileLinux_epoll_ctl(epoll, CTurnstileLinux_EPOLL_CTL_ADD, fd, connection.interest, id)
        }
    }

    /// `host:port` of the socket's peer, or empty.
    private static func peerAddress(_ fd: Int32) -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let got = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
        }
        guard got == 0 else { return "" }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let named = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, socklen_t(host.count), &service, socklen_t(service.count), NI_NUMERICHOST | NI_NUMERICSERV)
            }
        }
        guard named == 0 else { return "" }
        let address = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let port = String(decoding: service.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return address.contains(":") ? "[\(address)]:\(port)" : "\(address):\(port)"
    }

    /// Requests taken by every loop of this process, for request ids.
    private static let requestCount = Atomic<UInt64>(0)

    // MARK: Reading, with backpressure

    /// Unparsed bytes a connection may hold before it is no longer read: a whole head plus one read.
    private var readCap: Int { configuration.limits.maxHeaderBytes + readBuffer.count }

    /// Bodies up to this size may use the last eighth of the budget, which large bodies leave free.
    private static let smallBodyBytes = 64 * 1024

    /// Why a connection is not to be read now, or nil when it may be.
    private enum ReadBlock { case pipelineFull, bufferFull, budget, answersUnread }

    /// The peer has not read enough of its answers to be given more.
    private func answersUnread(_ connection: Connection) -> Bool {
        connection.outbound.count - connection.outboundOffset >= configuration.maxUnsentResponseBytes
    }

    private func readBlock(_ connection: Connection) -> ReadBlock? {
        if connection.inFlight >= configuration.maxPipelinedRequests { return .pipelineFull }
        if answersUnread(connection) { return .answersUnread }
        if connection.buffer.readable >= readCap { return .bufferFull }
        if connection.parser.isReadingBody {
            let large = connection.parser.bodyBytesHeld > Self.smallBodyBytes
            if !budget.hasRoom(forLargeBody: large) { return .budget }
        }
        return nil
    }

    private func readable(_ connection: Connection) {
        var sawEOF = false
        // A few reads per wake-up, so one fast sender cannot starve the loop's other connections; epoll is
        // level-triggered and reports the rest.
        var reads = 0
        while !connection.closing && reads < 16 {
            // The caps are checked before reading: bytes never read stay in the kernel, whose socket buffers
            // and TCP's window hold the sender back.
            if readBlock(connection) != nil { break }
            let count = read(connection.fd, readBuffer.baseAddress, readBuffer.count)
            if count > 0 {
                reads += 1
                connection.buffer.append(UnsafeRawBufferPointer(rebasing: readBuffer[0..<count]))
                parse(connection)
                if connections[connection.id] == nil { return }
                continue
            }
            if count == 0 { sawEOF = true }
            else if errno == EINTR { continue }
            else if errno != EAGAIN && errno != EWOULDBLOCK { sawEOF = true }
            break
        }
        if sawEOF {
            connection.peerClosed = true
            if connection.inFlight == 0 && connection.outbound.count == connection.outboundOffset {
                close(connection)
                return
            }
        }
        updateInterest(connection)
        updateTimers(connection)
    }

    /// Reads a connection only while it may read (``readBlock(_:)``): EPOLLIN (and EPOLLRDHUP, also level-
    /// triggered) is off while it may not, and EPOLLOUT is on while answers wait for room in the socket.
    private func updateInterest(_ connection: Connection) {
        guard connections[connection.id] != nil else { return }
        let block = connection.closing || connection.peerClosed ? .pipelineFull : readBlock(connection)
        if block == .budget { waitingForBudget.insert(connection.id) } else { waitingForBudget.remove(connection.id) }
        // While not read, EPOLLRDHUP still tells when the peer gives up (``peerStoppedSending(_:)``).
        let hangUp = connection.peerHalfClosed || connection.closing || connection.peerClosed ? 0 : CTurnstileLinux_EPOLLRDHUP
        var wanted: UInt32 = (block == nil ? CTurnstileLinux_EPOLLIN : 0) | hangUp
        if connection.wantsWrite { wanted |= CTurnstileLinux_EPOLLOUT }
        guard wanted != connection.interest else { return }
        connection.interest = wanted
        _ = CTurnstileLinux_epoll_ctl(epoll, CTurnstileLinux_EPOLL_CTL_MOD, connection.fd, wanted, connection.id)
    }

    /// The peer shut its sending side while the connection was not being read (EPOLLRDHUP without
    /// EPOLLIN). A body that needs more bytes than the kernel still holds for it can never complete: the
    /// connection is closed at once, giving its budget back, instead of at the body timeout. Otherwise it is
    /// left to finish once it may be read; RDHUP is not watched again (it is level-triggered).
    private func peerStoppedSending(_ connection: Connection) {
        connection.peerHalfClosed = true
        var pending: Int32 = 0
        if let expected = connection.parser.bodyBytesStillExpected,
           ioctl(connection.fd, UInt(FIONREAD), &pending) == 0, expected > Int(pending) {
            close(connection)
            return
        }
        updateInterest(connection)
    }

    /// Connections that waited for the body budget read again once it has room (bodies elsewhere, on any
    /// loop, were answered or dropped).
    private func resumeWaitingForBudget() {
        guard !waitingForBudget.isEmpty else { return }
        for id in Array(waitingForBudget) {
            guard let connection = connections[id] else {
                waitingForBudget.remove(id)
                continue
            }
            updateInterest(connection)
        }
    }

    /// Counts the body bytes the parser holds for `connection` against the budget. Bytes already read are
    /// taken even past the budget (at most one read per connection); reading stops until it has room.
    private func chargeBody(_ connection: Connection, held: Int) {
        guard held > connection.chargedBodyBytes else { return }
        budget.take(held - connection.chargedBodyBytes)
        connection.chargedBodyBytes = held
    }

    /// Gives back what `connection` holds of the budget: `sequence`'s body once its answer is written, or
    /// everything when the connection closes.
    private func releaseBody(_ connection: Connection, sequence: Int?) {
        if let sequence {
            if let bytes = connection.answeringBodyBytes.removeValue(forKey: sequence) { budget.give(bytes) }
            return
        }
        budget.give(connection.chargedBodyBytes + connection.answeringBodyBytes.values.reduce(0, +))
        connection.chargedBodyBytes = 0
        connection.answeringBodyBytes = [:]
    }

    private func parse(_ connection: Connection) {
        while !connection.closing && connection.inFlight < configuration.maxPipelinedRequests && !answersUnread(connection) {
            let output: HTTPParserOutput?
            do { output = try connection.parser.next(&connection.buffer) } catch {
                let response = configuration.errorResponse(error)
                connection.closing = true
                enqueue(connection, sequence: connection.nextSequence, response: HTTPResponse(status: response.status, headers: response.headers, body: response.body, closeConnection: true))
                connection.nextSequence += 1
                connection.inFlight += 1
                deliverLocal(connection)
                return
            }
            guard let output else {
                chargeBody(connection, held: connection.parser.bodyBytesHeld)
                return
            }
            switch output {
            case .continueExpected:
                if connection.nextWrite == connection.nextSequence {
                    connection.outbound.append(contentsOf: Array("HTTP/1.1 100 Continue\r\n\r\n".utf8))
                    flush(connection)
                }
            case .request(var request):
                let sequence = connection.nextSequence
                request.peer = connection.peer
                // Connection ids are per loop: a process-wide count keeps request ids apart across loops.
                request.number = Self.requestCount.add(1, ordering: .relaxed).newValue
                connection.nextSequence += 1
                connection.inFlight += 1
                // The body stays counted against the budget until its answer is written.
                chargeBody(connection, held: request.body.count)
                if connection.chargedBodyBytes > 0 {
                    connection.answeringBodyBytes[sequence] = connection.chargedBodyBytes
                    connection.chargedBodyBytes = 0
                }
                if !request.keepAlive { connection.closeAfter = min(connection.closeAfter, sequence) }
                if request.method == "HEAD" { connection.headRequests.insert(sequence) }
                handler(request, HTTPResponseWriter(loop: self, connection: connection.id, sequence: sequence))
            }
        }
    }

    /// Called from any thread when an answer is ready. The loop takes the whole inbox at once, so only the
    /// answer that finds it empty wakes the loop, and one given on the loop thread itself needs no wake-up
    /// (the loop looks at its inbox after every round).
    fileprivate func complete(_ completion: Completion) {
        let first = inbox.withLock { inbox -> Bool in
            inbox.append(completion)
            return inbox.count == 1
        }
        if first && thread.load(ordering: .acquiring) != UInt(pthread_self()) { signal() }
    }

    /// Writes every answer in the inbox, including those given while writing (a pipelined request answered
    /// at once), so the inbox is empty whenever the loop goes back to `epoll_wait`.
    private func deliverCompletions() {
        while true {
            let completions = inbox.withLock { inbox -> [Completion] in
                let taken = inbox
                inbox = []
                return taken
            }
            if completions.isEmpty { return }
            deliver(completions)
        }
    }

    private func deliver(_ completions: [Completion]) {
        for completion in completions {
            guard let connection = connections[completion.connection] else { continue }
            switch completion.answer {
            case .ready(let response): enqueue(connection, sequence: completion.sequence, response: response)
            case .deferred(let build): enqueue(connection, sequence: completion.sequence, response: build())
            }
            deliverLocal(connection)
        }
    }

    private func enqueue(_ connection: Connection, sequence: Int, response: HTTPResponse) {
        connection.ready[sequence] = response
    }

    /// Moves ready answers, in order, into the outbound buffer and writes.
    private func deliverLocal(_ connection: Connection) {
        while let response = connection.ready.removeValue(forKey: connection.nextWrite) {
            let last = response.closeConnection || connection.nextWrite >= connection.closeAfter
            // The answer to HEAD has the head GET would have, and no body (RFC 9110 §9.3.2).
            let withBody = connection.headRequests.remove(connection.nextWrite) == nil
            connection.outbound.append(contentsOf: response.serialized(keepAlive: !last, date: nil, withBody: withBody))
            releaseBody(connection, sequence: connection.nextWrite)
            connection.nextWrite += 1
            connection.inFlight -= 1
            if last {
                connection.closing = true
                connection.closeWhenFlushed = true
                break
            }
        }
        flush(connection)
        if connections[connection.id] != nil && !connection.closing { parse(connection) }
        if connections[connection.id] != nil {
            updateInterest(connection)
            updateTimers(connection)
        }
    }

    private func flush(_ connection: Connection) {
        while connection.outboundOffset < connection.outbound.count {
            let written = connection.outbound.withUnsafeBytes { raw in
                write(connection.fd, raw.baseAddress! + connection.outboundOffset, raw.count - connection.outboundOffset)
            }
            if written > 0 {
                connection.outboundOffset += written
                connection.writeStalledSince = nil
                continue
            }
            if written < 0 && errno == EINTR { continue }
            if written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                connection.writeStalledSince = connection.writeStalledSince ?? now
                if !connection.wantsWrite {
                    connection.wantsWrite = true
                    updateInterest(connection)
                }
                return
            }
            close(connection)
            return
        }
        connection.outbound.removeAll(keepingCapacity: connection.outbound.capacity <= 16 * 1024)
        connection.outboundOffset = 0
        if connection.wantsWrite {
            connection.wantsWrite = false
            updateInterest(connection)
        }
        if connection.closeWhenFlushed || (connection.peerClosed && connection.inFlight == 0) {
            close(connection)
        }
    }

    private func updateTimers(_ connection: Connection) {
        let moment = now
        if answersUnread(connection) {
            // The server, not the peer, holds the next request back: the head timer waits, and the write stall
            // (``HTTPServerConfiguration/idleTimeoutSeconds`` without progress) bounds the connection instead.
            connection.headStarted = nil
        } else if connection.parser.isReadingBody {
            connection.headStarted = nil
            connection.bodyStarted = connection.bodyStarted ?? moment
        } else {
            connection.bodyStarted = nil
            if connection.buffer.readable > 0 || !connection.parser.isIdle {
                connection.headStarted = connection.headStarted ?? moment
            } else if connection.inFlight > 0 || connection.nextSequence > 0 {
                connection.headStarted = nil
            }
        }
        let idle = connection.inFlight == 0 && connection.outbound.count == connection.outboundOffset
            && connection.buffer.readable == 0 && connection.parser.isIdle && connection.nextSequence > 0
        connection.idleSince = idle ? (connection.idleSince ?? moment) : nil
    }

    private func expire() {
        let moment = now
        for connection in Array(connections.values) {
            if let start = connection.headStarted, moment - start > configuration.headerTimeoutSeconds, connection.inFlight == 0,
               !answersUnread(connection) {
                // (While its answers wait unread the server holds the next request back, not the peer.)
                close(connection)
            } else if let start = connection.bodyStarted, moment - start > configuration.bodyTimeoutSeconds {
                close(connection)
            } else if let start = connection.idleSince, moment - start > configuration.idleTimeoutSeconds {
                close(connection)
            } else if let start = connection.writeStalledSince, moment - start > configuration.idleTimeoutSeconds {
                // A peer that has read none of its answers for that long.
                close(connection)
            }
        }
    }

    private func close(_ connection: Connection) {
        guard connections.removeValue(forKey: connection.id) != nil else { return }
        releaseBody(connection, sequence: nil)
        waitingForBudget.remove(connection.id)
        _ = CTurnstileLinux_epoll_ctl(epoll, CTurnstileLinux_EPOLL_CTL_DEL, connection.fd, 0, connection.id)
        Glibc.close(connection.fd)
        counter.decrement()
    }
}

/// Bytes of request bodies held across all loops, against one limit (``HTTPServerConfiguration/bodyBudgetBytes``).
final class BodyBudget: Sendable {
    let limit: Int
    private let held = Atomic<Int>(0)

    init(limit: Int) { self.limit = max(limit, 1) }

    var used: Int { held.load(ordering: .relaxed) }

    /// Whether a body may grow: a large one only while the budget's last eighth is free.
    func hasRoom(forLargeBody large: Bool) -> Bool {
        used < (large ? limit - limit / 8 : limit)
    }

    func take(_ bytes: Int) { held.add(bytes, ordering: .relaxed) }
    func give(_ bytes: Int) { if bytes > 0 { held.subtract(bytes, ordering: .relaxed) } }
}

/// Open connections across all loops.
final class ConnectionCounter: Sendable {
    private let count = Atomic<Int>(0)
    var value: Int { count.load(ordering: .relaxed) }
    func increment() -> Int { count.add(1, ordering: .relaxed).newValue }
    func decrement() { count.subtract(1, ordering: .relaxed) }
}

/// One client connection, owned by its loop.
final class Connection {
    let id: UInt64
    let fd: Int32
    var buffer = HTTPByteBuffer()
    var parser: HTTPRequestParser
    var outbound: [UInt8] = []
    var outboundOffset = 0
    var ready: [Int: HTTPResponse] = [:]
    /// The peer's address, for the log.
    var peer = ""
    /// Sequence numbers of HEAD requests not answered yet.
    var headRequests: Set<Int> = []
    var nextSequence = 0
    var nextWrite = 0
    var inFlight = 0
    /// The sequence number after whose answer the connection closes.
    var closeAfter = Int.max
    var closing = false
    var closeWhenFlushed = false
    var peerClosed = false
    /// The peer shut its sending side (seen while the connection was not read).
    var peerHalfClosed = false
    var wantsWrite = false
    /// The epoll events registered for the connection.
    var interest: UInt32 = 0
    /// Budget bytes taken for the body being received.
    var chargedBodyBytes = 0
    /// Budget bytes taken for the bodies of requests not answered yet, by sequence number.
    var answeringBodyBytes: [Int: Int] = [:]
    var headStarted: Double?
    var bodyStarted: Double?
    /// Since when answers wait for a socket that takes none of them.
    var writeStalledSince: Double?
    var idleSince: Double?

    init(id: UInt64, fd: Int32, limits: HTTPLimits, openedAt: Double) {
        self.id = id
        self.fd = fd
        self.parser = HTTPRequestParser(limits: limits)
        self.headStarted = openedAt
    }
}

/// Minimal JSON text for the server's own error bodies.
enum JSONText {
    static func object(_ members: KeyValuePairs<String, String>) -> String {
        "{" + members.map { "\(quote($0.key)):\(quote($0.value))" }.joined(separator: ",") + "}"
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 { out += String(format: "\\u%04x", scalar.value) } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out + "\""
    }
}
