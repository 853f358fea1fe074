import OffloadEngine
import OffloadWire

/// Puts inner packets and super-packets behind a codec's headers, one datagram per inner
/// segment: a super-packet is segmented (GSO, complete checksums, the segment headers in the
/// segmenter's arena, the payload in place) and each segment gets its own datagram (a GTP-U
/// header's length field is that segment's; an ESP datagram its own sequence number).
///
/// Each datagram has a slot in an arena: the codec's header room, and for a codec that writes
/// whole datagrams (ESP) the segment's length and the trailer room too, so the ciphertext is
/// written once, where it is sent from. A codec that writes only headers leaves the inner bytes
/// where they are: its datagrams are the header slot plus the segment's pieces, gathered by the
/// send. The datagrams of one packet are all the same size but the last, as one UDP GSO send needs.
///
/// A segment the encoder refuses (ESP: a seal that failed) gets no datagram: the next segment's
/// datagram takes its slot, and the refusal is in ``refusedSegments`` for the caller to count.
/// Nothing of a refused segment is ever sent, neither an empty datagram nor a header without it.
///
/// (`@safe`: the pointers it keeps, into the caller's packet and its own arena, are handed out
/// only inside ``withDatagramPieces(at:_:)`` and documented as valid until the next ``prepare(_:gso:)``.)
@safe
public struct TunnelEncapsulator<Codec: TunnelCodec>: ~Copyable {
    /// The protocol.
    public let codec: Codec
    /// The codec's encoder (its state: GTP-U's sequence numbers, ESP's SA choice).
    public var encoder: Codec.Encoder
    var segmenter = GSOSegmenter()
    /// One slot per datagram of the current packet, `stride` bytes apart.
    var arena = GrowableBuffer<UInt8>(capacity: 64 * 256)
    var stride = 0
    /// What the encoder wrote in each slot.
    var written: [Int] = []
    /// The segment each datagram carries (not all segments have one: see ``refusedSegments``).
    var segmentIndex: [Int] = []
    /// Why the encoder refused segments of the prepared packet, one entry per segment refused
    /// (those segments have no datagram).
    public private(set) var refusedSegments: [TunnelDropReason] = []
    var count = 0
    /// The packet when it is one segment (one piece, or headers and payload in place).
    var single: InnerSegment?
    /// The prepared packet's TOS / traffic class (DSCP and ECN), for the outer header (RFC 6040);
    /// nil when it is not IP.
    public private(set) var innerTOS: UInt8?

    /// Creates an encapsulator.
    /// - Throws: ``TunnelCodecError`` when the codec cannot make an encoder.
    public init(codec: Codec) throws(TunnelCodecError) {
        self.codec = codec
        encoder = try codec.makeEncoder()
        written.reserveCapacity(128)
        segmentIndex.reserveCapacity(128)
        refusedSegments.reserveCapacity(8)
    }

    /// Prepares the datagrams of one inner packet (from its IP header, or its Ethernet header for
    /// Ethernet inside; checksums complete or, with `gso`, partial): afterwards ``datagramCount``
    /// and ``withDatagramPieces(at:_:)`` give them.
    /// - Returns: nil, or why the encoder refused the packet (then there are no datagrams). Segments
    ///   refused one by one are in ``refusedSegments``.
    /// - Throws: ``GSOError`` when the GSO facts do not fit the packet.
    /// - Warning: the datagrams may point into `packet`: valid while it is and until the next call.
    @discardableResult
    public mutating func prepare(_ packet: UnsafeRawBufferPointer, gso: GSOInfo?) throws(GSOError) -> TunnelDropReason? {
        innerTOS = unsafe TunnelECN.innerTOS(packet, linkType: codec.innerLinkType)
        if let gso, gso.segmentCount > 1 {
            unsafe try segmenter.segment(packet, linkType: codec.innerLinkType, gso: gso, checksum: .complete)
            single = nil
        } else {
            single = unsafe InnerSegment(first: packet)
        }
        return encodeAll()
    }

    /// Prepares the datagrams of one packet as the forwarding pipeline hands it over: its headers
    /// (`layout.payloadOffset` bytes) and its payload pieces in place, never gathered. A
    /// super-packet is segmented slice by slice (GSO, complete checksums).
    /// - Returns: nil when it cannot be done in place (a segment would span two payload pieces, or
    ///   a single packet's checksum is partial and must be finished over the whole packet): then
    ///   gather the packet and call ``prepare(_:gso:)``. Otherwise what ``prepare(_:gso:)`` returns.
    public mutating func prepare(headers: UnsafeRawBufferPointer, layout: PacketLayout,
                                 payload: UnsafeBufferPointer<UnsafeRawBufferPointer>, gso: GSOInfo?,
                                 partialChecksum: Bool) -> TunnelDropReason?? {
        if let gso, gso.segmentCount > 1 {
            guard unsafe segmenter.segment(headers: headers, layout: layout, payload: payload, gso: gso) else { return nil }
            single = nil
        } else {
            guard !partialChecksum, payload.count <= 1 else { return nil }
            single = unsafe InnerSegment(first: headers, second: payload.first ?? UnsafeRawBufferPointer(start: nil, count: 0))
        }
        innerTOS = unsafe TunnelECN.innerTOS(headers, linkType: codec.innerLinkType)
        return .some(encodeAll())
    }

    /// Lets the encoder write every datagram of the prepared packet into its slot; a segment it
    /// refuses leaves its slot to the next one.
    mutating func encodeAll() -> TunnelDropReason? {
        count = 0
        written.removeAll(keepingCapacity: true)
        segmentIndex.removeAll(keepingCapacity: true)
        refusedSegments.removeAll(keepingCapacity: true)
        let total = single == nil ? segmenter.segmentCount : 1
        let first = segment(at: 0)
        if let refusal = unsafe encoder.begin(headers: first.first, datagrams: total) { return refusal }
        // The first segment is the longest: every slot can hold it.
        stride = codec.headerRoom + (encoder.writesWholeDatagram ? first.count + codec.trailerRoom : 0)
        stride = (stride + 15) & ~15
        _ = arena.reserve(stride * total)
        for i in 0..<total {
            // Safe: the arena holds `total` slots of `stride` bytes (reserved above) and count <= i < total.
            let slot = unsafe UnsafeMutableRawBufferPointer(start: arena.rawBase + stride * count, count: stride)
            do {
                let length = unsafe try encoder.encode(segment(at: i), index: i, into: slot)
                precondition(length >= 0 && length <= stride, "the encoder wrote outside its slot")
                written.append(length)
                segmentIndex.append(i)
                count += 1
            } catch {
                refusedSegments.append(error)
            }
        }
        return nil
    }

    /// Segment `index` of the prepared packet, in place.
    func segment(at index: Int) -> InnerSegment {
        if let single { return single }
        var pieces = unsafe (UnsafeRawBufferPointer(start: nil, count: 0), UnsafeRawBufferPointer(start: nil, count: 0))
        var k = 0
        unsafe segmenter.withSegmentFragments(at: index) { piece in
            if k == 0 { unsafe pieces.0 = piece } else { unsafe pieces.1 = piece }
            k += 1
        }
        return unsafe InnerSegment(first: pieces.0, second: pieces.1)
    }

    /// The datagrams prepared.
    public var datagramCount: Int { count }

    /// The UDP payload length of datagram `index`.
    public func datagramLength(at index: Int) -> Int {
        encoder.writesWholeDatagram ? written[index] : written[index] + segment(at: segmentIndex[index]).count
    }

    /// Calls `body` with datagram `index`'s pieces: the slot the encoder wrote, then (when it
    /// writes only headers) the inner segment's pieces in place.
    public func withDatagramPieces(at index: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        unsafe body(UnsafeRawBufferPointer(start: arena.rawBase + stride * index, count: written[index]))
        guard !encoder.writesWholeDatagram else { return }
        let inner = segment(at: segmentIndex[index])
        unsafe body(inner.first)
        if unsafe inner.second.count > 0 { unsafe body(inner.second) }
    }

    /// Datagram `index` in one array (allocates: for captures and tests).
    public func datagramBytes(at index: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(datagramLength(at: index))
        unsafe withDatagramPieces(at: index) { unsafe out.append(contentsOf: $0) }
        return out
    }
}
