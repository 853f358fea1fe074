import OffloadWire

// MARK: - Holding and merging: chains of segments (docs/linux-gro-rules.md §1.3, §2.5)

extension GROEngine {

    /// Holds S as the head of a new chain (§1.3 step 4).
    mutating func hold(_ s: Segment, _ metadata: PacketMetadata) {
        if freeCount == 0 { complete(oldest, .tableFull) }
        freeCount -= 1
        let slot = freeSlots[freeCount]
        let b = _UnsafeBytes(s.base)
        let t = s.layout.transportOffset
        let f = flows + Int(slot)
        f.pointee.hash = s.hash
        f.pointee.base = s.base
        f.pointee.frameLength = s.layout.frameLength
        f.pointee.layout = s.layout
        f.pointee.metadata = metadata
        f.pointee.isIPv4 = s.isIPv4
        f.pointee.isTCP = s.isTCP
        f.pointee.segmentSize = s.payloadLength
        f.pointee.count = 1
        f.pointee.totalPayload = s.payloadLength
        f.pointee.fixedID = false
        f.pointee.orFlags = 0
        if s.isTCP {
            f.pointee.nextSequence = b.u32(t + 4) &+ UInt32(truncatingIfNeeded: s.payloadLength)
            f.pointee.lastAck = b.u32(t + 8)
            f.pointee.lastWindow = b.u16(t + 14)
        }
        if s.isIPv4 { f.pointee.firstID = b.u16(s.layout.networkOffset + 4) }
        f.pointee.prev = newest
        f.pointee.next = -1
        if newest >= 0 { flows[Int(newest)].next = slot } else { oldest = slot }
        newest = slot
        fragments[Int(slot) * configuration.maximumSegments] = fragment(of: s)
        indexInsert(slot, hash: s.hash)
    }

    /// S's payload piece, with the header words that let completion derive its sum.
    @inline(__always)
    func fragment(of s: Segment) -> Fragment {
        let b = _UnsafeBytes(s.base)
        let t = s.layout.transportOffset
        // Safe: the words read lie inside the validated L4 header. At most five 16-bit words:
        // the 32-bit sum cannot overflow before the fold.
        var wide = UInt32(truncatingIfNeeded: s.layout.ipEnd - t) &+ UInt32(b.u16(t + 4)) &+ UInt32(b.u16(t + 6))
        if s.isTCP {
            wide &+= UInt32(b.u16(t + TCPSegment.Field.dataOffset)) &+ UInt32(b.u16(t + TCPSegment.Field.checksum))
        }
        wide = (wide & 0xFFFF) &+ (wide >> 16)
        let varying = OnesComplementSum(UInt16(truncatingIfNeeded: (wide & 0xFFFF) &+ (wide >> 16)))
        return Fragment(base: s.base + s.layout.payloadOffset, length: s.payloadLength, varyingSum: varying,
                        derivable: s.payloadSumDerivable && configuration.mode == .gro)
    }

    /// Appends S's payload to P (§2.5 "Merged").
    @inline(__always)
    mutating func append(_ s: Segment, to slot: Int32) {
        let b = _UnsafeBytes(s.base)
        let t = s.layout.transportOffset
        let f = flows + Int(slot)
        let count = f.pointee.count
        fragments[Int(slot) * configuration.maximumSegments + count] = fragment(of: s)
        if s.isIPv4 && count == 1 && configuration.mode == .gro && b.u16(s.layout.networkOffset + 4) == f.pointee.firstID {
            f.pointee.fixedID = true
        }
        f.pointee.count = count + 1
        f.pointee.totalPayload += s.payloadLength
        if s.isTCP {
            f.pointee.nextSequence &+= UInt32(truncatingIfNeeded: s.payloadLength)
            f.pointee.orFlags |= UInt16(b.u8(t + TCPSegment.Field.flagByte) & TCPFlags([.psh, .fin]).flagByte)
            f.pointee.lastAck = b.u32(t + 8)
            f.pointee.lastWindow = b.u16(t + 14)
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
            let f = flows[Int(slot)]
            needed += (f.frameLength + 15) & ~15
            let first = Int(slot) * configuration.maximumSegments
            for k in (first + 1)..<(first + f.count) { needed += (fragments[k].length + 15) & ~15 }
            slot = f.next
        }
        let arena: UnsafeMutableRawPointer
        if g == 0 {
            carryEven.reserve(needed)
            arena = carryEven.rawBase
        } else {
            carryOdd.reserve(needed)
            arena = carryOdd.rawBase
        }
        var used = 0
        slot = oldest
        while slot >= 0 {
            let i = Int(slot)
            let f = flows[i]
            let head = arena + used
            head.copyMemory(from: f.base, byteCount: f.frameLength)
            used += (f.frameLength + 15) & ~15
            flows[i].base = UnsafeRawPointer(head)
            let first = i * configuration.maximumSegments
            fragments[first].base = UnsafeRawPointer(head + f.layout.payloadOffset)
            for k in (first + 1)..<(first + f.count) {
                let piece = arena + used
                piece.copyMemory(from: fragments[k].base, byteCount: fragments[k].length)
                fragments[k].base = UnsafeRawPointer(piece)
                used += (fragments[k].length + 15) & ~15
            }
            slot = f.next
        }
    }
}
