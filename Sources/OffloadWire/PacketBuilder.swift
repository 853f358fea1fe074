/// Builds whole test and workload packets: TCP, UDP or ICMP over IPv4 or IPv6 (with IPv4
/// options and IPv6 extension headers), raw IP or behind an Ethernet header (with VLAN tags),
/// with correct checksums unless told to spoil them. The one packet builder of the project:
/// tests, benchmarks, generated captures and the forwarder's start-up probe use it.
///
/// ```swift
/// var b = PacketBuilder()                       // TCP/IPv4, 1448 bytes of payload, Ethernet
/// b.sequence = 1_000
/// let frame = b.frame()
/// b.ipv6 = true                                 // the same segment over IPv6
/// b.transport = .icmp(type: 3, code: 4, restOfHeader: 1400)
/// b.payload = quote                             // an ICMP error with its quote
/// ```
///
/// The defaults are documentation addresses (RFC 5737, RFC 3849) and the fields of a bulk
/// TCP segment with timestamps; change what the packet needs.
public struct PacketBuilder: Sendable {
    /// What follows the IP header.
    public enum Transport: Hashable, Sendable {
        /// TCP with the builder's TCP fields.
        case tcp
        /// UDP with the builder's ports.
        case udp
        /// ICMP (over IPv4) or ICMPv6 (over IPv6): type, code and the 32-bit rest of the header.
        case icmp(type: UInt8, code: UInt8, restOfHeader: UInt32)
        /// Another protocol number: the payload follows the IP header as it is.
        case other(IPProtocol)
    }

    /// What comes before the IP header.
    public enum Link: Hashable, Sendable {
        /// Nothing (DLT_RAW, a TUN device without packet information).
        case raw
        /// An Ethernet header with the builder's MAC addresses and VLAN tag.
        case ethernet
    }

    /// The documentation IPv4 source (RFC 5737).
    public static let v4Source = IPv4Address(192, 0, 2, 1)
    /// The documentation IPv4 destination.
    public static let v4Destination = IPv4Address(198, 51, 100, 7)
    /// The documentation IPv6 source (RFC 3849).
    public static let v6Source = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)
    /// The documentation IPv6 destination.
    public static let v6Destination = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)

    /// The source address; its family decides IPv4 or IPv6.
    public var source: IPAddress = .v4(v4Source)
    /// The destination address (the same family as ``source``).
    public var destination: IPAddress = .v4(v4Destination)
    /// The transport.
    public var transport: Transport = .tcp
    /// The link header.
    public var link: Link = .ethernet

    /// TCP sequence number.
    public var sequence: UInt32 = 1_000_000
    /// The payload; nil: ``payloadLength`` bytes of a pattern drawn from ``payloadSeed`` and the sequence number.
    public var payload: [UInt8]?
    /// The length of the pattern payload (ignored when ``payload`` is set).
    public var payloadLength = 1448
    /// Varies the pattern payload.
    public var payloadSeed: UInt8 = 0
    /// TCP flags.
    public var flags: TCPFlags = .ack
    /// TCP acknowledgment number.
    public var ack: UInt32 = 5000
    /// TCP window.
    public var window: UInt16 = 1024
    /// TCP urgent pointer.
    public var urgent: UInt16 = 0
    /// TCP options.
    public var options: [TCPOption] = [.noOperation, .noOperation, .timestamp(value: 100, echoReply: 50)]
    /// TCP or UDP source port.
    public var sourcePort: UInt16 = 40000
    /// TCP or UDP destination port.
    public var destinationPort: UInt16 = 5201
    /// IPv4 identification.
    public var ipID: UInt16 = 8
    /// IPv4 Don't Fragment.
    public var dontFragment = true
    /// IPv4 More Fragments.
    public var moreFragments = false
    /// IPv4 fragment offset, in 8-byte units.
    public var fragmentOffset = 0
    /// TTL or hop limit.
    public var ttl: UInt8 = 64
    /// TOS or traffic class (DSCP and ECN).
    public var tos: UInt8 = 0
    /// IPv6 flow label.
    public var flowLabel: UInt32 = 0
    /// IPv4 option bytes (a multiple of 4).
    public var ipv4Options: [UInt8] = []
    /// IPv6 extension headers, in order: each one's type and its bytes (a multiple of 8); the first
    /// byte of each (its next header) is set to chain them correctly.
    public var extensionHeaders: [(IPProtocol, [UInt8])] = []
    /// Spoils the L4 checksum (XOR 0x55 into its high byte).
    public var corruptChecksum = false
    /// Sends UDP without a checksum (0; IPv4 only in practice).
    public var zeroUDPChecksum = false
    /// Zero bytes after the IP packet (Ethernet padding).
    public var padding = 0
    /// A VLAN tag on the Ethernet header.
    public var vlan: UInt16? = nil
    /// The Ethernet source.
    public var sourceMAC: UInt64 = 0x02_00_00_00_00_01
    /// The Ethernet destination.
    public var destinationMAC: UInt64 = 0x02_00_00_00_00_02

    /// Creates a builder with the defaults.
    public init() {}

    /// Whether the packet is IPv6. Setting it moves both addresses to that family's documentation
    /// defaults when they are of the other family.
    public var ipv6: Bool {
        get { !source.isIPv4 }
        set {
            guard newValue != ipv6 else { return }
            source = newValue ? .v6(Self.v6Source) : .v4(Self.v4Source)
            destination = newValue ? .v6(Self.v6Destination) : .v4(Self.v4Destination)
        }
    }

    /// Whether the transport is UDP (false: TCP).
    public var udp: Bool {
        get { transport == .udp }
        set { transport = newValue ? .udp : .tcp }
    }

    /// The IP protocol number of ``transport``.
    public var protocolNumber: IPProtocol {
        switch transport {
        case .tcp: .tcp
        case .udp: .udp
        case .icmp: ipv6 ? .icmpv6 : .icmp
        case .other(let p): p
        }
    }

    /// The payload bytes.
    public func payloadBytes() -> [UInt8] {
        payload ?? (0..<payloadLength).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(payloadSeed) &+ Int(sequence)) }
    }

    /// The pseudo-header sum for an upper-layer length.
    public func pseudoHeaderSum(length: Int) -> OnesComplementSum {
        switch (source, destination) {
        case (.v4(let s), .v4(let d)):
            InternetChecksum.pseudoHeaderSum(ipv4Source: s, destination: d, protocolNumber: protocolNumber, length: length)
        case (.v6(let s), .v6(let d)):
            InternetChecksum.pseudoHeaderSum(ipv6Source: s, destination: d, nextHeader: protocolNumber, length: length)
        default:
            preconditionFailure("source and destination must be of one family")
        }
    }

    /// The transport header and payload, with a correct checksum (or a spoiled one).
    public func transportBytes() -> [UInt8] {
        var l4: [UInt8] = []
        let data = payloadBytes()
        switch transport {
        case .udp:
            UDPHeaderRepr(sourcePort: sourcePort, destinationPort: destinationPort)
                .encode(into: &l4, payload: data, checksum: !zeroUDPChecksum, pseudoHeader: pseudoHeaderSum)
            if corruptChecksum { l4[UDPDatagram.Field.checksum] ^= 0x55 }
        case .tcp:
            TCPHeaderRepr(sourcePort: sourcePort, destinationPort: destinationPort, sequenceNumber: sequence,
                          acknowledgmentNumber: ack, flags: flags, window: window, urgentPointer: urgent,
                          options: options)
                .encode(into: &l4, payload: data, pseudoHeader: pseudoHeaderSum)
            if corruptChecksum { l4[TCPSegment.Field.checksum] ^= 0x55 }
        case .icmp(let type, let code, let rest):
            l4 = [type, code, 0, 0, UInt8(rest >> 24), UInt8(rest >> 16 & 0xFF), UInt8(rest >> 8 & 0xFF),
                  UInt8(rest & 0xFF)] + data
            let initial = ipv6 ? pseudoHeaderSum(length: l4.count) : .zero
            let check = unsafe l4.span.bytes.withUnsafeBytes { unsafe ~InternetChecksum.unsafeSum($0, initial: initial).value }
            l4[ICMPMessage.Field.checksum] = UInt8(check >> 8) ^ (corruptChecksum ? 0x55 : 0)
            l4[ICMPMessage.Field.checksum + 1] = UInt8(check & 0xFF)
        case .other:
            l4 = data
        }
        return l4
    }

    /// The IP packet (no link header).
    public func ipPacket() -> [UInt8] {
        var bytes: [UInt8] = []
        let l4 = transportBytes()
        switch (source, destination) {
        case (.v6(let s), .v6(let d)):
            var ext: [UInt8] = []
            var chain = extensionHeaders.map { $0.0 }
            chain.append(protocolNumber)
            for (i, (_, body)) in extensionHeaders.enumerated() {
                var h = body
                if !h.isEmpty { h[0] = chain[i + 1].rawValue }
                ext += h
            }
            IPv6HeaderRepr(source: s, destination: d, nextHeader: chain[0], payloadLength: ext.count + l4.count,
                           hopLimit: ttl, trafficClass: tos, flowLabel: flowLabel).encode(into: &bytes)
            bytes += ext
        case (.v4(let s), .v4(let d)):
            var ip = IPv4HeaderRepr(source: s, destination: d, protocolNumber: protocolNumber,
                                    totalLength: 20 + ipv4Options.count + l4.count, identification: ipID,
                                    dontFragment: dontFragment, timeToLive: ttl, typeOfService: tos,
                                    options: ipv4Options)
            ip.moreFragments = moreFragments
            ip.fragmentOffset = fragmentOffset
            ip.encode(into: &bytes)
        default:
            preconditionFailure("source and destination must be of one family")
        }
        return bytes + l4
    }

    /// The frame under ``link``, with ``padding``.
    public func frame() -> [UInt8] {
        var bytes: [UInt8] = []
        if link == .ethernet {
            EthernetHeaderRepr(destination: MACAddress(rawValue: destinationMAC), source: MACAddress(rawValue: sourceMAC),
                               tags: vlan.map { [VLANTag(identifier: $0)] } ?? [],
                               etherType: ipv6 ? .ipv6 : .ipv4).encode(into: &bytes)
        }
        bytes += ipPacket()
        bytes += [UInt8](repeating: 0, count: padding)
        return bytes
    }

    /// The link type of ``frame()``.
    public var linkType: LinkType { link == .ethernet ? .ethernet : .raw }
}
