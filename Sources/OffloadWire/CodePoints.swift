// MARK: - Numeric code points
//
// Open structs rather than closed enums: unknown values must round-trip unchanged.

/// An IP protocol / IPv6 next-header number (IANA "Assigned Internet Protocol Numbers").
public struct IPProtocol: RawRepresentable, Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    /// The protocol number.
    public var rawValue: UInt8
    /// Wraps a protocol number.
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Orders by number.
    @inlinable public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    /// IPv6 Hop-by-Hop Options (RFC 8200 §4.3).
    @inlinable public static var hopByHop: IPProtocol { IPProtocol(rawValue: 0) }
    /// ICMP for IPv4 (RFC 792).
    @inlinable public static var icmp: IPProtocol { IPProtocol(rawValue: 1) }
    /// TCP (RFC 9293).
    @inlinable public static var tcp: IPProtocol { IPProtocol(rawValue: 6) }
    /// UDP (RFC 768).
    @inlinable public static var udp: IPProtocol { IPProtocol(rawValue: 17) }
    /// IPv6 Routing header (RFC 8200 §4.4).
    @inlinable public static var ipv6Routing: IPProtocol { IPProtocol(rawValue: 43) }
    /// IPv6 Fragment header (RFC 8200 §4.5).
    @inlinable public static var ipv6Fragment: IPProtocol { IPProtocol(rawValue: 44) }
    /// IPsec Authentication Header (RFC 4302).
    @inlinable public static var authentication: IPProtocol { IPProtocol(rawValue: 51) }
    /// ICMPv6 (RFC 4443).
    @inlinable public static var icmpv6: IPProtocol { IPProtocol(rawValue: 58) }
    /// IPv6 "no next header" (RFC 8200 §4.7).
    @inlinable public static var ipv6NoNextHeader: IPProtocol { IPProtocol(rawValue: 59) }
    /// IPv6 Destination Options (RFC 8200 §4.6).
    @inlinable public static var ipv6DestinationOptions: IPProtocol { IPProtocol(rawValue: 60) }

    /// A short name, or the number.
    public var description: String {
        switch self {
        case .tcp: "TCP"
        case .udp: "UDP"
        case .icmp: "ICMP"
        case .icmpv6: "ICMPv6"
        default: "proto-\(rawValue)"
        }
    }
}

/// An EtherType (IEEE 802.3; IANA "ieee-802-numbers").
public struct EtherType: RawRepresentable, Hashable, Sendable {
    /// The 16-bit value.
    public var rawValue: UInt16
    /// Wraps a value.
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// IPv4.
    @inlinable public static var ipv4: EtherType { EtherType(rawValue: 0x0800) }
    /// ARP.
    @inlinable public static var arp: EtherType { EtherType(rawValue: 0x0806) }
    /// IEEE 802.1Q customer VLAN tag.
    @inlinable public static var vlan: EtherType { EtherType(rawValue: 0x8100) }
    /// IPv6.
    @inlinable public static var ipv6: EtherType { EtherType(rawValue: 0x86DD) }
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    @inlinable public static var qinq: EtherType { EtherType(rawValue: 0x88A8) }
    /// The pre-standard QinQ tag some switches still send.
    @inlinable public static var qinqLegacy: EtherType { EtherType(rawValue: 0x9100) }

    /// Whether this value introduces a VLAN tag.
    @inlinable public var isVLANTag: Bool { self == .vlan || self == .qinq || self == .qinqLegacy }
}

/// A pcap/pcapng link-layer header type (tcpdump.org "Link-layer header types").
public struct LinkType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The LINKTYPE_ value.
    public var rawValue: UInt32
    /// Wraps a value.
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// LINKTYPE_NULL: BSD loopback, a 4-byte address family in the capturing host's byte order.
    @inlinable public static var null: LinkType { LinkType(rawValue: 0) }
    /// LINKTYPE_ETHERNET.
    @inlinable public static var ethernet: LinkType { LinkType(rawValue: 1) }
    /// LINKTYPE_RAW: raw IPv4 or IPv6, told apart by the version nibble.
    @inlinable public static var raw: LinkType { LinkType(rawValue: 101) }
    /// LINKTYPE_LOOP: OpenBSD loopback, the address family in network byte order.
    @inlinable public static var loop: LinkType { LinkType(rawValue: 108) }
    /// LINKTYPE_LINUX_SLL: Linux cooked capture v1 (16-byte header).
    @inlinable public static var linuxSLL: LinkType { LinkType(rawValue: 113) }
    /// LINKTYPE_IPV4.
    @inlinable public static var ipv4: LinkType { LinkType(rawValue: 228) }
    /// LINKTYPE_IPV6.
    @inlinable public static var ipv6: LinkType { LinkType(rawValue: 229) }
    /// LINKTYPE_LINUX_SLL2: Linux cooked capture v2 (20-byte header).
    @inlinable public static var linuxSLL2: LinkType { LinkType(rawValue: 276) }

    /// A short name.
    public var description: String {
        switch self {
        case .null: "NULL"
        case .ethernet: "EN10MB"
        case .raw: "RAW"
        case .loop: "LOOP"
        case .linuxSLL: "LINUX_SLL"
        case .ipv4: "IPV4"
        case .ipv6: "IPV6"
        case .linuxSLL2: "LINUX_SLL2"
        default: "linktype-\(rawValue)"
        }
    }

    /// Whether the wire layer can find the network header under this link type.
    public var isSupported: Bool {
        switch self {
        case .null, .ethernet, .raw, .loop, .linuxSLL, .ipv4, .ipv6, .linuxSLL2: true
        default: false
        }
    }
}
