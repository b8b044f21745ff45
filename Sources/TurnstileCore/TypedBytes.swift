extension Array where Element == UInt8 {
    /// `withUnsafeBytes` that keeps the closure's typed error (the standard one is only `rethrows`).
    @inlinable
    public func withBytes<Result, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        do {
            return try withUnsafeBytes { raw in try body(raw) }
        } catch {
            // `body` is the only thing that throws here, and it throws `Failure`.
            throw error as! Failure
        }
    }
}

extension String {
    /// `withUTF8` on a copy, keeping the closure's typed error.
    @inlinable
    public func withUTF8Bytes<Result, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        var copy = self
        do {
            return try copy.withUTF8 { utf8 in try body(UnsafeRawBufferPointer(utf8)) }
        } catch {
            throw error as! Failure
        }
    }
}
