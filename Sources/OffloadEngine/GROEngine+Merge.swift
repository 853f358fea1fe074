import OffloadWire

// MARK: - Merge decisions (gro-spec §2.3–§2.5, §3.2)

extension GROEngine {
    /// The TCP rules of `tcp_gro_receive` and `gro_receive_network_flush`, in Linux's order.
    @inline(__always)
    func decideTCP(_ slot: Int32, _ s: Segment, sFlush: Bool) -> Verdict {
        let f = flows + Int(slot)
        let a = _UnsafeBytes(f.pointee.base)
        let b = _UnsafeBytes(s.base)
        let t = s.layout.transportOffset
        let length = s.payloadLength
        // Safe throughout: both packets validated the same header offsets (sameFlow checked them).
        if configuration.mode == .unsafeLRO {
            if sFlush || length == 0 { return .refused(.unmergeableFollower) }
            if b.u16(t + 12) & 0x26 != 0 { return .refused(.flagsOrWindowMismatch) }  // URG, RST, SYN
            if b.u32(t + 4) != f.pointee.nextSequence { return .refused(.sequenceGap) }
            if let r = limitReason(f, length) { return .refused(r) }
            let pushOrFin = b.u16(t + 12) & 0x09 != 0
            return .merged(complete: pushOrFin ? .pushOrFin : f.pointee.count + 1 >= configuration.maximumSegments
                ? .segmentLimit : nil)
        }
        if sFlush { return .refused(.unmergeableFollower) }
        let word = b.u32(t + 12)
        if word & 0x0080_0000 != 0 { return .refused(.cwr) }
        // The flag/window word must match except CWR, PSH and FIN.
        if (a.u32(t + 12) ^ word) & ~UInt32(0x0089_0000) != 0 { return .refused(.flagsOrWindowMismatch) }
        if a.u32(t + 8) != b.u32(t + 8) { return .refused(.ackMismatch) }
        let headerLength = s.layout.transportHeaderLength
        if !a.equal(t + 20, b, t + 20, count: headerLength - 20) { return .refused(.optionsMismatch) }
        if a.u16(t + 18) != b.u16(t + 18) { return .refused(.urgentPointerMismatch) }
        if let r = networkMismatch(f, s) { return .refused(r) }
        if length == 0 { return .refused(.unmergeableFollower) }
        if length > f.pointee.segmentSize { return .refused(.largerSegment) }
        if b.u32(t + 4) != f.pointee.nextSequence { return .refused(.sequenceGap) }
        if let r = limitReason(f, length) { return .refused(r) }
        if length < f.pointee.segmentSize { return .merged(complete: .shortSegment) }
        if word & 0x0009_0000 != 0 { return .merged(complete: .pushOrFin) }
        if f.pointee.count + 1 >= configuration.maximumSegments { return .merged(complete: .segmentLimit) }
        return .merged(complete: nil)
    }

    /// The UDP rules of `udp_gro_receive_segment`.
    @inline(__always)
    func decideUDP(_ slot: Int32, _ s: Segment, sFlush: Bool) -> Verdict {
        let f = flows + Int(slot)
        let length = s.payloadLength
        // A datagram that may not merge completes its flow first (per-flow order; Linux lets it overtake).
        if sFlush || length == 0 { return .refused(.flowBypass) }
        if configuration.mode == .gro, let r = networkMismatch(f, s) { return .refused(r) }
        if length > f.pointee.segmentSize { return .refused(.largerSegment) }
        if let r = limitReason(f, length) { return .refused(r) }
        if length < f.pointee.segmentSize { return .merged(complete: .shortSegment) }
        if f.pointee.count + 1 >= min(64, configuration.maximumSegments) { return .merged(complete: .segmentLimit) }
        return .merged(complete: nil)
    }

    /// The L3 rules (§2.3): TTL/hop limit, TOS/traffic class, DF and the IPv4 ID rule.
    @inline(__always)
    func networkMismatch(_ f: UnsafeMutablePointer<HeldFlow>, _ s: Segment) -> GROReason? {
        let a = _UnsafeBytes(f.pointee.base)
        let b = _UnsafeBytes(s.base)
        let n = s.layout.networkOffset
        if s.isIPv4 {
            if a.u8(n + 8) != b.u8(n + 8) { return .ttlMismatch }
            if a.u8(n + 1) != b.u8(n + 1) { return .tosMismatch }
            let dfS = b.u16(n + 6) & 0x4000
            if a.u16(n + 6) & 0x4000 != dfS { return .dfMismatch }
            let offset = b.u16(n + 4) &- f.pointee.firstID
            let count = f.pointee.count
            if count == 1 {
                if offset == 0 {
                    if configuration.ipIDRule == .legacy && dfS == 0 { return .ipIDMismatch }
                } else if offset != 1 {
                    return .ipIDMismatch
                }
            } else if f.pointee.fixedID ? offset != 0 : offset != UInt16(truncatingIfNeeded: count) {
                return .ipIDMismatch
            }
        } else {
            if a.u8(n + 7) != b.u8(n + 7) { return .ttlMismatch }
            if (a.u32(n) ^ b.u32(n)) & 0x0FF0_0000 != 0 { return .tosMismatch }
        }
        return nil
    }

    /// The 64 KiB and segment-count limits.
    @inline(__always)
    func limitReason(_ f: UnsafeMutablePointer<HeldFlow>, _ length: Int) -> GROReason? {
        let ipLength = f.pointee.layout.payloadOffset - f.pointee.layout.networkOffset + f.pointee.totalPayload + length
        if ipLength > configuration.maximumIPLength { return .sizeLimit }
        if f.pointee.count >= configuration.maximumSegments { return .segmentLimit }
        return nil
    }

    // MARK: - Holding and merging

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
        if s.isTCP { wide &+= UInt32(b.u16(t + 12)) &+ UInt32(b.u16(t + 16)) }
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
            f.pointee.orFlags |= UInt16(b.u8(t + 13)) & 0x09
            f.pointee.lastAck = b.u32(t + 8)
            f.pointee.lastWindow = b.u16(t + 14)
        }
    }

    // MARK: - Completion (§4)

    /// Completes the packet held in `slot` and emits it.
    mutating func complete(_ slot: Int32, _ reason: GROReason) {
        let i = Int(slot)
        let f = flows + i
        statistics[reason] += 1
        if f.pointee.count == 1 {
            emitRecord(header: nil, fragmentStart: 0, fragmentCount: 0,
                       whole: UnsafeRawBufferPointer(start: f.pointee.base, count: f.pointee.frameLength),
                       f.pointee.metadata, reason, layout: f.pointee.layout)
        } else {
            buildSuperPacket(f, slot: i, reason)
        }
        indexRemove(slot, hash: f.pointee.hash)
        let prev = f.pointee.prev
        let next = f.pointee.next
        if prev >= 0 { flows[Int(prev)].next = next } else { oldest = next }
        if next >= 0 { flows[Int(next)].prev = prev } else { newest = prev }
        freeSlots[freeCount] = slot
        freeCount += 1
    }

    /// Writes a super-packet's headers (from the first segment) and lists its payload pieces.
    mutating func buildSuperPacket(_ f: UnsafeMutablePointer<HeldFlow>, slot: Int, _ reason: GROReason) {
        let layout = f.pointee.layout
        let headerLength = layout.payloadOffset
        let isTCP = f.pointee.isTCP
        let isIPv4 = f.pointee.isIPv4
        let count = f.pointee.count
        let totalPayload = f.pointee.totalPayload
        reserveHeaderSpace(headerLength)
        let dst = headerArena + headerUsed
        dst.copyMemory(from: f.pointee.base, byteCount: headerLength)
        let m = _UnsafeMutableBytes(dst)
        let r = m.readOnly
        let n = layout.networkOffset
        let t = layout.transportOffset
        let l4Header = headerLength - t
        let l4Length = l4Header + totalPayload
        // Safe: dst holds a copy of the head's validated headers [0, payloadOffset).
        let addressSum = isIPv4 ? r.sum(n + 12, count: 8) : r.sum(n + 8, count: 32)
        let protocolSum = OnesComplementSum(UInt16(isTCP ? 6 : 17))
        let first = slot * configuration.maximumSegments
        // K = addresses + protocol + the L4 header words common to the chain: the head's header
        // sum minus its varying words (which include its pseudo-header length).
        let headHeaderSum = r.sum(t, count: l4Header)
        let chainConstant = addressSum + protocolSum + headHeaderSum - fragments[first].varyingSum
            + OnesComplementSum(UInt16(truncatingIfNeeded: layout.ipEnd - t))
        if isIPv4 {
            m.store16(UInt16(truncatingIfNeeded: t - n + l4Length), n + 2)
            m.store16(0, n + 10)
            m.store16(~r.sum(n, count: t - n).value, n + 10)
        } else {
            m.store16(UInt16(truncatingIfNeeded: t - n - 40 + l4Length), n + 4)
        }
        let checksumOffset: Int
        if isTCP {
            m.store8(r.u8(t + 13) | UInt8(truncatingIfNeeded: f.pointee.orFlags), t + 13)
            if configuration.mode == .unsafeLRO {
                m.store32(f.pointee.lastAck, t + 8)
                m.store16(f.pointee.lastWindow, t + 14)
            }
            checksumOffset = t + 16
        } else {
            m.store16(UInt16(truncatingIfNeeded: l4Length), t + 4)
            checksumOffset = t + 6
        }
        let pseudo = addressSum + protocolSum + OnesComplementSum(UInt16(truncatingIfNeeded: l4Length))
        switch configuration.outputChecksum {
        case .partial:
            m.store16(pseudo.value, checksumOffset)
        case .complete:
            m.store16(0, checksumOffset)
            var sum = pseudo + r.sum(t, count: l4Header)
            var offset = l4Header
            for k in first..<(first + count) {
                let piece = fragments[k]
                // With a good checksum field: payload sum = ~(K + varying words). Otherwise sum it.
                let pieceSum = piece.derivable
                    ? OnesComplementSum(~(chainConstant + piece.varyingSum).value)
                    : InternetChecksum.unsafeSum(UnsafeRawBufferPointer(start: piece.base, count: piece.length))
                sum += pieceSum.placed(atOffset: offset)
                offset += piece.length
            }
            let value = ~sum.value
            m.store16(isTCP ? value : InternetChecksum.udpFieldValue(value), checksumOffset)
        }
        let kind: GSOInfo.Kind = isTCP ? (isIPv4 ? .tcpv4 : .tcpv6) : (isIPv4 ? .udpv4 : .udpv6)
        let ecn = isTCP && r.u8(t + 13) & 0x80 != 0
        var metadata = f.pointee.metadata
        metadata.checksum = configuration.outputChecksum == .partial ? .partial : .verified
        metadata.gso = GSOInfo(kind: kind, segmentSize: configuration.mode == .unsafeLRO ? 0 : f.pointee.segmentSize,
                               segmentCount: count, fixedID: f.pointee.fixedID, ecn: ecn)
        var merged = layout
        merged.ipEnd = headerLength + totalPayload
        merged.frameLength = merged.ipEnd
        emitRecord(header: (headerUsed, headerLength), fragmentStart: first, fragmentCount: count, whole: nil,
                   metadata, reason, layout: merged)
        headerUsed += (headerLength + 15) & ~15
        statistics.superPackets += 1
        statistics.mergedSegments += count
    }

    /// Grows the header arena when needed. Records keep offsets, so moving the arena is safe.
    mutating func reserveHeaderSpace(_ n: Int) {
        guard headerUsed + n > headerCapacity else { return }
        let newCapacity = max(headerCapacity * 2, headerUsed + n + 4096)
        let arena = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        arena.copyMemory(from: headerArena, byteCount: headerUsed)
        headerArena.deallocate()
        headerArena = arena
        headerCapacity = newCapacity
    }

    mutating func emitRecord(header: (Int, Int)?, fragmentStart: Int, fragmentCount: Int,
                             whole: UnsafeRawBufferPointer?, _ metadata: PacketMetadata, _ reason: GROReason?,
                             layout: PacketLayout?) {
        let pieces = whole == nil ? fragmentCount : 1
        if outFragmentCount + pieces > outFragmentCapacity {
            let bigger = UnsafeMutablePointer<UnsafeRawBufferPointer>.allocate(capacity: 2 * (outFragmentCount + pieces))
            bigger.moveInitialize(from: outFragments, count: outFragmentCount)
            outFragments.deallocate()
            outFragments = bigger
            outFragmentCapacity = 2 * (outFragmentCount + pieces)
        }
        if outCount == outCapacity {
            let bigger = UnsafeMutablePointer<OutputRecord>.allocate(capacity: 2 * outCapacity)
            bigger.moveInitialize(from: out, count: outCount)
            out.deallocate()
            out = bigger
            outCapacity *= 2
        }
        let start = outFragmentCount
        var length = header?.1 ?? 0
        if let whole {
            outFragments[outFragmentCount] = whole
            outFragmentCount += 1
            length += whole.count
        } else {
            for k in fragmentStart..<(fragmentStart + fragmentCount) {
                let piece = fragments[k]
                outFragments[outFragmentCount] = UnsafeRawBufferPointer(start: piece.base, count: piece.length)
                outFragmentCount += 1
                length += piece.length
            }
        }
        (out + outCount).initialize(to: OutputRecord(
            layout: layout, headerOffset: header?.0 ?? 0, headerLength: header?.1 ?? 0, fragmentStart: start,
            fragmentCount: outFragmentCount - start, length: length, metadata: metadata, reason: reason))
        outCount += 1
        statistics.packetsOut += 1
    }

    /// Emits a packet that was not held, unchanged.
    mutating func emitUnchanged(_ buffer: UnsafeRawBufferPointer, _ metadata: PacketMetadata, _ layout: PacketLayout?,
                                reason: GROReason) {
        statistics[reason] += 1
        emitRecord(header: nil, fragmentStart: 0, fragmentCount: 0, whole: buffer, metadata, reason, layout: layout)
    }

    /// A packet that stays out of GRO: its own flow's held packet leaves first (difference 1 of
    /// gro-spec: per-flow order is kept), then the packet, unchanged.
    mutating func bypass(_ buffer: UnsafeRawBufferPointer, _ metadata: PacketMetadata, _ layout: PacketLayout?,
                         reason: GROReason) {
        completeFlow(of: buffer, metadata, layout, reason: .flowBypass)
        emitUnchanged(buffer, metadata, layout, reason: reason)
    }

    /// Completes every held packet that may share a flow with `buffer`, judged loosely (addresses,
    /// and ports when readable), because the packet may be too odd to parse fully.
    mutating func completeFlow(of buffer: UnsafeRawBufferPointer, _ metadata: PacketMetadata, _ layout: PacketLayout?,
                               reason: GROReason) {
        guard oldest >= 0, let key = LooseFlowKey(buffer, metadata, layout) else { return }
        var slot = oldest
        while slot >= 0 {
            let next = flows[Int(slot)].next
            if key.matches(flows + Int(slot)) { complete(slot, reason) }
            slot = next
        }
    }

    /// Completes everything held, oldest chain first.
    mutating func completeAll(_ reason: GROReason) {
        while oldest >= 0 { complete(oldest, reason) }
    }

    /// Completes the chains whose head is at least the flush timeout old.
    mutating func completeOlder(than now: UInt64) {
        var slot = oldest
        while slot >= 0 {
            let next = flows[Int(slot)].next
            let held = flows[Int(slot)].metadata.timestamp
            if now >= held && now - held >= configuration.flushTimeout { complete(slot, .timeout) }
            slot = next
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
        if carryCapacity[g] < needed {
            carry[g]?.deallocate()
            carryCapacity[g] = max(needed, 2 * carryCapacity[g])
            carry[g] = .allocate(byteCount: carryCapacity[g], alignment: 16)
        }
        let arena = carry[g]!
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

/// A flow identity that can be read from almost any packet: interface, addresses, and ports
/// when the transport header is reachable.
struct LooseFlowKey {
    var base: UnsafeRawPointer
    var networkOffset: Int
    var isIPv4: Bool
    var ports: UInt32?
    var interface: UInt32

    init?(_ buffer: UnsafeRawBufferPointer, _ metadata: PacketMetadata, _ layout: PacketLayout?) {
        if let layout, let base = buffer.baseAddress {
            // A packet that parsed: addresses, and ports where its transport header has them.
            guard layout.network == .ipv4 || layout.network == .ipv6 else { return nil }
            self.base = base
            self.networkOffset = layout.networkOffset
            self.interface = metadata.interface
            self.isIPv4 = layout.network == .ipv4
            if (layout.transport == .tcp || layout.transport == .udp) && layout.hasTransportHeader {
                ports = _UnsafeBytes(base).rawU32(layout.transportOffset)
            }
            return
        }
        guard let base = buffer.baseAddress,
            let (n, _) = try? PacketLayout.linkHeader(buffer.bytes, linkType: metadata.linkType)
        else { return nil }
        let b = _UnsafeBytes(base)
        self.base = base
        self.networkOffset = n
        self.interface = metadata.interface
        // Safe: each read below is guarded by a length check against buffer.count.
        guard buffer.count >= n + 1 else { return nil }
        switch b.u8(n) >> 4 {
        case 4:
            guard buffer.count >= n + 20 else { return nil }
            isIPv4 = true
            let ihl = Int(b.u8(n) & 0x0F) * 4
            let proto = b.u8(n + 9)
            let notFirstFragment = b.u16(n + 6) & 0x1FFF != 0
            if (proto == 6 || proto == 17) && !notFirstFragment && ihl >= 20 && buffer.count >= n + ihl + 4 {
                ports = b.rawU32(n + ihl)
            }
        case 6:
            guard buffer.count >= n + 40 else { return nil }
            isIPv4 = false
            let next = b.u8(n + 6)
            if (next == 6 || next == 17) && buffer.count >= n + 44 { ports = b.rawU32(n + 40) }
        default:
            return nil
        }
    }

    func matches(_ f: UnsafeMutablePointer<HeldFlow>) -> Bool {
        guard f.pointee.metadata.interface == interface, f.pointee.isIPv4 == isIPv4 else { return false }
        let a = _UnsafeBytes(f.pointee.base)
        let b = _UnsafeBytes(base)
        let fn = f.pointee.layout.networkOffset
        let same = isIPv4 ? a.equal(fn + 12, b, networkOffset + 12, count: 8) : a.equal(fn + 8, b, networkOffset + 8, count: 32)
        guard same else { return false }
        if let ports { return a.rawU32(f.pointee.layout.transportOffset) == ports }
        return true
    }
}
