import OffloadWire

// MARK: - Holding and merging: chains of segments (docs/linux-gro-rules.md §1.3, §2.5)

extension GROEngine {

    /// Holds S as the head of a new chain (§1.3 step 4).
    mutating func hold(_ s: Segment, _ metadata: PacketMetadata) {
        if freeCount == 0 { complete(oldest, .tableFull) }
        freeCount -= 1
        let slot = unsafe freeSlots[freeCount]
        let b = unsafe _UnsafeBytes(s.base)
        let t = s.layout.transportOffset
        let f = unsafe flows + Int(slot)
        unsafe f.pointee.hash = s.hash
        unsafe f.pointee.base = unsafe s.base
        unsafe f.pointee.frameLength = s.layout.frameLength
        unsafe f.pointee.layout = s.layout
        unsafe f.pointee.metadata = metadata
        unsafe f.pointee.isIPv4 = s.isIPv4
        unsafe f.pointee.isTCP = s.isTCP
        unsafe f.pointee.segmentSize = s.payloadLength
        unsafe f.pointee.count = 1
        unsafe f.pointee.totalPayload = s.payloadLength
        unsafe f.pointee.fixedID = false
        unsafe f.pointee.orFlags = 0
        if s.isTCP {
            unsafe f.pointee.nextSequence = b.u32(t + 4) &+ UInt32(truncatingIfNeeded: s.payloadLength)
            unsafe f.pointee.lastAck = b.u32(t + 8)
            unsafe f.pointee.lastWindow = b.u16(t + 14)
        }
        if s.isIPv4 { unsafe f.pointee.firstID = b.u16(s.layout.networkOffset + 4) }
        unsafe f.pointee.prev = newest
        unsafe f.pointee.next = -1
        if newest >= 0 { unsafe flows[Int(newest)].next = slot } else { oldest = slot }
        newest = slot
        let head = fragment(of: s)
        unsafe fragments[Int(slot) * configuration.maximumSegments] = head
        unsafe f.pointee.varyingTotal = head.varyingSum
        unsafe f.pointee.allDerivable = head.derivable
        indexInsert(slot, hash: s.hash)
        prepareTrainMask(slot, s)
        cachePorts(of: s, in: slot)
        lastSlot = slot
    }

    /// S's payload piece, with the header words that let completion derive its sum.
    @inline(__always)
    func fragment(of s: Segment) -> Fragment {
        let b = unsafe _UnsafeBytes(s.base)
        let t = s.layout.transportOffset
        let varying = Self.varyingWordsSum(b, transportOffset: t, l4Length: s.layout.ipEnd - t, isTCP: s.isTCP)
        return unsafe Fragment(base: s.base + s.layout.payloadOffset, length: s.payloadLength, varyingSum: varying,
                        derivable: s.payloadSumDerivable && configuration.mode == .gro)
    }

    /// The sum of the L4 header words that differ between segments of a chain, plus the
    /// pseudo-header length (see ``Fragment/varyingSum``).
    @inline(__always)
    static func varyingWordsSum(_ b: _UnsafeBytes, transportOffset t: Int, l4Length: Int, isTCP: Bool) -> OnesComplementSum {
        // Safe: the words read lie inside the validated L4 header. At most five 16-bit words:
        // the 32-bit sum cannot overflow before the fold.
        var wide = UInt32(truncatingIfNeeded: l4Length) &+ UInt32(b.u16(t &+ 4)) &+ UInt32(b.u16(t &+ 6))
        if isTCP {
            wide &+= UInt32(b.u16(t &+ TCPSegment.Field.dataOffset)) &+ UInt32(b.u16(t &+ TCPSegment.Field.checksum))
        }
        wide = (wide & 0xFFFF) &+ (wide >> 16)
        return OnesComplementSum(UInt16(truncatingIfNeeded: (wide & 0xFFFF) &+ (wide >> 16)))
    }

    /// Adds a payload piece to the chain in `slot`: the part of a merge every path shares (the
    /// TCP sequence number moves on by the piece's length too).
    @inline(__always)
    mutating func extendChain(_ slot: Int32, with piece: Fragment) {
        let f = unsafe flows + Int(slot)
        let count = unsafe f.pointee.count
        unsafe fragments[Int(slot) &* configuration.maximumSegments &+ count] = piece
        unsafe f.pointee.count = count &+ 1
        unsafe f.pointee.totalPayload &+= piece.length
        unsafe f.pointee.nextSequence &+= UInt32(truncatingIfNeeded: piece.length)
        unsafe f.pointee.varyingTotal = f.pointee.varyingTotal + piece.varyingSum
        unsafe f.pointee.allDerivable = f.pointee.allDerivable && piece.derivable
        lastSlot = slot
    }

    /// Appends S's payload to P (§2.5 "Merged").
    @inline(__always)
    mutating func append(_ s: Segment, to slot: Int32) {
        let b = unsafe _UnsafeBytes(s.base)
        let t = s.layout.transportOffset
        let f = unsafe flows + Int(slot)
        let count = unsafe f.pointee.count
        if unsafe s.isIPv4 && count == 1 && configuration.mode == .gro && b.u16(s.layout.networkOffset + 4) == f.pointee.firstID {
            unsafe f.pointee.fixedID = true
        }
        extendChain(slot, with: fragment(of: s))
        if s.isTCP {
            unsafe f.pointee.orFlags |= UInt16(b.u8(t + TCPSegment.Field.flagByte) & (TCPFlags.psh.flagByte | TCPFlags.fin.flagByte))
            unsafe f.pointee.lastAck = b.u32(t + 8)
            unsafe f.pointee.lastWindow = b.u16(t + 14)
        }
    }


    /// Copies the bytes of every held chain out of the batch into an engine arena, so that the
    /// batch can be reused. Two arenas alternate: this call's output may still point into the
    /// arena the previous call filled.
    mutating func carryHeldPackets() {
        guard oldest >= 0 else { return }
        let g = carryGeneration & 1
        carryGeneration += 1
        var needed = 0
        var slot = oldest
        while slot >= 0 {
            let f = unsafe flows[Int(slot)]
            needed += (f.frameLength + 15) & ~15
            let first = Int(slot) * configuration.maximumSegments
            for k in (first + 1)..<(first + f.count) { unsafe needed += (fragments[k].length + 15) & ~15 }
            slot = f.next
        }
        let arena: UnsafeMutableRawPointer
        if g == 0 {
            carryEven.reserve(needed)
            unsafe arena = unsafe carryEven.rawBase
        } else {
            carryOdd.reserve(needed)
            unsafe arena = unsafe carryOdd.rawBase
        }
        var used = 0
        slot = oldest
        while slot >= 0 {
            let i = Int(slot)
            let f = unsafe flows[i]
            let head = unsafe arena + used
            unsafe head.copyMemory(from: f.base, byteCount: f.frameLength)
            used += (f.frameLength + 15) & ~15
            unsafe flows[i].base = UnsafeRawPointer(head)
            let first = i * configuration.maximumSegments
            unsafe fragments[first].base = unsafe UnsafeRawPointer(head + f.layout.payloadOffset)
            for k in (first + 1)..<(first + f.count) {
                let piece = unsafe arena + used
                unsafe piece.copyMemory(from: fragments[k].base, byteCount: fragments[k].length)
                unsafe fragments[k].base = UnsafeRawPointer(piece)
                unsafe used += (fragments[k].length + 15) & ~15
            }
            slot = f.next
        }
    }
}
