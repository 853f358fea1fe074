import OffloadWire

// MARK: - Network-layer merge rules and limits (docs/linux-gro-rules.md §2.3, §1.2)

extension GROEngine {
    /// The L3 rules: TTL/hop limit, TOS/traffic class, DF and the IPv4 ID rule.
    /// Linux: `gro_receive_network_flush` → `inet_gro_flush` / `ipv6_gro_flush`.
    @inline(__always)
    func networkMismatch(_ f: UnsafeMutablePointer<HeldFlow>, _ s: Segment) -> GROReason? {
        let a = unsafe _UnsafeBytes(f.pointee.base)
        let b = unsafe _UnsafeBytes(s.base)
        let n = s.layout.networkOffset
        if s.isIPv4 {
            typealias IP = IPv4Packet.Field
            // inet_gro_flush: `iph->ttl ^ iph2->ttl`.
            if a.u8(n + IP.timeToLive) != b.u8(n + IP.timeToLive) { return .ttlMismatch }
            // inet_gro_flush: `iph->tos ^ iph2->tos`.
            if a.u8(n + IP.typeOfService) != b.u8(n + IP.typeOfService) { return .tosMismatch }
            // inet_gro_flush: `(iph->frag_off ^ iph2->frag_off) & htons(IP_DF)`.
            let dfS = b.u16(n + IP.flagsAndFragmentOffset) & IPv4Packet.Flags.dontFragment
            if a.u16(n + IP.flagsAndFragmentOffset) & IPv4Packet.Flags.dontFragment != dfS { return .dfMismatch }
            // inet_gro_flush: the ID must go up by one per segment, or stay fixed (is_atomic /
            // the fixed-ID rule of this kernel generation, GROConfiguration.ipIDRule).
            let offset = unsafe b.u16(n + IP.identification) &- f.pointee.firstID
            let count = unsafe f.pointee.count
            if count == 1 {
                if offset == 0 {
                    if configuration.ipIDRule == .legacy && dfS == 0 { return .ipIDMismatch }
                } else if offset != 1 {
                    return .ipIDMismatch
                }
            } else if unsafe f.pointee.fixedID ? offset != 0 : offset != UInt16(truncatingIfNeeded: count) {
                return .ipIDMismatch
            }
        } else {
            typealias IP = IPv6Packet.Field
            // ipv6_gro_flush: hop limit.
            if a.u8(n + IP.hopLimit) != b.u8(n + IP.hopLimit) { return .ttlMismatch }
            // ipv6_gro_flush: the traffic class (the flow label was part of the flow identity).
            if (a.u32(n + IP.versionClassLabel) ^ b.u32(n + IP.versionClassLabel)) & IPv6Packet.Masks.trafficClass != 0 {
                return .tosMismatch
            }
        }
        return nil
    }

    /// The 64 KiB limit (`skb_gro_receive`: `p->len + len >= GRO_LEGACY_MAX_SIZE`) and the
    /// segment cap (deliberate difference 6).
    @inline(__always)
    func limitReason(_ f: UnsafeMutablePointer<HeldFlow>, _ length: Int) -> GROReason? {
        let ipLength = unsafe f.pointee.layout.payloadOffset - f.pointee.layout.networkOffset + f.pointee.totalPayload + length
        if ipLength > configuration.maximumIPLength { return .sizeLimit }
        if unsafe f.pointee.count >= configuration.maximumSegments { return .segmentLimit }
        return nil
    }
}
