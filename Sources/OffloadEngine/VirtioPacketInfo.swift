import OffloadWire

/// Why a virtio_net_hdr does not fit the packet it came with.
public enum VirtioError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A GSO type this project does not know.
    case unknownGSOType(UInt8)
    /// Legacy UFO (`VIRTIO_NET_HDR_GSO_UDP`, IP fragments): not supported.
    case legacyUFO
    /// The ECN bit on a non-TCP GSO type.
    case ecnWithoutTCP
    /// The GSO type does not match the packet (e.g. TCPV4 on an IPv6 packet).
    case gsoTypeMismatch(String)
    /// A GSO type with `gso_size` 0.
    case zeroGSOSize
    /// `csum_start + csum_offset + 2` lies beyond the packet.
    case checksumOutOfPacket(start: Int, offset: Int, length: Int)
    /// `csum_start`/`csum_offset` do not point at the L4 checksum of a GSO packet.
    case badChecksumLocation(start: Int, offset: Int)
    /// The packet's headers do not parse.
    case malformed(WireError)
    /// More segments than allowed (TCP: 65535; UDP: `UDP_MAX_SEGMENTS`, 128 in newer kernels).
    case tooManySegments(Int, limit: Int)

    /// A one-line explanation.
    public var description: String {
        switch self {
        case .unknownGSOType(let t): "virtio_net_hdr: unknown gso_type \(t)"
        case .legacyUFO: "virtio_net_hdr: legacy UFO (gso_type 3) is not supported"
        case .ecnWithoutTCP: "virtio_net_hdr: ECN bit on a non-TCP gso_type"
        case .gsoTypeMismatch(let s): "virtio_net_hdr: gso_type does not match the packet: \(s)"
        case .zeroGSOSize: "virtio_net_hdr: gso_size 0 with a GSO type"
        case .checksumOutOfPacket(let start, let offset, let length):
            "virtio_net_hdr: checksum at \(start)+\(offset) lies outside the \(length)-byte packet"
        case .badChecksumLocation(let start, let offset):
            "virtio_net_hdr: csum_start \(start) / csum_offset \(offset) do not point at the L4 checksum"
        case .malformed(let e): "virtio_net_hdr packet: \(e)"
        case .tooManySegments(let n, let limit): "virtio_net_hdr: \(n) segments, more than \(limit)"
        }
    }
}

/// What a virtio_net_hdr says about the packet behind it, after checking that it fits.
public struct VirtioPacketInfo: Hashable, Sendable {
    /// The GSO facts, when the packet is a super-packet.
    public var gso: GSOInfo?
    /// The checksum state (`NEEDS_CSUM` → `.partial`, `DATA_VALID` → `.verified`).
    public var checksum: ChecksumState
    /// For `.partial`: where checksumming starts and the field's offset from there.
    public var checksumStart: Int?
    /// See ``checksumStart``.
    public var checksumOffset: Int?

    /// Creates packet facts.
    public init(gso: GSOInfo?, checksum: ChecksumState, checksumStart: Int? = nil, checksumOffset: Int? = nil) {
        self.gso = gso
        self.checksum = checksum
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// The most UDP segments in one packet (Linux `UDP_MAX_SEGMENTS`, 128 since 6.x; 64 before).
    public static let maximumUDPSegments = 128

    /// Checks a header read from the kernel against its packet (docs/linux-gro-rules.md §7.3; wireguard-go and
    /// Tailscale lessons): known type, type matches the packet's family and protocol, non-zero
    /// size, checksum location inside the packet and on the L4 checksum, a bounded segment count.
    /// `hdr_len` is ignored: header lengths are taken from the packet itself.
    /// - Parameters:
    ///   - header: the header.
    ///   - packet: the packet after it (for a TUN device: the IP packet).
    ///   - linkType: its link type (`.raw` for TUN, `.ethernet` for TAP).
    /// - Throws: ``VirtioError``.
    public static func validate(_ header: VirtioNetHeader, packet: RawSpan, linkType: LinkType = .raw)
        throws(VirtioError) -> VirtioPacketInfo
    {
        var info = VirtioPacketInfo(gso: nil, checksum: .unverified)
        if header.needsChecksum {
            let start = Int(header.checksumStart)
            let offset = Int(header.checksumOffset)
            guard start + offset + 2 <= packet.byteCount else {
                throw .checksumOutOfPacket(start: start, offset: offset, length: packet.byteCount)
            }
            info.checksum = .partial
            info.checksumStart = start
            info.checksumOffset = offset
        } else if header.dataValid {
            info.checksum = .verified
        }
        let type = header.baseGSOType
        guard type != VirtioNetHeader.gsoNone else {
            if header.gsoType & VirtioNetHeader.gsoECN != 0 { throw .ecnWithoutTCP }
            return info
        }
        let isTCP: Bool
        switch type {
        case VirtioNetHeader.gsoTCPv4, VirtioNetHeader.gsoTCPv6: isTCP = true
        case VirtioNetHeader.gsoUDPL4: isTCP = false
        case VirtioNetHeader.gsoUDP: throw .legacyUFO
        default: throw .unknownGSOType(header.gsoType)
        }
        let ecn = header.gsoType & VirtioNetHeader.gsoECN != 0
        if ecn && !isTCP { throw .ecnWithoutTCP }
        guard header.gsoSize > 0 else { throw .zeroGSOSize }
        let layout: PacketLayout
        do { layout = try PacketLayout(parsing: packet, linkType: linkType) } catch { throw .malformed(error) }
        let isIPv4 = layout.network == .ipv4
        guard isIPv4 || layout.network == .ipv6 else { throw .gsoTypeMismatch("not an IP packet") }
        if type == VirtioNetHeader.gsoTCPv4 && !isIPv4 { throw .gsoTypeMismatch("TCPV4 on an IPv6 packet") }
        if type == VirtioNetHeader.gsoTCPv6 && isIPv4 { throw .gsoTypeMismatch("TCPV6 on an IPv4 packet") }
        guard layout.transport == (isTCP ? .tcp : .udp), layout.hasTransportHeader else {
            throw .gsoTypeMismatch("\(isTCP ? "TCP" : "UDP") type on a \(layout.transport) packet")
        }
        if header.needsChecksum
            && (Int(header.checksumStart) != layout.transportOffset || Int(header.checksumOffset) != (isTCP ? 16 : 6))
        {
            throw .badChecksumLocation(start: Int(header.checksumStart), offset: Int(header.checksumOffset))
        }
        let size = Int(header.gsoSize)
        let payload = layout.payloadLength
        guard payload > size else { return info }  // fits in one segment: not GSO (virtio_net_hdr_to_skb)
        let count = (payload + size - 1) / size
        let limit = isTCP ? 65_535 : maximumUDPSegments
        guard count <= limit else { throw .tooManySegments(count, limit: limit) }
        let kind: GSOInfo.Kind = isTCP ? (isIPv4 ? .tcpv4 : .tcpv6) : (isIPv4 ? .udpv4 : .udpv6)
        info.gso = GSOInfo(kind: kind, segmentSize: size, segmentCount: count, fixedID: false, ecn: ecn)
        return info
    }

    /// The header to write before a packet the engine produced.
    ///
    /// A super-packet gets `NEEDS_CSUM` with its GSO type and size; the packet must carry the
    /// partial checksum (``OutputChecksum/partial``). A single packet with a partial checksum
    /// gets `NEEDS_CSUM` alone; anything else an all-zero header.
    /// - Returns: nil when virtio cannot express the packet: an LRO merge (no segment size) or a
    ///   fixed-ID IPv4 chain (virtio has no FIXEDID bit, so the kernel would renumber the IDs).
    ///   Segment such packets before writing them.
    public static func header(for gso: GSOInfo?, checksum: ChecksumState, packet: RawSpan,
                              linkType: LinkType = .raw) -> VirtioNetHeader? {
        guard gso != nil || checksum == .partial else { return VirtioNetHeader() }
        return header(for: gso, checksum: checksum, layout: try? PacketLayout(parsing: packet, linkType: linkType))
    }

    /// The header for a packet whose layout is known; see ``header(for:checksum:packet:linkType:)``.
    public static func header(for gso: GSOInfo?, checksum: ChecksumState, layout: PacketLayout?) -> VirtioNetHeader? {
        guard gso != nil || checksum == .partial else { return VirtioNetHeader() }
        guard let layout, layout.hasTransportHeader else { return gso == nil ? VirtioNetHeader() : nil }
        let isTCP = layout.transport == .tcp
        var header = VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum,
                                     checksumStart: UInt16(layout.transportOffset),
                                     checksumOffset: isTCP ? 16 : 6)
        guard let gso else { return header }
        guard gso.segmentSize > 0, !(gso.fixedID && gso.kind.isIPv4 && gso.segmentCount > 1) else { return nil }
        switch gso.kind {
        case .tcpv4: header.gsoType = VirtioNetHeader.gsoTCPv4
        case .tcpv6: header.gsoType = VirtioNetHeader.gsoTCPv6
        case .udpv4, .udpv6: header.gsoType = VirtioNetHeader.gsoUDPL4
        }
        if gso.ecn && gso.kind.isTCP { header.gsoType |= VirtioNetHeader.gsoECN }
        header.gsoSize = UInt16(gso.segmentSize)
        header.headerLength = UInt16(layout.payloadOffset)
        return header
    }

    /// Finishes a partial checksum in place: sums from `start` to the end and stores the result
    /// at `start + offset` (Linux `skb_checksum_help`).
    /// - Throws: ``VirtioError/checksumOutOfPacket(start:offset:length:)``.
    public static func finishPartialChecksum(_ packet: UnsafeMutableRawBufferPointer, start: Int, offset: Int)
        throws(VirtioError)
    {
        guard start >= 0, offset >= 0, start + offset + 2 <= packet.count else {
            throw .checksumOutOfPacket(start: start, offset: offset, length: packet.count)
        }
        let sum = unsafe InternetChecksum.unsafeSum(UnsafeRawBufferPointer(rebasing: packet[start...]))
        let value = ~sum.value
        unsafe packet[start + offset] = UInt8(value >> 8)
        unsafe packet[start + offset + 1] = UInt8(value & 0xFF)
    }
}
