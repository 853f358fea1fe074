import OffloadEngine
import OffloadForwarder
import OffloadWire

/// Counters of a ``SIITStage``, one per translation outcome.
public struct SIITStatistics: Hashable, Sendable, Codable {
    /// Packets translated IPv4 → IPv6, and IPv6 → IPv4 (a super-packet counts once).
    public var toIPv6 = 0, toIPv4 = 0
    /// Super-packets among them, translated once for all their segments in place.
    public var superPackets = 0
    /// Packets the in-place path could not take, translated whole (ICMP errors, fragments,
    /// extension headers, DF-clear packets to fragment, hairpinning).
    public var slowPath = 0
    /// ICMP errors translated with the packet they quote.
    public var errors = 0
    /// IPv6 fragments made from DF-clear IPv4 packets larger than the IPv6 limit.
    public var fragmentsMade = 0
    /// Packets sent back to the IPv6 side after translation to IPv4 (RFC 7757 hairpinning).
    public var hairpinned = 0
    /// ICMP errors the translator sent itself (UDP without a checksum, refused extension headers).
    public var errorsSent = 0
    /// Dropped, by reason.
    public var dropped: [SIITDropReason: Int] = [:]
    /// Creates zeroed counters.
    public init() {}

    /// Every per-outcome counter once: its metric name, labels, help text and where it is kept.
    /// ``add(_:)`` and ``SIITStage/counters`` are made from this table.
    static let table: [(name: String, labels: [String: String], help: String,
                        field: WritableKeyPath<SIITStatistics, Int> & Sendable)] = [
        ("siit_translated", ["to": "ipv6"], "Packets translated, by the family they became.", \.toIPv6),
        ("siit_translated", ["to": "ipv4"], "Packets translated, by the family they became.", \.toIPv4),
        ("siit_super_packets", [:], "Super-packets translated once in place.", \.superPackets),
        ("siit_slow_path", [:], "Packets translated whole.", \.slowPath),
        ("siit_errors_translated", [:], "ICMP errors translated with their quote.", \.errors),
        ("siit_fragments_made", [:], "IPv6 fragments made from DF-clear IPv4 packets.", \.fragmentsMade),
        ("siit_hairpinned", [:], "Packets hairpinned back to IPv6 (RFC 7757).", \.hairpinned),
        ("siit_errors_sent", [:], "ICMP errors the translator sent itself.", \.errorsSent),
    ]

    /// Adds another stage's counters.
    public mutating func add(_ o: SIITStatistics) {
        for entry in Self.table { self[keyPath: entry.field] += o[keyPath: entry.field] }
        dropped.merge(o.dropped, uniquingKeysWith: +)
    }

    /// Packets dropped for any reason.
    public var droppedTotal: Int { dropped.values.reduce(0, +) }
}

/// Stateless IP/ICMP translation (SIIT, RFC 7915) as a forwarder stage.
///
/// **In place, per super-packet.** A TCP or UDP packet or super-packet (and an ICMP echo) without
/// fragments or extension headers gets the other family's headers once, its payload stays where it
/// is, and its GSO facts change kind (TCPv4 ↔ TCPv6, UDPv4 ↔ UDPv6) with the segment size kept. The
/// forwarder then applies the egress MTU per translated segment: a 1500-byte IPv4 segment becomes a
/// 1520-byte IPv6 one, and when that does not fit, the IPv4 source gets "fragmentation needed"
/// announcing the MTU less 20 (an IPv6 source, "packet too big" with the MTU plus 20). The L4
/// checksum is adjusted incrementally for the new pseudo-header, so a wrong checksum stays wrong and
/// a partial one (the pseudo-header sum only) becomes the new pseudo-header sum. IPv6 → IPv4 sets DF
/// when a segment is larger than 1260 bytes (RFC 7915 §5.1), else gives each segment an ID.
///
/// **Whole, for the rest** (``SIITTranslator``): ICMP errors with the packet they quote (and RFC
/// 4884 extensions), IPv4 fragments ↔ the IPv6 Fragment header, DF-clear IPv4 packets cut to the
/// lowest IPv6 MTU, IPv6 extension headers, UDP without a checksum, hairpinning (RFC 7757) and
/// sources that need an RFC 6791 address.
///
/// Addresses map through the EAM table (RFC 7757), then the RFC 6052 prefix.
public struct SIITStage: Stage {
    /// The translator of the slow path (and the configuration).
    public private(set) var translator: SIITTranslator
    /// Counters.
    public private(set) var statistics = SIITStatistics()
    /// The IPv4 Identification of the next DF-clear packet from the in-place path.
    var nextIdentification: UInt16 = 0x8000

    /// Creates a translator.
    public init(configuration: SIITConfiguration) { translator = SIITTranslator(configuration: configuration) }

    /// Creates a translator for an RFC 6052 prefix alone.
    public init(prefix: RFC6052Prefix = .wellKnown) { self.init(configuration: SIITConfiguration(pool6: prefix)) }

    /// The configuration.
    public var configuration: SIITConfiguration { translator.configuration }

    /// IPv4 → IPv6 adds 20 bytes of header (options, which it drops, only make it less; a Fragment
    /// header is added on the slow path).
    public var headerGrowth: Int { 20 }

    /// A packet that does not parse cannot be translated: it is dropped, not passed to the other family.
    public var passesUnparsedPackets: Bool { false }

    /// Per-outcome counters: `offload_siit_translated_total{to}`, `…_super_packets_total`,
    /// `…_slow_path_total`, `…_errors_translated_total`, `…_fragments_made_total`,
    /// `…_hairpinned_total`, `…_errors_sent_total`, `…_dropped_total{reason}`.
    public var counters: [StageCounter] {
        let s = statistics
        var all = SIITStatistics.table.map {
            StageCounter($0.name, help: $0.help, labels: $0.labels, value: s[keyPath: $0.field])
        }
        for reason in SIITDropReason.allCases {
            all.append(StageCounter("siit_dropped", help: "Packets not translated, by reason.",
                                    labels: ["reason": reason.rawValue], value: s.dropped[reason, default: 0]))
        }
        return all
    }

    /// Translates one packet or super-packet in place, or asks for it whole.
    public mutating func process(_ packet: inout StagePacket) -> StageVerdict {
        let layout = packet.layout
        guard !layout.isFragment, layout.hasTransportHeader else { return .wholePacket }
        switch layout.transport {
        case .tcp, .udp: break
        case .icmp, .icmpv6:
            let type = unsafe packet.headers.withUnsafeBytes { unsafe $0[layout.transportOffset] }
            if ICMPTranslation.isError(type, version6: layout.network == .ipv6) { return .wholePacket }
        default: return .wholePacket
        }
        let translated: Bool
        switch layout.network {
        case .ipv4: translated = toIPv6(&packet)
        case .ipv6: translated = toIPv4(&packet)
        case .other: return .drop
        }
        guard translated else { return .wholePacket }
        if let gso = packet.gso, gso.segmentCount > 1 { statistics.superPackets += 1 }
        return .forward
    }

    /// The slow path: super-packets are segmented first, then each packet is translated whole.
    public mutating func processWhole(_ packet: [UInt8], gso: GSOInfo?, direction: Direction, egressMTU: Int)
        -> StageRewrite
    {
        statistics.slowPath += 1
        let packets = GSOSegmenter.packets(of: packet, gso: gso)
        // The counters count what came in: a super-packet once, whatever became of its segments
        // (they share their headers, so they share their fate; the first one's decides).
        var result = StageRewrite()
        var outcome: (translated: Bool, family6: Bool, error: Bool, hairpin: Bool, dropped: SIITDropReason?)?
        for p in packets {
            let family6 = p.first.map { $0 >> 4 == 6 } ?? false
            let isError = Self.isICMPError(p)
            switch translator.translate(p, egressMTU: egressMTU) {
            case .translated(let out):
                result.forward += out
                let hairpin = out.first.map { $0.first.map { $0 >> 4 } == (family6 ? 6 : 4) } ?? false
                outcome = outcome ?? (true, family6, isError, hairpin, nil)
                if out.count > 1 { statistics.fragmentsMade += out.count }
            case .reply(let error, let reason):
                outcome = outcome ?? (false, family6, false, false, reason)
                statistics.errorsSent += 1
                result.replies.append(error)
            case .drop(let reason):
                outcome = outcome ?? (false, family6, false, false, reason)
            }
        }
        if let o = outcome {
            if o.translated {
                if o.family6 { statistics.toIPv4 += 1 } else { statistics.toIPv6 += 1 }
                if o.error { statistics.errors += 1 }
                if o.hairpin { statistics.hairpinned += 1 }
                if packets.count > 1 { statistics.superPackets += 1 }
            } else if let reason = o.dropped {
                statistics.dropped[reason, default: 0] += 1
            }
        }
        return result
    }

    /// Whether an IP packet is an ICMP or ICMPv6 error without extension headers (for the counters).
    static func isICMPError(_ p: [UInt8]) -> Bool {
        guard let first = p.first else { return false }
        if first >> 4 == 4, p.count > Int(first & 0xF) * 4, p[9] == 1 {
            return ICMPTranslation.isError(p[Int(first & 0xF) * 4], version6: false)
        }
        return first >> 4 == 6 && p.count > 40 && p[6] == 58 && p[40] < 128
    }

    // MARK: - IPv4 → IPv6 in place (RFC 7915 §4)

    /// Translates in place; false leaves the packet untouched for the slow path.
    mutating func toIPv6(_ packet: inout StagePacket) -> Bool {
        let n = packet.layout.networkOffset
        // Safe: the layout validated the IPv4 header at n.
        let (s4, d4) = unsafe packet.headers.withUnsafeBytes { h in
            unsafe (IPv4Address(h, n + IPv4Packet.Field.source), IPv4Address(h, n + IPv4Packet.Field.destination))
        }
        let configuration = translator.configuration
        guard let source = configuration.ipv6(for: s4), let destination = configuration.ipv6(for: d4),
            Self.writeIPv6(&packet, source: source, destination: destination, lowestIPv6MTU: configuration.lowestIPv6MTU)
        else { return false }
        statistics.toIPv6 += 1
        return true
    }

    /// Rewrites an IPv4 TCP, UDP or ICMP echo packet or super-packet as IPv6 in place (RFC 7915 §4),
    /// with these addresses and, for the stateful translator, one port or identifier rewritten:
    /// the IPv4 header becomes an IPv6 one, the L4 header moves, the checksum moves to the new
    /// pseudo-header (and the new port) incrementally, the GSO kind changes. False, with the packet
    /// untouched, for what the slow path must take: an ICMP type other than echo, UDP without a
    /// checksum, a DF-clear packet whose IPv6 form would exceed `lowestIPv6MTU` or the egress MTU.
    package static func writeIPv6(_ packet: inout StagePacket, source: IPv6Address, destination: IPv6Address,
                                  port: PortRewrite? = nil, lowestIPv6MTU: Int) -> Bool {
        let layout = packet.layout
        let n = layout.networkOffset
        let t = layout.transportOffset
        let l4Header = layout.transportHeaderLength
        let isTCP = layout.transport == .tcp
        let isICMP = layout.transport == .icmp
        let checksumOffset = isICMP ? ICMPMessage.Field.checksum
            : isTCP ? TCPSegment.Field.checksum : UDPDatagram.Field.checksum
        // Safe: every offset read is inside the validated IP and transport headers.
        let fields = unsafe packet.headers.withUnsafeBytes { h in
            // Safe: the layout validated the IPv4 header at n and the L4 header at t.
            unsafe (tos: h[n + IPv4Packet.Field.typeOfService], ttl: h[n + IPv4Packet.Field.timeToLive],
             dontFragment: h[n + IPv4Packet.Field.flagsAndFragmentOffset] & 0x40 != 0,
             source: IPv4Address(h, n + IPv4Packet.Field.source),
             destination: IPv4Address(h, n + IPv4Packet.Field.destination),
             check: UInt16(h[t + checksumOffset]) << 8 | UInt16(h[t + checksumOffset + 1]),
             typeAndCode: UInt16(h[t]) << 8 | UInt16(h[t + 1]))
        }
        var upper = layout.transport
        var newTypeAndCode = fields.typeAndCode
        if isICMP {
            guard let type6 = ICMPTranslation.echoType(toIPv6: UInt8(fields.typeAndCode >> 8)) else { return false }
            upper = .icmpv6
            newTypeAndCode = UInt16(type6) << 8 | fields.typeAndCode & 0xFF
        } else if !isTCP && fields.check == 0 {
            return false  // UDP without a checksum: the slow path answers it
        }
        let payloadLength = layout.ipEnd - t  // L4 header + payload (of the whole super-packet)
        // A DF-clear packet whose IPv6 form (per segment) exceeds the lowest IPv6 MTU must be cut into
        // fragments: the slow path does that.
        if !fields.dontFragment {
            let segment = packet.gso.map { l4Header + $0.segmentSize } ?? payloadLength
            if 40 + segment > min(lowestIPv6MTU, packet.egressMTU) { return false }
        }
        guard n + 40 + l4Header <= packet.headerCapacity else { return false }
        // TCP/UDP: only the addresses of the pseudo-header change. ICMP → ICMPv6: the checksum starts
        // covering a pseudo-header (RFC 4443 §2.3) and the type changes.
        let delta = isICMP
            ? InternetChecksum.pseudoHeaderSum(ipv6Source: source, destination: destination, nextHeader: .icmpv6,
                                               length: payloadLength)
                + OnesComplementSum(newTypeAndCode) - OnesComplementSum(fields.typeAndCode)
            : (source.wordSum + destination.wordSum) - (fields.source.wordSum + fields.destination.wordSum)
        let partial = packet.checksum == .partial && !isICMP
        // Safe: the port field lies inside the validated L4 header at t.
        let portDelta = unsafe port.map { p in unsafe packet.headers.withUnsafeBytes { unsafe p.delta($0, transportOffset: t) } }
            ?? OnesComplementSum(0)
        // Safe: the staged headers hold the whole validated layout up to the transport header, and
        // the buffer has `headerGrowth` (20) bytes of room beyond it (the stage's contract).
        unsafe packet.withUnsafeMutableHeaders { h in
            let base = h.baseAddress!
            // The L4 header moves first (to its place after a 40-byte IPv6 header), then the IPv6
            // header is written over the IPv4 one. Safe: both ranges lie inside the buffer (checked).
            unsafe (base + n + 40).copyMemory(from: base + t, byteCount: l4Header)
            unsafe IPv6HeaderRepr(source: source, destination: destination, nextHeader: upper,
                           payloadLength: payloadLength, hopLimit: fields.ttl, trafficClass: fields.tos)
                .write(to: UnsafeMutableRawBufferPointer(rebasing: h[n..<(n + 40)]))
            unsafe h[n + 40] = UInt8(newTypeAndCode >> 8)
            if let port { unsafe port.write(h, transportOffset: n + 40) }
            unsafe Self.adjustChecksum(h, at: n + 40 + checksumOffset, by: partial ? delta : delta + portDelta,
                                       partial: partial, udp: !isTCP && !isICMP)
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
        return true
    }

    // MARK: - IPv6 → IPv4 in place (RFC 7915 §5)

    /// Translates in place; false leaves the packet untouched for the slow path.
    mutating func toIPv4(_ packet: inout StagePacket) -> Bool {
        let n = packet.layout.networkOffset
        // Safe: the layout validated the 40-byte IPv6 header at n.
        let (s6, d6) = unsafe packet.headers.withUnsafeBytes { h in
            unsafe (IPv6Address(h, n + IPv6Packet.Field.source), IPv6Address(h, n + IPv6Packet.Field.destination))
        }
        let configuration = translator.configuration
        guard let source = configuration.ipv4(for: s6), let destination = configuration.ipv4(for: d6),
            !configuration.eam.coversIPv4(destination),  // hairpinning: the slow path
            Self.writeIPv4(&packet, source: source, destination: destination, identification: &nextIdentification)
        else { return false }
        statistics.toIPv4 += 1
        return true
    }

    /// Rewrites an IPv6 TCP, UDP or ICMPv6 echo packet or super-packet (no extension headers) as
    /// IPv4 in place (RFC 7915 §5), with these addresses and, for the stateful translator, one port
    /// or identifier rewritten. DF is set on segments larger than 1260 bytes; smaller ones take IDs
    /// from `identification` (one per segment). False, with the packet untouched, for what the slow
    /// path must take (extension headers, an ICMPv6 type other than echo, an IPv4 packet over 64 KiB).
    package static func writeIPv4(_ packet: inout StagePacket, source: IPv4Address, destination: IPv4Address,
                                  port: PortRewrite? = nil, identification nextIdentification: inout UInt16) -> Bool {
        let layout = packet.layout
        let n = layout.networkOffset
        let t = layout.transportOffset
        guard t == n + 40 else { return false }  // extension headers: the slow path
        let l4Header = layout.transportHeaderLength
        let isTCP = layout.transport == .tcp
        let isICMP = layout.transport == .icmpv6
        let checksumOffset = isICMP ? ICMPMessage.Field.checksum
            : isTCP ? TCPSegment.Field.checksum : UDPDatagram.Field.checksum
        let typeAndCode = unsafe packet.headers.withUnsafeBytes { h in unsafe UInt16(h[t]) << 8 | UInt16(h[t + 1]) }
        var upper = layout.transport
        var newTypeAndCode = typeAndCode
        if isICMP {
            guard let type4 = ICMPTranslation.echoType(toIPv4: UInt8(typeAndCode >> 8)) else { return false }
            upper = .icmp
            newTypeAndCode = UInt16(type4) << 8 | typeAndCode & 0xFF
        } else if layout.transport == .icmp {
            return false  // ICMPv4 inside IPv6: the slow path drops it as untranslatable
        }
        // Safe: every offset read is inside the validated IP and transport headers.
        let fields = unsafe packet.headers.withUnsafeBytes { h in
            // Safe: the layout validated the 40-byte IPv6 header at n.
            let word = unsafe UInt32(h[n]) << 24 | UInt32(h[n + 1]) << 16
            return unsafe (trafficClass: UInt8(truncatingIfNeeded: word >> 20), hopLimit: h[n + IPv6Packet.Field.hopLimit],
                    source: IPv6Address(h, n + IPv6Packet.Field.source),
                    destination: IPv6Address(h, n + IPv6Packet.Field.destination))
        }
        let l4Length = layout.ipEnd - t
        guard 20 + l4Length <= 65_535 else { return false }
        // RFC 7915 §5.1: DF on segments larger than 1260 bytes; smaller ones get IDs (one per segment,
        // which the kernel's segmentation increments).
        let segmentLength = 20 + (packet.gso.map { l4Header + $0.segmentSize } ?? l4Length)
        let dontFragment = rfc7915DontFragment(ipv4TotalLength: segmentLength)
        var identification: UInt16 = 0
        if !dontFragment {
            identification = nextIdentification
            nextIdentification &+= UInt16(truncatingIfNeeded: packet.gso?.segmentCount ?? 1)
        }
        let delta = isICMP
            ? OnesComplementSum(newTypeAndCode) - OnesComplementSum(typeAndCode)
                - InternetChecksum.pseudoHeaderSum(ipv6Source: fields.source, destination: fields.destination,
                                                   nextHeader: .icmpv6, length: l4Length)
            : (source.wordSum + destination.wordSum) - (fields.source.wordSum + fields.destination.wordSum)
        let partial = packet.checksum == .partial && !isICMP
        // Safe: the port field lies inside the validated L4 header at t.
        let portDelta = unsafe port.map { p in unsafe packet.headers.withUnsafeBytes { unsafe p.delta($0, transportOffset: t) } }
            ?? OnesComplementSum(0)
        // Safe: the staged headers hold the whole validated layout up to the transport header, and
        // the buffer has `headerGrowth` (20) bytes of room beyond it (the stage's contract).
        unsafe packet.withUnsafeMutableHeaders { h in
            let base = h.baseAddress!
            // The IPv4 header (with its checksum) first, then the L4 header moves down to follow it.
            // Safe: both ranges lie inside the headers in use.
            unsafe IPv4HeaderRepr(source: source, destination: destination, protocolNumber: upper,
                           totalLength: 20 + l4Length, identification: identification, dontFragment: dontFragment,
                           timeToLive: fields.hopLimit, typeOfService: fields.trafficClass)
                .write(to: UnsafeMutableRawBufferPointer(rebasing: h[n..<(n + 20)]))
            unsafe (base + n + 20).copyMemory(from: base + t, byteCount: l4Header)
            unsafe h[n + 20] = UInt8(newTypeAndCode >> 8)
            if let port { unsafe port.write(h, transportOffset: n + 20) }
            unsafe Self.adjustChecksum(h, at: n + 20 + checksumOffset, by: partial ? delta : delta + portDelta,
                                       partial: partial, udp: !isTCP && !isICMP)
        }
        packet.headerLength = n + 20 + l4Header
        packet.layout = PacketLayout(frameLength: n + 20 + l4Length, networkOffset: n, network: .ipv4,
                                     transportOffset: n + 20, transport: upper,
                                     transportHeaderLength: l4Header, ipEnd: n + 20 + l4Length, isFragment: false)
        if var gso = packet.gso {
            gso.kind = isTCP ? .tcpv4 : .udpv4
            gso.fixedID = false
            packet.gso = gso
        }
        return true
    }

    /// Moves the L4 checksum at `offset` to the new pseudo-header (the protocol and length words are
    /// the same in both families, so only the addresses' sum changes by `delta`). A complete checksum
    /// stays as right or as wrong as it was; a partial one (the pseudo-header sum only) becomes the
    /// new pseudo-header sum.
    static func adjustChecksum(_ h: UnsafeMutableRawBufferPointer, at offset: Int, by delta: OnesComplementSum,
                               partial: Bool, udp: Bool) {
        let old = unsafe UInt16(h[offset]) << 8 | UInt16(h[offset + 1])
        let new = movedChecksum(old, by: delta, partial: partial, udp: udp)
        unsafe h[offset] = UInt8(new >> 8)
        unsafe h[offset + 1] = UInt8(new & 0xFF)
    }
}

/// A port (or ICMP echo identifier) a stateful translator rewrites along with the addresses: where
/// it is in the L4 header and what it becomes. The checksum follows (RFC 1624), except a partial
/// one, which covers the pseudo-header only.
package struct PortRewrite: Sendable {
    /// The field's offset in the L4 header: 0 (source port), 2 (destination port), 4 (echo identifier).
    package var offset: Int
    /// The new value.
    package var value: UInt16

    /// A rewrite of the field at `offset`.
    package init(offset: Int, value: UInt16) {
        self.offset = offset
        self.value = value
    }

    /// The checksum change: new value less old.
    func delta(_ h: UnsafeRawBufferPointer, transportOffset t: Int) -> OnesComplementSum {
        let old = unsafe UInt16(h[t + offset]) << 8 | UInt16(h[t + offset + 1])
        return OnesComplementSum(value) - OnesComplementSum(old)
    }

    /// Writes the new value into the L4 header at `t`.
    func write(_ h: UnsafeMutableRawBufferPointer, transportOffset t: Int) {
        unsafe h[t + offset] = UInt8(value >> 8)
        unsafe h[t + offset + 1] = UInt8(value & 0xFF)
    }
}
