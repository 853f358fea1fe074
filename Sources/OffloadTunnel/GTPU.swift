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

    /// What the tunnel adds to an inner packet on a path of `family`: outer IP, UDP, GTP-U.
    public func overhead(outerIPv6: Bool) -> Int { (outerIPv6 ? 40 : 20) + 8 + headerLength }
}

/// Puts inner packets and super-packets behind GTP-U headers, one datagram per inner segment,
/// without copying payload: a super-packet is segmented (GSO, complete checksums, the segment
/// headers in an arena, the payload in place) and each segment gets its own GTP-U header, whose
/// length field is that segment's. The datagrams of one packet are all the same size but the last,
/// as one UDP GSO send needs them.
///
/// (`@safe`: the pointers it keeps, into the caller's packet and its own arena, are handed out
/// only inside ``withDatagramPieces(at:_:)`` and documented as valid until the next ``prepare(_:gso:)``.)
@safe
public struct GTPUEncapsulator: ~Copyable {
    /// The settings.
    public let settings: GTPUSettings
    var segmenter = GSOSegmenter()
    /// GTP-U headers, 12 bytes apart, one per datagram of the current train.
    var headers = GrowableBuffer<UInt8>(capacity: 12 * 128)
    var count = 0
    var single: UnsafeRawBufferPointer?
    /// The sequence number of the next G-PDU (with sequence numbers on).
    public private(set) var nextSequence: UInt16 = 0

    /// Creates an encapsulator.
    public init(settings: GTPUSettings) { self.settings = settings }

    /// Prepares the datagrams of one inner IP packet (from its IP header, checksums complete or,
    /// with `gso`, partial): afterwards ``datagramCount`` and ``withDatagramPieces(at:_:)`` give them.
    /// - Throws: ``GSOError`` when the GSO facts do not fit the packet.
    /// - Warning: the datagrams point into `packet`: valid while it is and until the next call.
    public mutating func prepare(_ packet: UnsafeRawBufferPointer, gso: GSOInfo?) throws(GSOError) {
        if let gso, gso.segmentCount > 1 {
            unsafe try segmenter.segment(packet, linkType: .raw, gso: gso, checksum: .complete)
            count = segmenter.segmentCount
            unsafe single = nil
        } else {
            count = 1
            unsafe single = unsafe packet
        }
        _ = headers.reserve(count * 12)
        for i in 0..<count {
            let length = unsafe single?.count ?? segmenter.segmentLength(at: i)
            var sequence: UInt16?
            if settings.sequenceNumbers {
                sequence = nextSequence
                nextSequence &+= 1
            }
            let header = GTPUHeader(teid: settings.remoteTEID, sequence: sequence, payloadLength: length)
            unsafe header.write(to: UnsafeMutableRawBufferPointer(start: headers.rawBase + 12 * i, count: 12))
        }
    }

    /// The datagrams prepared.
    public var datagramCount: Int { count }

    /// The UDP payload length of datagram `index`.
    public func datagramLength(at index: Int) -> Int {
        settings.headerLength + (unsafe single?.count ?? segmenter.segmentLength(at: index))
    }

    /// Calls `body` with datagram `index`'s pieces: its GTP-U header, the inner headers, the payload.
    public func withDatagramPieces(at index: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        unsafe body(UnsafeRawBufferPointer(start: headers.rawBase + 12 * index, count: settings.headerLength))
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

/// What a received GTP-U datagram is.
public enum GTPUDatagram: Hashable, Sendable {
    /// A G-PDU for this end: the inner packet is `range` of the datagram.
    case packet(Range<Int>)
    /// An echo request: answer it (``GTPUDecapsulator/echoResponse(to:)``).
    case echoRequest(sequence: UInt16?)
    /// An echo response (to an echo this end sent; none are sent yet).
    case echoResponse
    /// An error indication from the far end (it has no context for a TEID we send with).
    case errorIndication
    /// Refused: counted by reason, never forwarded.
    case drop(GTPUDropReason)
}

/// Why a received datagram was not forwarded.
public enum GTPUDropReason: String, Hashable, Sendable, CaseIterable, Codable, CodingKeyRepresentable {
    /// Shorter than a GTP-U header.
    case truncated
    /// Not GTP version 1 (or GTP', protocol type 0).
    case version
    /// The length field disagrees with the datagram.
    case length
    /// A TEID this end does not serve.
    case unknownTEID = "unknown_teid"
    /// Extension headers (the E flag), which this endpoint does not parse.
    case extensionHeaders = "extension_headers"
    /// A message type other than G-PDU, echo or error indication (or a G-PDU that is not IP).
    case messageType = "message_type"
}

/// Reads received GTP-U datagrams (TS 29.281): validates the header (version, length per datagram,
/// TEID) and finds the inner packet.
public struct GTPUDecapsulator: Sendable {
    /// The settings.
    public let settings: GTPUSettings

    /// Creates a decapsulator.
    public init(settings: GTPUSettings) { self.settings = settings }

    /// Classifies one datagram (its UDP payload).
    public func classify(_ datagram: UnsafeRawBufferPointer) -> GTPUDatagram {
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
            guard header.teid == settings.localTEID else { return .drop(.unknownTEID) }
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
