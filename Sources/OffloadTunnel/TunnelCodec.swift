import OffloadWire

/// A tunnel protocol, as the endpoint, the captures and the tests see it: what goes before and
/// after each inner segment, and how a received datagram becomes an inner packet again. GTP-U,
/// VXLAN and ESP are codecs; the endpoint knows none of them by name.
///
/// A codec makes one encoder and one decoder per thread. Whatever state both directions share
/// (ESP's outbound sequence number, which the decapsulating thread's ICMP errors use too) lives in
/// a reference the codec's encoders have in common, never in two copies.
public protocol TunnelCodec: Sendable, CustomStringConvertible {
    /// The encoder type.
    associatedtype Encoder: TunnelEncoder
    /// The decoder type.
    associatedtype Decoder: TunnelDecoder

    /// What is inside: IP packets (`.raw`) or Ethernet frames.
    var innerLinkType: LinkType { get }
    /// The UDP port, at both ends.
    var port: UInt16 { get }
    /// Whether the socket is connected to the far end (only its datagrams are delivered). A
    /// protocol whose senders pick a source port per flow (VXLAN) cannot be.
    var connectsSocket: Bool { get }
    /// Whether one socket serves many peers (ESP with SAs of several peers, or peers behind NATs):
    /// the socket is then not connected, every datagram reaches the decoder with its sender, and
    /// the decoder decides whether that sender may use the SA; each packet goes where its
    /// encoder says (``TunnelEncoder/destination``).
    var servesManyPeers: Bool { get }
    /// The most bytes an encoder writes before an inner segment.
    var headerRoom: Int { get }
    /// The most bytes an encoder writes after an inner segment (padding, trailers, an ICV).
    var trailerRoom: Int { get }
    /// The reasons a decoder or encoder may give for a drop, published even while zero.
    var dropReasons: [TunnelDropReason] { get }

    /// An encoder (one per thread).
    /// - Throws: when the codec cannot encrypt (a crypto context failed).
    func makeEncoder() throws(TunnelCodecError) -> Encoder
    /// A decoder (one per thread).
    /// - Throws: when the codec cannot decrypt (a crypto context failed).
    func makeDecoder() throws(TunnelCodecError) -> Decoder
}

extension TunnelCodec {
    /// One far end (GTP-U, VXLAN).
    public var servesManyPeers: Bool { false }

    /// What the tunnel adds to an inner IP packet at most: outer IP and UDP, header and trailer
    /// room, and for Ethernet inside the inner Ethernet header. The inner MTU is the underlay's
    /// MTU less this.
    public func overhead(outerIPv6: Bool) -> Int {
        (outerIPv6 ? 40 : 20) + 8 + headerRoom + trailerRoom + (innerLinkType == .ethernet ? 14 : 0)
    }
}

/// A codec that cannot work (a crypto context could not be made).
public struct TunnelCodecError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What failed.
    public var description: String
    /// An error.
    public init(_ description: String) { self.description = description }
}

/// One inner segment, as up to two pieces in place: the segment's own headers (written by GSO)
/// and its payload, or the whole packet as one piece.
///
/// (`@safe`: it is handed to an encoder only for the duration of one ``TunnelEncoder/encode(_:index:into:)``
/// call, while the pieces it points into are alive.)
@safe
public struct InnerSegment {
    /// The first piece (the headers, or the whole packet).
    public var first: UnsafeRawBufferPointer
    /// The second piece (the payload), possibly empty.
    public var second: UnsafeRawBufferPointer
    /// The segment's length.
    public var count: Int { unsafe first.count + second.count }

    /// A segment of one or two pieces.
    public init(first: UnsafeRawBufferPointer, second: UnsafeRawBufferPointer) {
        unsafe self.first = first
        unsafe self.second = second
    }

    /// A segment of one piece.
    public init(first: UnsafeRawBufferPointer) {
        unsafe self.first = first
        unsafe self.second = unsafe UnsafeRawBufferPointer(start: nil, count: 0)
    }
}

/// Writes a protocol's headers (and, for a protocol that transforms the payload, the whole
/// datagram) for each inner segment.
public protocol TunnelEncoder {
    /// Whether the encoder writes each datagram whole (ESP: header, ciphertext, trailer, ICV),
    /// else only the header, and the inner segment follows in place, never copied.
    var writesWholeDatagram: Bool { get }

    /// Starts an inner packet of `datagrams` segments (`headers` is its first segment's headers
    /// from the IP header on, or the whole frame for Ethernet inside): an encoder that chooses
    /// per packet (ESP: the SA whose selectors match) chooses here, and reserves what the
    /// datagrams need (ESP: `datagrams` sequence numbers).
    /// - Returns: nil to go on, or why the packet is not sent (counted by the caller).
    mutating func begin(headers: UnsafeRawBufferPointer, datagrams: Int) -> TunnelDropReason?

    /// Writes datagram `index` of the packet begun for `segment` into `slot` (``TunnelCodec/headerRoom``
    /// bytes, plus the segment's length and ``TunnelCodec/trailerRoom`` when it writes whole datagrams).
    /// - Returns: the bytes written: the header, or the whole datagram.
    /// - Throws: why this segment cannot be sent (ESP: the seal failed): it then has no datagram,
    ///   nothing of the slot is sent, and the caller counts the reason. What ``begin(headers:datagrams:)``
    ///   reserved for it (ESP: its sequence number) is skipped, never used again.
    mutating func encode(_ segment: InnerSegment, index: Int, into slot: UnsafeMutableRawBufferPointer) throws(TunnelDropReason) -> Int

    /// Where the datagrams of the packet begun last go (nil: the one far end). Read after
    /// ``begin(headers:datagrams:)`` for a codec that ``TunnelCodec/servesManyPeers``.
    var destination: UDPEndpoint? { get }
}

extension TunnelEncoder {
    /// The one far end.
    public var destination: UDPEndpoint? { nil }
}

/// Reads received datagrams of a protocol.
public protocol TunnelDecoder {
    /// Classifies one datagram (its UDP payload) from `source` (nil: unknown, as in a capture). A
    /// decoder that decrypts does so in place, so the inner packet is a range of the same bytes.
    mutating func decode(_ datagram: UnsafeMutableRawBufferPointer, from source: UDPEndpoint?) -> TunnelDatagram
}

extension TunnelDecoder {
    /// Classifies one datagram whose sender is not known (a capture, a test).
    public mutating func decode(_ datagram: UnsafeMutableRawBufferPointer) -> TunnelDatagram {
        unsafe decode(datagram, from: nil)
    }
}

/// What a received tunnel datagram is.
public enum TunnelDatagram: Hashable, Sendable {
    /// An inner packet for this end: `range` of the datagram.
    case packet(Range<Int>)
    /// A request to answer (a GTP-U echo request): the answer to send back as it is.
    case reply([UInt8])
    /// Signalling or housekeeping, counted by kind and not forwarded (a GTP-U echo response or
    /// error indication, a NAT keepalive, an IKE message, an ESP dummy packet).
    case signalling(TunnelSignal)
    /// Refused: counted by reason, never forwarded.
    case drop(TunnelDropReason)
}

/// Why a datagram (or, encapsulating, an inner packet) was not forwarded. An open set: each
/// codec adds its own reasons; the name is the counter's label.
public struct TunnelDropReason: RawRepresentable, Hashable, Sendable, Codable, CodingKeyRepresentable, Error,
    CustomStringConvertible
{
    /// The label (`snake_case`).
    public var rawValue: String
    /// A reason.
    public init(rawValue: String) { self.rawValue = rawValue }
    /// The label.
    public var description: String { rawValue }

    /// Shorter than the protocol's header (or than what must follow it).
    public static let truncated = TunnelDropReason(rawValue: "truncated")
    /// Not the protocol's version (GTP version 1; VXLAN's I flag).
    public static let version = TunnelDropReason(rawValue: "version")
    /// A length field disagrees with the datagram.
    public static let length = TunnelDropReason(rawValue: "length")
    /// The outer header says congestion (CE) and the inner packet is not ECN-capable (RFC 6040 §4.2).
    public static let ecn = TunnelDropReason(rawValue: "ecn_ce_not_ect")
    /// A TEID, VNI or SPI this end does not serve.
    public static let unknownID = TunnelDropReason(rawValue: "unknown_id")
    /// GTP-U extension headers (the E flag), which this endpoint does not parse.
    public static let extensionHeaders = TunnelDropReason(rawValue: "extension_headers")
    /// A message type other than the ones served (or a G-PDU that is not IP).
    public static let messageType = TunnelDropReason(rawValue: "message_type")
}

/// A kind of signalling datagram, counted by name.
public struct TunnelSignal: RawRepresentable, Hashable, Sendable, Codable, CodingKeyRepresentable, CustomStringConvertible {
    /// The label (`snake_case`).
    public var rawValue: String
    /// A kind.
    public init(rawValue: String) { self.rawValue = rawValue }
    /// The label.
    public var description: String { rawValue }

    /// A GTP-U echo request (answered).
    public static let echoRequest = TunnelSignal(rawValue: "echo_request")
    /// A GTP-U echo response.
    public static let echoResponse = TunnelSignal(rawValue: "echo_response")
    /// A GTP-U error indication (the far end has no context for a TEID we send with).
    public static let errorIndication = TunnelSignal(rawValue: "error_indication")
}

// MARK: - GTP-U

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

/// GTP-U v1 (3GPP TS 29.281): IP packets inside, port 2152, each G-PDU's length field its own.
public struct GTPUCodec: TunnelCodec {
    /// The TEIDs and options.
    public var settings: GTPUSettings
    /// A codec.
    public init(_ settings: GTPUSettings) { self.settings = settings }

    public var innerLinkType: LinkType { .raw }
    public var port: UInt16 { GTPUHeader.port }
    public var connectsSocket: Bool { true }
    public var headerRoom: Int { settings.headerLength }
    public var trailerRoom: Int { 0 }
    public var dropReasons: [TunnelDropReason] {
        [.truncated, .version, .length, .ecn, .unknownID, .extensionHeaders, .messageType]
    }
    /// `GTP-U TEID 7`, or `GTP-U TEID 7/8` when the two directions differ.
    public var description: String {
        settings.localTEID == settings.remoteTEID
            ? "GTP-U TEID \(settings.localTEID)" : "GTP-U TEID \(settings.localTEID)/\(settings.remoteTEID)"
    }
    public func makeEncoder() -> Encoder { Encoder(settings: settings) }
    public func makeDecoder() -> Decoder { Decoder(settings: settings) }

    /// Writes G-PDU headers.
    public struct Encoder: TunnelEncoder {
        let settings: GTPUSettings
        /// The sequence number of the next G-PDU (with sequence numbers on).
        public private(set) var nextSequence: UInt16 = 0
        public var writesWholeDatagram: Bool { false }
        public mutating func begin(headers: UnsafeRawBufferPointer, datagrams: Int) -> TunnelDropReason? { nil }
        /// Writes a G-PDU header (never fails: the slot always has the header room).
        public mutating func encode(_ segment: InnerSegment, index: Int, into slot: UnsafeMutableRawBufferPointer) -> Int {
            var sequence: UInt16?
            if settings.sequenceNumbers {
                sequence = nextSequence
                nextSequence &+= 1
            }
            let header = GTPUHeader(teid: settings.remoteTEID, sequence: sequence, payloadLength: segment.count)
            unsafe header.write(to: slot)
            return header.headerLength
        }
    }

    /// Validates G-PDUs (version, each datagram's length, the TEID) and answers echo requests.
    public struct Decoder: TunnelDecoder {
        let settings: GTPUSettings
        public mutating func decode(_ datagram: UnsafeMutableRawBufferPointer, from source: UDPEndpoint?) -> TunnelDatagram {
            unsafe classify(UnsafeRawBufferPointer(datagram))
        }

        /// Classifies one datagram (it is only read).
        public func classify(_ datagram: UnsafeRawBufferPointer) -> TunnelDatagram {
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
            case GTPUHeader.MessageType.echoRequest: return .reply(Self.echoResponse(to: header.sequence))
            case GTPUHeader.MessageType.echoResponse: return .signalling(.echoResponse)
            case GTPUHeader.MessageType.errorIndication: return .signalling(.errorIndication)
            default: return .drop(.messageType)
            }
        }

        /// The echo response to an echo request (TS 29.281 §7.2.2): TEID 0, the request's sequence
        /// number, and the Recovery information element (type 14, restart counter 0) TS 29.060 asks for.
        public static func echoResponse(to sequence: UInt16?) -> [UInt8] {
            let recovery: [UInt8] = [14, 0]
            let header = GTPUHeader(messageType: GTPUHeader.MessageType.echoResponse, teid: 0, sequence: sequence ?? 0,
                                    payloadLength: recovery.count)
            return header.bytes + recovery
        }
    }
}

// MARK: - VXLAN

/// VXLAN (RFC 7348): Ethernet frames inside, port 4789, behind an 8-byte header with the VNI.
public struct VXLANCodec: TunnelCodec {
    /// The VNI (24 bits).
    public var vni: UInt32
    /// A codec.
    public init(vni: UInt32) { self.vni = vni }

    public var innerLinkType: LinkType { .ethernet }
    public var port: UInt16 { VXLANHeader.port }
    /// Senders such as the kernel's VXLAN pick a source port per flow: the socket stays unconnected.
    public var connectsSocket: Bool { false }
    public var headerRoom: Int { VXLANHeader.length }
    public var trailerRoom: Int { 0 }
    public var dropReasons: [TunnelDropReason] { [.truncated, .version, .ecn, .unknownID] }
    /// `VXLAN VNI 7`.
    public var description: String { "VXLAN VNI \(vni)" }
    public func makeEncoder() -> Encoder { Encoder(vni: vni) }
    public func makeDecoder() -> Decoder { Decoder(vni: vni) }

    /// Writes VXLAN headers.
    public struct Encoder: TunnelEncoder {
        let vni: UInt32
        public var writesWholeDatagram: Bool { false }
        public mutating func begin(headers: UnsafeRawBufferPointer, datagrams: Int) -> TunnelDropReason? { nil }
        /// Writes a VXLAN header (never fails: the slot always has the header room).
        public mutating func encode(_ segment: InnerSegment, index: Int, into slot: UnsafeMutableRawBufferPointer) -> Int {
            unsafe VXLANHeader(vni: vni).write(to: slot)
            return VXLANHeader.length
        }
    }

    /// Validates the I flag and the VNI.
    public struct Decoder: TunnelDecoder {
        let vni: UInt32
        public mutating func decode(_ datagram: UnsafeMutableRawBufferPointer, from source: UDPEndpoint?) -> TunnelDatagram {
            unsafe classify(UnsafeRawBufferPointer(datagram))
        }

        /// Classifies one datagram (it is only read).
        public func classify(_ datagram: UnsafeRawBufferPointer) -> TunnelDatagram {
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
    }
}
