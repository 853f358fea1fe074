import OffloadWire

// MARK: - TCP merge rules (docs/linux-gro-rules.md §2.4, §2.5)
//
// Each refusal names the Linux function whose check it mirrors; the order is Linux's, so the
// reason counted is the one Linux would hit first.

extension GROEngine {
    /// The TCP rules of `tcp_gro_receive` and `gro_receive_network_flush`, in Linux's order.
    @inline(__always)
    func decideTCP(_ slot: Int32, _ s: Segment, sFlush: Bool) -> Verdict {
        typealias TCP = TCPSegment.Field
        let f = unsafe flows + Int(slot)
        let a = unsafe _UnsafeBytes(f.pointee.base)
        let b = unsafe _UnsafeBytes(s.base)
        let t = s.layout.transportOffset
        let length = s.payloadLength
        // Safe throughout: both packets validated the same header offsets (sameFlow checked them).
        let word = b.u32(t + TCP.dataOffset)
        if configuration.mode == .unsafeLRO { return unsafe decideLRO(f, s, sFlush: sFlush, word: word) }
        // dev_gro_receive / tcp_gro_receive: a packet flagged for flush never merges.
        if sFlush { return .refused(.unmergeableFollower) }
        // tcp_gro_receive: `flush = NAPI_GRO_CB(p)->flush | (flags & TCP_FLAG_CWR)`.
        if word & TCPSegment.FlagWord.cwr != 0 { return .refused(.cwr) }
        // tcp_gro_receive: `flush |= (flags ^ tcp_flag_word(th2)) & ~(CWR | FIN | PSH)`: data
        // offset, the other flags and the window must be equal.
        if (a.u32(t + TCP.dataOffset) ^ word) & ~TCPSegment.FlagWord.mayDiffer != 0 {
            return .refused(.flagsOrWindowMismatch)
        }
        // tcp_gro_receive: `flush |= th->ack_seq ^ th2->ack_seq`.
        if a.u32(t + TCP.acknowledgmentNumber) != b.u32(t + TCP.acknowledgmentNumber) { return .refused(.ackMismatch) }
        // tcp_gro_receive: the options (timestamps included) compared word by word.
        let headerLength = s.layout.transportHeaderLength
        if !a.equal(t + TCP.options, b, t + TCP.options, count: headerLength - TCP.options) {
            return .refused(.optionsMismatch)
        }
        // Not in Linux (deliberate difference 5): GSO would copy the first urgent pointer.
        if a.u16(t + TCP.urgentPointer) != b.u16(t + TCP.urgentPointer) { return .refused(.urgentPointerMismatch) }
        // gro_receive_network_flush: TTL, TOS, DF, IP ID.
        if let r = unsafe networkMismatch(f, s) { return .refused(r) }
        // tcp_gro_receive: `flush |= (len - 1) >= mss` and a zero-length S never merges.
        if length == 0 { return .refused(.unmergeableFollower) }
        if unsafe length > f.pointee.segmentSize { return .refused(.largerSegment) }
        // tcp_gro_receive: `flush |= (ntohl(th2->seq) + skb_gro_len(p)) ^ ntohl(th->seq)`.
        if unsafe b.u32(t + TCP.sequenceNumber) != f.pointee.nextSequence { return .refused(.sequenceGap) }
        // skb_gro_receive: the 64 KiB limit (and the segment cap).
        if let r = unsafe limitReason(f, length) { return .refused(r) }
        // tcp_gro_receive, out_check_final: a short segment, PSH or FIN ends the super-packet.
        if unsafe length < f.pointee.segmentSize { return .merged(complete: .shortSegment) }
        if word & TCPSegment.FlagWord.pushOrFin != 0 { return .merged(complete: .pushOrFin) }
        if unsafe f.pointee.count + 1 >= configuration.maximumSegments { return .merged(complete: .segmentLimit) }
        return .merged(complete: nil)
    }

    /// The greedy LRO merge (`--mode lro`, the comparison that black-holes behind a forwarder):
    /// any in-sequence data segment without URG, RST or SYN joins, whatever its headers say.
    @inline(__always)
    func decideLRO(_ f: UnsafeMutablePointer<HeldFlow>, _ s: Segment, sFlush: Bool, word: UInt32) -> Verdict {
        let length = s.payloadLength
        let b = unsafe _UnsafeBytes(s.base)
        let t = s.layout.transportOffset
        if sFlush || length == 0 { return .refused(.unmergeableFollower) }
        if word & (TCPSegment.FlagWord.flags(.urg) | TCPSegment.FlagWord.flags(.rst) | TCPSegment.FlagWord.flags(.syn)) != 0 { return .refused(.flagsOrWindowMismatch) }
        if unsafe b.u32(t + TCPSegment.Field.sequenceNumber) != f.pointee.nextSequence { return .refused(.sequenceGap) }
        if let r = unsafe limitReason(f, length) { return .refused(r) }
        let pushOrFin = word & TCPSegment.FlagWord.pushOrFin != 0
        return unsafe .merged(complete: pushOrFin ? .pushOrFin : f.pointee.count + 1 >= configuration.maximumSegments
            ? .segmentLimit : nil)
    }
}
