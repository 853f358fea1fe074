import OffloadWire

// MARK: - The train fast path
//
// Within a TCP flow, consecutive full-sized segments differ from the held head only in a few
// fields: the IP total length (IPv4) or payload length (IPv6), the IPv4 ID and header checksum,
// the sequence number and the TCP checksum. When a new packet's header bytes equal the held
// head's everywhere else, every rule of `decideTCP` and `networkMismatch` that compares the two
// headers is already satisfied (same link header, same IP header layout, TTL, TOS, DF, flow label,
// extension headers, ports, ack, data offset, flags, window, options and urgent pointer), so only
// the fields that must *change* in a given way are left to check: length, sequence, ID, the IPv4
// header checksum, the L4 checksum when it is unverified, and the limits.
//
// The fast path only ever accepts a merge that the rule-by-rule path would also accept with no
// reason to complete other than the segment limit; anything else (a short or PSH segment, a gap,
// a changed timestamp, a fixed-ID train, a bad checksum, a packet of another shape or of a flow
// the port cache does not point to) falls through
// to the full path, which then decides and counts as before. `GROConfiguration.trainFastPath`
// turns it off; a test runs both on mutated trains and requires identical output and counters.

extension GROEngine {
    /// The most header bytes the masked comparison covers (8 chunks of 16 bytes); longer headers
    /// always take the full path.
    static let maskedHeaderLimit = 128
    /// Entries in the port cache (a power of two).
    static let portCacheSize = 64

    /// Prepares the comparison mask of a newly held TCP head: ones over the header bytes that
    /// must be equal, zeros over the fields that may change within a train and past the header.
    /// A head it cannot cover gets no mask chunks, which keeps its flow on the full path. The mask
    /// is rebuilt only when the slot's previous head had another header layout.
    @inline(__always)
    mutating func prepareTrainMask(_ slot: Int32, _ s: Segment) {
        let f = unsafe flows + Int(slot)
        let headerLength = s.layout.payloadOffset
        let chunks = (headerLength + 15) / 16
        guard s.isTCP, configuration.mode == .gro, configuration.trainFastPath,
            headerLength <= Self.maskedHeaderLimit, s.layout.frameLength >= chunks * 16
        else {
            unsafe f.pointee.maskChunks = 0
            return
        }
        let n = s.layout.networkOffset
        let t = s.layout.transportOffset
        // Offsets below 128 and one bit of family: the layout in one word (0: no mask yet).
        let key = UInt32(1 + n) | UInt32(t) << 8 | UInt32(headerLength) << 16 | (s.isIPv4 ? 1 << 24 : 0)
        if unsafe f.pointee.maskKey != key {
            let mask = unsafe UnsafeMutableRawPointer(masks + Int(slot) * (Self.maskedHeaderLimit / 8))
            // Safe: the slot's mask area holds maskedHeaderLimit bytes, and every range below
            // lies inside the header (< headerLength <= maskedHeaderLimit).
            unsafe mask.initializeMemory(as: UInt8.self, repeating: 0, count: Self.maskedHeaderLimit)
            unsafe mask.initializeMemory(as: UInt8.self, repeating: 0xFF, count: headerLength)
            func clear(_ offset: Int, _ count: Int) {
                unsafe (mask + offset).initializeMemory(as: UInt8.self, repeating: 0, count: count)
            }
            if s.isIPv4 {
                clear(n + IPv4Packet.Field.totalLength, 2)
                clear(n + IPv4Packet.Field.identification, 2)
                clear(n + IPv4Packet.Field.headerChecksum, 2)
            } else {
                clear(n + IPv6Packet.Field.payloadLength, 2)
            }
            clear(t + TCPSegment.Field.sequenceNumber, 4)
            clear(t + TCPSegment.Field.checksum, 2)
            unsafe f.pointee.maskKey = key
        }
        unsafe f.pointee.maskChunks = Int8(chunks)
    }

    /// Whether the first `chunks` × 16 bytes at `packet` equal the head of `slot` under its mask.
    @inline(__always)
    func headerMatches(_ slot: Int32, _ packet: UnsafeRawPointer, chunks: Int) -> Bool {
        let head = unsafe flows[Int(slot)].base
        let mask = unsafe UnsafeRawPointer(masks + Int(slot) * (Self.maskedHeaderLimit / 8))
        var difference = SIMD2<UInt64>()
        // Safe: the caller checked that the packet holds chunks * 16 bytes, and the head did
        // when its mask was prepared.
        for c in 0..<chunks {
            let a = unsafe head.loadUnaligned(fromByteOffset: c &* 16, as: SIMD2<UInt64>.self)
            let b = unsafe packet.loadUnaligned(fromByteOffset: c &* 16, as: SIMD2<UInt64>.self)
            difference |= unsafe (a ^ b) & mask.loadUnaligned(fromByteOffset: c &* 16, as: SIMD2<UInt64>.self)
        }
        // Two lanes folded by hand: `==` on a SIMD vector compiles to a lane-by-lane loop.
        return difference[0] | difference[1] == 0
    }

    /// The port-cache entry of a TCP port pair (the 32-bit word at the transport offset).
    @inline(__always)
    static func portCacheIndex(_ ports: UInt32) -> Int {
        Int(truncatingIfNeeded: (UInt64(ports) &* 0x9E37_79B9_7F4A_7C15) >> 58)  // top 6 bits: 64 entries
    }

    /// Remembers that the connection with these ports is held in `slot`.
    @inline(__always)
    mutating func cachePorts(of s: Segment, in slot: Int32) {
        guard s.isTCP else { return }
        let ports = unsafe _UnsafeBytes(s.base).rawU32(s.layout.transportOffset)
        unsafe portCache[Self.portCacheIndex(ports)] = slot
    }

    /// Tries to merge the packet at `base` into a held train without parsing it. The candidate
    /// is the held flow its port pair was last seen in, the ports read at the offset of the
    /// flow touched last (the common case: every flow has the same header layout). Returns
    /// false, having changed nothing, when the full path must decide.
    @inline(__always)
    mutating func mergeIntoTrain(_ base: UnsafeRawPointer, frameLength: Int, _ metadata: UnsafePointer<PacketMetadata>) -> Bool {
        let reference = unsafe flows + Int(lastSlot)
        let referenceChunks = unsafe Int(reference.pointee.maskChunks)
        guard referenceChunks > 0, frameLength >= referenceChunks &* 16, unsafe metadata.pointee.gso == nil else { return false }
        // Safe: frameLength >= the reference header length, so the ports are inside the packet.
        let portOffset = unsafe reference.pointee.layout.transportOffset
        let ports = unsafe base.loadUnaligned(fromByteOffset: portOffset, as: UInt32.self)
        // The flow touched last first (one flow, or a burst of one): its head's ports, then the cache.
        var slot = lastSlot
        if unsafe reference.pointee.base.loadUnaligned(fromByteOffset: portOffset, as: UInt32.self) != ports {
            slot = unsafe portCache[Self.portCacheIndex(ports)]
            guard slot >= 0 else { return false }
        }
        let f = unsafe flows + Int(slot)
        // A slot's mask chunks are zero while it is free, so a stale cache entry never matches.
        let chunks = unsafe Int(f.pointee.maskChunks)
        guard chunks > 0, frameLength >= chunks &* 16, unsafe f.pointee.metadata.linkType == metadata.pointee.linkType,
            unsafe f.pointee.metadata.interface == metadata.pointee.interface, unsafe headerMatches(slot, base, chunks: chunks)
        else { return false }
        let b = unsafe _UnsafeBytes(base)
        let n = unsafe f.pointee.layout.networkOffset
        let t = unsafe f.pointee.layout.transportOffset
        let payloadOffset = unsafe f.pointee.layout.payloadOffset
        let isIPv4 = unsafe f.pointee.isIPv4
        let segmentSize = unsafe f.pointee.segmentSize
        let count = unsafe f.pointee.count
        // Safe below: every offset read lies inside the header, which the packet holds; the
        // offsets are below 128, so the wrapping arithmetic cannot wrap.
        let ipEnd = isIPv4 ? n &+ Int(b.u16(n &+ IPv4Packet.Field.totalLength))
            : n &+ IPv6Packet.Field.fixedHeaderEnd &+ Int(b.u16(n &+ IPv6Packet.Field.payloadLength))
        // No trailing bytes, a full-sized segment, no CWR, in sequence.
        guard ipEnd == frameLength, ipEnd &- payloadOffset == segmentSize else { return false }
        let flagWord = b.u32(t &+ TCPSegment.Field.dataOffset)
        if flagWord & TCPSegment.FlagWord.cwr != 0 { return false }
        let sequence = b.u32(t &+ TCPSegment.Field.sequenceNumber)
        guard unsafe sequence == f.pointee.nextSequence else { return false }
        if isIPv4 {
            // The incrementing-ID train (a fixed-ID one takes the full path).
            let offset = unsafe b.u16(n &+ IPv4Packet.Field.identification) &- f.pointee.firstID
            guard unsafe !f.pointee.fixedID, offset == UInt16(truncatingIfNeeded: count),
                Self.ipv4HeaderChecksumIsValid(b, n)
            else { return false }
        }
        guard unsafe limitReason(f, segmentSize) == nil else { return false }
        let checksum = unsafe metadata.pointee.checksum
        if checksum == .unverified {
            var layout = unsafe f.pointee.layout
            layout.ipEnd = ipEnd
            layout.frameLength = frameLength
            if !Self.transportChecksumIsValid(b, layout, isIPv4: isIPv4, isTCP: true) { return false }
        }
        // The merge. Unlike `append`, nothing else changes: the header bytes equal the head's,
        // so the flags add no PSH or FIN, the ID rule stays incrementing, and ack and window
        // (kept for LRO) are the same.
        let varying = Self.varyingWordsSum(b, transportOffset: t, l4Length: ipEnd &- t, isTCP: true)
        extendChain(slot, with: unsafe Fragment(base: base + payloadOffset, length: segmentSize, varyingSum: varying,
                                                derivable: checksum != .partial))
        trainFastPathMerges &+= 1
        if count &+ 1 >= configuration.maximumSegments { complete(slot, .segmentLimit) }
        return true
    }
}
