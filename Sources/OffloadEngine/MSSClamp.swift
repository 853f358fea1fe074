import OffloadWire

extension RouterHeaders {
    /// The largest MSS a TCP sender may announce for a path of `mtu`: the MTU less the fixed IP
    /// header (20 bytes IPv4, 40 IPv6) and the fixed TCP header (20), as Linux's
    /// `iptables -j TCPMSS --clamp-mss-to-pmtu` computes it.
    public static func clampedMSS(mtu: Int, ipv6: Bool) -> Int {
        mtu - (ipv6 ? 60 : 40)
    }

    /// Lowers the MSS option of a TCP SYN (or SYN-ACK) to `maximum` when it announces more, in
    /// place, updating the TCP checksum (RFC 1624), so that the two ends of a connection through a
    /// tunnel send segments that fit the tunnel from the start instead of learning its MTU from
    /// "fragmentation needed" errors (MSS clamping).
    ///
    /// Only the first MSS option is looked at; malformed options end the search (the segment stays
    /// as it is). A segment without SYN is never changed.
    /// - Parameters:
    ///   - tcpHeader: the TCP header's bytes, options included (the transport header, from its first byte).
    ///   - maximum: the largest MSS to let through.
    ///   - checksumIsPartial: the checksum field holds only the pseudo-header sum (a virtio
    ///     `NEEDS_CSUM` packet): it is finished over the new bytes later and stays as it is.
    /// - Returns: the MSS the segment announced when it was lowered, nil when nothing changed.
    @discardableResult
    public static func clampMSS(_ tcpHeader: UnsafeMutableRawBufferPointer, to maximum: UInt16,
                                checksumIsPartial: Bool) -> UInt16? {
        guard tcpHeader.count >= 20 else { return nil }
        let flags = unsafe tcpHeader[TCPSegment.Field.flagByte]
        guard flags & UInt8(TCPFlags.syn.rawValue) != 0 else { return nil }
        let headerLength = unsafe Int(tcpHeader[TCPSegment.Field.dataOffset] >> 4) * 4
        guard headerLength >= 20, headerLength <= tcpHeader.count else { return nil }
        var o = TCPSegment.Field.options
        while o < headerLength {
            let kind = unsafe tcpHeader[o]
            if kind == 0 { return nil }  // end of the option list
            if kind == 1 {  // no-operation
                o += 1
                continue
            }
            guard o + 1 < headerLength else { return nil }
            let length = unsafe Int(tcpHeader[o + 1])
            guard length >= 2, o + length <= headerLength else { return nil }
            if kind == 2 {
                guard length == 4 else { return nil }
                let at = o + 2
                let old = unsafe UInt16(tcpHeader[at]) << 8 | UInt16(tcpHeader[at + 1])
                guard old > maximum else { return nil }
                unsafe tcpHeader[at] = UInt8(maximum >> 8)
                unsafe tcpHeader[at + 1] = UInt8(maximum & 0xFF)
                if !checksumIsPartial {
                    // The option may start at an odd offset (after a no-operation): then its two
                    // bytes straddle two checksum words and count byte-swapped.
                    let c = TCPSegment.Field.checksum
                    let check = unsafe UInt16(tcpHeader[c]) << 8 | UInt16(tcpHeader[c + 1])
                    let delta = OnesComplementSum(maximum).placed(atOffset: at) - OnesComplementSum(old).placed(atOffset: at)
                    let updated = InternetChecksum.update(check, adding: delta)
                    unsafe tcpHeader[c] = UInt8(updated >> 8)
                    unsafe tcpHeader[c + 1] = UInt8(updated & 0xFF)
                }
                return old
            }
            o += length
        }
        return nil
    }
}
