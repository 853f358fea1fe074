import OffloadEngine
import OffloadWire

/// Settings of a GTP-U tunnel (3GPP TS 29.281): the TEIDs of both ends and whether G-PDUs carry
/// sequence numbers.
public struct GTPUSettings: Hashable, Sendable {
    /// The TEID this end accepts (the far end sends with it).
    public var localTEID: UInt32
    /// The TEID this end sends with (the far end accepts it).
    public var remoteTEID: UInt32
    /// Whether G-PDUs carry a sequence number (the S flag, 4 more bytes).
    public var sequenceNumbers = false

    /// One TEID for both directions (`offload tunnel --id N`).
    public init(teid: UInt32, sequenceNumbers: Bool = false) {
        localTEID = teid
        remoteTEID = teid
        self.sequenceNumbers = sequenceNumbers
    }

    /// The GTP-U header's length: 8, or 12 with sequence numbers.
    public var headerLength: Int { sequenceNumbers ? 12 : 8 }
}

/// A tunnel's protocol and identity.
public enum TunnelProtocol: Hashable, Sendable, CustomStringConvertible {
    /// GTP-U v1 (3GPP TS 29.281): IP packets inside, port 2152.
    case gtpu(GTPUSettings)
    /// VXLAN (RFC 7348): Ethernet frames inside, port 4789.
    case vxlan(vni: UInt32)

    /// The tunnel header's length.
    public var headerLength: Int {
        switch self {
        case .gtpu(let g): g.headerLength
        case .vxlan: VXLANHeader.length
        }
    }

    /// What is inside: IP packets or Ethernet frames.
    public var innerLinkType: LinkType {
        switch self {
        case .gtpu: .raw
        case .vxlan: .ethernet
        }
    }

    /// The UDP port.
    public var port: UInt16 {
        switch self {
        case .gtpu: GTPUHeader.port
        case .vxlan: VXLANHeader.port
        }
    }

    /// What the tunnel adds to an inner IP packet: outer IP, UDP, the tunnel header (and for
    /// VXLAN the inner Ethernet header).
    public func overhead(outerIPv6: Bool) -> Int {
        let outer = (outerIPv6 ? 40 : 20) + 8 + headerLength
        switch self {
        case .gtpu: return outer
        case .vxlan: return outer + 14
        }
    }

    /// `GTP-U TEID 7`, `VXLAN VNI 7`.
    public var description: String {
        switch self {
        case .gtpu(let g): g.localTEID == g.remoteTEID ? "GTP-U TEID \(g.localTEID)" : "GTP-U TEID \(g.localTEID)/\(g.remoteTEID)"
        case .vxlan(let vni): "VXLAN VNI \(vni)"
        }
    }
}

/// Puts inner packets and super-packets behind tunnel headers, one datagram per inner segment,
/// without copying payload: a super-packet is segmented (GSO, complete checksums, the segment
/// headers in an arena, the payload in place) and each segment gets its own tunnel header (a
/// GTP-U header's length field is that segment's). The datagrams of one packet are all the same size but the last,
/// as one UDP GSO send needs them.
///
/// (`@safe`: the pointers it keeps, into the caller's packet and its own arena, are handed out
/// only inside ``withDatagramPieces(at:_:)`` and documented as valid until the next ``prepare(_:gso:)``.)
@safe
public struct TunnelEncapsulator: ~Copyable {
    /// The protocol.
    public let tunnel: TunnelProtocol
    var segmenter = GSOSegmenter()
    /// Tunnel headers, 12 bytes apart, one per datagram of the current train.
    var headers = GrowableBuffer<UInt8>(capacity: 12 * 128)
    var count = 0
    var single: UnsafeRawBufferPointer?
    /// The sequence number of the next G-PDU (with sequence numbers on).
    public private(set) var nextSequence: UInt16 = 0
    /// The prepared packet's TOS / traffic class (DSCP and ECN), for the outer header (RFC 6040);
    /// nil when it is not IP.
    public private(set) var innerTOS: UInt8?

    /// Creates an encapsulator.
    public init(tunnel: TunnelProtocol) { self.tunnel = tunnel }

    /// Prepares the datagrams of one inner packet (from its IP header, or its Ethernet header for
    /// VXLAN; checksums complete or, with `gso`, partial): afterwards ``datagramCount`` and ``withDatagramPieces(at:_:)`` give them.
    /// - Throws: ``GSOError`` when the GSO facts do not fit the packet.
    /// - Warning: the datagrams point into `packet`: valid while it is and until the next call.
    public mutating func prepare(_ packet: UnsafeRawBufferPointer, gso: GSOInfo?) throws(GSOError) {
        innerTOS = unsafe TunnelECN.innerTOS(packet, linkType: tunnel.innerLinkType)
        if let gso, gso.segmentCount > 1 {
            unsafe try segmenter.segment(packet, linkType: tunnel.innerLinkType, gso: gso, checksum: .complete)
            count = segmenter.segmentCount
            unsafe single = nil
        } else {
            count = 1
            unsafe single = unsafe packet
        }
        _ = headers.reserve(count * 12)
        for i in 0..<count {
            let slot = unsafe UnsafeMutableRawBufferPointer(start: headers.rawBase + 12 * i, count: 12)
            switch tunnel {
            case .gtpu(let settings):
                let length = unsafe single?.count ?? segmenter.segmentLength(at: i)
                var sequence: UInt16?
                if settings.sequenceNumbers {
                    sequence = nextSequence
                    nextSequence &+= 1
                }
                unsafe GTPUHeader(teid: settings.remoteTEID, sequence: sequence, payloadLength: length).write(to: slot)
            case .vxlan(let vni):
                unsafe VXLANHeader(vni: vni).write(to: slot)
            }
        }
    }

    /// The datagrams prepared.
    public var datagramCount: Int { count }

    /// The UDP payload length of datagram `index`.
    public func datagramLength(at index: Int) -> Int {
        tunnel.headerLength + (unsafe single?.count ?? segmenter.segmentLength(at: index))
    }

    /// Calls `body` with datagram `index`'s pieces: its tunnel header, the inner headers, the payload.
    public func withDatagramPieces(at index: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        unsafe body(UnsafeRawBufferPointer(start: headers.rawBase + 12 * index, count: tunnel.headerLength))
        if let single = unsafe single {
            unsafe body(single)
        } else {
            unsafe segmenter.withSegmentFragments(at: index) { unsafe body($0) }
        }
    }

    /// Datagram `index` in one array (allocates: for captures and tests).
    public func datagramBytes(at index: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(datagramLength(at: index))
        unsafe withDatagramPieces(at: index) { unsafe out.append(contentsOf: $0) }
        return out
    }
}

/// What a received tunnel datagram is.
public enum TunnelDatagram: Hashable, Sendable {
    /// A G-PDU (or VXLAN frame) for this end: the inner packet is `range` of the datagram.
    case packet(Range<Int>)
    /// A GTP-U echo request: answer it (``TunnelDecapsulator/echoResponse(to:)``).
    case echoRequest(sequence: UInt16?)
    /// An echo response (to an echo this end sent; none are sent yet).
    case echoResponse
    /// An error indication from the far end (it has no context for a TEID we send with).
    case errorIndication
    /// Refused: counted by reason, never forwarded.
    case drop(TunnelDropReason)
}

/// Why a received datagram was not forwarded.
public enum TunnelDropReason: String, Hashable, Sendable, CaseIterable, Codable, CodingKeyRepresentable {
    /// Shorter than the tunnel header (or, for VXLAN, than an Ethernet header after it).
    case truncated
    /// Not GTP version 1 (or GTP', protocol type 0); a VXLAN header without the I flag.
    case version
    /// The length field disagrees with the datagram.
    case length
    /// The outer header says congestion (CE) and the inner packet is not ECN-capable (RFC 6040 §4.2).
    case ecn = "ecn_ce_not_ect"
    /// A TEID or VNI this end does not serve.
    case unknownID = "unknown_id"
    /// Extension headers (the E flag), which this endpoint does not parse.
    case extensionHeaders = "extension_headers"
    /// A message type other than G-PDU, echo or error indication (or a G-PDU that is not IP).
    case messageType = "message_type"
}

/// Reads received tunnel datagrams: validates the header (GTP-U, TS 29.281: version, the length
/// of each datagram, the TEID; VXLAN, RFC 7348: the I flag, the VNI) and finds the inner packet.
public struct TunnelDecapsulator: Sendable {
    /// The protocol.
    public let tunnel: TunnelProtocol

    /// Creates a decapsulator.
    public init(tunnel: TunnelProtocol) { self.tunnel = tunnel }

    /// Classifies one datagram (its UDP payload).
    public func classify(_ datagram: UnsafeRawBufferPointer) -> TunnelDatagram {
        switch tunnel {
        case .gtpu(let settings): unsafe classifyGTPU(datagram, settings)
        case .vxlan(let vni): unsafe classifyVXLAN(datagram, vni)
        }
    }

    func classifyVXLAN(_ datagram: UnsafeRawBufferPointer, _ vni: UInt32) -> TunnelDatagram {
        let header: VXLANHeader
        do { header = unsafe try VXLANHeader(datagram) } catch {
            switch error {
            case .truncated: return .drop(.truncated)
            case .flags: return .drop(.version)
            }
        }
        guard header.vni == vni & 0xFF_FFFF else { return .drop(.unknownID) }
        let count = datagram.count
        guard count >= VXLANHeader.length + 14 else { return .drop(.truncated) }
        return .packet(VXLANHeader.length..<count)
    }

    func classifyGTPU(_ datagram: UnsafeRawBufferPointer, _ settings: GTPUSettings) -> TunnelDatagram {
        let header: GTPUHeader
        do { header = unsafe try GTPUHeader(datagram) } catch {
            switch error {
            case .truncated: return .drop(.truncated)
            case .version: return .drop(.version)
            case .length: return .drop(.length)
            case .extensionHeaders: return .drop(.extensionHeaders)
            }
        }
        switch header.messageType {
        case GTPUHeader.MessageType.gPDU:
            guard header.teid == settings.localTEID else { return .drop(.unknownID) }
            let start = header.headerLength
            let count = datagram.count
            guard count > start else { return .drop(.messageType) }
            let version = unsafe datagram[start] >> 4
            guard version == 4 || version == 6 else { return .drop(.messageType) }
            return .packet(start..<count)
        case GTPUHeader.MessageType.echoRequest: return .echoRequest(sequence: header.sequence)
        case GTPUHeader.MessageType.echoResponse: return .echoResponse
        case GTPUHeader.MessageType.errorIndication: return .errorIndication
        default: return .drop(.messageType)
        }
    }

    /// The echo response to an echo request (TS 29.281 §7.2.2): TEID 0, the request's sequence
    /// number, and the Recovery information element (type 14, restart counter 0) TS 29.060 asks for.
    public func echoResponse(to sequence: UInt16?) -> [UInt8] {
        let recovery: [UInt8] = [14, 0]
        let header = GTPUHeader(messageType: GTPUHeader.MessageType.echoResponse, teid: 0, sequence: sequence ?? 0,
                                payloadLength: recovery.count)
        return header.bytes + recovery
    }
}
