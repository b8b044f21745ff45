import Foundation
import Turnstile

/// Where the CRM records calls. A real team calls its CRM's API here; the example appends JSON lines to a
/// file (its "outbox"), so a test can read what the CRM got.
public protocol CRM: Sendable {
    /// Logs one finished call; `idempotencyKey` is the same on every redelivery of that call.
    func logCall(_ record: CallRecord, idempotencyKey: String) async throws
}

public struct CallRecord: Sendable, Hashable, Codable {
    public var callID: String
    public var status: String
    public var durationSeconds: Double?
    public var phone: String?
    public var endedBecause: String?

    public init(callID: String, status: String, durationSeconds: Double?, phone: String?, endedBecause: String?) {
        self.callID = callID
        self.status = status
        self.durationSeconds = durationSeconds
        self.phone = phone
        self.endedBecause = endedBecause
    }
}

/// The post-call handler: every finished Synthflow call becomes a call record in the CRM.
public struct NotifyCRM: EventHandler {
    let crm: any CRM

    public init(crm: any CRM) { self.crm = crm }

    public func handle(_ event: CallEvent, context: DispatchContext) async throws {
        let record = CallRecord(callID: event.call.callID.value, status: event.call.status?.rawValue ?? "unknown",
                                durationSeconds: event.call.duration.map(Double.init), phone: event.lead?.phoneNumber,
                                endedBecause: event.call.endCallReason?.rawValue)
        // At least once: a redelivery carries the same event key, which the CRM uses to drop the repeat.
        try await crm.logCall(record, idempotencyKey: context.eventKey)
    }
}

/// A CRM that appends one JSON line per call to a file.
public final class OutboxCRM: CRM {
    public let path: String
    private let queue = DispatchQueue(label: "crm-outbox")

    public init(path: String) { self.path = path }

    public func logCall(_ record: CallRecord, idempotencyKey: String) async throws {
        var encoded = try JSONEncoder().encode(["key": idempotencyKey, "call_id": record.callID, "status": record.status,
                                              "phone": record.phone ?? "", "ended": record.endedBecause ?? ""])
        encoded.append(0x0a)
        let line = encoded
        let path = self.path
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            queue.async {
                do {
                    if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
                    let file = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
                    defer { try? file.close() }
                    try file.seekToEnd()
                    try file.write(contentsOf: line)
                    try file.synchronize()
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }
}
