import OffloadWire

// MARK: - UDP merge rules (docs/linux-gro-rules.md §3)

extension GROEngine {
    /// The UDP rules of `udp_gro_receive_segment`, in Linux's order.
    @inline(__always)
    func decideUDP(_ slot: Int32, _ s: Segment, sFlush: Bool) -> Verdict {
        let f = unsafe flows + Int(slot)
        let length = s.payloadLength
        // udp_gro_receive_segment: a flagged or empty datagram completes its flow first (per-flow
        // order; Linux lets it overtake).
        if sFlush || length == 0 { return .refused(.flowBypass) }
        // udp_gro_receive_segment → gro_receive_network_flush (GRO only, not fraglist).
        if configuration.mode == .gro, let r = unsafe networkMismatch(f, s) { return .refused(r) }
        // udp_gro_receive_segment: `ulen > ntohs(uh2->len)`: a larger datagram cannot join.
        if unsafe length > f.pointee.segmentSize { return .refused(.largerSegment) }
        // udp_gro_receive_segment: the 64 KiB limit.
        if let r = unsafe limitReason(f, length) { return .refused(r) }
        // udp_gro_receive_segment: a shorter datagram joins and ends the super-packet;
        // UDP_GRO_CNT_MAX (64) segments end it too.
        if unsafe length < f.pointee.segmentSize { return .merged(complete: .shortSegment) }
        if unsafe f.pointee.count + 1 >= min(64, configuration.maximumSegments) { return .merged(complete: .segmentLimit) }
        return .merged(complete: nil)
    }
}
