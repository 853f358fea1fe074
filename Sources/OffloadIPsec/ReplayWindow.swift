/// The receiver's anti-replay window (RFC 4303 §3.4.3 and Appendix A): the highest sequence
/// number authenticated so far and a bitmap of the `size` numbers at and below it.
///
/// Use in two steps, as the RFC orders them: ``check(low:)`` before the ICV is verified (a cheap
/// refusal of what is known to be old or seen, and, with ESN, the full 64-bit number the
/// received low half stands for), ``accept(_:)`` only after the ICV is right, so that a forged
/// packet never moves the window.
public struct ReplayWindow: Hashable, Sendable {
    /// The window's size in packets (a multiple of 64).
    public let size: Int
    /// Whether sequence numbers are 64 bits with only the low half sent (ESN, RFC 4304).
    public let extendedSequenceNumbers: Bool
    /// The highest sequence number accepted (0: none yet).
    public private(set) var top: UInt64 = 0
    /// Bit `n % size` stands for sequence number `n`, for `top - size < n <= top`.
    var bits: [UInt64]

    /// An empty window of `size` packets (rounded up to a multiple of 64, at least 64).
    public init(size: Int, extendedSequenceNumbers: Bool) {
        let words = max(1, (size + 63) / 64)
        self.size = words * 64
        self.extendedSequenceNumbers = extendedSequenceNumbers
        bits = Array(repeating: 0, count: words)
    }

    /// What the window says of a received sequence number (its low 32 bits).
    public enum Verdict: Hashable, Sendable {
        /// New: the full sequence number it stands for (verify the ICV with it, then accept it).
        case new(UInt64)
        /// Already received.
        case replay
        /// Below the window: too old to tell.
        case tooOld
    }

    /// Checks a received sequence number before the ICV is verified.
    public func check(low: UInt32) -> Verdict {
        let sequence = fullSequence(low: low)
        if sequence == 0 { return .tooOld }  // 0 is never sent (the first packet is 1)
        if sequence > top { return .new(sequence) }
        let behind = top - sequence
        if behind >= UInt64(size) { return .tooOld }
        return isSet(sequence) ? .replay : .new(sequence)
    }

    /// Records an authenticated sequence number, moving the window when it is the highest yet.
    public mutating func accept(_ sequence: UInt64) {
        if sequence > top {
            let advance = sequence - top
            if advance >= UInt64(size) {
                for i in bits.indices { bits[i] = 0 }
            } else {
                // Clear the numbers the window slides over (top+1 ..< sequence), then mark sequence.
                var n = top &+ 1
                while n < sequence {
                    clear(n)
                    n &+= 1
                }
            }
            top = sequence
        }
        set(sequence)
    }

    /// The 64-bit number a received low half stands for (RFC 4303 Appendix A2.2): the one whose
    /// high half puts it nearest the window. Without ESN the high half is 0.
    func fullSequence(low: UInt32) -> UInt64 {
        guard extendedSequenceNumbers else { return UInt64(low) }
        let topLow = UInt32(truncatingIfNeeded: top)
        let topHigh = UInt32(truncatingIfNeeded: top >> 32)
        let w = UInt32(size)
        let bottom = topLow &- w &+ 1  // the low half of the window's bottom (wraps)
        var high = topHigh
        if topLow >= w - 1 {
            // The window lies within one subspace of 2^32: below its bottom means the next subspace.
            if low < bottom { high = topHigh &+ 1 }
        } else {
            // The window spans two subspaces: at or above the (wrapped) bottom means the previous one.
            if low >= bottom, topHigh > 0 { high = topHigh &- 1 }
        }
        return UInt64(high) << 32 | UInt64(low)
    }

    func isSet(_ n: UInt64) -> Bool {
        let bit = Int(n % UInt64(size))
        return bits[bit >> 6] & (1 << UInt64(bit & 63)) != 0
    }

    mutating func set(_ n: UInt64) {
        let bit = Int(n % UInt64(size))
        bits[bit >> 6] |= 1 << UInt64(bit & 63)
    }

    mutating func clear(_ n: UInt64) {
        let bit = Int(n % UInt64(size))
        bits[bit >> 6] &= ~(1 << UInt64(bit & 63))
    }
}
