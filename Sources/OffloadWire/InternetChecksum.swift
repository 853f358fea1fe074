import COffloadChecksum
// MARK: - The Internet checksum (RFC 1071, RFC 1624)

/// The Internet checksum: the 16-bit one's complement of the one's complement sum of 16-bit words.
///
/// All values here are in the *numeric* domain of RFC 1071: a 16-bit word `0x1234` is the bytes
/// `12 34` in memory. ``OnesComplementSum`` carries a running sum; ``InternetChecksum`` holds the
/// functions that make, fold, finish and update sums.
///
/// The byte loop reads 32-bit words in host order into a 64-bit accumulator, eight words per
/// iteration, and converts to network order once at the end. The one's complement sum is
/// independent of byte order up to that final swap (RFC 1071 §2(B)), so this equals the
/// word-by-word definition. Sources: RFC 1071, RFC 1141, RFC 1624.
public enum InternetChecksum {
    /// Sums `bytes` as 16-bit big-endian words (an odd last byte is padded with a zero byte).
    ///
    /// - Parameters:
    ///   - bytes: the bytes to sum. Their first byte is the high byte of the first word.
    ///   - initial: a sum to continue from.
    /// - Returns: `initial` plus the sum of `bytes`, folded to 16 bits.
    @inlinable
    public static func sum(_ bytes: RawSpan, initial: OnesComplementSum = .zero) -> OnesComplementSum {
        unsafe bytes.withUnsafeBytes { unsafe unsafeSum($0, initial: initial) }
    }

    /// Sums the bytes of an unsafe buffer; see ``sum(_:initial:)``.
    ///
    /// - Warning: `buffer` must be valid for reads for the whole call.
    @inlinable
    public static func unsafeSum(_ buffer: UnsafeRawBufferPointer, initial: OnesComplementSum = .zero)
        -> OnesComplementSum
    {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return initial }
        let native = unsafe _unsafeNativeSum(base, count: buffer.count)
        // `native` is the sum of host-order words; one swap turns it into network order.
        let folded = _fold64(native)
        return initial + OnesComplementSum(UInt16(bigEndian: folded))
    }

    /// The checksum of `bytes`: the complement of their sum (plus `initial`).
    @inlinable
    public static func checksum(_ bytes: RawSpan, initial: OnesComplementSum = .zero) -> UInt16 {
        ~sum(bytes, initial: initial).value
    }

    /// The host-order 64-bit sum of `count` bytes at `base`: the vector loop for long buffers,
    /// then the scalar loop for the rest.
    @inlinable
    @inline(__always)
    internal static func _unsafeNativeSum(_ base: UnsafeRawPointer, count: Int) -> UInt64 {
        if count < _vectorThreshold { return unsafe _unsafeScalarSum(base, count: count) }
        // The widest loop this CPU has, chosen at load time: AVX2 (in C, the whole buffer); else the
        // Swift SSE2 loop and the scalar tail.
        if offload_checksum_has_avx2() != 0 { return unsafe offload_checksum_sum_avx2(base, count) }
        let vectorBytes = count & ~63
        let head = unsafe _unsafeVectorSum(base, count: vectorBytes)
        return unsafe head &+ _unsafeScalarSum(base + vectorBytes, count: count &- vectorBytes)
    }

    /// Below this many bytes the scalar loop is as fast as the vector one (measured with
    /// `offload-compare --only checksum`: the vector setup and the final reduction cost more
    /// than they save on a header).
    @usableFromInline
    internal static var _vectorThreshold: Int { 256 }

    /// The host-order sum of `count` bytes (a multiple of 64) as 16-bit words, 32 at a time:
    /// each 32-byte load is widened to sixteen 32-bit lanes and added (SSE2 `punpck`/`paddd`,
    /// AVX2 `vpmovzxwd`/`vpaddd` when built for such a CPU). The one's complement sum does not
    /// depend on how the words are grouped or on their byte order until the final swap
    /// (RFC 1071 §2), so this equals the scalar loop.
    @inlinable
    @inline(__always)
    internal static func _unsafeVectorSum(_ base: UnsafeRawPointer, count: Int) -> UInt64 {
        var total: UInt64 = 0
        var offset = 0
        while offset < count {
            // A lane gains at most 0xFFFF per 64 bytes: 65536 iterations (4 MiB) cannot wrap it.
            let blockEnd = min(count, offset &+ 65_536 &* 64)
            var low = SIMD16<UInt32>(repeating: 0)
            var high = SIMD16<UInt32>(repeating: 0)
            // Safe: offset + 64 <= blockEnd <= count for both 32-byte loads.
            while offset < blockEnd {
                low &+= unsafe SIMD16<UInt32>(truncatingIfNeeded: base.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt16>.self))
                high &+= unsafe SIMD16<UInt32>(truncatingIfNeeded: base.loadUnaligned(fromByteOffset: offset &+ 32, as: SIMD16<UInt16>.self))
                offset &+= 64
            }
            // Pairwise halving keeps the partial sums below 2^36: no lane of the last step wraps in 64 bits.
            let eight = SIMD8<UInt64>(truncatingIfNeeded: low.lowHalf) &+ SIMD8<UInt64>(truncatingIfNeeded: low.highHalf)
                &+ SIMD8<UInt64>(truncatingIfNeeded: high.lowHalf) &+ SIMD8<UInt64>(truncatingIfNeeded: high.highHalf)
            total &+= eight.wrappedSum()
        }
        return total
    }

    /// The host-order 64-bit sum of `count` bytes at `base`, 32-bit words into four 64-bit
    /// accumulators. The accumulators cannot overflow: at most 2^32 words of < 2^32 each, and a
    /// packet is far smaller.
    @inlinable
    @inline(__always)
    internal static func _unsafeScalarSum(_ base: UnsafeRawPointer, count: Int) -> UInt64 {
        var a: UInt64 = 0
        var b: UInt64 = 0
        var c: UInt64 = 0
        var d: UInt64 = 0
        var offset = 0
        // Safe: every load below reads [offset, offset + 4 * k) with offset + 32 <= count.
        while offset &+ 32 <= count {
            unsafe a &+= UInt64(base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            unsafe b &+= UInt64(base.loadUnaligned(fromByteOffset: offset &+ 4, as: UInt32.self))
            unsafe c &+= UInt64(base.loadUnaligned(fromByteOffset: offset &+ 8, as: UInt32.self))
            unsafe d &+= UInt64(base.loadUnaligned(fromByteOffset: offset &+ 12, as: UInt32.self))
            unsafe a &+= UInt64(base.loadUnaligned(fromByteOffset: offset &+ 16, as: UInt32.self))
            unsafe b &+= UInt64(base.loadUnaligned(fromByteOffset: offset &+ 20, as: UInt32.self))
            unsafe c &+= UInt64(base.loadUnaligned(fromByteOffset: offset &+ 24, as: UInt32.self))
            unsafe d &+= UInt64(base.loadUnaligned(fromByteOffset: offset &+ 28, as: UInt32.self))
            offset &+= 32
        }
        // Safe: offset + 4 <= count for each load.
        while offset &+ 4 <= count {
            unsafe a &+= UInt64(base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            offset &+= 4
        }
        if offset &+ 2 <= count {
            // Safe: offset + 2 <= count.
            unsafe b &+= UInt64(base.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
            offset &+= 2
        }
        if offset < count {
            // Safe: offset < count. The odd byte is the high byte of a big-endian word, which is
            // the first byte in memory of a host-order word.
            let byte = unsafe base.load(fromByteOffset: offset, as: UInt8.self)
            c &+= UInt64(UInt16(bigEndian: UInt16(byte) << 8))
        }
        // Each partial is < 2^63 for any realistic length, so these additions cannot wrap.
        return (a &+ b) &+ (c &+ d)
    }

    /// Folds a 64-bit host-order accumulator to 16 bits, still in host order.
    @inlinable
    @inline(__always)
    internal static func _fold64(_ value: UInt64) -> UInt16 {
        var v = (value & 0xFFFF_FFFF) &+ (value >> 32)  // < 2^33
        v = (v & 0xFFFF_FFFF) &+ (v >> 32)  // < 2^32 + 1
        v = (v & 0xFFFF) &+ (v >> 16)
        v = (v & 0xFFFF) &+ (v >> 16)
        v = (v & 0xFFFF) &+ (v >> 16)
        return UInt16(truncatingIfNeeded: v)
    }

    // MARK: Pseudo-headers

    /// The IPv4 pseudo-header sum (RFC 9293 §3.1, RFC 768): addresses, protocol and L4 length.
    ///
    /// - Parameters:
    ///   - source: the source address in network byte order, as read from the header.
    ///   - destination: the destination address, likewise.
    ///   - protocol: the IP protocol number (6 for TCP, 17 for UDP).
    ///   - length: the L4 length (header plus payload).
    @inlinable
    public static func pseudoHeaderSum(
        ipv4Source source: IPv4Address, destination: IPv4Address, protocolNumber: IPProtocol, length: Int
    ) -> OnesComplementSum {
        var s = OnesComplementSum(UInt16(truncatingIfNeeded: source.rawValue >> 16))
        s += OnesComplementSum(UInt16(truncatingIfNeeded: source.rawValue))
        s += OnesComplementSum(UInt16(truncatingIfNeeded: destination.rawValue >> 16))
        s += OnesComplementSum(UInt16(truncatingIfNeeded: destination.rawValue))
        s += OnesComplementSum(UInt16(protocolNumber.rawValue))
        s += OnesComplementSum(UInt16(truncatingIfNeeded: length))
        s += OnesComplementSum(UInt16(truncatingIfNeeded: length >> 16))
        return s
    }

    /// The IPv6 pseudo-header sum (RFC 8200 §8.1): addresses, upper-layer length, next header.
    @inlinable
    public static func pseudoHeaderSum(
        ipv6Source source: IPv6Address, destination: IPv6Address, nextHeader: IPProtocol, length: Int
    ) -> OnesComplementSum {
        var s = source.wordSum
        s += destination.wordSum
        s += OnesComplementSum(UInt16(truncatingIfNeeded: length >> 16))
        s += OnesComplementSum(UInt16(truncatingIfNeeded: length))
        s += OnesComplementSum(UInt16(nextHeader.rawValue))
        return s
    }

    // MARK: Incremental update and partial checksums

    /// Updates a checksum field after one 16-bit word of the covered data changed
    /// (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
    ///
    /// - Parameters:
    ///   - checksum: the current checksum field value (numeric).
    ///   - old: the old value of the word that changed.
    ///   - new: its new value.
    /// - Returns: the new checksum field value.
    @inlinable
    public static func update(_ checksum: UInt16, replacing old: UInt16, with new: UInt16) -> UInt16 {
        var s = OnesComplementSum(~checksum)
        s += OnesComplementSum(~old)
        s += OnesComplementSum(new)
        return ~s.value
    }

    /// Updates a checksum field after the covered data's one's complement sum changed by `delta`
    /// (RFC 1624, eqn. 3, for any change: new words' sum minus old words' sum). A checksum that was
    /// wrong stays exactly as wrong.
    @inlinable
    public static func update(_ checksum: UInt16, adding delta: OnesComplementSum) -> UInt16 {
        ~(OnesComplementSum(~checksum) + delta).value
    }

    /// Updates a checksum field after a 32-bit word of the covered data changed (RFC 1624).
    @inlinable
    public static func update(_ checksum: UInt16, replacing old: UInt32, with new: UInt32) -> UInt16 {
        let first = update(checksum, replacing: UInt16(truncatingIfNeeded: old >> 16),
                           with: UInt16(truncatingIfNeeded: new >> 16))
        return update(first, replacing: UInt16(truncatingIfNeeded: old), with: UInt16(truncatingIfNeeded: new))
    }

    /// The value a virtio_net_hdr `NEEDS_CSUM` packet carries in its L4 checksum field: the
    /// pseudo-header sum folded to 16 bits and **not** complemented.
    ///
    /// Linux: `tcp_v4_check(len, saddr, daddr, 0)` complemented, as `tcp4_gro_complete` stores it.
    @inlinable
    public static func partialChecksumField(pseudoHeader: OnesComplementSum) -> UInt16 {
        pseudoHeader.value
    }

    /// Finishes a partial (`NEEDS_CSUM`) checksum: sums the bytes from `csum_start` to the end,
    /// the field holding the pseudo-header sum, and returns the value to store in the field.
    ///
    /// - Parameter coveredBytes: the bytes from `csum_start` to the end of the packet, with the
    ///   checksum field still holding the partial sum.
    /// - Returns: the finished checksum field value. For UDP a computed zero must be sent as
    ///   `0xFFFF`; use ``udpFieldValue(_:)``.
    @inlinable
    public static func finishPartial(_ coveredBytes: RawSpan) -> UInt16 {
        ~sum(coveredBytes).value
    }

    /// Maps a computed UDP checksum to its field value: a computed zero is sent as `0xFFFF`,
    /// because zero means "no checksum" (RFC 768).
    @inlinable
    public static func udpFieldValue(_ checksum: UInt16) -> UInt16 {
        checksum == 0 ? 0xFFFF : checksum
    }
}

/// A one's complement sum of 16-bit words, folded to 16 bits, in numeric (big-endian) form.
///
/// Adding two sums uses end-around carry. A sum taken over bytes that start at an odd offset
/// within the checksummed region must be byte-swapped before it is added (RFC 1071 §2(B));
/// ``placed(atOffset:)`` does that.
public struct OnesComplementSum: Hashable, Sendable {
    /// The folded sum. `0xFFFF` and `0x0000` are the two representations of zero.
    public var value: UInt16

    /// The empty sum.
    @inlinable public static var zero: OnesComplementSum { OnesComplementSum(0) }

    /// Wraps a folded 16-bit sum.
    @inlinable
    public init(_ value: UInt16) { self.value = value }

    /// One's complement addition (end-around carry).
    @inlinable
    public static func + (lhs: OnesComplementSum, rhs: OnesComplementSum) -> OnesComplementSum {
        let wide = UInt32(lhs.value) &+ UInt32(rhs.value)
        return OnesComplementSum(UInt16(truncatingIfNeeded: (wide & 0xFFFF) &+ (wide >> 16)))
    }

    /// One's complement addition in place.
    @inlinable
    public static func += (lhs: inout OnesComplementSum, rhs: OnesComplementSum) { lhs = lhs + rhs }

    /// The negation: the complement (x + −x is zero).
    @inlinable
    public static prefix func - (operand: OnesComplementSum) -> OnesComplementSum { OnesComplementSum(~operand.value) }

    /// `count` copies added: the product folded with end-around carries (the same value as
    /// adding them one by one, modulo 0xFFFF).
    @inlinable
    public func times(_ count: Int) -> OnesComplementSum {
        var wide = UInt64(value) &* UInt64(truncatingIfNeeded: count)
        while wide > 0xFFFF { wide = (wide & 0xFFFF) &+ (wide >> 16) }
        return OnesComplementSum(UInt16(truncatingIfNeeded: wide))
    }

    /// One's complement subtraction: adds the complement of `rhs`.
    @inlinable
    public static func - (lhs: OnesComplementSum, rhs: OnesComplementSum) -> OnesComplementSum {
        lhs + OnesComplementSum(~rhs.value)
    }

    /// The sum as it contributes when its bytes start at `offset` within the checksummed region:
    /// byte-swapped when the offset is odd.
    @inlinable
    public func placed(atOffset offset: Int) -> OnesComplementSum {
        offset & 1 == 0 ? self : OnesComplementSum(value.byteSwapped)
    }

    /// The checksum this sum gives: its complement.
    @inlinable
    public var checksum: UInt16 { ~value }
}
