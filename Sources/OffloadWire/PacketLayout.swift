/// Where each header of a frame starts, found by validating every layer once.
///
/// ```text
/// frame:  | link header | IP header (+ options / ext headers) | L4 header | payload | trailing |
///         0             networkOffset                          transportOffset        ipEnd    frameLength
/// ```
/// All offsets count from the start of the frame. A layout is plain data (no borrowed bytes), so
/// an engine can keep it next to a packet it holds.
public struct PacketLayout: Hashable, Sendable {
    /// The network protocol of a frame.
    public enum Network: Hashable, Sendable {
        /// IPv4.
        case ipv4
        /// IPv6.
        case ipv6
        /// Something else: its EtherType (0 where the link type gives none).
        case other(EtherType)
    }

    /// The frame length.
    public var frameLength: Int
    /// The link-layer header length (0 for raw IP), including VLAN tags.
    public var networkOffset: Int
    /// The network protocol.
    public var network: Network
    /// The offset of the transport header (after IPv4 options or IPv6 extension headers);
    /// equal to ``ipEnd`` when there is none.
    public var transportOffset: Int
    /// The transport protocol (after the IPv6 extension headers).
    public var transport: IPProtocol
    /// The transport header length: the TCP data offset × 4, 8 for UDP and ICMP, 0 when the
    /// transport header was not validated (fragments, other protocols).
    public var transportHeaderLength: Int
    /// The end of the IP packet as its length field says (≤ ``frameLength``).
    public var ipEnd: Int
    /// Whether the packet is an IP fragment (IPv4 MF/offset, or an IPv6 Fragment header).
    public var isFragment: Bool

    /// Creates a layout from its parts (for tests and for engines that build headers).
    @inlinable
    public init(frameLength: Int, networkOffset: Int, network: Network, transportOffset: Int, transport: IPProtocol,
                transportHeaderLength: Int, ipEnd: Int, isFragment: Bool) {
        self.frameLength = frameLength
        self.networkOffset = networkOffset
        self.network = network
        self.transportOffset = transportOffset
        self.transport = transport
        self.transportHeaderLength = transportHeaderLength
        self.ipEnd = ipEnd
        self.isFragment = isFragment
    }

    /// The offset of the L4 payload.
    @inlinable public var payloadOffset: Int { transportOffset + transportHeaderLength }
    /// The L4 payload length.
    @inlinable public var payloadLength: Int { ipEnd - payloadOffset }
    /// The IP header length: IPv4 IHL × 4, or 40 plus the IPv6 extension headers.
    @inlinable public var networkHeaderLength: Int { transportOffset - networkOffset }
    /// Bytes after the IP packet (link padding).
    @inlinable public var trailingByteCount: Int { frameLength - ipEnd }
    /// Whether the transport header is present and validated.
    @inlinable public var hasTransportHeader: Bool { transportHeaderLength > 0 }

    /// Finds the network header under `linkType`.
    ///
    /// - Returns: the link header length and the network protocol.
    /// - Throws: ``WireError`` when the link header is truncated or the link type unknown.
    @inlinable
    public static func linkHeader(_ bytes: RawSpan, linkType: LinkType) throws(WireError) -> (Int, Network) {
        func network(_ t: EtherType) -> Network {
            t == .ipv4 ? .ipv4 : t == .ipv6 ? .ipv6 : .other(t)
        }
        switch linkType {
        case .ethernet:
            let frame = try EthernetFrame(validating: bytes)
            return (frame.headerLength, network(frame.etherType))
        case .raw, .ipv4, .ipv6:
            guard bytes.byteCount >= 1 else {
                throw WireError(.link, .truncated(needed: 1, available: 0), at: 0)
            }
            let version = bytes._u8Unchecked(0) >> 4
            return (0, version == 4 ? .ipv4 : version == 6 ? .ipv6 : .other(EtherType(rawValue: 0)))
        case .linuxSLL, .linuxSLL2:
            let header = try LinuxCookedHeader(validating: bytes, version: linkType == .linuxSLL ? 1 : 2)
            return (header.headerLength, network(header.protocolType))
        case .null, .loop:
            let header = try LoopbackHeader(validating: bytes)
            return (4, network(header.etherType))
        default:
            throw WireError(.link, .unsupportedLinkType(linkType.rawValue), at: 0)
        }
    }

    /// Validates every layer of `bytes` and records where each header starts.
    ///
    /// A frame whose network protocol is not IP is not an error: its layout says `.other`.
    /// TCP and UDP headers are validated; ICMP needs its 8 bytes; other transports are not looked at.
    /// - Throws: ``WireError`` with the offset counted from the start of the frame.
    @inlinable
    public init(parsing bytes: RawSpan, linkType: LinkType) throws(WireError) {
        let (l3, network) = try Self.linkHeader(bytes, linkType: linkType)
        self.frameLength = bytes.byteCount
        self.networkOffset = l3
        self.network = network
        self.isFragment = false
        self.transportHeaderLength = 0
        let ip = bytes.extracting(droppingFirst: l3)
        switch network {
        case .other:
            self.transport = IPProtocol(rawValue: 255)
            self.transportOffset = bytes.byteCount
            self.ipEnd = bytes.byteCount
            return
        case .ipv4:
            let v4: IPv4Packet
            do { v4 = try IPv4Packet(validating: ip) } catch { throw error.shifted(by: l3) }
            self.transport = v4.protocolNumber
            self.transportOffset = l3 + v4.headerLength
            self.ipEnd = l3 + v4.totalLength
            self.isFragment = v4.isFragment
            if v4.fragmentOffset != 0 { return }  // no transport header in a non-first fragment
        case .ipv6:
            let v6: IPv6Packet
            do { v6 = try IPv6Packet(validating: ip) } catch { throw error.shifted(by: l3) }
            self.transport = v6.upperLayerProtocol
            self.transportOffset = l3 + v6.upperLayerOffset
            self.ipEnd = l3 + v6.totalLength
            self.isFragment = v6.isFragment
            if let f = v6.fragmentHeaderOffset,
                ip._u16Unchecked(f + 2) & 0xFFF8 != 0
            {
                return  // non-first fragment
            }
        }
        let l4 = bytes.extracting(transportOffset..<ipEnd)
        switch transport {
        case .tcp:
            do {
                let tcp = try TCPSegment(validating: l4)
                self.transportHeaderLength = tcp.headerLength
            } catch {
                if isFragment { return }  // a first fragment may cut the header short
                throw error.shifted(by: transportOffset)
            }
        case .udp:
            if isFragment {
                // The length field covers the reassembled datagram: only the 8 bytes are checked.
                if l4.byteCount >= 8 { self.transportHeaderLength = 8 }
                return
            }
            do {
                _ = try UDPDatagram(validating: l4)
                self.transportHeaderLength = 8
            } catch { throw error.shifted(by: transportOffset) }
        case .icmp, .icmpv6:
            if l4.byteCount >= 8 { self.transportHeaderLength = 8 }
        default:
            break
        }
    }
}
