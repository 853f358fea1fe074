import Logging
import OffloadEngine
import OffloadForwarder
import OffloadSIIT
import OffloadWire
import Testing

@Suite("SIIT stage: TCP and UDP translated once per super-packet, the MTU applied after translation")
struct SIITStageTests {
    static let client4 = IPv4Address(192, 0, 2, 1)
    static let server4 = IPv4Address(198, 51, 100, 7)
    /// A network-specific prefix: the well-known 64:ff9b::/96 is checksum-neutral (RFC 6052 §2.1),
    /// so with it a translator that forgot to adjust checksums would pass these tests.
    static let prefix = RFC6052Prefix(IPv6Prefix(IPv6Address(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0), length: 96)!)!

    func segments(_ count: Int, ipv6: Bool, payload: Int, udp: Bool = false, flags: TCPFlags = .ack) -> [[UInt8]] {
        (0..<count).map { i in
            var b = PacketBuilder()
            b.link = .raw
            if ipv6 {
                b.source = .v6(Self.prefix.embedding(Self.client4))
                b.destination = .v6(Self.prefix.embedding(Self.server4))
            } else {
                b.source = .v4(Self.client4)
                b.destination = .v4(Self.server4)
            }
            b.udp = udp
            b.flags = flags
            b.tos = 0x2A  // DSCP 10, ECT(0): carried across as the traffic class
            b.sequence = 1000 + UInt32(i * payload)
            b.ipID = 50 + UInt16(i)
            b.payloadLength = payload
            return b.frame()
        }
    }

    func run(_ frames: [[UInt8]], egressMTU: Int, udpGRO: Bool = false)
        -> (egress: RecordingSink, back: RecordingSink, forwarder: ForwarderStatistics, siit: SIITStatistics)
    {
        var gro = GROConfiguration()
        gro.udp = udpGRO
        var pipeline = ForwardingPipeline(direction: .lanToWan, gro: gro, egressMTU: egressMTU,
                                          icmpSourceV4: IPv4Address(192, 0, 2, 254),
                                          icmpSourceV6: IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe),
                                          virtioHeaders: true, stage: SIITStage(prefix: Self.prefix),
                                          logger: Logger(label: "test"))
        var batch = PacketBatch(packetCapacity: max(1, frames.count), byteCapacity: 1 << 20)
        for f in frames { batch.append(f, metadata: PacketMetadata(linkType: .raw, checksum: .verified)) }
        let egress = RecordingSink()
        let back = RecordingSink()
        pipeline.process(batch, now: 1, egress: egress, back: back)
        return (egress, back, pipeline.snapshot, pipeline.stage.statistics)
    }

    /// Finishes the partial checksum, splits the super-packet with GSO and checks every segment.
    func expectValidSegments(_ bytes: [UInt8], gso: GSOInfo, count: Int, sourceLocation: SourceLocation = #_sourceLocation)
        throws
    {
        var whole = bytes
        let layout = try PacketLayout(parsing: whole.span.bytes, linkType: .raw)
        try whole.withUnsafeMutableBytes {
            try VirtioPacketInfo.finishPartialChecksum($0, start: layout.transportOffset, offset: TCPSegment.Field.checksum)
        }
        var segmenter = GSOSegmenter()
        try whole.withUnsafeBytes { try segmenter.segment($0, linkType: .raw, gso: gso) }
        #expect(segmenter.segmentCount == count, sourceLocation: sourceLocation)
        for i in 0..<segmenter.segmentCount {
            let segment = segmenter.segmentBytes(at: i)
            let l = try PacketLayout(parsing: segment.span.bytes, linkType: .raw)
            let l4 = segment.span.bytes.extracting(l.transportOffset..<l.ipEnd)
            let read = FlowKey(segment.span.bytes, layout: l)
            let key = try #require(read)
            let pseudo: OnesComplementSum = switch (key.source, key.destination) {
            case (.v4(let s), .v4(let d)):
                InternetChecksum.pseudoHeaderSum(ipv4Source: s, destination: d, protocolNumber: .tcp, length: l4.byteCount)
            case (.v6(let s), .v6(let d)):
                InternetChecksum.pseudoHeaderSum(ipv6Source: s, destination: d, nextHeader: .tcp, length: l4.byteCount)
            default: .zero
            }
            #expect(InternetChecksum.sum(l4, initial: pseudo).value == 0xFFFF, "segment \(i)", sourceLocation: sourceLocation)
        }
    }

    @Test("IPv4 → IPv6: one super-packet of the other family, segment size kept, checksums right after GSO")
    func toIPv6() throws {
        let input = segments(3, ipv6: false, payload: 1448)
        let r = run(input, egressMTU: 1520)
        #expect(r.back.writes.isEmpty && r.egress.writes.count == 1 && r.siit.toIPv6 == 1 && r.siit.superPackets == 1)
        let (header, bytes) = try #require(r.egress.writes.first)
        let vhdr = try #require(header)
        #expect(vhdr.baseGSOType == VirtioNetHeader.gsoTCPv6 && vhdr.gsoSize == 1448 && vhdr.checksumStart == 40)
        let ip = try IPv6Packet(validating: bytes.span.bytes)
        #expect(ip.source == Self.prefix.embedding(Self.client4) && ip.destination == Self.prefix.embedding(Self.server4))
        #expect(ip.hopLimit == 63 && ip.trafficClass == 0x2A && ip.flowLabel == 0 && ip.payloadLength == 32 + 3 * 1448)
        // NEEDS_CSUM: the field holds the IPv6 pseudo-header sum.
        let pseudo = InternetChecksum.pseudoHeaderSum(ipv6Source: ip.source, destination: ip.destination, nextHeader: .tcp,
                                                      length: 32 + 3 * 1448)
        #expect(UInt16(bytes[40 + 16]) << 8 | UInt16(bytes[40 + 17]) == pseudo.value)
        // The payload is the three segments' payloads, untouched.
        #expect(Array(bytes[72...]) == input.flatMap { Array($0[52...]) })
        try expectValidSegments(bytes, gso: GSOInfo(kind: .tcpv6, segmentSize: 1448, segmentCount: 3), count: 3)
    }

    @Test("IPv4 → IPv6 behind a 1500-byte MTU: the 1520-byte segments do not fit, the IPv4 source hears MTU 1480")
    func toIPv6TooBig() throws {
        let r = run(segments(3, ipv6: false, payload: 1448), egressMTU: 1500)
        #expect(r.egress.writes.isEmpty && r.forwarder.icmpSent == 1)
        let icmpBytes = try #require(r.back.writes.first?.bytes)
        let layout = try PacketLayout(parsing: icmpBytes.span.bytes, linkType: .raw)
        let icmp = try ICMPMessage(validating: icmpBytes.span.bytes.extracting(layout.transportOffset..<layout.ipEnd),
                                   version6: false)
        #expect(icmp.type == ICMPType.v4DestinationUnreachable && icmp.code == ICMPType.v4FragmentationNeeded)
        #expect(icmp.nextHopMTU == 1480)
        let read = QuotedPacket(icmp.body)
        let quote = try #require(read)
        #expect(quote.flow.source == .v4(Self.client4) && quote.ipLength == 1500)  // the first segment, as sent
    }

    @Test("IPv6 → IPv4: DF set, ID 0, TTL from the hop limit, TOS from the traffic class, checksums right")
    func toIPv4() throws {
        let input = segments(4, ipv6: true, payload: 1428)
        let r = run(input, egressMTU: 1500)
        #expect(r.back.writes.isEmpty && r.egress.writes.count == 1 && r.siit.toIPv4 == 1)
        let (header, bytes) = try #require(r.egress.writes.first)
        #expect(header?.baseGSOType == VirtioNetHeader.gsoTCPv4 && header?.gsoSize == 1428)
        let ip = try IPv4Packet(validating: bytes.span.bytes)
        #expect(ip.source == Self.client4 && ip.destination == Self.server4 && ip.headerChecksumIsValid)
        #expect(ip.dontFragment && ip.identification == 0 && ip.timeToLive == 63 && ip.typeOfService == 0x2A)
        #expect(ip.totalLength == 20 + 32 + 4 * 1428)
        let pseudo = InternetChecksum.pseudoHeaderSum(ipv4Source: Self.client4, destination: Self.server4, protocolNumber: .tcp,
                                                      length: 32 + 4 * 1428)
        #expect(UInt16(bytes[20 + 16]) << 8 | UInt16(bytes[20 + 17]) == pseudo.value)  // NEEDS_CSUM field
        #expect(Array(bytes[52...]) == input.flatMap { Array($0[72...]) })
        try expectValidSegments(bytes, gso: GSOInfo(kind: .tcpv4, segmentSize: 1428, segmentCount: 4), count: 4)
    }

    @Test("a DF-clear IPv4 super-packet: segmented, then each segment cut into IPv6 fragments of at most 1280 bytes")
    func dontFragmentClearSuperPacket() throws {
        let frames = segments(4, ipv6: false, payload: 1448).map { frame -> [UInt8] in
            var f = frame
            f[6] &= ~0x40  // DF off (the IDs increment, so GRO still merges them)
            f[10] = 0
            f[11] = 0
            let sum = ~InternetChecksum.sum(f.span.bytes.extracting(0..<20)).value
            f[10] = UInt8(sum >> 8)
            f[11] = UInt8(sum & 0xFF)
            return f
        }
        let r = run(frames, egressMTU: 1500)
        #expect(r.forwarder.gro.superPackets == 1 && r.siit.slowPath == 1, "GRO merged the DF-clear segments; the slow path took them")
        let out = r.egress.writes.map(\.bytes)
        #expect(out.count == 8, "\(out.map(\.count))")  // 4 segments × 2 fragments
        var reassembled: [UInt16: [UInt8]] = [:]
        for p in out {
            #expect(p.count <= 1280 && p[0] >> 4 == 6 && p[6] == 44)
            let id = p.loadBigEndian(UInt32.self, at: 44)
            let offset = Int(p.loadBigEndian(UInt16.self, at: 42) & ~7)
            var whole = reassembled[UInt16(id), default: []]
            #expect(whole.count == offset, "fragments in order")
            whole += p[48...]
            reassembled[UInt16(id)] = whole
        }
        // Each datagram is the original segment's TCP header and payload, behind its IPv4 ID.
        #expect(Set(reassembled.keys) == Set((0..<4).map { 50 + UInt16($0) }))
        for (i, f) in frames.enumerated() {
            #expect(reassembled[50 + UInt16(i)].map { $0.count } == f.count - 20)
            #expect(reassembled[50 + UInt16(i)].map { Array($0[20...]) } == Array(f[40...]), "payload")
        }
    }

    @Test("a complete checksum (a packet delivered alone) is adjusted, not recomputed: right stays right")
    func completeChecksum() throws {
        let input = segments(1, ipv6: false, payload: 300, flags: [.ack, .psh])
        let r = run(input, egressMTU: 1500)
        let bytes = try #require(r.egress.writes.first?.bytes)
        let l = try PacketLayout(parsing: bytes.span.bytes, linkType: .raw)
        let l4 = bytes.span.bytes.extracting(l.transportOffset..<l.ipEnd)
        let pseudo = InternetChecksum.pseudoHeaderSum(
            ipv6Source: Self.prefix.embedding(Self.client4), destination: Self.prefix.embedding(Self.server4),
            nextHeader: .tcp, length: l4.byteCount)
        #expect(r.egress.writes.first?.header?.gsoType == VirtioNetHeader.gsoNone)
        #expect(InternetChecksum.sum(l4, initial: pseudo).value == 0xFFFF)
        // A wrong checksum stays wrong: the translator adjusts, it does not recompute.
        var bad = PacketBuilder()
        bad.link = .raw
        bad.source = .v4(Self.client4)
        bad.destination = .v4(Self.server4)
        bad.flags = [.ack, .psh]
        bad.payloadLength = 300
        bad.corruptChecksum = true
        let spoiled = try #require(run([bad.frame()], egressMTU: 1500).egress.writes.first?.bytes)
        let l4Spoiled = spoiled.span.bytes.extracting(l.transportOffset..<l.ipEnd)
        #expect(InternetChecksum.sum(l4Spoiled, initial: pseudo).value != 0xFFFF)
    }

    @Test("untranslatable: an IPv6 address outside the prefix, UDP without a checksum; counted and dropped")
    func untranslatable() throws {
        var outside = PacketBuilder()
        outside.link = .raw
        outside.ipv6 = true  // 2001:db8::1 is not in 2001:db8:64::/96
        let r = run([outside.frame()], egressMTU: 1500)
        #expect(r.egress.writes.isEmpty && r.siit.dropped[.untranslatableAddress] == 1 && r.forwarder.stageDropped == 1)
        var noChecksum = PacketBuilder()
        noChecksum.link = .raw
        noChecksum.udp = true
        noChecksum.zeroUDPChecksum = true
        noChecksum.payloadLength = 100
        let u = run([noChecksum.frame()], egressMTU: 1500)
        #expect(u.egress.writes.isEmpty && u.siit.dropped[.udpWithoutChecksum] == 1)
        // RFC 7915 §4.5: answered with "communication administratively prohibited" from the translator.
        let answer = try #require(u.back.writes.first?.bytes)
        #expect(answer[9] == 1 && answer[20] == 3 && answer[21] == 13)
    }

    @Test("Found by FuzzSIIT: an IPv4 protocol that is an IPv6 extension header number is dropped, not copied into Next Header",
          arguments: [UInt8(0), 43, 44, 60])
    func ipv6ExtensionProtocol(_ number: UInt8) throws {
        // An IPv4 packet carrying 28 opaque bytes under that protocol number.
        var ip: [UInt8] = [0x45, 0, 0, 48, 0x73, 0x51, 0x40, 0, 64, number, 0, 0, 192, 0, 2, 1, 198, 51, 100, 7]
        let checksum = InternetChecksum.checksum(ip.span.bytes)
        ip[10] = UInt8(checksum >> 8)
        ip[11] = UInt8(checksum & 0xFF)
        ip += [UInt8](repeating: 0x41, count: 28)
        var translator = SIITTranslator(configuration: SIITConfiguration(pool6: Self.prefix))
        #expect(translator.translate(ip) == .drop(.ipv6ExtensionProtocol))
        // Protocol 59 (no next header) has no header to misread: translated.
        ip[9] = 59
        ip[10] = 0
        ip[11] = 0
        let fixed = InternetChecksum.checksum(ip[0..<20].span.bytes)
        ip[10] = UInt8(fixed >> 8)
        ip[11] = UInt8(fixed & 0xFF)
        guard case .translated(let out) = translator.translate(ip) else {
            Issue.record("protocol 59 was not translated")
            return
        }
        #expect(out.count == 1 && out[0][6] == 59 && out[0].count == 40 + 28)
    }

    @Test("ICMP echo: 8/0 ↔ 128/129, the checksum gains or loses the IPv6 pseudo-header; redirects are dropped")
    func icmpEcho() throws {
        var ping = PacketBuilder()
        ping.link = .raw
        ping.source = .v4(Self.client4)
        ping.destination = .v4(Self.server4)
        ping.transport = .icmp(type: 8, code: 0, restOfHeader: 0x1234_0001)
        ping.payloadLength = 56
        let r = run([ping.frame()], egressMTU: 1500)
        let v6 = try #require(r.egress.writes.first?.bytes)
        let l = try PacketLayout(parsing: v6.span.bytes, linkType: .raw)
        #expect(l.network == .ipv6 && l.transport == .icmpv6 && v6[40] == 128 && v6[41] == 0)
        #expect(Array(v6[44..<48]) == [0x12, 0x34, 0x00, 0x01] && Array(v6[48...]) == Array(ping.frame()[28...]))
        let pseudo6 = InternetChecksum.pseudoHeaderSum(
            ipv6Source: Self.prefix.embedding(Self.client4), destination: Self.prefix.embedding(Self.server4),
            nextHeader: .icmpv6, length: 64)
        #expect(InternetChecksum.sum(v6.span.bytes.extracting(40...), initial: pseudo6).value == 0xFFFF)

        var pong = PacketBuilder()
        pong.link = .raw
        pong.source = .v6(Self.prefix.embedding(Self.server4))
        pong.destination = .v6(Self.prefix.embedding(Self.client4))
        pong.transport = .icmp(type: 129, code: 0, restOfHeader: 0x1234_0001)
        pong.payloadLength = 56
        let back = run([pong.frame()], egressMTU: 1500)
        let v4 = try #require(back.egress.writes.first?.bytes)
        let ip = try IPv4Packet(validating: v4.span.bytes)
        #expect(ip.protocolNumber == .icmp && ip.headerChecksumIsValid && v4[20] == 0 && v4[21] == 0)
        #expect(InternetChecksum.sum(v4.span.bytes.extracting(20...)).value == 0xFFFF)

        var redirect = ping
        redirect.transport = .icmp(type: 5, code: 1, restOfHeader: 0)  // redirects are not translated
        redirect.payload = Array(ping.frame()[0..<28])
        let dropped = run([redirect.frame()], egressMTU: 1500)
        #expect(dropped.egress.writes.isEmpty && dropped.siit.dropped[.icmpNotTranslated] == 1)
    }

    /// A TCP packet of `length` bytes from the client (IPv4 or IPv6 side), whose first bytes an error quotes.
    func original(ipv6: Bool, length: Int) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        b.source = ipv6 ? .v6(Self.prefix.embedding(Self.server4)) : .v4(Self.client4)
        b.destination = ipv6 ? .v6(Self.prefix.embedding(Self.client4)) : .v4(Self.server4)
        b.payloadLength = length - (ipv6 ? 72 : 52)
        b.sequence = 4242
        return b.frame()
    }

    @Test("ICMPv4 fragmentation needed → ICMPv6 packet too big: MTU + 20, the quoted header translated, checksum right")
    func fragmentationNeededToPacketTooBig() throws {
        let router = IPv4Address(198, 51, 100, 1)
        var error = PacketBuilder()
        error.link = .raw
        error.source = .v4(router)
        error.destination = .v4(Self.client4)
        error.transport = .icmp(type: 3, code: 4, restOfHeader: 1400)
        error.payload = Array(original(ipv6: false, length: 1500)[0..<28])  // RFC 792: the header and 8 bytes
        let r = run([error.frame()], egressMTU: 1500)
        #expect(r.siit.errors == 1 && r.forwarder.stageRewrites == 1)
        let bytes = try #require(r.egress.writes.first?.bytes)
        let ip = try IPv6Packet(validating: bytes.span.bytes)
        #expect(ip.source == Self.prefix.embedding(router) && ip.destination == Self.prefix.embedding(Self.client4))
        #expect(ip.nextHeader == .icmpv6 && ip.hopLimit == 63)
        let icmp = try ICMPMessage(validating: bytes.span.bytes.extracting(40...), version6: true)
        #expect(icmp.type == 2 && icmp.code == 0 && icmp.mtu == 1420)
        let pseudo = InternetChecksum.pseudoHeaderSum(ipv6Source: ip.source, destination: ip.destination,
                                                      nextHeader: .icmpv6, length: bytes.count - 40)
        #expect(InternetChecksum.sum(bytes.span.bytes.extracting(40...), initial: pseudo).value == 0xFFFF)
        // The quoted packet is now the IPv6 packet the IPv6 side would have seen: its sender can match it.
        let read = QuotedPacket(icmp.body)
        let quote = try #require(read)
        #expect(quote.flow.source == .v6(Self.prefix.embedding(Self.client4)) && quote.flow.transport == .tcp)
        #expect(quote.ipLength == 1520 && quote.tcpSequenceNumber == 4242)
    }

    @Test("ICMPv6 packet too big → ICMPv4 fragmentation needed: MTU − 20; time exceeded → 11; outside the prefix: dropped")
    func packetTooBigToFragmentationNeeded() throws {
        let router = Self.prefix.embedding(IPv4Address(203, 0, 113, 9))
        var error = PacketBuilder()
        error.link = .raw
        error.source = .v6(router)
        error.destination = .v6(Self.prefix.embedding(Self.server4))
        error.transport = .icmp(type: 2, code: 0, restOfHeader: 1400)
        error.payload = Array(original(ipv6: true, length: 1500))  // ICMPv6 quotes as much as fits
        let r = run([error.frame()], egressMTU: 1500)
        let bytes = try #require(r.egress.writes.first?.bytes)
        let ip = try IPv4Packet(validating: bytes.span.bytes)
        #expect(ip.source == IPv4Address(203, 0, 113, 9) && ip.destination == Self.server4 && ip.headerChecksumIsValid)
        #expect(bytes.count <= 576, "RFC 7915 §5.2: at most 576 bytes")
        let icmp = try ICMPMessage(validating: bytes.span.bytes.extracting(20...), version6: false)
        #expect(icmp.type == 3 && icmp.code == 4 && icmp.nextHopMTU == 1380)
        #expect(InternetChecksum.sum(bytes.span.bytes.extracting(20...)).value == 0xFFFF)
        let innerRead = QuotedPacket(icmp.body)
        let inner = try #require(innerRead)
        #expect(inner.flow.source == .v4(Self.server4) && inner.ipLength == 1480 && inner.tcpSequenceNumber == 4242)

        error.transport = .icmp(type: 3, code: 0, restOfHeader: 0)
        let exceeded = try #require(run([error.frame()], egressMTU: 1500).egress.writes.first?.bytes)
        #expect(exceeded[20] == 11 && exceeded[21] == 0)

        // A router outside the prefix: RFC 6791, the error comes from the translator's own address.
        error.source = .v6(IPv6Address(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1))
        let outside = try #require(run([error.frame()], egressMTU: 1500).egress.writes.first?.bytes)
        #expect(IPv4Address(rawValue: outside.loadBigEndian(UInt32.self, at: 12)) == SIITConfiguration().ownIPv4)
    }

    @Test("parameter problem: the pointer moves to the same field in the other header (RFC 7915 Figures 3 and 6)",
          arguments: [(UInt8(8), UInt32(7)), (9, 6), (12, 8), (16, 24), (2, 4)])
    func parameterProblem(pointer4: UInt8, pointer6: UInt32) throws {
        let router = IPv4Address(198, 51, 100, 1)
        var error = PacketBuilder()
        error.link = .raw
        error.source = .v4(router)
        error.destination = .v4(Self.client4)
        error.transport = .icmp(type: 12, code: 0, restOfHeader: UInt32(pointer4) << 24)
        error.payload = Array(original(ipv6: false, length: 100)[0..<28])
        let v6 = try #require(run([error.frame()], egressMTU: 1500).egress.writes.first?.bytes)
        let icmp6 = try ICMPMessage(validating: v6.span.bytes.extracting(40...), version6: true)
        #expect(icmp6.type == 4 && icmp6.code == 0 && icmp6.restOfHeader == pointer6)
        // And back: the IPv6 pointer returns to the IPv4 field.
        var back = PacketBuilder()
        back.link = .raw
        back.source = .v6(Self.prefix.embedding(router))
        back.destination = .v6(Self.prefix.embedding(Self.server4))
        back.transport = .icmp(type: 4, code: 0, restOfHeader: pointer6)
        back.payload = Array(original(ipv6: true, length: 100)[0..<48])
        let v4 = try #require(run([back.frame()], egressMTU: 1500).egress.writes.first?.bytes)
        let expected: UInt8 = pointer4 == 3 ? 2 : pointer4 == 13 ? 12 : pointer4
        #expect(v4[20] == 12 && v4[21] == 0 && v4[24] == expected)
    }

    @Test("a parameter problem pointing at a field the other header lacks (the IPv4 ID) is dropped")
    func parameterProblemWithoutCounterpart() {
        var error = PacketBuilder()
        error.link = .raw
        error.source = .v4(IPv4Address(198, 51, 100, 1))
        error.destination = .v4(Self.client4)
        error.transport = .icmp(type: 12, code: 0, restOfHeader: 4 << 24)
        error.payload = Array(original(ipv6: false, length: 100)[0..<28])
        let r = run([error.frame()], egressMTU: 1500)
        #expect(r.egress.writes.isEmpty && r.siit.dropped[.icmpNotTranslated] == 1)
    }

    @Test("RFC 6052 §2.4's examples: 192.0.2.33 in each prefix length, and back")
    func prefixText() throws {
        let examples = [("2001:db8::/32", "2001:db8:c000:221::"), ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
                        ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"), ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
                        ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"), ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
                        ("64:ff9b::/96", "64:ff9b::192.0.2.33")]
        let v4 = IPv4Address(192, 0, 2, 33)
        for (prefixText, embedded) in examples {
            let p = try #require(RFC6052Prefix(prefixText))
            let expected = try #require(IPv6Address(embedded))
            #expect(p.embedding(v4) == expected, "\(prefixText)")
            #expect(p.extracting(expected) == v4, "\(prefixText)")
            #expect(p.description == prefixText)
        }
        #expect(RFC6052Prefix.wellKnown.extracting(try #require(IPv6Address("64:ff9c::c000:221"))) == nil)
        // The well-known prefix is checksum-neutral: its words sum to 0xFFFF (ones' complement zero).
        #expect(RFC6052Prefix.wellKnown.prefix.address.wordSum.value == 0xFFFF)
        // Lengths RFC 6052 does not allow, host bits, a non-zero u octet.
        #expect(RFC6052Prefix("64:ff9b::/80") == nil && RFC6052Prefix("64:ff9b::1/96") == nil)
        #expect(RFC6052Prefix("2001:db8:0:0:ff00::/96") == nil)
    }
}

/// The in-place path and the whole-packet reference must agree on every packet the in-place path takes.
@Suite("SIIT: the in-place path agrees with the whole-packet translator")
struct SIITPathAgreementTests {
    static let prefix = RFC6052Prefix("2001:db8:64::/96")!

    /// The packets: both families, TCP, UDP and ICMP echo, sizes on both sides of 1260 and 1280,
    /// DF set and clear, several TOS values, right and wrong checksums.
    static func packets() -> [[UInt8]] {
        var out: [[UInt8]] = []
        for ipv6 in [false, true] {
            for transport in 0..<3 {
                for size in [0, 1, 100, 1200, 1212, 1213, 1240, 1300, 1448] {
                    for df in [true, false] where !ipv6 || df {
                        for tos: UInt8 in [0, 0x2A, 0xFF] {
                            var b = PacketBuilder()
                            b.link = .raw
                            if ipv6 {
                                b.source = .v6(prefix.embedding(IPv4Address(192, 0, 2, 1)))
                                b.destination = .v6(prefix.embedding(IPv4Address(198, 51, 100, 7)))
                            }
                            switch transport {
                            case 0: break
                            case 1: b.udp = true
                            default: b.transport = .icmp(type: ipv6 ? 128 : 8, code: 0, restOfHeader: 0x0102_0304)
                            }
                            b.dontFragment = df
                            b.tos = tos
                            b.payloadLength = size
                            b.corruptChecksum = size == 100
                            out.append(b.frame())
                        }
                    }
                }
            }
        }
        return out
    }

    @Test("byte for byte, but the IPv4 ID of a DF-clear packet (each path numbers its own)")
    func agree() throws {
        var inPlace = 0
        for frame in Self.packets() {
            let layout = try PacketLayout(parsing: frame.span.bytes, linkType: .raw)
            var headers = Array(frame[..<layout.payloadOffset]) + [UInt8](repeating: 0, count: 64)
            var stage = SIITStage(prefix: Self.prefix)
            let (verdict, length) = StagePacket.withPacket(
                headers: &headers, headerLength: layout.payloadOffset, layout: layout, gso: nil, checksum: .unverified,
                payloadLength: frame.count - layout.payloadOffset, egressMTU: 1500
            ) { packet in (stage.process(&packet), packet.headerLength) }
            guard verdict == .forward else { continue }
            inPlace += 1
            let fast = Array(headers[..<length]) + frame[layout.payloadOffset...]
            var translator = SIITTranslator(configuration: SIITConfiguration(pool6: Self.prefix))
            guard case .translated(let outs) = translator.translate(frame, egressMTU: 1500), outs.count == 1 else {
                Issue.record("the reference did not translate what the in-place path did: \(frame.prefix(48))")
                continue
            }
            var slow = outs[0]
            var quick = fast
            #expect(quick.count == slow.count)
            guard quick.count == slow.count else { continue }
            if quick[0] >> 4 == 4 && quick[6] & 0x40 == 0 {
                #expect(InternetChecksum.sum(quick.span.bytes.extracting(0..<20)).value == 0xFFFF)
                for i in [4, 5, 10, 11] { quick[i] = 0; slow[i] = 0 }
            }
            #expect(quick == slow, "\(frame.count)-byte IPv\(frame[0] >> 4) packet, protocol \(layout.transport)")
        }
        #expect(inPlace >= 100, "the in-place path took \(inPlace) packets")
    }
}
