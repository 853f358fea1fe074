/// What can be read of the packet an ICMP or ICMPv6 error quotes (RFC 792: the IP header and at
/// least 8 bytes; RFC 4443 §2.4: as much as fits in 1280 bytes). A quote is usually cut short,
/// so the header views, which check the length fields against the bytes, do not apply: this reads
/// each field only when its bytes are present and never traps.
public struct QuotedPacket: Hashable, Sendable {
    /// The quoted packet's flow, as far as it can be read (``FlowKey/init(loosely:linkType:)``).
    public var flow: FlowKey
    /// The quoted packet's IP length as its header says (IPv4 total length, or 40 + the IPv6
    /// payload length): how big the packet was, not how much of it was quoted.
    public var ipLength: Int
    /// The transport header's offset in the quote (after IPv4 options; 40 for IPv6).
    public var transportOffset: Int
    /// The TCP sequence number, when the quote is TCP and holds it.
    public var tcpSequenceNumber: UInt32?

    /// Reads a quote (the body of an ICMP error, from its inner IP header on); nil when not even the
    /// fixed IP header is there.
    public init?(_ quote: RawSpan) {
        guard let flow = FlowKey(loosely: quote, linkType: .raw) else { return nil }
        self.flow = flow
        let count = quote.byteCount
        // Safe: FlowKey read the fixed IP header, so its 20 (IPv4) or 40 (IPv6) bytes are present.
        if flow.source.isIPv4 {
            ipLength = Int(quote._u16Unchecked(IPv4Packet.Field.totalLength))
            transportOffset = Int(quote._u8Unchecked(IPv4Packet.Field.versionAndHeaderLength) & 0x0F) * 4
        } else {
            ipLength = IPv6Packet.Field.fixedHeaderEnd + Int(quote._u16Unchecked(IPv6Packet.Field.payloadLength))
            transportOffset = IPv6Packet.Field.fixedHeaderEnd
        }
        let sequenceEnd = transportOffset + TCPSegment.Field.sequenceNumber + 4
        if flow.transport == .tcp, flow.sourcePort != nil, sequenceEnd <= count {
            // Safe: sequenceEnd <= count (checked in the condition).
            tcpSequenceNumber = quote._u32Unchecked(transportOffset + TCPSegment.Field.sequenceNumber)
        } else {
            tcpSequenceNumber = nil
        }
    }
}
