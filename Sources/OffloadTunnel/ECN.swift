import OffloadWire

/// DSCP and ECN across the tunnel (RFC 6040, normal mode): the outer header gets the inner
/// packet's TOS / traffic class on the way in; on the way out, congestion marked on the outer
/// header reaches the inner packet, and a mark the inner packet cannot carry drops it.
public enum TunnelECN {
    /// The ECN codepoints (RFC 3168).
    static let notECT: UInt8 = 0b00, ect1: UInt8 = 0b01, ect0: UInt8 = 0b10, ce: UInt8 = 0b11

    /// The TOS / traffic class of the inner IP packet at the start of `frame` (an IP packet, or an
    /// Ethernet frame), or nil when it is not IP.
    public static func innerTOS(_ frame: UnsafeRawBufferPointer, linkType: LinkType) -> UInt8? {
        guard let (n, network) = unsafe try? PacketLayout.linkHeader(frame.bytes, linkType: linkType),
            frame.count >= n + 2
        else { return nil }
        switch network {
        case .ipv4: return unsafe frame[n + IPv4Packet.Field.typeOfService]
        case .ipv6: return unsafe frame[n] << 4 | frame[n + 1] >> 4
        case .other: return nil
        }
    }

    /// The inner ECN field after decapsulation (RFC 6040 §4.2, Figure 4): nil means drop (the
    /// outer header says congestion, and the inner packet is not ECN-capable).
    public static func decapsulated(inner: UInt8, outer: UInt8) -> UInt8? {
        switch (inner, outer) {
        case (notECT, ce): nil
        case (notECT, _): notECT
        case (_, ce): ce
        case (ect0, ect1): ect1
        default: inner
        }
    }

    /// Applies the outer ECN field `outer` to the inner packet in `frame` (in place: the IPv4
    /// header checksum is updated). Returns false when the packet must be dropped.
    public static func apply(outer: UInt8, to frame: UnsafeMutableRawBufferPointer, linkType: LinkType) -> Bool {
        guard let (n, network) = unsafe try? PacketLayout.linkHeader(UnsafeRawBufferPointer(frame).bytes, linkType: linkType),
            frame.count >= n + 20
        else { return true }
        switch network {
        case .ipv4:
            let t = n + IPv4Packet.Field.typeOfService
            let old = unsafe frame[t]
            guard let ecn = decapsulated(inner: old & 0b11, outer: outer & 0b11) else { return false }
            let new = old & ~0b11 | ecn
            guard new != old else { return true }
            let c = n + IPv4Packet.Field.headerChecksum
            let word = unsafe UInt16(frame[n]) << 8
            let checksum = unsafe UInt16(frame[c]) << 8 | UInt16(frame[c + 1])
            let updated = InternetChecksum.update(checksum, replacing: word | UInt16(old), with: word | UInt16(new))
            unsafe frame[t] = new
            unsafe frame[c] = UInt8(updated >> 8)
            unsafe frame[c + 1] = UInt8(updated & 0xFF)
        case .ipv6:
            // The traffic class spans bytes 0 and 1: its ECN bits are bits 4 and 5 of byte 1.
            let old = unsafe frame[n + 1] >> 4 & 0b11
            guard let ecn = decapsulated(inner: old, outer: outer & 0b11) else { return false }
            unsafe frame[n + 1] = frame[n + 1] & ~0x30 | ecn << 4
        case .other:
            break
        }
        return true
    }
}
