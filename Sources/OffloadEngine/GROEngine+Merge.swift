import OffloadWire

// MARK: - Merge decisions (gro-spec §2.3–§2.5, §3.2)

extension GROEngine {
    /// The TCP rules of `tcp_gro_receive` and `gro_receive_network_flush`, in Linux's order.
    func decideTCP(_ slot: Int32, _ s: Segment, sFlush: Bool) -> Verdict {
        let f = flows[Int(slot)]
        let a = _UnsafeBytes(f.base)
        let b = _UnsafeBytes(s.base)
        let t = s.layout.transportOffset
        let length = s.payloadLength
        // Safe throughout: both packets validated the same header offsets (sameFlow checked them).
        if configuration.mode == .unsafeLRO {
            if sFlush || length == 0 { return .refused(.unmergeableFollower) }
            if b.u16(t + 12) & 0x26 != 0 { return .refused(.flagsOrWindowMismatch) }  // URG, RST, SYN
            if b.u32(t + 4) != f.nextSequence { return .refused(.sequenceGap) }
            if let r = limitReason(f, length) { return .refused(r) }
            let pushOrFin = b.u16(t + 12) & 0x09 != 0
            return .merged(complete: pushOrFin ? .pushOrFin : f.count + 1 >= configuration.maximumSegments
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
        if length > f.segmentSize { return .refused(.largerSegment) }
        if b.u32(t + 4) != f.nextSequence { return .refused(.sequenceGap) }
        if let r = limitReason(f, length) { return .refused(r) }
        if length < f.segmentSize { return .merged(complete: .shortSegment) }
        if word & 0x0009_0000 != 0 { return .merged(complete: .pushOrFin) }
        if f.count + 1 >= configuration.maximumSegments { return .merged(complete: .segmentLimit) }
        return .merged(complete: nil)
    }

    /// The UDP rules of `udp_gro_receive_segment`.
    func decideUDP(_ slot: Int32, _ s: Segment, sFlush: Bool) -> Verdict {
        let f = flows[Int(slot)]
        let length = s.payloadLength
        // A datagram that may not merge completes its flow first (per-flow order; Linux lets it overtake).
        if sFlush || length == 0 { return .refused(.flowBypass) }
        if configuration.mode == .gro, let r = networkMismatch(f, s) { return .refused(r) }
        if length > f.segmentSize { return .refused(.largerSegment) }
        if let r = limitReason(f, length) { return .refused(r) }
        if length < f.segmentSize { return .merged(complete: .shortSegment) }
        if f.count + 1 >= min(64, configuration.maximumSegments) { return .merged(complete: .segmentLimit) }
        return .merged(complete: nil)
    }

    /// The L3 rules (§2.3): TTL/hop limit, TOS/traffic class, DF and the IPv4 ID rule.
    func networkMismatch(_ f: HeldFlow, _ s: Segment) -> GROReason? {
        let a = _UnsafeBytes(f.base)
        let b = _UnsafeBytes(s.base)
        let n = s.layout.networkOffset
        if s.isIPv4 {
            if a.u8(n + 8) != b.u8(n + 8) { return .ttlMismatch }
            if a.u8(n + 1) != b.u8(n + 1) { return .tosMismatch }
            let dfS = b.u16(n + 6) & 0x4000
            if a.u16(n + 6) & 0x4000 != dfS { return .dfMismatch }
            let offset = b.u16(n + 4) &- f.firstID
            if f.count == 1 {
                if offset == 0 {
                    if configuration.ipIDRule == .legacy && dfS == 0 { return .ipIDMismatch }
                } else if offset != 1 {
                    return .ipIDMismatch
                }
            } else if f.fixedID ? offset != 0 : offset != UInt16(truncatingIfNeeded: f.count) {
                return .ipIDMismatch
            }
        } else {
            if a.u8(n + 7) != b.u8(n + 7) { return .ttlMismatch }
            if (a.u32(n) ^ b.u32(n)) & 0x0FF0_0000 != 0 { return .tosMismatch }
        }
        return nil
    }

    /// The 64 KiB and segment-count limits.
    func limitReason(_ f: HeldFlow, _ length: Int) -> GROReason? {
        let ipLength = f.layout.payloadOffset - f.layout.networkOffset + f.totalPayload + length
        if ipLength > configuration.maximumIPLength { return .sizeLimit }
        if f.count >= configuration.maximumSegments { return .segmentLimit }
        return nil
    }

    // MARK: - Holding and merging

    /// Holds S as the head of a new chain (§1.3 step 4).
    mutating func hold(_ s: Segment) {
        if freeSlots.isEmpty { complete(oldest, .tableFull) }
        let slot = freeSlots.removeLast()
        let b = _UnsafeBytes(s.base)
        let t = s.layout.transportOffset
        var f = HeldFlow()
        f.hash = s.hash
        f.base = s.base
        f.frameLength = s.layout.frameLength
        f.layout = s.layout
        f.metadata = s.metadata
        f.isIPv4 = s.isIPv4
        f.isTCP = s.isTCP
        f.segmentSize = s.payloadLength
        f.count = 1
        f.totalPayload = s.payloadLength
        if s.isTCP {
            f.nextSequence = b.u32(t + 4) &+ UInt32(truncatingIfNeeded: s.payloadLength)
            f.lastAck = b.u32(t + 8)
            f.lastWindow = b.u16(t + 14)
        }
        if s.isIPv4 { f.firstID = b.u16(s.layout.networkOffset + 4) }
        f.prev = newest
        f.next = -1
        flows[Int(slot)] = f
        if newest >= 0 { flows[Int(newest)].next = slot } else { oldest = slot }
        newest = slot
        fragments[Int(slot) * configuration.maximumSegments] = Fragment(
            base: s.base + s.layout.payloadOffset, length: s.payloadLength, sum: s.payloadSum,
            sumKnown: s.payloadSumKnown)
        indexInsert(slot, hash: s.hash)
    }

    /// Appends S's payload to P (§2.5 "Merged").
    mutating func append(_ s: Segment, to slot: Int32) {
        let b = _UnsafeBytes(s.base)
        let t = s.layout.transportOffset
        let i = Int(slot)
        let k = i * configuration.maximumSegments + flows[i].count
        fragments[k] = Fragment(base: s.base + s.layout.payloadOffset, length: s.payloadLength, sum: s.payloadSum,
                                sumKnown: s.payloadSumKnown)
        if s.isIPv4 && flows[i].count == 1 && b.u16(s.layout.networkOffset + 4) == flows[i].firstID
            && configuration.mode == .gro
        {
            flows[i].fixedID = true
        }
        flows[i].count += 1
        flows[i].totalPayload += s.payloadLength
        if s.isTCP {
            flows[i].nextSequence &+= UInt32(truncatingIfNeeded: s.payloadLength)
            flows[i].orFlags |= UInt16(b.u8(t + 13)) & 0x09
            flows[i].lastAck = b.u32(t + 8)
            flows[i].lastWindow = b.u16(t + 14)
        }
    }

    // MARK: - Completion (§4)

    /// Completes the packet held in `slot` and emits it.
    mutating func complete(_ slot: Int32, _ reason: GROReason) {
        let i = Int(slot)
        let f = flows[i]
        statistics[reason] += 1
        if f.count == 1 {
            emitRecord(header: nil, fragmentStart: i * configuration.maximumSegments, fragmentCount: 0,
                       whole: UnsafeRawBufferPointer(start: f.base, count: f.frameLength), f.metadata, reason)
        } else {
            buildSuperPacket(f, slot: i, reason)
        }
        indexRemove(slot, hash: f.hash)
        if f.prev >= 0 { flows[Int(f.prev)].next = f.next } else { oldest = f.next }
        if f.next >= 0 { flows[Int(f.next)].prev = f.prev } else { newest = f.prev }
        freeSlots.append(slot)
    }

    /// Writes a super-packet's headers (from the first segment) and lists its payload pieces.
    mutating func buildSuperPacket(_ f: HeldFlow, slot: Int, _ reason: GROReason) {
        let headerLength = f.layout.payloadOffset
        reserveHeaderSpace(headerLength)
        let dst = headerArena + headerUsed
        dst.copyMemory(from: f.base, byteCount: headerLength)
        let m = _UnsafeMutableBytes(dst)
        let r = m.readOnly
        let n = f.layout.networkOffset
        let t = f.layout.transportOffset
        let l4Length = headerLength - t + f.totalPayload
        // Safe: dst holds a copy of the head's validated headers [0, payloadOffset).
        if f.isIPv4 {
            m.store16(UInt16(truncatingIfNeeded: t - n + l4Length), n + 2)
            m.store16(0, n + 10)
            m.store16(~r.sum(n, count: t - n).value, n + 10)
        } else {
            m.store16(UInt16(truncatingIfNeeded: t - n - 40 + l4Length), n + 4)
        }
        let checksumOffset: Int
        if f.isTCP {
            m.store8(r.u8(t + 13) | UInt8(truncatingIfNeeded: f.orFlags), t + 13)
            if configuration.mode == .unsafeLRO {
                m.store32(f.lastAck, t + 8)
                m.store16(f.lastWindow, t + 14)
            }
            checksumOffset = t + 16
        } else {
            m.store16(UInt16(truncatingIfNeeded: l4Length), t + 4)
            checksumOffset = t + 6
        }
        var pseudo = OnesComplementSum(UInt16(f.isTCP ? 6 : 17)) + OnesComplementSum(UInt16(truncatingIfNeeded: l4Length))
        pseudo += f.isIPv4 ? r.sum(n + 12, count: 8) : r.sum(n + 8, count: 32)
        let first = slot * configuration.maximumSegments
        switch configuration.outputChecksum {
        case .partial:
            m.store16(pseudo.value, checksumOffset)
        case .complete:
            m.store16(0, checksumOffset)
            var sum = pseudo + r.sum(t, count: headerLength - t)
            var offset = headerLength - t
            for k in first..<(first + f.count) {
                let piece = fragments[k]
                let pieceSum = piece.sumKnown
                    ? piece.sum : InternetChecksum.unsafeSum(UnsafeRawBufferPointer(start: piece.base, count: piece.length))
                sum += pieceSum.placed(atOffset: offset)
                offset += piece.length
            }
            let value = ~sum.value
            m.store16(f.isTCP ? value : InternetChecksum.udpFieldValue(value), checksumOffset)
        }
        let kind: GSOInfo.Kind = f.isTCP ? (f.isIPv4 ? .tcpv4 : .tcpv6) : (f.isIPv4 ? .udpv4 : .udpv6)
        let ecn = f.isTCP && r.u8(t + 13) & 0x80 != 0
        var metadata = f.metadata
        metadata.checksum = configuration.outputChecksum == .partial ? .partial : .verified
        metadata.gso = GSOInfo(kind: kind, segmentSize: configuration.mode == .unsafeLRO ? 0 : f.segmentSize,
                               segmentCount: f.count, fixedID: f.fixedID, ecn: ecn)
        emitRecord(header: (headerUsed, headerLength), fragmentStart: first, fragmentCount: f.count, whole: nil,
                   metadata, reason)
        headerUsed += (headerLength + 15) & ~15
        statistics.superPackets += 1
        statistics.mergedSegments += f.count
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
                             whole: UnsafeRawBufferPointer?, _ metadata: PacketMetadata, _ reason: GROReason?) {
        let start = outFragments.count
        var length = header?.1 ?? 0
        if let whole {
            outFragments.append(whole)
            length += whole.count
        } else {
            for k in fragmentStart..<(fragmentStart + fragmentCount) {
                let piece = fragments[k]
                outFragments.append(UnsafeRawBufferPointer(start: piece.base, count: piece.length))
                length += piece.length
            }
        }
        out.append(OutputRecord(headerOffset: header?.0 ?? 0, headerLength: header?.1 ?? 0, fragmentStart: start,
                                fragmentCount: outFragments.count - start, length: length, metadata: metadata,
                                reason: reason))
        statistics.packetsOut += 1
    }

    /// Emits a packet that was not held, unchanged.
    mutating func emitUnchanged(_ buffer: UnsafeRawBufferPointer, _ metadata: PacketMetadata, reason: GROReason) {
        statistics[reason] += 1
        emitRecord(header: nil, fragmentStart: 0, fragmentCount: 0, whole: buffer, metadata, reason)
    }

    /// A packet that stays out of GRO: its own flow's held packet leaves first (difference 1 of
    /// gro-spec: per-flow order is kept), then the packet, unchanged.
    mutating func bypass(_ buffer: UnsafeRawBufferPointer, _ metadata: PacketMetadata, _ layout: PacketLayout?,
                         reason: GROReason) {
        completeFlow(of: buffer, metadata, layout, reason: .flowBypass)
        emitUnchanged(buffer, metadata, reason: reason)
    }

    /// Completes every held packet that may share a flow with `buffer`, judged loosely (addresses,
    /// and ports when readable), because the packet may be too odd to parse fully.
    mutating func completeFlow(of buffer: UnsafeRawBufferPointer, _ metadata: PacketMetadata, _ layout: PacketLayout?,
                               reason: GROReason) {
        guard oldest >= 0, let key = LooseFlowKey(buffer, metadata, layout) else { return }
        var slot = oldest
        while slot >= 0 {
            let f = flows[Int(slot)]
            let next = f.next
            if key.matches(f) { complete(slot, reason) }
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
            let f = flows[Int(slot)]
            let next = f.next
            if now >= f.metadata.timestamp && now - f.metadata.timestamp >= configuration.flushTimeout {
                complete(slot, .timeout)
            }
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

    func matches(_ f: HeldFlow) -> Bool {
        guard f.metadata.interface == interface, f.isIPv4 == isIPv4 else { return false }
        let a = _UnsafeBytes(f.base)
        let b = _UnsafeBytes(base)
        let fn = f.layout.networkOffset
        let same = isIPv4 ? a.equal(fn + 12, b, networkOffset + 12, count: 8) : a.equal(fn + 8, b, networkOffset + 8, count: 32)
        guard same else { return false }
        if let ports { return a.rawU32(f.layout.transportOffset) == ports }
        return true
    }
}
