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
    public static let hopByHop = IPProtocol(rawValue: 0)
    /// ICMP for IPv4 (RFC 792).
    public static let icmp = IPProtocol(rawValue: 1)
    /// TCP (RFC 9293).
    public static let tcp = IPProtocol(rawValue: 6)
    /// UDP (RFC 768).
    public static let udp = IPProtocol(rawValue: 17)
    /// IPv6 Routing header (RFC 8200 §4.4).
    public static let ipv6Routing = IPProtocol(rawValue: 43)
    /// IPv6 Fragment header (RFC 8200 §4.5).
    public static let ipv6Fragment = IPProtocol(rawValue: 44)
    /// ICMPv6 (RFC 4443).
    public static let icmpv6 = IPProtocol(rawValue: 58)
    /// IPv6 "no next header" (RFC 8200 §4.7).
    public static let ipv6NoNextHeader = IPProtocol(rawValue: 59)
    /// IPv6 Destination Options (RFC 8200 §4.6).
    public static let ipv6DestinationOptions = IPProtocol(rawValue: 60)

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
    public static let ipv4 = EtherType(rawValue: 0x0800)
    /// ARP.
    public static let arp = EtherType(rawValue: 0x0806)
    /// IEEE 802.1Q customer VLAN tag.
    public static let vlan = EtherType(rawValue: 0x8100)
    /// IPv6.
    public static let ipv6 = EtherType(rawValue: 0x86DD)
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    public static let qinq = EtherType(rawValue: 0x88A8)
    /// The pre-standard QinQ tag some switches still send.
    public static let qinqLegacy = EtherType(rawValue: 0x9100)

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
    public static let null = LinkType(rawValue: 0)
    /// LINKTYPE_ETHERNET.
    public static let ethernet = LinkType(rawValue: 1)
    /// LINKTYPE_RAW: raw IPv4 or IPv6, told apart by the version nibble.
    public static let raw = LinkType(rawValue: 101)
    /// LINKTYPE_LOOP: OpenBSD loopback, the address family in network byte order.
    public static let loop = LinkType(rawValue: 108)
    /// LINKTYPE_LINUX_SLL: Linux cooked capture v1 (16-byte header).
    public static let linuxSLL = LinkType(rawValue: 113)
    /// LINKTYPE_IPV4.
    public static let ipv4 = LinkType(rawValue: 228)
    /// LINKTYPE_IPV6.
    public static let ipv6 = LinkType(rawValue: 229)
    /// LINKTYPE_LINUX_SLL2: Linux cooked capture v2 (20-byte header).
    public static let linuxSLL2 = LinkType(rawValue: 276)

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
