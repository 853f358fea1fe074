import OffloadWire

// MARK: - Completion: when held packets leave and what they become (docs/linux-gro-rules.md §1.4, §4)

extension GROEngine {

    /// Completes the packet held in `slot` and emits it.
    mutating func complete(_ slot: Int32, _ reason: GROReason) {
        let i = Int(slot)
        let f = unsafe flows + i
        statistics[reason] += 1
        if unsafe f.pointee.count == 1 {
            unsafe emitRecord(header: nil, fragmentStart: 0, fragmentCount: 0,
                       whole: UnsafeRawBufferPointer(start: f.pointee.base, count: f.pointee.frameLength),
                       f.pointee.metadata, reason, layout: f.pointee.layout)
        } else {
            unsafe buildSuperPacket(f, slot: i, reason)
        }
        unsafe indexRemove(slot, hash: f.pointee.hash)
        let prev = unsafe f.pointee.prev
        let next = unsafe f.pointee.next
        if prev >= 0 { unsafe flows[Int(prev)].next = next } else { oldest = next }
        if next >= 0 { unsafe flows[Int(next)].prev = prev } else { newest = prev }
        unsafe freeSlots[freeCount] = slot
        freeCount += 1
        unsafe f.pointee.maskChunks = 0  // free: the fast path's port cache may still name it
        if lastSlot == slot { lastSlot = -1 }
    }

    /// Writes a super-packet's headers (from the first segment) and lists its payload pieces.
    mutating func buildSuperPacket(_ f: UnsafeMutablePointer<HeldFlow>, slot: Int, _ reason: GROReason) {
        let layout = unsafe f.pointee.layout
        let headerLength = layout.payloadOffset
        let isTCP = unsafe f.pointee.isTCP
        let isIPv4 = unsafe f.pointee.isIPv4
        let count = unsafe f.pointee.count
        let totalPayload = unsafe f.pointee.totalPayload
        reserveHeaderSpace(headerLength)
        let dst = unsafe headerArena.rawBase + headerUsed
        unsafe dst.copyMemory(from: f.pointee.base, byteCount: headerLength)
        let m = unsafe _UnsafeMutableBytes(dst)
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
        let chainConstant = unsafe addressSum + protocolSum + headHeaderSum - fragments[first].varyingSum
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
            unsafe m.store8(r.u8(t + TCPSegment.Field.flagByte) | UInt8(truncatingIfNeeded: f.pointee.orFlags), t + TCPSegment.Field.flagByte)
            if configuration.mode == .unsafeLRO {
                unsafe m.store32(f.pointee.lastAck, t + 8)
                unsafe m.store16(f.pointee.lastWindow, t + 14)
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
            if unsafe f.pointee.allDerivable && l4Header & 1 == 0 && f.pointee.segmentSize & 1 == 0 {
                // Every piece starts at an even offset and its sum is ~(K + varying) = −(K + varying):
                // the pieces together are −(count·K + Σ varying), one step for the whole chain.
                // (A zero sum shows as 0xFFFF either way: the pseudo-header is never zero.)
                sum += -(chainConstant.times(count) + f.pointee.varyingTotal)
            } else {
                var offset = l4Header
                for k in first..<(first + count) {
                let piece = unsafe fragments[k]
                // With a good checksum field: payload sum = ~(K + varying words). Otherwise sum it.
                let pieceSum = unsafe piece.derivable
                    ? OnesComplementSum(~(chainConstant + piece.varyingSum).value)
                    : InternetChecksum.unsafeSum(UnsafeRawBufferPointer(start: piece.base, count: piece.length))
                sum += pieceSum.placed(atOffset: offset)
                offset += piece.length
                }
            }
            let value = ~sum.value
            m.store16(isTCP ? value : InternetChecksum.udpFieldValue(value), checksumOffset)
        }
        let kind: GSOInfo.Kind = isTCP ? (isIPv4 ? .tcpv4 : .tcpv6) : (isIPv4 ? .udpv4 : .udpv6)
        let ecn = isTCP && r.u8(t + TCPSegment.Field.flagByte) & TCPFlags.cwr.flagByte != 0
        var metadata = unsafe f.pointee.metadata
        metadata.checksum = configuration.outputChecksum == .partial ? .partial : .verified
        metadata.gso = unsafe GSOInfo(kind: kind, segmentSize: configuration.mode == .unsafeLRO ? 0 : f.pointee.segmentSize,
                               segmentCount: count, fixedID: f.pointee.fixedID, ecn: ecn)
        var merged = layout
        merged.ipEnd = headerLength + totalPayload
        merged.frameLength = merged.ipEnd
        unsafe emitRecord(header: (headerUsed, headerLength), fragmentStart: first, fragmentCount: count, whole: nil,
                   metadata, reason, layout: merged)
        headerUsed += (headerLength + 15) & ~15
        statistics.superPackets += 1
        statistics.mergedSegments += count
    }

    /// Grows the header arena when needed. Records keep offsets, so moving the arena is safe.
    mutating func reserveHeaderSpace(_ n: Int) {
        headerArena.reserve(headerUsed + n, preserving: headerUsed)
    }

    mutating func emitRecord(header: (Int, Int)?, fragmentStart: Int, fragmentCount: Int,
                             whole: UnsafeRawBufferPointer?, _ metadata: PacketMetadata, _ reason: GROReason?,
                             layout: PacketLayout?) {
        let pieces = unsafe whole == nil ? fragmentCount : 1
        unsafe outFragments.reserve(outFragmentCount + pieces, preserving: outFragmentCount)
        out.reserve(outCount + 1, preserving: outCount)
        let start = outFragmentCount
        var length = header?.1 ?? 0
        if let whole = unsafe whole {
            unsafe outFragments.base[outFragmentCount] = unsafe whole
            outFragmentCount += 1
            length += whole.count
        } else {
            for k in fragmentStart..<(fragmentStart + fragmentCount) {
                let piece = unsafe fragments[k]
                unsafe outFragments.base[outFragmentCount] = unsafe UnsafeRawBufferPointer(start: piece.base, count: piece.length)
                outFragmentCount += 1
                length += piece.length
            }
        }
        unsafe (out.base + outCount).initialize(to: OutputRecord(
            layout: layout, headerOffset: header?.0 ?? 0, headerLength: header?.1 ?? 0, fragmentStart: start,
            fragmentCount: outFragmentCount - start, length: length, metadata: metadata, reason: reason))
        outCount += 1
        statistics.packetsOut += 1
    }

    /// Emits a packet that was not held, unchanged.
    mutating func emitUnchanged(_ buffer: UnsafeRawBufferPointer, _ metadata: PacketMetadata, _ layout: PacketLayout?,
                                reason: GROReason) {
        statistics[reason] += 1
        unsafe emitRecord(header: nil, fragmentStart: 0, fragmentCount: 0, whole: buffer, metadata, reason, layout: layout)
    }

    /// A packet that stays out of GRO: its own flow's held packet leaves first (deliberate
    /// difference 1 in docs/linux-gro-rules.md: per-flow order is kept), then the packet, unchanged.
    mutating func bypass(_ buffer: UnsafeRawBufferPointer, _ metadata: PacketMetadata, _ layout: PacketLayout?,
                         reason: GROReason) {
        unsafe completeFlow(of: buffer, metadata, layout, reason: .flowBypass)
        unsafe emitUnchanged(buffer, metadata, layout, reason: reason)
    }

    /// Completes every held packet that may share a flow with `buffer` (``FlowKey/mayShareFlow(with:)``:
    /// same interface and addresses; protocol and ports wherever both can be read), because the
    /// packet may be too odd to parse fully. Held packets of other protocols between the same
    /// addresses and ports stay held, as in Linux, where they are different flows.
    mutating func completeFlow(of buffer: UnsafeRawBufferPointer, _ metadata: PacketMetadata, _ layout: PacketLayout?,
                               reason: GROReason) {
        guard oldest >= 0 else { return }
        let key = unsafe layout.flatMap { unsafe FlowKey(buffer.bytes, layout: $0) }
            ?? FlowKey(loosely: buffer.bytes, linkType: metadata.linkType)
        guard let key else { return }
        var slot = oldest
        while slot >= 0 {
            let f = unsafe flows + Int(slot)
            let next = unsafe f.pointee.next
            if unsafe f.pointee.metadata.interface == metadata.interface,
                let held = unsafe FlowKey(UnsafeRawBufferPointer(start: f.pointee.base, count: f.pointee.frameLength).bytes,
                                   layout: f.pointee.layout),
                held.mayShareFlow(with: key)
            {
                complete(slot, reason)
            }
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
            let next = unsafe flows[Int(slot)].next
            let held = unsafe flows[Int(slot)].metadata.timestamp
            if now >= held && now - held >= configuration.flushTimeout { complete(slot, .timeout) }
            slot = next
        }
    }
}
