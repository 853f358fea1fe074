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
    /// ICMP errors among them (rebuilt with the packet they quote).
    public var errors = 0
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
/// ICMP errors are rebuilt whole (`StageVerdict.rewrite`) with their type, code and MTU mapped
/// (packet too big ↔ fragmentation needed with the MTU ± 20, time exceeded, unreachable) and the
/// header of the packet they quote translated, so the sender on the other side can match them.
///
/// - Note: This first part translates TCP, UDP, ICMP echo and the common ICMP errors (parameter
///   problems with their pointer moved), without fragments. Other ICMP types, RFC 4884 extensions, fragments (IPv4 fragments ↔ the IPv6 Fragment header), IPv6
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
        if layout.transport == .icmp || layout.transport == .icmpv6 {
            let type = packet.headers.withUnsafeBytes { $0[layout.transportOffset] }
            if ICMPTranslation.isError(type, version6: layout.network == .ipv6) {
                return translateError(&packet)
            }
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

extension SIITStage {
    // MARK: - ICMP errors and the packets they quote (RFC 7915 §4.2–4.4, §5.2–5.4)

    /// Translates an ICMP or ICMPv6 error: the type, code and MTU, the outer header, and the header
    /// of the packet it quotes. The result is built whole (`.rewrite`), truncated to 1280 bytes
    /// (IPv6) or 576 (IPv4) as RFC 7915 §4.2 and §5.2 ask.
    mutating func translateError(_ packet: inout StagePacket) -> StageVerdict {
        let layout = packet.layout
        let n = layout.networkOffset
        let t = layout.transportOffset
        let toIPv6 = layout.network == .ipv4
        let outer = packet.headers.withUnsafeBytes { h in
            // Safe: the layout validated the IP header at n and the 8-byte ICMP header at t.
            (type: h[t], code: h[t + 1],
             rest: UInt32(h[t + 4]) << 24 | UInt32(h[t + 5]) << 16 | UInt32(h[t + 6]) << 8 | UInt32(h[t + 7]),
             ttl: toIPv6 ? h[n + IPv4Packet.Field.timeToLive] : h[n + IPv6Packet.Field.hopLimit],
             tos: toIPv6 ? h[n + IPv4Packet.Field.typeOfService] : UInt8(truncatingIfNeeded: (UInt16(h[n]) << 8 | UInt16(h[n + 1])) >> 4),
             source: toIPv6 ? IPAddress.v4(IPv4Address(h, n + IPv4Packet.Field.source))
                 : .v6(IPv6Address(h, n + IPv6Packet.Field.source)),
             destination: toIPv6 ? IPAddress.v4(IPv4Address(h, n + IPv4Packet.Field.destination))
                 : .v6(IPv6Address(h, n + IPv6Packet.Field.destination)))
        }
        let quote = [UInt8](unsafe packet.leadingPayload.withUnsafeBytes { unsafe Array($0) }.prefix(packet.payloadLength))
        guard let mapped = toIPv6
            ? ICMPTranslation.errorToIPv6(type: outer.type, code: outer.code, rest: outer.rest, quote: quote)
            : ICMPTranslation.errorToIPv4(type: outer.type, code: outer.code, rest: outer.rest)
        else {
            statistics.notTranslated += 1
            return .drop
        }
        guard let source = map(outer.source), let destination = map(outer.destination) else {
            statistics.untranslatableAddress += 1  // an IPv6 router outside the prefix: needs an RFC 6791 pool
            return .drop
        }
        guard let inner = translateQuote(quote, toIPv6: toIPv6) else {
            statistics.notTranslated += 1  // the quote is too short, or its addresses do not map
            return .drop
        }
        var error = PacketBuilder()
        error.link = .raw
        error.source = source
        error.destination = destination
        error.ttl = outer.ttl
        error.tos = outer.tos
        error.ipID = 0
        error.dontFragment = true
        error.transport = .icmp(type: mapped.type, code: mapped.code, restOfHeader: mapped.rest)
        let room = toIPv6 ? 1280 - 48 : 576 - 28
        error.payload = Array(inner.prefix(room))
        statistics.errors += 1
        if toIPv6 { statistics.toIPv6 += 1 } else { statistics.toIPv4 += 1 }
        return .rewrite(error.frame())
    }

    /// An address in the other family: IPv4 into the prefix, IPv6 out of it (nil outside it).
    func map(_ address: IPAddress) -> IPAddress? {
        switch address {
        case .v4(let a): .v6(prefix.embedding(a))
        case .v6(let a): prefix.extracting(a).map { .v4($0) }
        }
    }

    /// The quoted packet with its IP header translated (the rest of it copied as quoted). The header's
    /// length field keeps saying how long the packet was, not how much was quoted.
    func translateQuote(_ quote: [UInt8], toIPv6: Bool) -> [UInt8]? {
        var out: [UInt8] = []
        if toIPv6 {
            guard quote.count >= 20, quote[0] >> 4 == 4 else { return nil }
            let headerLength = Int(quote[0] & 0x0F) * 4
            guard headerLength >= 20, quote.count >= headerLength else { return nil }
            let total = Int(quote[2]) << 8 | Int(quote[3])
            let proto = IPProtocol(rawValue: quote[9])
            guard let source = map(.v4(IPv4Address(quote, 12))), case .v6(let s) = source,
                let destination = map(.v4(IPv4Address(quote, 16))), case .v6(let d) = destination
            else { return nil }
            IPv6HeaderRepr(source: s, destination: d, nextHeader: proto == .icmp ? .icmpv6 : proto,
                           payloadLength: max(0, total - headerLength), hopLimit: quote[8], trafficClass: quote[1])
                .encode(into: &out)
            out += quote[headerLength...]
        } else {
            guard quote.count >= 40, quote[0] >> 4 == 6 else { return nil }
            guard let source = map(.v6(IPv6Address(quote, 8))), case .v4(let s) = source,
                let destination = map(.v6(IPv6Address(quote, 24))), case .v4(let d) = destination
            else { return nil }
            let payloadLength = Int(quote[4]) << 8 | Int(quote[5])
            let next = IPProtocol(rawValue: quote[6])
            IPv4HeaderRepr(source: s, destination: d, protocolNumber: next == .icmpv6 ? .icmp : next,
                           totalLength: min(65_535, 20 + payloadLength), identification: 0, dontFragment: true,
                           timeToLive: quote[7], typeOfService: UInt8(truncatingIfNeeded: (UInt16(quote[0]) << 8 | UInt16(quote[1])) >> 4))
                .encode(into: &out)
            out += quote[40...]
        }
        return out
    }
}

/// ICMP ↔ ICMPv6 type mappings (RFC 7915 §4.2, §5.2).
enum ICMPTranslation {
    /// Whether a type is an error message (it quotes a packet).
    static func isError(_ type: UInt8, version6: Bool) -> Bool {
        version6 ? type < 128 : [3, 4, 5, 11, 12].contains(type)
    }

    /// An ICMPv4 error as ICMPv6 (RFC 7915 §4.2); nil when it is dropped. `quote` gives the
    /// original length for a "fragmentation needed" without an MTU (RFC 1191 plateaus).
    static func errorToIPv6(type: UInt8, code: UInt8, rest: UInt32, quote: [UInt8]) -> (type: UInt8, code: UInt8, rest: UInt32)? {
        switch (type, code) {
        case (3, 0), (3, 1), (3, 5), (3, 6), (3, 7), (3, 8), (3, 11), (3, 12): return (1, 0, 0)  // no route
        case (3, 9), (3, 10), (3, 13), (3, 15): return (1, 1, 0)  // administratively prohibited
        case (3, 3): return (1, 4, 0)  // port unreachable
        case (3, 2): return (4, 1, 6)  // protocol unreachable: parameter problem, pointer to next header
        case (3, 4):
            var mtu = Int(rest & 0xFFFF)
            if mtu == 0 {  // a router from before RFC 1191: guess from the quoted length
                let length = quote.count >= 4 ? Int(quote[2]) << 8 | Int(quote[3]) : 0
                mtu = [65_535, 32_000, 17_914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68].first { $0 < length } ?? 68
            }
            return (2, 0, UInt32(max(1280, mtu + 20)))  // packet too big; IPv6 headers are 20 bytes longer
        case (11, _): return (3, code, 0)  // time exceeded
        case (12, 0), (12, 2):
            // Parameter problem: the pointer moves to the same field of the IPv6 header (Figure 3);
            // a field IPv6 does not have (ID, flags, checksum) cannot be pointed at, so it is dropped.
            let pointer = UInt8(truncatingIfNeeded: rest >> 24)
            let map: [UInt8: UInt32] = [0: 0, 1: 1, 2: 4, 3: 4, 8: 7, 9: 6, 12: 8, 13: 8, 14: 8, 15: 8, 16: 24, 17: 24,
                                        18: 24, 19: 24]
            return map[pointer].map { (4, 0, $0) }
        default: return nil  // source quench, redirect, a missing option, others
        }
    }

    /// An ICMPv6 error as ICMPv4 (RFC 7915 §5.2); nil when it is dropped.
    static func errorToIPv4(type: UInt8, code: UInt8, rest: UInt32) -> (type: UInt8, code: UInt8, rest: UInt32)? {
        switch (type, code) {
        case (1, 0), (1, 2), (1, 3): return (3, 1, 0)  // host unreachable
        case (1, 1): return (3, 10, 0)  // administratively prohibited
        case (1, 4): return (3, 3, 0)  // port unreachable
        case (2, _):
            let mtu = Int(min(rest, 65_535)) - 20  // IPv4 headers are 20 bytes shorter
            return (3, 4, UInt32(max(68, mtu)))  // fragmentation needed
        case (3, _): return (11, code, 0)  // time exceeded
        case (4, 1): return (3, 2, 0)  // unrecognised next header: protocol unreachable
        case (4, 0):
            // Parameter problem: the pointer moves to the same field of the IPv4 header (Figure 6).
            let pointer: UInt32? = switch rest {
            case 0: 0
            case 1: 1
            case 4, 5: 2
            case 6: 9
            case 7: 8
            case 8..<24: 12
            case 24..<40: 16
            default: nil
            }
            return pointer.map { (12, 0, $0 << 24) }
        default: return nil  // an unrecognised option, others
        }
    }

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
    init(_ bytes: [UInt8], _ offset: Int) {
        self.init(rawValue: UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8
            | UInt32(bytes[offset + 3]))
    }

    /// The address at `offset` in `bytes`. - Precondition: 4 bytes there.
    init(_ bytes: UnsafeRawBufferPointer, _ offset: Int) {
        self.init(rawValue: UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }
}

extension IPv6Address {
    /// The address at `offset` in `bytes`. - Precondition: 16 bytes there.
    init(_ bytes: [UInt8], _ offset: Int) {
        var high: UInt64 = 0
        var low: UInt64 = 0
        for i in 0..<8 { high = high << 8 | UInt64(bytes[offset + i]) }
        for i in 8..<16 { low = low << 8 | UInt64(bytes[offset + i]) }
        self.init(high: high, low: low)
    }

    /// The address at `offset` in `bytes`. - Precondition: 16 bytes there.
    init(_ bytes: UnsafeRawBufferPointer, _ offset: Int) {
        self.init(high: UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
                  low: UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)))
    }
}
