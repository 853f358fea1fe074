/// The values an IPsec security policy matches an IP packet on (RFC 4301 §4.4.1.1): the addresses,
/// the next-layer protocol, the ports, and whether the packet is a non-initial fragment (which
/// carries no ports: RFC 4301 §7).
///
/// Read from the headers alone, leniently about the packet's length: an encapsulator hands over
/// only the headers of a segment (its length fields count the payload that is not there), so the
/// bound is the buffer, or the IP length field when that is shorter. What cannot be read is left
/// out rather than refused: a packet whose transport header is cut short has no ports (then only
/// selectors that allow every port match it), like a non-initial fragment.
///
/// IPv6: the walk follows Hop-by-Hop (0), Routing (43), Fragment (44) and Destination Options (60)
/// headers, at most ``IPv6Packet/maximumExtensionHeaders``; the first other next header is the
/// protocol (for Authentication (51), Mobility or anything unknown: that number, with no ports).
/// A Fragment header with a non-zero offset ends the walk: the protocol is its next header.
public struct PacketSelectors: Hashable, Sendable, CustomStringConvertible {
    /// The source address.
    public var source: IPAddress
    /// The destination address.
    public var destination: IPAddress
    /// The next-layer protocol (after IPv6 extension headers).
    public var ipProtocol: UInt8
    /// The source port (TCP, UDP, SCTP, UDP-Lite, DCCP); nil when the packet has none or it could
    /// not be read (a non-initial fragment, a transport header cut short, ICMP).
    public var sourcePort: UInt16?
    /// The destination port; nil as for ``sourcePort`` (both are there, or neither).
    public var destinationPort: UInt16?
    /// Whether the packet is a fragment other than the first (its ports are elsewhere).
    public var isNonInitialFragment: Bool

    /// The values of a packet, given (for tests and callers that know them).
    public init(source: IPAddress, destination: IPAddress, ipProtocol: UInt8 = 0, sourcePort: UInt16? = nil,
                destinationPort: UInt16? = nil, isNonInitialFragment: Bool = false) {
        self.source = source
        self.destination = destination
        self.ipProtocol = ipProtocol
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.isNonInitialFragment = isNonInitialFragment
    }

    /// Whether the protocol's header starts with a 16-bit source port and a 16-bit destination
    /// port: TCP (6), UDP (17), DCCP (33), SCTP (132), UDP-Lite (136).
    @inlinable public static func hasPorts(_ ipProtocol: UInt8) -> Bool {
        ipProtocol == 6 || ipProtocol == 17 || ipProtocol == 33 || ipProtocol == 132 || ipProtocol == 136
    }

    /// Reads an IP packet's values from its headers (the packet starts at byte 0, IPv4 or IPv6).
    /// Nil when it is neither, or its fixed header (IPv4: all of it, options included) or an
    /// IPv6 extension header before the protocol is cut short, or the walk meets more than
    /// ``IPv6Packet/maximumExtensionHeaders`` extension headers.
    public init?(_ bytes: RawSpan) {
        let count = bytes.byteCount
        guard count >= 1 else { return nil }
        var transportOffset: Int
        var end: Int
        // Safe (the reads below): each is preceded by a check that its bytes lie inside [0, count).
        switch bytes._u8Unchecked(0) >> 4 {
        case 4:
            guard count >= IPv4Packet.Field.minimumHeaderEnd else { return nil }
            let headerLength = Int(bytes._u8Unchecked(IPv4Packet.Field.versionAndHeaderLength) & 0x0F) * 4
            guard headerLength >= IPv4Packet.Field.minimumHeaderEnd, headerLength <= count else { return nil }
            source = .v4(IPv4Address(rawValue: bytes._u32Unchecked(IPv4Packet.Field.source)))
            destination = .v4(IPv4Address(rawValue: bytes._u32Unchecked(IPv4Packet.Field.destination)))
            ipProtocol = bytes._u8Unchecked(IPv4Packet.Field.protocolNumber)
            let total = Int(bytes._u16Unchecked(IPv4Packet.Field.totalLength))
            end = total >= headerLength ? min(count, total) : count
            isNonInitialFragment = bytes._u16Unchecked(IPv4Packet.Field.flagsAndFragmentOffset) & IPv4Packet.Flags.fragmentOffsetMask != 0
            transportOffset = headerLength
        case 6:
            guard count >= IPv6Packet.Field.fixedHeaderEnd else { return nil }
            source = .v6(IPv6Address(high: bytes._u64Unchecked(IPv6Packet.Field.source),
                                     low: bytes._u64Unchecked(IPv6Packet.Field.source + 8)))
            destination = .v6(IPv6Address(high: bytes._u64Unchecked(IPv6Packet.Field.destination),
                                          low: bytes._u64Unchecked(IPv6Packet.Field.destination + 8)))
            let payloadLength = Int(bytes._u16Unchecked(IPv6Packet.Field.payloadLength))
            end = payloadLength == 0 ? count : min(count, IPv6Packet.Field.fixedHeaderEnd + payloadLength)
            var next = bytes._u8Unchecked(IPv6Packet.Field.nextHeader)
            var offset = IPv6Packet.Field.fixedHeaderEnd
            var walked = 0
            isNonInitialFragment = false
            while next == IPProtocol.hopByHop.rawValue || next == IPProtocol.ipv6Routing.rawValue
                || next == IPProtocol.ipv6Fragment.rawValue || next == IPProtocol.ipv6DestinationOptions.rawValue {
                walked += 1
                guard walked <= IPv6Packet.maximumExtensionHeaders,
                      offset + IPv6Packet.ExtensionField.minimumLength <= end else { return nil }
                let kind = IPProtocol(rawValue: next)
                let length = IPv6Packet.extensionHeaderLength(kind, lengthByte: bytes._u8Unchecked(offset + IPv6Packet.ExtensionField.length))
                    ?? IPv6Packet.ExtensionField.minimumLength
                next = bytes._u8Unchecked(offset + IPv6Packet.ExtensionField.nextHeader)
                if kind == .ipv6Fragment && bytes._u16Unchecked(offset + IPv6Packet.ExtensionField.fragmentOffsetAndFlags) & 0xFFF8 != 0 {
                    isNonInitialFragment = true
                    offset = end
                    break
                }
                offset += length
            }
            ipProtocol = next
            transportOffset = offset
        default:
            return nil
        }
        if !isNonInitialFragment && Self.hasPorts(ipProtocol) && transportOffset + 4 <= end {
            sourcePort = bytes._u16Unchecked(transportOffset)
            destinationPort = bytes._u16Unchecked(transportOffset + 2)
        } else {
            sourcePort = nil
            destinationPort = nil
        }
    }

    /// `10.0.0.1:5201 → 10.0.0.2:80 (6)`, `… (44, non-initial fragment)`.
    public var description: String {
        func endpoint(_ a: IPAddress, _ p: UInt16?) -> String {
            guard let p else { return a.description }
            return a.isIPv4 ? "\(a):\(p)" : "[\(a)]:\(p)"
        }
        return "\(endpoint(source, sourcePort)) → \(endpoint(destination, destinationPort)) (\(ipProtocol)"
            + (isNonInitialFragment ? ", non-initial fragment)" : ")")
    }
}
