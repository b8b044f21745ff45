#if canImport(Glibc)
import Glibc
#endif

/// A value reached only under a lock: `withLock` is the one way in.
///
/// Built on `pthread_mutex_t` rather than the standard library's `Mutex` because ThreadSanitizer
/// understands pthread locks: `Mutex` on Linux locks through atomics inside the (uninstrumented) standard
/// library, so every correct use of it reads as a race, and the sanitizer could not find the real ones.
///
/// `@unchecked Sendable` is safe because `value` is read and written only between `pthread_mutex_lock`
/// and `pthread_mutex_unlock` on the one mutex this instance owns, which lives (at a fixed address, never
/// moved by Swift) as long as the instance.
public final class Locked<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// Runs `body` with the value, holding the lock; `body` must not call `withLock` on the same instance.
    public func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}

/// A lock with no value of its own, guarding state that lives elsewhere (such as a C handle).
///
/// (Not `Locked<Void>`: a stored `Void` takes no bytes, so its exclusive access shares an address with the
/// neighbouring field, which ThreadSanitizer then reports as a race.)
public final class Lock: Sendable {
    private let locked = Locked<UInt8>(0)

    public init() {}

    /// Runs `body` holding the lock; `body` must not take the same lock again.
    public func withLock<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        try locked.withLock { (_: inout UInt8) throws(Failure) -> Result in try body() }
    }
}
