/// The nonces of a store's `nonce_log`, in memory: each nonce's ``Nonce/stableHash`` to the ids of the log rows
/// that bear it, with their expiry. A lookup gives candidates only; the store confirms each against its row,
/// so two nonces whose hashes agree are never taken for one another and a real event is never turned away by
/// a collision.
///
/// Open addressing with linear probing over three arrays: a 32-bit tag from the hash (0 marks a free slot, 1 a
/// removed one), the expiry in whole seconds rounded up, and the row id: 16 bytes a slot, at most 70% full, so
/// 23–46 bytes per nonce (5 million nonces: 8,388,608 slots, 134 MB).
///
/// Log rows are never updated, so an entry stays true until its row is deleted; a deleted row that is still
/// listed costs one row read, finds nothing, and is swept out with the expired entries.
struct NonceIndex {
    private var tags: [UInt32]
    private var expiries: [UInt32]
    private var rows: [Int64]
    /// Entries listed.
    private(set) var count = 0
    /// Entries plus removed slots not yet reclaimed: what decides when to rebuild.
    private var occupied = 0

    private static let free: UInt32 = 0
    private static let removed: UInt32 = 1

    /// An empty index with room for `capacity` entries before it first grows.
    init(capacity: Int = 0) {
        var slots = 1024
        while slots / 10 * 7 < capacity { slots *= 2 }
        self.init(slots: slots)
    }

    private init(slots: Int) {
        tags = Array(repeating: Self.free, count: slots)
        expiries = Array(repeating: 0, count: slots)
        rows = Array(repeating: 0, count: slots)
    }

    /// Bytes held by the tables.
    var bytes: Int { tags.count * 16 }

    /// The tag, from the hash (mixed again, since FNV's low bits are weak). The slot to start at comes from the
    /// tag alone, so a rebuild places an entry without its hash; entries probed together then share the tag's
    /// low bits, and about 32 − log2(slots) bits tell them apart: a false candidate costs one row read.
    private static func tag(_ hash: UInt64) -> UInt32 {
        var mixed = hash
        mixed = (mixed ^ (mixed >> 30)) &* 0xbf58_476d_1ce4_e5b9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94d0_49bb_1331_11eb
        mixed ^= mixed >> 31
        let tag = UInt32(truncatingIfNeeded: mixed >> 32)
        return tag < 2 ? tag &+ 2 : tag
    }

    private func start(_ tag: UInt32) -> Int { Int(tag) & (tags.count - 1) }

    /// Whole seconds since 1970, rounded up and clamped to `UInt32`, so an entry never looks expired before its row.
    static func seconds(_ instant: Double) -> UInt32 {
        guard instant > 0 else { return 0 }
        guard instant < Double(UInt32.max) else { return .max }
        return UInt32(instant.rounded(.up))
    }

    /// Calls `body` with each row id filed under `hash` that may still be live at `now`, until it returns true;
    /// says whether one did.
    func firstRow(hash: UInt64, liveAt now: Double, where body: (Int64) throws -> Bool) rethrows -> Bool {
        let tag = Self.tag(hash)
        let mask = tags.count - 1
        var slot = start(tag)
        while tags[slot] != Self.free {
            if tags[slot] == tag, !(Double(expiries[slot]) < now), try body(rows[slot]) { return true }
            slot = (slot + 1) & mask
        }
        return false
    }

    mutating func insert(hash: UInt64, row: Int64, expiresAt: Double) {
        if (occupied + 1) * 10 > tags.count * 7 { rebuild() }
        let tag = Self.tag(hash)
        let mask = tags.count - 1
        var slot = start(tag)
        while tags[slot] > Self.removed { slot = (slot + 1) & mask }
        if tags[slot] == Self.free { occupied += 1 }
        tags[slot] = tag
        expiries[slot] = Self.seconds(expiresAt)
        rows[slot] = row
        count += 1
    }

    /// Removes the entry for `row` filed under `hash`, if there is one.
    mutating func remove(hash: UInt64, row: Int64) {
        let tag = Self.tag(hash)
        let mask = tags.count - 1
        var slot = start(tag)
        while tags[slot] != Self.free {
            if tags[slot] == tag, rows[slot] == row {
                tags[slot] = Self.removed
                count -= 1
                return
            }
            slot = (slot + 1) & mask
        }
    }

    /// Removes every entry that expired before `now`; returns how many.
    @discardableResult
    mutating func removeExpired(before now: Double) -> Int {
        var swept = 0
        for slot in tags.indices where tags[slot] > Self.removed && Double(expiries[slot]) < now {
            tags[slot] = Self.removed
            swept += 1
        }
        count -= swept
        if occupied * 10 > tags.count * 6 { rebuild() }
        return swept
    }

    /// Reclaims removed slots, doubling the table if entries fill more than half of it.
    private mutating func rebuild() {
        var rebuilt = NonceIndex(slots: count * 2 > tags.count ? tags.count * 2 : tags.count)
        let mask = rebuilt.tags.count - 1
        for old in tags.indices where tags[old] > Self.removed {
            var slot = rebuilt.start(tags[old])
            while rebuilt.tags[slot] != Self.free { slot = (slot + 1) & mask }
            rebuilt.tags[slot] = tags[old]
            rebuilt.expiries[slot] = expiries[old]
            rebuilt.rows[slot] = rows[old]
        }
        rebuilt.count = count
        rebuilt.occupied = count
        self = rebuilt
    }
}
