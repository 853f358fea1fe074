import OffloadWire

/// Why a packet cannot be segmented.
public enum GSOError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The headers do not parse.
    case malformed(WireError)
    /// The GSO facts do not match the packet (e.g. TCPv4 facts on an IPv6 packet).
    case kindMismatch(String)
    /// No segment size: an LRO merge, which cannot be split back exactly; pass a size to resegment.
    case unknownSegmentSize
    /// The segment count would exceed ``GSOSegmenter/maximumSegments``.
    case tooManySegments(Int)

    /// A one-line explanation.
    public var description: String {
        switch self {
        case .malformed(let e): "cannot segment: \(e)"
        case .kindMismatch(let s): "GSO facts do not match the packet: \(s)"
        case .unknownSegmentSize: "no segment size recorded (an LRO merge); give one to resegment"
        case .tooManySegments(let n): "\(n) segments is more than the segmenter makes"
        }
    }
}

/// Generic Segmentation Offload in user space: splits a TCP or UDP super-packet into wire-size
/// segments, exactly as Linux's `tcp_gso_segment` / `__udp_gso_segment` / `inet_gso_segment` /
/// `ipv6_gso_segment` do (docs/linux-gro-rules.md §5).
///
/// For a super-packet built by ``GROEngine`` with its recorded ``GSOInfo``, the segments are the
/// very packets that were merged, byte for byte.
///
/// Per segment *i* (of size `s`): IPv4 total length and header checksum, ID = ID₀ + i (or ID₀
/// when fixed-ID), IPv6 payload length; TCP sequence = seq₀ + i·s, FIN and PSH only on the last
/// segment, CWR only on the first; UDP length; and the L4 checksum, complete or partial.
///
/// Output segments are a written header plus a slice of the input's payload in place: no payload
/// is copied. They are valid until the next call or until the input buffer changes.
@safe  // owns its memory; every pointer use inside is marked `unsafe` and bounds-checked or commented `// Safe:`
public struct GSOSegmenter: ~Copyable {
    /// The most segments one call produces.
    public static let maximumSegments = 65_535

    /// Segment headers, one per `headerStride`.
    var arena = GrowableBuffer<UInt8>(capacity: 64 * 128)
    var headerStride = 0
    var headerLength = 0
    var payloads: [UnsafeRawBufferPointer] = unsafe []

    /// Creates a segmenter.
    public init() {
        unsafe payloads.reserveCapacity(64)
    }


    /// The number of segments the last call produced.
    public var segmentCount: Int { unsafe payloads.count }

    /// Splits `packet` into segments.
    ///
    /// A packet whose payload fits in one segment is returned as one unchanged segment.
    /// - Parameters:
    ///   - packet: the whole frame (link header included), contiguous.
    ///   - linkType: how to find the IP header.
    ///   - gso: the packet's GSO facts.
    ///   - segmentSize: a size to use instead of `gso.segmentSize` (resegmenting for a smaller MTU).
    ///   - checksum: complete checksums, or the partial form for an offloading sink.
    /// - Throws: ``GSOError``.
    public mutating func segment(
        _ packet: UnsafeRawBufferPointer, linkType: LinkType, gso: GSOInfo, segmentSize: Int? = nil,
        checksum: OutputChecksum = .complete
    ) throws(GSOError) {
        unsafe payloads.removeAll(keepingCapacity: true)
        let layout: PacketLayout
        do { layout = unsafe try PacketLayout(parsing: packet.bytes, linkType: linkType) } catch { throw .malformed(error) }
        let isIPv4 = layout.network == .ipv4
        guard isIPv4 || layout.network == .ipv6 else { throw .kindMismatch("not IP") }
        guard isIPv4 == gso.kind.isIPv4 else { throw .kindMismatch("\(gso.kind) on an IPv\(isIPv4 ? 4 : 6) packet") }
        guard layout.transport == (gso.kind.isTCP ? .tcp : .udp), layout.hasTransportHeader else {
            throw .kindMismatch("\(gso.kind) on a \(layout.transport) packet")
        }
        let size = segmentSize ?? gso.segmentSize
        guard size > 0 else { throw .unknownSegmentSize }
        let base = packet.baseAddress!
        let total = layout.payloadLength
        if total <= size {
            headerLength = 0
            unsafe payloads.append(packet)
            return
        }
        let count = (total + size - 1) / size
        guard count <= Self.maximumSegments else { throw .tooManySegments(count) }
        let h = layout.payloadOffset
        let headers = unsafe HeaderTemplate(base, layout: layout, gso: gso, size: size, count: count)
        prepareArena(headerLength: h, count: count)
        for i in 0..<count {
            let length = i == count - 1 ? total - size * i : size
            unsafe writeSegment(i, payload: UnsafeRawBufferPointer(start: base + h + size * i, count: length), headers: headers,
                                gso: gso, checksum: checksum)
        }
    }

    /// Splits a super-packet given as its headers (`layout.payloadOffset` bytes, as the forwarding
    /// pipeline stages them) and its payload in `pieces` (as GRO chained it, or in one piece), without
    /// gathering it: each segment's payload is a slice of one piece.
    /// - Returns: false, having produced nothing, when a segment would span two pieces (gather
    ///   the packet and call ``segment(_:linkType:gso:segmentSize:checksum:)``) or the facts do not
    ///   fit the layout; true when the segments are ready (one unchanged segment when the payload
    ///   fits one, then its pieces are the header and the first payload piece, and there must be
    ///   at most one).
    public mutating func segment(headers: UnsafeRawBufferPointer, layout: PacketLayout,
                                 payload pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>, gso: GSOInfo,
                                 checksum: OutputChecksum = .complete) -> Bool {
        unsafe payloads.removeAll(keepingCapacity: true)
        let isIPv4 = layout.network == .ipv4
        guard isIPv4 || layout.network == .ipv6, isIPv4 == gso.kind.isIPv4, layout.hasTransportHeader,
            layout.transport == (gso.kind.isTCP ? .tcp : .udp), headers.count == layout.payloadOffset,
            gso.segmentSize > 0
        else { return false }
        let size = gso.segmentSize
        var total = 0
        for unsafe piece in unsafe pieces { total += piece.count }
        guard total > size else { return false }  // one segment: the caller sends the packet as it is
        let count = (total + size - 1) / size
        guard count <= Self.maximumSegments else { return false }
        // Each segment's payload must lie within one piece.
        var piece = 0, offset = 0
        for i in 0..<count {
            let length = i == count - 1 ? total - size * i : size
            while piece < pieces.count, unsafe offset == pieces[piece].count {
                piece += 1
                offset = 0
            }
            guard piece < pieces.count, unsafe offset + length <= pieces[piece].count else {
                unsafe payloads.removeAll(keepingCapacity: true)
                return false
            }
            unsafe payloads.append(UnsafeRawBufferPointer(rebasing: pieces[piece][offset..<(offset + length)]))
            offset += length
        }
        let template = unsafe HeaderTemplate(headers.baseAddress!, layout: layout, gso: gso, size: size, count: count)
        prepareArena(headerLength: layout.payloadOffset, count: count)
        for i in 0..<count {
            unsafe writeSegment(i, payload: payloads[i], headers: template, gso: gso, checksum: checksum, append: false)
        }
        return true
    }

    mutating func prepareArena(headerLength h: Int, count: Int) {
        headerLength = h
        headerStride = (h + 15) & ~15
        arena.reserve(headerStride * count)
    }

    /// What every segment's header shares, summed once (RFC 1624 style): the headers to copy, the
    /// first ID, sequence and flags, and the checksum words that do not change per segment.
    /// (`@safe`: it keeps a pointer to the headers, made and read only inside one segmentation
    /// call, while the caller's headers are alive.)
    @safe
    struct HeaderTemplate {
        let base: UnsafeRawPointer
        let h: Int, n: Int, t: Int, size: Int, count: Int
        let isIPv4: Bool, isTCP: Bool
        let id0: UInt16, seq0: UInt32, flags0: UInt8, l4Header: Int
        let addressSum: OnesComplementSum, protocolSum: OnesComplementSum
        let ipInvariant: OnesComplementSum, l4Invariant: OnesComplementSum
        let wordAt12: UInt16

        /// Safe: every offset below is inside the headers [0, payloadOffset), which the layout validated.
        init(_ base: UnsafeRawPointer, layout: PacketLayout, gso: GSOInfo, size: Int, count: Int) {
            unsafe self.base = base
            self.size = size
            let src = unsafe _UnsafeBytes(base)
            h = layout.payloadOffset
            n = layout.networkOffset
            t = layout.transportOffset
            self.count = count
            isIPv4 = layout.network == .ipv4
            isTCP = gso.kind.isTCP
            id0 = isIPv4 ? src.u16(n + 4) : 0
            seq0 = isTCP ? src.u32(t + 4) : 0
            flags0 = isTCP ? src.u8(t + TCPSegment.Field.flagByte) : 0
            l4Header = h - t
            // Address part of the pseudo-header, shared by every segment.
            addressSum = isIPv4 ? src.sum(n + 12, count: 8) : src.sum(n + 8, count: 32)
            protocolSum = OnesComplementSum(UInt16(isTCP ? 6 : 17))
            // IPv4 without total length, ID and checksum; TCP without sequence, flags word and
            // checksum; UDP without length and checksum. Each segment then adds its own words.
            ipInvariant = isIPv4
                ? src.sum(n, count: t - n) - OnesComplementSum(src.u16(n + 2)) - OnesComplementSum(id0)
                    - OnesComplementSum(src.u16(n + 10))
                : .zero
            l4Invariant = isTCP
                ? src.sum(t, count: l4Header) - OnesComplementSum(src.u16(t + 4)) - OnesComplementSum(src.u16(t + 6))
                    - OnesComplementSum(src.u16(t + 12)) - OnesComplementSum(src.u16(t + 16))
                : OnesComplementSum(src.u16(t)) + OnesComplementSum(src.u16(t + 2))
            wordAt12 = isTCP ? src.u16(t + 12) & 0xFF00 : 0
        }
    }

    /// Writes segment `i`'s header into the arena (lengths, ID, sequence, flags, checksums over
    /// `payload`) and, with `append`, records its payload.
    @inline(__always)
    mutating func writeSegment(_ i: Int, payload: UnsafeRawBufferPointer, headers x: HeaderTemplate, gso: GSOInfo,
                               checksum: OutputChecksum, append: Bool = true) {
        let length = payload.count
        let dst = unsafe arena.rawBase + headerStride * i
        unsafe dst.copyMemory(from: x.base, byteCount: x.h)
        let m = unsafe _UnsafeMutableBytes(dst)
        let n = x.n, t = x.t
        let l4Length = x.l4Header + length
        let l4LengthWord = OnesComplementSum(UInt16(truncatingIfNeeded: l4Length))
        if x.isIPv4 {
            let totalLength = UInt16(truncatingIfNeeded: t - n + l4Length)
            let id = gso.fixedID ? x.id0 : x.id0 &+ UInt16(truncatingIfNeeded: i)
            m.store16(totalLength, n + 2)
            m.store16(id, n + 4)
            m.store16(~(x.ipInvariant + OnesComplementSum(totalLength) + OnesComplementSum(id)).value, n + 10)
        } else {
            m.store16(UInt16(truncatingIfNeeded: t - n - 40 + l4Length), n + 4)
        }
        let pseudo = x.addressSum + x.protocolSum + l4LengthWord
        if x.isTCP {
            let sequence = x.seq0 &+ UInt32(truncatingIfNeeded: x.size * i)
            m.store32(sequence, t + 4)
            var flags = x.flags0
            if i != x.count - 1 { flags &= ~(TCPFlags.fin.flagByte | TCPFlags.psh.flagByte) }  // FIN, PSH only on the last
            if i != 0 { flags &= ~TCPFlags.cwr.flagByte }  // CWR only on the first
            m.store8(flags, t + TCPSegment.Field.flagByte)
            switch checksum {
            case .partial:
                m.store16(pseudo.value, t + 16)
            case .complete:
                let header = x.l4Invariant + OnesComplementSum(UInt16(truncatingIfNeeded: sequence >> 16))
                    + OnesComplementSum(UInt16(truncatingIfNeeded: sequence)) + OnesComplementSum(x.wordAt12 | UInt16(flags))
                unsafe m.store16(~(pseudo + header + InternetChecksum.unsafeSum(payload)).value, t + 16)
            }
        } else {
            m.store16(UInt16(truncatingIfNeeded: l4Length), t + 4)
            switch checksum {
            case .partial:
                m.store16(pseudo.value, t + 6)
            case .complete:
                let sum = unsafe pseudo + x.l4Invariant + l4LengthWord + InternetChecksum.unsafeSum(payload)
                m.store16(InternetChecksum.udpFieldValue(~sum.value), t + 6)
            }
        }
        if append { unsafe payloads.append(payload) }
    }

    /// Calls `body` with segment `index`'s pieces: its header, then its payload in place.
    /// - Warning: valid only until the next call or until the input changes.
    public func withSegmentFragments<E: Error>(at index: Int, _ body: (UnsafeRawBufferPointer) throws(E) -> Void)
        throws(E)
    {
        if headerLength > 0 {
            unsafe try body(UnsafeRawBufferPointer(start: arena.rawBase + headerStride * index, count: headerLength))
        }
        unsafe try body(payloads[index])
    }

    /// The length of segment `index`.
    public func segmentLength(at index: Int) -> Int { unsafe headerLength + payloads[index].count }

    /// Copies segment `index` into an array (allocates).
    public func segmentBytes(at index: Int) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(segmentLength(at: index))
        unsafe withSegmentFragments(at: index) { unsafe result.append(contentsOf: $0) }
        return result
    }
}

extension GSOSegmenter {
    /// A whole IP packet (`LINKTYPE_RAW`) as the packets it stands for: a super-packet's segments,
    /// or the packet itself when it is not one or cannot be segmented (a slow path's input).
    public static func packets(of packet: [UInt8], gso: GSOInfo?) -> [[UInt8]] {
        guard let gso, gso.segmentCount > 1 else { return [packet] }
        var segmenter = GSOSegmenter()
        let segmented: Bool = unsafe packet.withUnsafeBytes { raw in
            do {
                try unsafe segmenter.segment(raw, linkType: .raw, gso: gso)
                return true
            } catch { return false }
        }
        return segmented ? (0..<segmenter.segmentCount).map { segmenter.segmentBytes(at: $0) } : [packet]
    }
}
