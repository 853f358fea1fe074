/// One direction of a flow: addresses, transport protocol and ports, as far as a packet lets
/// them be read. The one flow identity of the project: the GRO engine's bypass rule,
/// `offload stats` and `offload doctor` all read it here.
///
/// A packet that parsed (a ``PacketLayout``) gives every field it has: ports only for TCP and UDP
/// with a transport header (not for a non-first fragment). A packet too odd to parse can still be
/// read *loosely* (``init(loosely:linkType:)``): addresses from the fixed IP header, the protocol
/// when the header names it, ports when they are right behind the header. Fields that could not
/// be read are nil, and ``mayShareFlow(with:)`` treats them as "could be anything".
public struct FlowKey: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    /// The sender of these packets.
    public var source: IPAddress
    /// The receiver.
    public var destination: IPAddress
    /// The transport protocol (after IPv6 extension headers); nil when it could not be read.
    public var transport: IPProtocol?
    /// The source port (TCP, UDP); nil when the packet has none or it could not be read.
    public var sourcePort: UInt16?
    /// The destination port.
    public var destinationPort: UInt16?

    /// Creates a key from its parts.
    @inlinable
    public init(source: IPAddress, destination: IPAddress, transport: IPProtocol?, sourcePort: UInt16? = nil,
                destinationPort: UInt16? = nil) {
        self.source = source
        self.destination = destination
        self.transport = transport
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
    }

    /// Hashes the same fields `==` compares, folded into three words: a third of the hasher calls
    /// of the synthesized hash (one per field and address half), which per-flow tables pay per
    /// packet.
    @inlinable
    public func hash(into hasher: inout Hasher) {
        @inline(__always) func word(_ a: IPAddress) -> UInt64 {
            switch a {
            case .v4(let x): UInt64(x.rawValue) | 1 << 63
            case .v6(let x): x.high ^ (x.low &* 0x9E37_79B9_7F4A_7C15)
            }
        }
        hasher.combine(word(source))
        hasher.combine(word(destination))
        hasher.combine((transport.map { UInt64($0.rawValue) << 40 } ?? 1 << 50) | UInt64(sourcePort ?? 0) << 16 | UInt64(destinationPort ?? 0)
            | (sourcePort == nil ? 1 << 33 : 0) | (destinationPort == nil ? 1 << 34 : 0))
    }

    /// Reads the key of a parsed packet; nil when it is not IP or `layout` does not fit `bytes`.
    public init?(_ bytes: RawSpan, layout: PacketLayout) {
        let n = layout.networkOffset
        guard layout.transportOffset <= bytes.byteCount else { return nil }
        switch layout.network {
        case .ipv4:
            guard n + IPv4Packet.Field.minimumHeaderEnd <= bytes.byteCount else { return nil }
            // Safe: the 20-byte header lies inside the bytes (checked above).
            source = .v4(IPv4Address(rawValue: bytes._u32Unchecked(n + IPv4Packet.Field.source)))
            destination = .v4(IPv4Address(rawValue: bytes._u32Unchecked(n + IPv4Packet.Field.destination)))
        case .ipv6:
            guard n + IPv6Packet.Field.fixedHeaderEnd <= bytes.byteCount else { return nil }
            // Safe: the 40-byte header lies inside the bytes (checked above).
            source = .v6(Self.ipv6(bytes, n + IPv6Packet.Field.source))
            destination = .v6(Self.ipv6(bytes, n + IPv6Packet.Field.destination))
        case .other:
            return nil
        }
        transport = layout.transport
        let t = layout.transportOffset
        if (layout.transport == .tcp || layout.transport == .udp) && layout.hasTransportHeader && t + 4 <= bytes.byteCount {
            // Safe: t + 4 <= byteCount (checked in the condition).
            sourcePort = bytes._u16Unchecked(t + TCPSegment.Field.sourcePort)
            destinationPort = bytes._u16Unchecked(t + TCPSegment.Field.destinationPort)
        } else {
            sourcePort = nil
            destinationPort = nil
        }
    }

    /// Reads what can be read of a packet that may not parse: the parsed key when it does;
    /// otherwise addresses from the fixed IP header, the protocol the header names (IPv4, or IPv6
    /// without extension headers), and ports when they follow the header directly and the packet
    /// is not a non-first fragment. Nil when not even the fixed IP header is there.
    public init?(loosely bytes: RawSpan, linkType: LinkType) {
        if let layout = try? PacketLayout(parsing: bytes, linkType: linkType) {
            self.init(bytes, layout: layout)
            return
        }
        guard let (n, _) = try? PacketLayout.linkHeader(bytes, linkType: linkType), n < bytes.byteCount else {
            return nil
        }
        let count = bytes.byteCount
        var portOffset: Int?
        let source: IPAddress
        let destination: IPAddress
        var transport: IPProtocol?
        // Safe: each read below is guarded by a length check against `count`.
        switch bytes._u8Unchecked(n) >> 4 {
        case 4:
            guard count >= n + IPv4Packet.Field.minimumHeaderEnd else { return nil }
            source = .v4(IPv4Address(rawValue: bytes._u32Unchecked(n + IPv4Packet.Field.source)))
            destination = .v4(IPv4Address(rawValue: bytes._u32Unchecked(n + IPv4Packet.Field.destination)))
            let proto = IPProtocol(rawValue: bytes._u8Unchecked(n + IPv4Packet.Field.protocolNumber))
            transport = proto
            let headerLength = Int(bytes._u8Unchecked(n) & 0x0F) * 4
            let offset = bytes._u16Unchecked(n + IPv4Packet.Field.flagsAndFragmentOffset)
                & IPv4Packet.Flags.fragmentOffsetMask
            if (proto == .tcp || proto == .udp) && offset == 0 && headerLength >= 20 { portOffset = n + headerLength }
        case 6:
            guard count >= n + IPv6Packet.Field.fixedHeaderEnd else { return nil }
            source = .v6(Self.ipv6(bytes, n + IPv6Packet.Field.source))
            destination = .v6(Self.ipv6(bytes, n + IPv6Packet.Field.destination))
            let next = IPProtocol(rawValue: bytes._u8Unchecked(n + IPv6Packet.Field.nextHeader))
            if next == .tcp || next == .udp {
                transport = next
                portOffset = n + IPv6Packet.Field.fixedHeaderEnd
            } else if next == .icmpv6 {
                transport = next
            }  // else: behind extension headers that did not parse, unknown
        default:
            return nil
        }
        if let p = portOffset, p + 4 <= count {
            self.init(source: source, destination: destination, transport: transport,
                      sourcePort: bytes._u16Unchecked(p), destinationPort: bytes._u16Unchecked(p + 2))
        } else {
            self.init(source: source, destination: destination, transport: transport)
        }
    }

    @inline(__always)
    static func ipv6(_ bytes: RawSpan, _ o: Int) -> IPv6Address {
        IPv6Address(high: bytes._u64Unchecked(o), low: bytes._u64Unchecked(o + 8))
    }

    /// Whether a router keeps the packet on its link (RFC 1812 §5.3.5, RFC 4291 §2.5.6, §2.7):
    /// to a multicast, link-local or limited-broadcast address, or from a link-local one.
    public var staysOnLink: Bool {
        destination.isMulticast || destination.isLinkLocal || source.isLinkLocal
            || destination == .v4(IPv4Address(rawValue: 0xFFFF_FFFF))
    }

    /// ``staysOnLink`` read straight from a parsed packet's addresses, without building a key: the
    /// per-packet form a dataplane uses. False when the layout is not IP or does not fit the bytes.
    @inlinable
    public static func staysOnLink(_ bytes: UnsafeRawBufferPointer, layout: PacketLayout) -> Bool {
        let n = layout.networkOffset
        switch layout.network {
        case .ipv4:
            guard n + IPv4Packet.Field.minimumHeaderEnd <= bytes.count else { return false }
            // Safe: the 20-byte header lies inside the bytes (checked above).
            let source = unsafe IPv4Address(rawValue: UInt32(bigEndian: bytes.loadUnaligned(
                fromByteOffset: n + IPv4Packet.Field.source, as: UInt32.self)))
            let destination = unsafe IPv4Address(rawValue: UInt32(bigEndian: bytes.loadUnaligned(
                fromByteOffset: n + IPv4Packet.Field.destination, as: UInt32.self)))
            return destination.isMulticast || destination.isLinkLocal || destination.isLimitedBroadcast
                || source.isLinkLocal
        case .ipv6:
            guard n + IPv6Packet.Field.fixedHeaderEnd <= bytes.count else { return false }
            // Safe: the 40-byte header lies inside the bytes (checked above).
            let sourceHigh = unsafe UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: n + IPv6Packet.Field.source,
                                                                          as: UInt64.self))
            let destinationHigh = unsafe UInt64(bigEndian: bytes.loadUnaligned(
                fromByteOffset: n + IPv6Packet.Field.destination, as: UInt64.self))
            let destination = IPv6Address(high: destinationHigh, low: 0)
            return destination.isMulticast || destination.isLinkLocal
                || IPv6Address(high: sourceHigh, low: 0).isLinkLocal
        case .other:
            return false
        }
    }

    /// The other direction.
    public var reversed: FlowKey {
        FlowKey(source: destination, destination: source, transport: transport, sourcePort: destinationPort,
                destinationPort: sourcePort)
    }

    /// Whether two keys may belong to one flow: the same addresses, and the same protocol and
    /// ports wherever both keys could read them. The GRO engine completes a held packet when a
    /// packet that bypasses GRO may share its flow, so that per-flow order is kept.
    @inlinable
    public func mayShareFlow(with other: FlowKey) -> Bool {
        guard source == other.source, destination == other.destination else { return false }
        if let a = transport, let b = other.transport, a != b { return false }
        if let a = sourcePort, let b = other.sourcePort, a != b { return false }
        if let a = destinationPort, let b = other.destinationPort, a != b { return false }
        return true
    }

    /// `address:port` of the source (`[address]:port` for IPv6; the address alone without ports).
    public var sourceEndpoint: String { Self.endpoint(source, sourcePort) }
    /// `address:port` of the destination.
    public var destinationEndpoint: String { Self.endpoint(destination, destinationPort) }

    static func endpoint(_ address: IPAddress, _ port: UInt16?) -> String {
        guard let port else { return address.description }
        return address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }

    /// `a:p → b:q`.
    public var description: String { "\(sourceEndpoint) → \(destinationEndpoint)" }

    /// Orders by addresses, then protocol, then ports.
    public static func < (a: Self, b: Self) -> Bool {
        if a.source != b.source { return a.source < b.source }
        if a.destination != b.destination { return a.destination < b.destination }
        if a.transport != b.transport { return (a.transport?.rawValue ?? 0) < (b.transport?.rawValue ?? 0) }
        if a.sourcePort != b.sourcePort { return (a.sourcePort ?? 0) < (b.sourcePort ?? 0) }
        return (a.destinationPort ?? 0) < (b.destinationPort ?? 0)
    }
}
