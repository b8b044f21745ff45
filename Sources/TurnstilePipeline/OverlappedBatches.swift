public import TurnstileCore
import Dispatch

/// Admits batches of deliveries while the next batch is being verified: the CPU work of batch n + 1
/// (signatures, schemas) overlaps the store's transaction for batch n (mostly waiting on fsync).
///
/// ```swift
/// let batches = OverlappedBatches(pipeline: pipeline)
/// for batch in input { if let verdicts = batches.submit(batch) { report(verdicts) } }
/// if let verdicts = batches.finish() { report(verdicts) }
/// ```
///
/// Each call returns the verdicts of the batch submitted before, in order; ``finish()`` returns the last.
/// Not for sharing between threads: one feeder drives it.
public final class OverlappedBatches {
    private let pipeline: Pipeline
    private let now: Instant?
    private let reprocess: Bool
    private var preparing: (done: DispatchGroup, result: PreparedBatch)? = nil

    /// Where a background preparation leaves its result; read only after its group has finished.
    private final class PreparedBatch: @unchecked Sendable {
        var prepared: [PreparedDelivery] = []
    }

    public init(pipeline: Pipeline, now: Instant? = nil, reprocess: Bool = false) {
        self.pipeline = pipeline
        self.now = now
        self.reprocess = reprocess
    }

    /// Starts verifying `batch`, then stores the previous batch and returns its verdicts (nil for the first).
    public func submit(_ batch: [Delivery]) -> [DeliveryVerdict]? {
        let previous = waitForPreparation()
        let result = PreparedBatch()
        let done = DispatchGroup()
        let pipeline = pipeline, now = now, reprocess = reprocess
        DispatchQueue.global().async(group: done) {
            result.prepared = pipeline.prepareAll(batch, now: now, reprocess: reprocess)
        }
        preparing = (done, result)
        return previous.map(pipeline.admit)
    }

    /// Stores the last batch and returns its verdicts (nil when nothing is pending).
    public func finish() -> [DeliveryVerdict]? {
        waitForPreparation().map(pipeline.admit)
    }

    private func waitForPreparation() -> [PreparedDelivery]? {
        guard let (done, result) = preparing else { return nil }
        done.wait()
        preparing = nil
        return result.prepared
    }
}
