import OffloadEngine
import OffloadForwarder
import OffloadWire

/// The IPv4-embedded IPv6 addresses of RFC 6052 with a /96 prefix (the well-known `64:ff9b::/96`
/// or a network-specific one): IPv4 address `a` is the prefix with `a` in its last 32 bits.
public struct IPv6Prefix96: Hashable, Sendable, CustomStringConvertible {
    /// The prefix's first 64 bits.
    public var high: UInt64
    /// Bits 64..<96 of the prefix (the low 32 bits of the address hold the IPv4 address).
    public var middle: UInt32

    /// The well-known prefix `64:ff9b::/96` (RFC 6052 §2.1).
    public static let wellKnown = IPv6Prefix96(IPv6Address(0x64, 0xff9b, 0, 0, 0, 0, 0, 0))!

    /// The /96 prefix of `address` (its last 32 bits must be zero); nil otherwise.
    public init?(_ address: IPv6Address) {
        guard address.low & 0xFFFF_FFFF == 0 else { return nil }
        high = address.high
        middle = UInt32(truncatingIfNeeded: address.low >> 32)
    }

    /// Parses `PREFIX/96` text (`64:ff9b::/96`).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[1] == "96", let address = IPv6Address(parts[0]) else { return nil }
        self.init(address)
    }

    /// The IPv6 address that embeds `v4`.
    @inlinable public func embedding(_ v4: IPv4Address) -> IPv6Address {
        IPv6Address(high: high, low: UInt64(middle) << 32 | UInt64(v4.rawValue))
    }

    /// The IPv4 address `v6` embeds, when `v6` lies inside the prefix.
    @inlinable public func extracting(_ v6: IPv6Address) -> IPv4Address? {
        guard v6.high == high, UInt32(truncatingIfNeeded: v6.low >> 32) == middle else { return nil }
        return IPv4Address(rawValue: UInt32(truncatingIfNeeded: v6.low))
    }

    /// `64:ff9b::/96`.
    public var description: String { "\(IPv6Address(high: high, low: UInt64(middle) << 32))/96" }
}

/// Counters of a ``SIITStage``.
public struct SIITStatistics: Hashable, Sendable {
    /// Packets translated IPv4 → IPv6, and IPv6 → IPv4.
    public var toIPv6 = 0, toIPv4 = 0
    /// Super-packets among them (translated once for all their segments).
    public var superPackets = 0
    /// Dropped: an IPv6 address outside the prefix (no RFC 6791 pool configured).
    public var untranslatableAddress = 0
    /// Dropped: UDP over IPv4 without a checksum (RFC 7915 §4.5: dropped unless computing it is configured).
    public var udpWithoutChecksum = 0
    /// Dropped: not yet translated by this stage (ICMP, fragments, IPv6 extension headers, other protocols).
    public var notTranslated = 0
    /// Creates zeroed counters.
    public init() {}
}

/// Stateless IP/ICMP translation (SIIT, RFC 7915) of TCP and UDP, as a forwarder stage: each packet
/// or super-packet gets the other family's headers once, its payload stays in place, and its GSO
/// facts change kind (TCPv4 ↔ TCPv6, UDPv4 ↔ UDPv6) with the segment size kept. The forwarder then
/// applies the egress MTU to the translated segments: a 1500-byte IPv4 segment becomes a 1520-byte
/// IPv6 one, and when that does not fit the IPv4 source gets "fragmentation needed" announcing the
/// MTU less 20.
///
/// Addresses map through an RFC 6052 /96 prefix (``IPv6Prefix96``). The L4 checksum is adjusted
/// incrementally for the new pseudo-header (so a wrong checksum stays wrong; a partial one gets the
/// new pseudo-header sum). IPv4 options are dropped (RFC 7915 §4.1); the IPv6 → IPv4 direction sets
/// DF and ID 0 (§5.1).
///
/// - Note: This first part translates TCP, UDP and ICMP echo (request and reply) without fragments.
///   ICMP errors (with the packets they quote) and other ICMP types, fragments (IPv4 fragments ↔ the IPv6 Fragment header), IPv6
///   extension headers, EAM (RFC 7757) and RFC 6791 sources are dropped and counted in
///   ``SIITStatistics/notTranslated``; they come next.
public struct SIITStage: Stage {
    /// The /96 prefix IPv4 addresses map into.
    public let prefix: IPv6Prefix96
    /// Counters.
    public private(set) var statistics = SIITStatistics()

    /// Creates a translator for a prefix.
    public init(prefix: IPv6Prefix96 = .wellKnown) { self.prefix = prefix }

    /// IPv4 → IPv6 adds 20 bytes of header (options, which it drops, only make it less).
    public var headerGrowth: Int { 20 }

    /// A packet that does not parse cannot be translated: it is dropped, not passed to the other family.
    public var passesUnparsedPackets: Bool { false }

    /// Translates one packet or super-packet.
    public mutating func process(_ packet: inout StagePacket) -> StageVerdict {
        let layout = packet.layout
        guard !layout.isFragment, layout.hasTransportHeader,
            layout.transport == .tcp || layout.transport == .udp || layout.transport == .icmp || layout.transport == .icmpv6
        else {
            statistics.notTranslated += 1
            return .drop
        }
        let translated: Bool
        switch layout.network {
        case .ipv4: translated = toIPv6(&packet)
        case .ipv6: translated = toIPv4(&packet)
        case .other: translated = false
        }
        guard translated else { return .drop }
        if let gso = packet.gso, gso.segmentCount > 1 { statistics.superPackets += 1 }
        return .forward
    }

    // MARK: - IPv4 → IPv6 (RFC 7915 §4)

    mutating func toIPv6(_ packet: inout StagePacket) -> Bool {
        let layout = packet.layout
        let n = layout.networkOffset
        let t = layout.transportOffset
        let l4Header = layout.transportHeaderLength
        let isTCP = layout.transport == .tcp
        let isICMP = layout.transport == .icmp
        let checksumOffset = isICMP ? ICMPMessage.Field.checksum
            : isTCP ? TCPSegment.Field.checksum : UDPDatagram.Field.checksum
        let fields = packet.headers.withUnsafeBytes { h in
            // Safe: the layout validated the IPv4 header at n and the L4 header at t.
            (tos: h[n + IPv4Packet.Field.typeOfService], ttl: h[n + IPv4Packet.Field.timeToLive],
             source: IPv4Address(h, n + IPv4Packet.Field.source),
             destination: IPv4Address(h, n + IPv4Packet.Field.destination),
             check: UInt16(h[t + checksumOffset]) << 8 | UInt16(h[t + checksumOffset + 1]),
             typeAndCode: UInt16(h[t]) << 8 | UInt16(h[t + 1]))
        }
        var upper = layout.transport
        var newTypeAndCode = fields.typeAndCode
        if isICMP {
            // RFC 7915 §4.2: echo request and reply only, so far.
            guard let type6 = ICMPTranslation.echoType(toIPv6: UInt8(fields.typeAndCode >> 8)) else {
                statistics.notTranslated += 1
                return false
            }
            upper = .icmpv6
            newTypeAndCode = UInt16(type6) << 8 | fields.typeAndCode & 0xFF
        } else if !isTCP && fields.check == 0 {
            statistics.udpWithoutChecksum += 1
            return false
        }
        let source = prefix.embedding(fields.source)
        let destination = prefix.embedding(fields.destination)
        let payloadLength = layout.ipEnd - t  // L4 header + payload (of the whole super-packet)
        guard n + 40 + l4Header <= packet.headerCapacity else {
            statistics.notTranslated += 1
            return false
        }
        // TCP/UDP: only the addresses of the pseudo-header change. ICMP → ICMPv6: the checksum starts
        // covering a pseudo-header (RFC 4443 §2.3) and the type changes.
        let delta = isICMP
            ? InternetChecksum.pseudoHeaderSum(ipv6Source: source, destination: destination, nextHeader: .icmpv6,
                                               length: payloadLength)
                + OnesComplementSum(newTypeAndCode) - OnesComplementSum(fields.typeAndCode)
            : (source.wordSum + destination.wordSum) - addressSum(fields.source, fields.destination)
        let partial = packet.checksum == .partial && !isICMP
        packet.withUnsafeMutableHeaders { h in
            let base = h.baseAddress!
            // The L4 header moves first (to its place after a 40-byte IPv6 header), then the IPv6
            // header is written over the IPv4 one. Safe: both ranges lie inside the buffer (checked).
            (base + n + 40).copyMemory(from: base + t, byteCount: l4Header)
            var v6: [UInt8] = []
            IPv6HeaderRepr(source: source, destination: destination, nextHeader: upper,
                           payloadLength: payloadLength, hopLimit: fields.ttl, trafficClass: fields.tos)
                .encode(into: &v6)
            v6.withUnsafeBytes { (base + n).copyMemory(from: $0.baseAddress!, byteCount: 40) }
            h[n + 40] = UInt8(newTypeAndCode >> 8)
            adjustChecksum(h, at: n + 40 + checksumOffset, by: delta, partial: partial, udp: !isTCP && !isICMP)
        }
        packet.headerLength = n + 40 + l4Header
        packet.layout = PacketLayout(frameLength: n + 40 + payloadLength, networkOffset: n, network: .ipv6,
                                     transportOffset: n + 40, transport: upper,
                                     transportHeaderLength: l4Header, ipEnd: n + 40 + payloadLength, isFragment: false)
        if var gso = packet.gso {
            gso.kind = isTCP ? .tcpv6 : .udpv6
            gso.fixedID = false
            packet.gso = gso
        }
        statistics.toIPv6 += 1
        return true
    }

    // MARK: - IPv6 → IPv4 (RFC 7915 §5)

    mutating func toIPv4(_ packet: inout StagePacket) -> Bool {
        let layout = packet.layout
        let n = layout.networkOffset
        let t = layout.transportOffset
        guard t == n + 40 else {  // extension headers: not yet
            statistics.notTranslated += 1
            return false
        }
        let l4Header = layout.transportHeaderLength
        let isTCP = layout.transport == .tcp
        let isICMP = layout.transport == .icmpv6
        let checksumOffset = isICMP ? ICMPMessage.Field.checksum
            : isTCP ? TCPSegment.Field.checksum : UDPDatagram.Field.checksum
        let typeAndCode = packet.headers.withUnsafeBytes { h in UInt16(h[t]) << 8 | UInt16(h[t + 1]) }
        var upper = layout.transport
        var newTypeAndCode = typeAndCode
        if isICMP {
            guard let type4 = ICMPTranslation.echoType(toIPv4: UInt8(typeAndCode >> 8)) else {
                statistics.notTranslated += 1
                return false
            }
            upper = .icmp
            newTypeAndCode = UInt16(type4) << 8 | typeAndCode & 0xFF
        } else if layout.transport == .icmp {
            statistics.notTranslated += 1  // ICMPv4 inside IPv6 is not a thing to translate
            return false
        }
        let fields = packet.headers.withUnsafeBytes { h in
            // Safe: the layout validated the 40-byte IPv6 header at n.
            let word = UInt32(h[n]) << 24 | UInt32(h[n + 1]) << 16
            return (trafficClass: UInt8(truncatingIfNeeded: word >> 20), hopLimit: h[n + IPv6Packet.Field.hopLimit],
                    source: IPv6Address(h, n + IPv6Packet.Field.source),
                    destination: IPv6Address(h, n + IPv6Packet.Field.destination))
        }
        guard let source = prefix.extracting(fields.source), let destination = prefix.extracting(fields.destination) else {
            statistics.untranslatableAddress += 1
            return false
        }
        let l4Length = layout.ipEnd - t
        guard 20 + l4Length <= 65_535 else {
            statistics.notTranslated += 1
            return false
        }
        let delta = isICMP
            ? OnesComplementSum(newTypeAndCode) - OnesComplementSum(typeAndCode)
                - InternetChecksum.pseudoHeaderSum(ipv6Source: fields.source, destination: fields.destination,
                                                   nextHeader: .icmpv6, length: l4Length)
            : addressSum(source, destination) - (fields.source.wordSum + fields.destination.wordSum)
        let partial = packet.checksum == .partial && !isICMP
        packet.withUnsafeMutableHeaders { h in
            let base = h.baseAddress!
            var v4: [UInt8] = []
            IPv4HeaderRepr(source: source, destination: destination, protocolNumber: upper,
                           totalLength: 20 + l4Length, identification: 0, dontFragment: true,
                           timeToLive: fields.hopLimit, typeOfService: fields.trafficClass).encode(into: &v4)
            // The IPv4 header (with its checksum) first, then the L4 header moves down to follow it.
            // Safe: both ranges lie inside the headers in use.
            v4.withUnsafeBytes { (base + n).copyMemory(from: $0.baseAddress!, byteCount: 20) }
            (base + n + 20).copyMemory(from: base + t, byteCount: l4Header)
            h[n + 20] = UInt8(newTypeAndCode >> 8)
            adjustChecksum(h, at: n + 20 + checksumOffset, by: delta, partial: partial, udp: !isTCP && !isICMP)
        }
        packet.headerLength = n + 20 + l4Header
        packet.layout = PacketLayout(frameLength: n + 20 + l4Length, networkOffset: n, network: .ipv4,
                                     transportOffset: n + 20, transport: upper,
                                     transportHeaderLength: l4Header, ipEnd: n + 20 + l4Length, isFragment: false)
        if var gso = packet.gso {
            gso.kind = isTCP ? .tcpv4 : .udpv4
            packet.gso = gso
        }
        statistics.toIPv4 += 1
        return true
    }

    // MARK: - Checksums

    func addressSum(_ a: IPv4Address, _ b: IPv4Address) -> OnesComplementSum {
        OnesComplementSum(UInt16(truncatingIfNeeded: a.rawValue >> 16)) + OnesComplementSum(UInt16(truncatingIfNeeded: a.rawValue))
            + OnesComplementSum(UInt16(truncatingIfNeeded: b.rawValue >> 16))
            + OnesComplementSum(UInt16(truncatingIfNeeded: b.rawValue))
    }

    /// Moves the L4 checksum at `offset` to the new pseudo-header (the protocol and length words are
    /// the same in both families, so only the addresses' sum changes by `delta`). A complete checksum
    /// stays as right or as wrong as it was; a partial one (the pseudo-header sum only) becomes the
    /// new pseudo-header sum.
    func adjustChecksum(_ h: UnsafeMutableRawBufferPointer, at offset: Int, by delta: OnesComplementSum, partial: Bool,
                        udp: Bool) {
        let old = UInt16(h[offset]) << 8 | UInt16(h[offset + 1])
        var new: UInt16
        if partial {
            new = (OnesComplementSum(old) + delta).value
        } else {
            new = ~(OnesComplementSum(~old) + delta).value
            if udp { new = InternetChecksum.udpFieldValue(new) }
        }
        h[offset] = UInt8(new >> 8)
        h[offset + 1] = UInt8(new & 0xFF)
    }
}

/// ICMP ↔ ICMPv6 type mappings (RFC 7915 §4.2, §5.2).
enum ICMPTranslation {
    /// Echo request 8 → 128, echo reply 0 → 129; nil for what is not (yet) translated.
    static func echoType(toIPv6 type: UInt8) -> UInt8? {
        switch type {
        case 8: 128
        case 0: 129
        default: nil
        }
    }

    /// Echo request 128 → 8, echo reply 129 → 0; nil for what is not (yet) translated.
    static func echoType(toIPv4 type: UInt8) -> UInt8? {
        switch type {
        case 128: 8
        case 129: 0
        default: nil
        }
    }
}

extension IPv4Address {
    /// The address at `offset` in `bytes`. - Precondition: 4 bytes there.
    init(_ bytes: UnsafeRawBufferPointer, _ offset: Int) {
        self.init(rawValue: UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }
}

extension IPv6Address {
    /// The address at `offset` in `bytes`. - Precondition: 16 bytes there.
    init(_ bytes: UnsafeRawBufferPointer, _ offset: Int) {
        self.init(high: UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
                  low: UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)))
    }
}
