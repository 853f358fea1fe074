import OffloadWire

/// What a router does with one packet or super-packet at an egress MTU (docs/linux-gro-rules.md §6).
///
/// Linux: `ip_forward` / `ip_exceeds_mtu` (net/ipv4/ip_forward.c), `ip6_forward` /
/// `ip6_pkt_too_big` (net/ipv6/ip6_output.c), `skb_gso_validate_network_len` (net/core/gso.c).
/// The size check of a super-packet is **per segment** (headers + segment size), never its total
/// length: that is what makes GRO transparent on a forwarder.
public enum ForwardingDecision: Hashable, Sendable {
    /// Not IP, or not understood: forwarded unchanged (no TTL change).
    case passThrough
    /// Fits: forward it whole (a super-packet goes out as one GSO packet to an egress that takes GSO).
    case forward
    /// A super-packet whose segments fit, to an egress without GSO: segment it in software.
    case segment
    /// Too big with DF clear (IPv4 only): segment if it is a super-packet, then fragment (RFC 791).
    case fragment
    /// Too big with DF set, or IPv6: drop it and send ICMP "fragmentation needed" / "packet too big"
    /// carrying `mtu` to the source.
    case tooBig(mtu: Int)
    /// TTL or hop limit would reach zero: drop it and send ICMP "time exceeded".
    case timeExceeded

    /// Decides for `packet` (a whole frame) at `egressMTU` (the largest IP packet the egress carries).
    ///
    /// - Parameters:
    ///   - packet: the frame.
    ///   - linkType: how to find the IP header.
    ///   - gso: the packet's GSO facts, when it is a super-packet. A segment size of 0 (an LRO merge)
    ///     gives no per-segment size, so the total length is checked, as Linux's forward path would
    ///     refuse it too.
    ///   - egressMTU: the egress MTU.
    ///   - egressTakesGSO: whether the egress accepts super-packets (a TUN device with a virtio header).
    public static func decide(_ packet: RawSpan, linkType: LinkType, gso: GSOInfo?, egressMTU: Int,
                              egressTakesGSO: Bool) -> ForwardingDecision {
        guard let layout = try? PacketLayout(parsing: packet, linkType: linkType) else { return .passThrough }
        return unsafe packet.withUnsafeBytes {
            unsafe decide(layout: layout, headers: $0, gso: gso, egressMTU: egressMTU, egressTakesGSO: egressTakesGSO)
        }
    }

    /// Decides from a packet's layout and its header bytes alone (for a super-packet whose
    /// payload lies elsewhere). `headers` must hold the frame up to at least the IP header's end.
    public static func decide(layout: PacketLayout, headers: UnsafeRawBufferPointer, gso: GSOInfo?, egressMTU: Int,
                              egressTakesGSO: Bool) -> ForwardingDecision {
        let n = layout.networkOffset
        guard headers.count >= n + 20 else { return .passThrough }
        let ipLength = layout.ipEnd - n
        let segmented = gso.map { $0.segmentSize > 0 && $0.segmentCount > 1 } ?? false
        let segmentLength = segmented ? layout.payloadOffset - n + gso!.segmentSize : ipLength
        switch layout.network {
        case .other:
            return .passThrough
        case .ipv4:
            let ttl = unsafe headers[n + IPv4Packet.Field.timeToLive]
            if ttl <= 1 { return .timeExceeded }
            let df = unsafe headers[n + IPv4Packet.Field.flagsAndFragmentOffset] & UInt8(IPv4Packet.Flags.dontFragment >> 8) != 0
            if ipLength <= egressMTU || (segmented && segmentLength <= egressMTU) {
                return segmented && !egressTakesGSO ? .segment : .forward
            }
            return df ? .tooBig(mtu: egressMTU) : .fragment
        case .ipv6:
            let hopLimit = unsafe headers[n + IPv6Packet.Field.hopLimit]
            if hopLimit <= 1 { return .timeExceeded }
            if ipLength <= egressMTU || (segmented && segmentLength <= egressMTU) {
                return segmented && !egressTakesGSO ? .segment : .forward
            }
            return .tooBig(mtu: max(egressMTU, 1280))
        }
    }
}

extension ForwardingDecision {
    /// The MTU an ICMP "too big" error announces to the source of a packet refused at `egressMTU`,
    /// when a stage grew its headers by `headerGrowth` bytes on the way: the source's packets must
    /// be that much smaller. Never below the family's minimum (IPv6 1280, RFC 8200; IPv4 68, RFC 791).
    public static func announcedMTU(egressMTU: Int, headerGrowth: Int, ipv6: Bool) -> Int {
        ipv6 ? max(1280, egressMTU - headerGrowth) : max(68, egressMTU - headerGrowth)
    }
}

/// Router header edits.
public enum RouterHeaders {
    /// Decrements the IPv4 TTL (updating the header checksum, RFC 1624) or the IPv6 hop limit, in place.
    ///
    /// - Parameters:
    ///   - frame: the frame's bytes (or at least its headers).
    ///   - networkOffset: where the IP header starts.
    /// - Returns: `false` when the buffer does not hold an IP header there.
    @discardableResult
    public static func decrementTTL(_ frame: UnsafeMutableRawBufferPointer, networkOffset n: Int) -> Bool {
        guard frame.count >= n + 20 else { return false }
        switch unsafe frame[n] >> 4 {
        case 4:
            let oldWord = unsafe UInt16(frame[n + 8]) << 8 | UInt16(frame[n + 9])
            unsafe frame[n + 8] &-= 1
            let newWord = unsafe UInt16(frame[n + 8]) << 8 | UInt16(frame[n + 9])
            let check = unsafe UInt16(frame[n + 10]) << 8 | UInt16(frame[n + 11])
            let updated = InternetChecksum.update(check, replacing: oldWord, with: newWord)
            unsafe frame[n + 10] = UInt8(updated >> 8)
            unsafe frame[n + 11] = UInt8(updated & 0xFF)
            return true
        case 6:
            guard frame.count >= n + 40 else { return false }
            unsafe frame[n + 7] &-= 1
            return true
        default:
            return false
        }
    }

    /// Sets the IPv4 type-of-service byte (updating the header checksum, RFC 1624) or the IPv6
    /// traffic class, in place: DSCP and ECN together.
    /// - Returns: `false` when the buffer does not hold an IP header there.
    @discardableResult
    public static func setTrafficClass(_ value: UInt8, in frame: UnsafeMutableRawBufferPointer, networkOffset n: Int) -> Bool {
        guard frame.count >= n + 20 else { return false }
        switch unsafe frame[n] >> 4 {
        case 4:
            let tos = n + IPv4Packet.Field.typeOfService
            let oldWord = unsafe UInt16(frame[tos - 1]) << 8 | UInt16(frame[tos])
            unsafe frame[tos] = value
            let newWord = unsafe UInt16(frame[tos - 1]) << 8 | UInt16(frame[tos])
            let c = n + IPv4Packet.Field.headerChecksum
            let updated = unsafe InternetChecksum.update(UInt16(frame[c]) << 8 | UInt16(frame[c + 1]), replacing: oldWord,
                                                  with: newWord)
            unsafe frame[c] = UInt8(updated >> 8)
            unsafe frame[c + 1] = UInt8(updated & 0xFF)
            return true
        case 6:
            guard frame.count >= n + 40 else { return false }
            // The traffic class spans the low nibble of byte 0 and the high nibble of byte 1.
            unsafe frame[n] = unsafe frame[n] & 0xF0 | value >> 4
            unsafe frame[n + 1] = unsafe frame[n + 1] & 0x0F | value << 4
            return true
        default:
            return false
        }
    }

    /// Decrements the TTL or hop limit of an IP packet held in an array.
    @discardableResult
    public static func decrementTTL(_ frame: inout [UInt8], networkOffset: Int) -> Bool {
        unsafe frame.withUnsafeMutableBytes { unsafe decrementTTL($0, networkOffset: networkOffset) }
    }
}
