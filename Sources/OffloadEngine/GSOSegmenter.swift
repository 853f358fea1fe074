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
        headerLength = h
        headerStride = (h + 15) & ~15
        arena.reserve(headerStride * count)
        let src = unsafe _UnsafeBytes(base)
        let n = layout.networkOffset
        let t = layout.transportOffset
        let isTCP = gso.kind.isTCP
        // Safe: every offset below is inside the validated headers [0, payloadOffset).
        let id0 = isIPv4 ? src.u16(n + 4) : 0
        let seq0 = isTCP ? src.u32(t + 4) : 0
        let flags0 = isTCP ? src.u8(t + TCPSegment.Field.flagByte) : 0
        let l4Header = h - t
        // Address part of the pseudo-header, shared by every segment.
        let addressSum = isIPv4 ? src.sum(n + 12, count: 8) : src.sum(n + 8, count: 32)
        let protocolSum = OnesComplementSum(UInt16(isTCP ? 6 : 17))
        // The header words that are the same in every segment, summed once (RFC 1624 style):
        // IPv4 without total length, ID and checksum; TCP without sequence, flags word and
        // checksum; UDP without length and checksum. Each segment then adds its own words.
        let ipInvariant = isIPv4
            ? src.sum(n, count: t - n) - OnesComplementSum(src.u16(n + 2)) - OnesComplementSum(id0)
                - OnesComplementSum(src.u16(n + 10))
            : .zero
        let l4Invariant = isTCP
            ? src.sum(t, count: l4Header) - OnesComplementSum(src.u16(t + 4)) - OnesComplementSum(src.u16(t + 6))
                - OnesComplementSum(src.u16(t + 12)) - OnesComplementSum(src.u16(t + 16))
            : OnesComplementSum(src.u16(t)) + OnesComplementSum(src.u16(t + 2))
        let wordAt12 = isTCP ? src.u16(t + 12) & 0xFF00 : 0
        for i in 0..<count {
            let length = i == count - 1 ? total - size * i : size
            let dst = unsafe arena.rawBase + headerStride * i
            unsafe dst.copyMemory(from: base, byteCount: h)
            let m = unsafe _UnsafeMutableBytes(dst)
            let l4Length = l4Header + length
            let l4LengthWord = OnesComplementSum(UInt16(truncatingIfNeeded: l4Length))
            if isIPv4 {
                let totalLength = UInt16(truncatingIfNeeded: t - n + l4Length)
                let id = gso.fixedID ? id0 : id0 &+ UInt16(truncatingIfNeeded: i)
                m.store16(totalLength, n + 2)
                m.store16(id, n + 4)
                m.store16(~(ipInvariant + OnesComplementSum(totalLength) + OnesComplementSum(id)).value, n + 10)
            } else {
                m.store16(UInt16(truncatingIfNeeded: t - n - 40 + l4Length), n + 4)
            }
            let payload = unsafe UnsafeRawBufferPointer(start: base + h + size * i, count: length)
            let pseudo = addressSum + protocolSum + l4LengthWord
            if isTCP {
                let sequence = seq0 &+ UInt32(truncatingIfNeeded: size * i)
                m.store32(sequence, t + 4)
                var flags = flags0
                if i != count - 1 { flags &= ~(TCPFlags.fin.flagByte | TCPFlags.psh.flagByte) }  // FIN, PSH only on the last
                if i != 0 { flags &= ~TCPFlags.cwr.flagByte }  // CWR only on the first
                m.store8(flags, t + TCPSegment.Field.flagByte)
                switch checksum {
                case .partial:
                    m.store16(pseudo.value, t + 16)
                case .complete:
                    let header = l4Invariant + OnesComplementSum(UInt16(truncatingIfNeeded: sequence >> 16))
                        + OnesComplementSum(UInt16(truncatingIfNeeded: sequence)) + OnesComplementSum(wordAt12 | UInt16(flags))
                    unsafe m.store16(~(pseudo + header + InternetChecksum.unsafeSum(payload)).value, t + 16)
                }
            } else {
                m.store16(UInt16(truncatingIfNeeded: l4Length), t + 4)
                switch checksum {
                case .partial:
                    m.store16(pseudo.value, t + 6)
                case .complete:
                    let sum = unsafe pseudo + l4Invariant + l4LengthWord + InternetChecksum.unsafeSum(payload)
                    m.store16(InternetChecksum.udpFieldValue(~sum.value), t + 6)
                }
            }
            unsafe payloads.append(payload)
        }
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
