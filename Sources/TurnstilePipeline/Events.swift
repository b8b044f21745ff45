public import TurnstileCore
import Foundation

/// A value handlers receive: built from a queued event's payload.
///
/// The built-in types decode the provider payloads leniently (unknown enum values kept, dates with or
/// without fractions and offsets, ids as strings, extra keys ignored). A plugin can define its own.
public protocol DispatchableEvent: Sendable {
    /// Builds the value from a queued event.
    /// - Throws: when the payload cannot be read as this type.
    init(queued event: QueuedEvent) throws
}

extension DispatchableEvent where Self: Decodable {
    public init(queued event: QueuedEvent) throws {
        self = try JSONDecoder().decode(Self.self, from: Data(event.payload))
    }
}

/// Any event, typed only by its envelope: the generic schemes' events, and what a catch-all handler sees.
public struct GenericEvent: DispatchableEvent, Hashable {
    public let provider: String
    /// `<provider>.<kind>`, e.g. `stripe.customer.created`.
    public let type: String
    /// The event identity within the provider.
    public let key: String
    /// The body parsed as JSON (member order and number text kept), or nil when it is not JSON.
    public let payload: JSONValue?
    /// The body bytes exactly as received.
    public let body: [UInt8]
    public let receivedAt: Instant

    public init(queued event: QueuedEvent) {
        provider = event.provider
        type = event.eventType
        key = event.eventKey
        payload = try? JSONParser.parse(event.payload)
        body = event.payload
        receivedAt = event.receivedAt
    }
}

// MARK: Synthflow

/// Synthflow's post-call webhook: one finished voice call.
public struct CallEvent: DispatchableEvent, Codable, Hashable {
    public struct Lead: Codable, Hashable, Sendable {
        public var name: String?
        public var phoneNumber: String?
        public var promptVariables: [String: JSONValue]?

        enum CodingKeys: String, CodingKey {
            case name, phoneNumber = "phone_number", promptVariables = "prompt_variables"
        }
    }

    public struct Call: Codable, Hashable, Sendable {
        public var callID: ProviderID
        public var status: CallStatus?
        public var endCallReason: EndCallReason?
        public var customEndCallReason: String?
        /// The agent ("assistant") id, not an LLM model.
        public var modelID: String?
        public var timezone: String?
        /// Seconds.
        public var duration: Int?
        public var startTime: ProviderDate?
        public var transcript: String?
        public var recordingURL: String?
        public var externalID: String?
        public var analysis: [String: JSONValue]?

        enum CodingKeys: String, CodingKey {
            case callID = "call_id", status, endCallReason = "end_call_reason", customEndCallReason = "custom_end_call_reason"
            case modelID = "model_id", timezone, duration, startTime = "start_time", transcript, recordingURL = "recording_url"
            case externalID = "external_id", analysis
        }
    }

    public struct ExecutedAction: Codable, Hashable, Sendable {
        public var name: String?
        public var actionType: String?
        public var description: String?
        public var parametersHardCoded: JSONValue?
        public var errorMessage: String?
        public var returnValue: JSONValue?

        enum CodingKeys: String, CodingKey {
            case name, actionType = "action_type", description, parametersHardCoded = "parameters_hard_coded"
            case errorMessage = "error_message", returnValue = "return_value"
        }
    }

    /// One collected flow variable. Synthflow sends them flat (`{"name": {"value", "collected"}}`) or keyed by
    /// agent first; both shapes are read into this list.
    public struct CollectedVariable: Hashable, Sendable {
        public var name: String
        public var agentID: String?
        public var value: JSONValue
        public var collected: Bool
    }

    public var status: String?
    public var errorMessage: String?
    public var lead: Lead?
    public var call: Call
    public var executedActions: [String: ExecutedAction]?
    /// LLM-judge scores; read from the top level or, failing that, from inside `call`.
    public var analysis: [String: JSONValue]?
    public var collectedVariables: [CollectedVariable]

    enum CodingKeys: String, CodingKey {
        case status, errorMessage = "error_message", lead, call, executedActions = "executed_actions", analysis
        case collectedVariables = "collected_variables"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        status = try container.decodeIfPresent(String.self, forKey: .status)
        errorMessage = try container.decodeIfPresent(String.self, forKey: .errorMessage)
        lead = try container.decodeIfPresent(Lead.self, forKey: .lead)
        call = try container.decode(Call.self, forKey: .call)
        executedActions = try container.decodeIfPresent([String: ExecutedAction].self, forKey: .executedActions)
        analysis = try container.decodeIfPresent([String: JSONValue].self, forKey: .analysis) ?? call.analysis
        var variables: [CollectedVariable] = []
        if let raw = try container.decodeIfPresent([String: JSONValue].self, forKey: .collectedVariables) {
            for (name, value) in raw.sorted(by: { $0.key < $1.key }) {
                if let entry = Self.variable(name: name, agentID: nil, value) {
                    variables.append(entry)
                } else if let nested = value.objectValue {
                    for (inner, innerValue) in nested {
                        if let entry = Self.variable(name: inner, agentID: name, innerValue) { variables.append(entry) }
                    }
                }
            }
        }
        collectedVariables = variables
    }

    private static func variable(name: String, agentID: String?, _ value: JSONValue) -> CollectedVariable? {
        guard let object = value.objectValue, object["value"] != nil || object["collected"] != nil else { return nil }
        return CollectedVariable(name: name, agentID: agentID, value: object["value"] ?? .null,
                                 collected: object["collected"]?.boolValue ?? true)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(status, forKey: .status)
        try container.encodeIfPresent(errorMessage, forKey: .errorMessage)
        try container.encodeIfPresent(lead, forKey: .lead)
        try container.encode(call, forKey: .call)
        try container.encodeIfPresent(executedActions, forKey: .executedActions)
        try container.encodeIfPresent(analysis, forKey: .analysis)
    }
}

public struct CallStatus: LenientStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let pending = CallStatus(rawValue: "pending"), ringing = CallStatus(rawValue: "ringing")
    public static let inProgress = CallStatus(rawValue: "in-progress"), completed = CallStatus(rawValue: "completed")
    public static let noAnswer = CallStatus(rawValue: "no-answer"), busy = CallStatus(rawValue: "busy")
    public static let failed = CallStatus(rawValue: "failed"), canceled = CallStatus(rawValue: "canceled")
    public static let userCanceled = CallStatus(rawValue: "user-canceled"), hangupOnVoicemail = CallStatus(rawValue: "hangup_on_voicemail")
    public static let leftVoicemail = CallStatus(rawValue: "left_voicemail"), spam = CallStatus(rawValue: "spam")
    public static let paused = CallStatus(rawValue: "paused"), registered = CallStatus(rawValue: "registered")
    public static let documented: [CallStatus] = [.pending, .ringing, .inProgress, .completed, .noAnswer, .busy, .failed, .canceled,
                                                  .userCanceled, .hangupOnVoicemail, .leftVoicemail, .spam, .paused, .registered]
}

public struct EndCallReason: LenientStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let voicemail = EndCallReason(rawValue: "voicemail"), voicemailMessageLeft = EndCallReason(rawValue: "voicemail_message_left")
    public static let humanGoodbye = EndCallReason(rawValue: "human_goodbye"), agentGoodbye = EndCallReason(rawValue: "agent_goodbye")
    public static let humanPickUpCutOff = EndCallReason(rawValue: "human_pick_up_cut_off"), maxDuration = EndCallReason(rawValue: "max_duration")
    public static let customEndCall = EndCallReason(rawValue: "custom_end_call"), userCanceled = EndCallReason(rawValue: "user_canceled")
    public static let undefined = EndCallReason(rawValue: "undefined"), completed = EndCallReason(rawValue: "completed")
    public static let documented: [EndCallReason] = [.voicemail, .voicemailMessageLeft, .humanGoodbye, .agentGoodbye, .humanPickUpCutOff,
                                                     .maxDuration, .customEndCall, .userCanceled, .undefined, .completed]
}

/// Synthflow's inbound-call webhook: a call is starting and asks where to go.
public struct InboundCallEvent: DispatchableEvent, Codable, Hashable {
    public struct Request: Codable, Hashable, Sendable {
        public var modelID: String?
        public var fromNumber: String?
        public var toNumber: String?
        public var callID: ProviderID?

        enum CodingKeys: String, CodingKey {
            case modelID = "model_id", fromNumber = "from_number", toNumber = "to_number", callID = "call_id"
        }
    }

    public var event: String?
    /// The call id, wherever the request carries it.
    public var callID: ProviderID?
    public var callInbound: Request?

    enum CodingKeys: String, CodingKey {
        case event, callID = "call_id", callInbound = "call_inbound"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        event = try container.decodeIfPresent(String.self, forKey: .event)
        callInbound = try container.decodeIfPresent(Request.self, forKey: .callInbound)
        callID = try container.decodeIfPresent(ProviderID.self, forKey: .callID) ?? callInbound?.callID
    }
}

// MARK: Autify

/// An Autify test result: a whole test plan run (with its scenarios) or one test case.
public struct TestRunEvent: DispatchableEvent, Codable, Hashable {
    public enum Kind: String, Codable, Hashable, Sendable {
        case testPlanResult = "test_plan_result"
        case testCaseResult = "test_case_result"
    }

    public struct Capability: Codable, Hashable, Sendable {
        public var os: String?
        public var osVersion: String?
        public var browser: String?
        public var browserVersion: String?
        public var device: String?
        public var resolution: String?

        enum CodingKeys: String, CodingKey {
            case os, osVersion = "os_version", browser, browserVersion = "browser_version", device, resolution
        }
    }

    public var kind: Kind
    public var action: String?
    public var id: ProviderID
    public var startedAt: ProviderDate?
    public var finishedAt: ProviderDate?
    public var status: TestStatus?
    public var url: String?
    /// Plan results: the case results.
    public var scenarios: [TestRunEvent]?
    public var scenarioID: ProviderID?
    public var scenarioName: String?
    public var reviewNeeded: Bool?
    public var testPlanID: ProviderID?
    public var capability: Capability?

    enum CodingKeys: String, CodingKey {
        case action, id, startedAt = "started_at", finishedAt = "finished_at", status, url, scenarios
        case scenarioID = "scenario_id", scenarioName = "scenario_name", reviewNeeded = "review_needed"
        case testPlanID = "test_plan_id", capability
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        action = try container.decodeIfPresent(String.self, forKey: .action)
        id = try container.decode(ProviderID.self, forKey: .id)
        startedAt = try container.decodeIfPresent(ProviderDate.self, forKey: .startedAt)
        finishedAt = try container.decodeIfPresent(ProviderDate.self, forKey: .finishedAt)
        status = try container.decodeIfPresent(TestStatus.self, forKey: .status)
        url = try container.decodeIfPresent(String.self, forKey: .url)
        scenarios = try container.decodeIfPresent([TestRunEvent].self, forKey: .scenarios)
        scenarioID = try container.decodeIfPresent(ProviderID.self, forKey: .scenarioID)
        scenarioName = try container.decodeIfPresent(String.self, forKey: .scenarioName)
        reviewNeeded = try container.decodeIfPresent(Bool.self, forKey: .reviewNeeded)
        testPlanID = try container.decodeIfPresent(ProviderID.self, forKey: .testPlanID)
        capability = try container.decodeIfPresent(Capability.self, forKey: .capability)
        kind = scenarios != nil ? .testPlanResult : .testCaseResult
    }
}

public struct TestStatus: LenientStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let queuing = TestStatus(rawValue: "queuing"), waiting = TestStatus(rawValue: "waiting")
    public static let running = TestStatus(rawValue: "running"), passed = TestStatus(rawValue: "passed")
    public static let failed = TestStatus(rawValue: "failed"), skipped = TestStatus(rawValue: "skipped")
    public static let internalError = TestStatus(rawValue: "internal_error"), canceled = TestStatus(rawValue: "canceled")
    public static let documented: [TestStatus] = [.queuing, .waiting, .running, .passed, .failed, .skipped, .internalError, .canceled]
}

// MARK: Sync

/// A Sync job reaching a state: one lip-sync generation, or a batch of them.
public struct GenerationJobEvent: DispatchableEvent, Codable, Hashable {
    public enum Kind: String, Codable, Hashable, Sendable {
        case generation, batch
    }

    public struct Metrics: Codable, Hashable, Sendable {
        public var totalGenerations: Int?
        public var successCount: Int?
        public var failedCount: Int?
        public var pendingCount: Int?

        private enum Keys: String, CodingKey {
            case totalGenerations, successCount, failedCount, pendingCount
            case total_generations, success_count, failed_count, pending_count
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Keys.self)
            func read(_ camel: Keys, _ snake: Keys) throws -> Int? {
                try container.decodeIfPresent(Int.self, forKey: camel) ?? container.decodeIfPresent(Int.self, forKey: snake)
            }
            totalGenerations = try read(.totalGenerations, .total_generations)
            successCount = try read(.successCount, .success_count)
            failedCount = try read(.failedCount, .failed_count)
            pendingCount = try read(.pendingCount, .pending_count)
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            try container.encodeIfPresent(totalGenerations, forKey: .totalGenerations)
            try container.encodeIfPresent(successCount, forKey: .successCount)
            try container.encodeIfPresent(failedCount, forKey: .failedCount)
            try container.encodeIfPresent(pendingCount, forKey: .pendingCount)
        }
    }

    public var kind: Kind
    public var id: ProviderID
    public var status: GenerationStatus
    public var createdAt: ProviderDate?
    public var model: String?
    public var input: [JSONValue]?
    public var options: JSONValue?
    public var outputURL: String?
    /// Seconds.
    public var outputDuration: Double?
    public var segmentOutputURL: String?
    public var error: String?
    public var errorCode: String?
    public var webhookURL: String?
    public var metrics: Metrics?

    private enum Keys: String, CodingKey {
        case id, status, createdAt, created_at, model, input, options, outputUrl, outputDuration, segmentOutputUrl, error
        case error_code, webhookUrl, webhook_url, metrics
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        id = try container.decode(ProviderID.self, forKey: .id)
        status = try container.decode(GenerationStatus.self, forKey: .status)
        createdAt = try container.decodeIfPresent(ProviderDate.self, forKey: .createdAt)
            ?? container.decodeIfPresent(ProviderDate.self, forKey: .created_at)
        model = try container.decodeIfPresent(String.self, forKey: .model)
        input = try container.decodeIfPresent([JSONValue].self, forKey: .input)
        options = try container.decodeIfPresent(JSONValue.self, forKey: .options)
        outputURL = try container.decodeIfPresent(String.self, forKey: .outputUrl)
        outputDuration = try container.decodeIfPresent(Double.self, forKey: .outputDuration)
        segmentOutputURL = try container.decodeIfPresent(String.self, forKey: .segmentOutputUrl)
        error = try container.decodeIfPresent(String.self, forKey: .error)
        errorCode = try container.decodeIfPresent(String.self, forKey: .error_code)
        webhookURL = try container.decodeIfPresent(String.self, forKey: .webhookUrl)
            ?? container.decodeIfPresent(String.self, forKey: .webhook_url)
        metrics = try container.decodeIfPresent(Metrics.self, forKey: .metrics)
        kind = id.value.hasPrefix("batch_") || metrics != nil ? .batch : .generation
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(id, forKey: .id)
        try container.encode(status, forKey: .status)
        try container.encodeIfPresent(createdAt, forKey: .createdAt)
        try container.encodeIfPresent(model, forKey: .model)
        try container.encodeIfPresent(outputURL, forKey: .outputUrl)
        try container.encodeIfPresent(outputDuration, forKey: .outputDuration)
        try container.encodeIfPresent(error, forKey: .error)
        try container.encodeIfPresent(errorCode, forKey: .error_code)
        try container.encodeIfPresent(metrics, forKey: .metrics)
    }
}

public struct GenerationStatus: LenientStringEnum {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let pending = GenerationStatus(rawValue: "PENDING"), processing = GenerationStatus(rawValue: "PROCESSING")
    public static let completed = GenerationStatus(rawValue: "COMPLETED"), failed = GenerationStatus(rawValue: "FAILED")
    public static let rejected = GenerationStatus(rawValue: "REJECTED"), canceled = GenerationStatus(rawValue: "CANCELED")
    public static let documented: [GenerationStatus] = [.pending, .processing, .completed, .failed, .rejected, .canceled]
}
