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

    /// Whether the network protocol is IPv4 or IPv6.
    @inlinable public var isIP: Bool { if case .other = network { false } else { true } }
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
        if let fast = unsafe bytes.withUnsafeBytes({ unsafe Self._commonCase($0, linkType: linkType) }) {
            self = fast
            return
        }
        try self.init(validatingEachHeader: bytes, linkType: linkType)
    }

    /// The common case, read with raw loads: Ethernet (untagged) or raw IP; IPv4 without
    /// options and not a fragment, or IPv6 without extension headers; TCP or UDP. It checks the
    /// same lengths as the header views and returns nil for anything else, which then goes
    /// through ``init(validatingEachHeader:linkType:)``; so both give the same result (a test
    /// compares them on mutated and truncated frames).
    @inlinable
    static func _commonCase(_ p: UnsafeRawBufferPointer, linkType: LinkType) -> PacketLayout? {
        guard let base = p.baseAddress else { return nil }
        let count = p.count
        func u8(_ o: Int) -> UInt8 { unsafe base.load(fromByteOffset: o, as: UInt8.self) }
        func u16(_ o: Int) -> UInt16 { unsafe UInt16(bigEndian: base.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
        var n = 0
        var version: UInt8
        // Safe: every load below is preceded by a check that its bytes are inside [0, count).
        switch linkType {
        case .ethernet:
            guard count >= 15 else { return nil }
            switch u16(12) {
            case 0x0800: version = 4
            case 0x86DD: version = 6
            default: return nil
            }
            n = 14
        case .raw, .ipv4, .ipv6:
            guard count >= 1 else { return nil }
            version = u8(0) >> 4
        default:
            return nil
        }
        let t: Int
        let ipEnd: Int
        let transport: UInt8
        let network: Network
        if version == 4 {
            guard count >= n + 20, u8(n) == 0x45 else { return nil }
            let total = Int(u16(n + 2))
            guard total >= 20, n + total <= count, u16(n + 6) & 0x3FFF == 0 else { return nil }
            transport = u8(n + 9)
            t = n + 20
            ipEnd = n + total
            network = .ipv4
        } else if version == 6 {
            guard count >= n + 40, u8(n) >> 4 == 6 else { return nil }
            ipEnd = n + 40 + Int(u16(n + 4))
            guard ipEnd <= count else { return nil }
            transport = u8(n + 6)
            t = n + 40
            network = .ipv6
        } else {
            return nil
        }
        let headerLength: Int
        switch transport {
        case 6:
            guard t + 20 <= ipEnd else { return nil }
            headerLength = Int(u8(t + 12) >> 4) * 4
            guard headerLength >= 20, t + headerLength <= ipEnd else { return nil }
        case 17:
            guard t + 8 <= ipEnd else { return nil }
            let length = Int(u16(t + 4))
            guard length >= 8, length <= ipEnd - t else { return nil }
            headerLength = 8
        default:
            return nil
        }
        return PacketLayout(frameLength: count, networkOffset: n, network: network, transportOffset: t,
                            transport: IPProtocol(rawValue: transport), transportHeaderLength: headerLength,
                            ipEnd: ipEnd, isFragment: false)
    }

    /// Validates every layer with the header views (``EthernetFrame``, ``IPv4Packet``, ...):
    /// the reference path, which also explains what is wrong.
    /// - Throws: ``WireError`` with the offset counted from the start of the frame.
    @inlinable
    public init(validatingEachHeader bytes: RawSpan, linkType: LinkType) throws(WireError) {
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
