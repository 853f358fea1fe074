import OffloadEngine
import OffloadWire
import Testing

@Suite("Forwarding decision (docs/linux-gro-rules.md §6, scenario 39)")
struct ForwardingTests {
    /// A GRO super-packet of `count` 1448-byte segments (raw IP), and its inputs.
    func superPacket(_ count: Int = 3, _ customize: (Int, inout PacketBuilder) -> Void = { _, _ in })
        -> (Emitted, [[UInt8]])
    {
        let inputs = stream(count) { i, s in
            customize(i, &s)
            if s.ipv6 { s.payloadLength = 1428 }  // 40 + 32 + 1428 = 1500
        }.map { $0.ipPacket() }
        let out = runGRO(inputs, linkType: .raw)
        return (out[0], inputs)
    }

    func route(_ e: Emitted, mtu: Int, gsoEgress: Bool, now: UInt64 = 0) -> (RouterOutput, RouterStatistics) {
        var router = Router(configuration: RouterConfiguration(egressMTU: mtu, egressTakesGSO: gsoEgress))
        let out = router.route(e.bytes, linkType: .raw, gso: e.gso, now: now)
        return (out, router.statistics)
    }

    /// The input with its TTL (or hop limit) decremented.
    func decremented(_ packet: [UInt8]) -> [UInt8] {
        var copy = packet
        RouterHeaders.decrementTTL(&copy, networkOffset: 0)
        return copy
    }

    @Test("segments fit, egress takes GSO: forwarded whole with TTL − 1")
    func fitsGSO() throws {
        let (sp, _) = superPacket()
        let (out, _) = route(sp, mtu: 1500, gsoEgress: true)
        #expect(out.decision == .forward)
        #expect(out.egress.count == 1 && out.egress[0].gso == sp.gso)
        #expect(out.egress[0].bytes[8] == 63)
        #expect(checksumsAreValid(out.egress[0].bytes, linkType: .raw))
    }

    @Test("segments fit, egress without GSO: segmented back into the original packets, TTL − 1")
    func fitsSegment() {
        for ipv6 in [false, true] {
            let (sp, inputs) = superPacket { _, s in s.ipv6 = ipv6 }
            let (out, stats) = route(sp, mtu: 1500, gsoEgress: false)
            #expect(out.decision == .segment)
            let same = out.egress.map(\.bytes) == inputs.map(decremented)
            #expect(same)
            #expect(stats.segmentsOut == 3)
        }
    }

    @Test("too big with DF: ICMP fragmentation needed with the MTU, quoting a segment-sized header")
    func tooBigIPv4() throws {
        let (sp, inputs) = superPacket()
        let (out, stats) = route(sp, mtu: 1400, gsoEgress: true)
        #expect(out.decision == .tooBig(mtu: 1400))
        #expect(out.egress.isEmpty && stats.icmpTooBig == 1 && stats.dropped == 1)
        let icmp = try #require(out.toSource.first)
        #expect(checksumsAreValidICMP(icmp))
        #expect(icmp[9] == 1)  // ICMP
        #expect(icmp.loadBigEndian(UInt32.self, at: 16) == PacketBuilder.v4Source.rawValue)
        #expect(icmp[20] == 3 && icmp[21] == 4)
        #expect(icmp.loadBigEndian(UInt16.self, at: 26) == 1400)
        // The quote is the first segment as the source sent it: length 1500, not 4396.
        let quote = Array(icmp[28...])
        #expect(quote.loadBigEndian(UInt16.self, at: 2) == 1500)
        #expect(Array(quote) == Array(inputs[0][0..<quote.count]))
        #expect(icmp.count <= 576)
    }

    @Test("IPv6 too big: ICMPv6 packet too big; routers never fragment")
    func tooBigIPv6() throws {
        let (sp, inputs) = superPacket { _, s in s.ipv6 = true }
        let (out, _) = route(sp, mtu: 1400, gsoEgress: false)
        #expect(out.decision == .tooBig(mtu: 1400))
        let icmp = try #require(out.toSource.first)
        #expect(icmp[6] == 58 && icmp[40] == 2 && icmp[41] == 0)
        #expect(icmp.loadBigEndian(UInt32.self, at: 44) == 1400)
        let quote = Array(icmp[48...])
        #expect(quote.loadBigEndian(UInt16.self, at: 4) == 1460)
        #expect(quote == Array(inputs[0][0..<quote.count]))
        #expect(checksumsAreValidICMP(icmp))
    }

    @Test("too big with DF clear: segments, then IPv4 fragments that reassemble to each segment")
    func fragments() throws {
        let (sp, inputs) = superPacket { _, s in s.dontFragment = false }
        let (out, stats) = route(sp, mtu: 1400, gsoEgress: true)
        #expect(out.decision == .fragment)
        #expect(out.egress.allSatisfy { $0.bytes.count <= 1400 })
        #expect(stats.fragmentsOut == 6)
        // Group fragments by ID and reassemble.
        var byID: [UInt16: [[UInt8]]] = [:]
        for f in out.egress { byID[f.bytes.loadBigEndian(UInt16.self, at: 4), default: []].append(f.bytes) }
        #expect(byID.count == 3)
        for input in inputs {
            let expected = decremented(input)
            let pieces = try #require(byID[expected.loadBigEndian(UInt16.self, at: 4)])
            #expect(reassemble(pieces) == Array(expected[20...]))
            #expect(pieces.allSatisfy { checksumsAreValidIPHeader($0) })
        }
    }

    @Test("TTL and hop limit expiry: ICMP time exceeded")
    func ttlExpiry() throws {
        for ipv6 in [false, true] {
            let (sp, _) = superPacket { _, s in s.ttl = 1; s.ipv6 = ipv6 }
            let (out, stats) = route(sp, mtu: 1500, gsoEgress: true)
            #expect(out.decision == .timeExceeded)
            #expect(out.egress.isEmpty && stats.icmpTimeExceeded == 1)
            let icmp = try #require(out.toSource.first)
            #expect(ipv6 ? icmp[40] == 3 : icmp[20] == 11)
            #expect(checksumsAreValidICMP(icmp))
        }
    }

    @Test("the ICMP rate limit")
    func rateLimit() {
        let (sp, _) = superPacket()
        var config = RouterConfiguration(egressMTU: 1400)
        config.icmpBurst = 2
        config.icmpPerSecond = 1
        var router = Router(configuration: config)
        let sent = (0..<3).map { _ in router.route(sp.bytes, linkType: .raw, gso: sp.gso, now: 0).toSource.count }
        #expect(sent == [1, 1, 0])
        #expect(router.route(sp.bytes, linkType: .raw, gso: sp.gso, now: 1_500_000_000).toSource.count == 1)
        #expect(router.statistics.icmpSuppressed == 1)
    }

    @Test("an LRO merge has no segment size: its total length is checked")
    func lroTotalLength() {
        var (sp, _) = superPacket()
        sp.gso?.segmentSize = 0
        #expect(route(sp, mtu: 1500, gsoEgress: true).0.decision == .tooBig(mtu: 1500))
    }

    @Test("non-IP passes unchanged; no ICMP error about an ICMP error")
    func passThroughAndNoErrorAboutError() {
        let arp: [UInt8] = [0x20, 1, 2, 3]
        var router = Router(configuration: RouterConfiguration(egressMTU: 1500))
        let out = router.route(arp, linkType: .raw, gso: nil, now: 0)
        #expect(out.decision == .passThrough && out.egress.map(\.bytes) == [arp])
        let icmpError = ICMPErrorBuilder.ipv4(type: 3, code: 4, restOfHeader: 1400,
                                              quoting: stream(1)[0].ipPacket().span.bytes,
                                              source: IPv4Address(1, 1, 1, 1))!
        #expect(ICMPErrorBuilder.ipv4(type: 11, code: 0, restOfHeader: 0, quoting: icmpError.span.bytes,
                                      source: IPv4Address(1, 1, 1, 1)) == nil)
    }
}

/// Reassembles IPv4 fragments (any order) into the original payload.
func reassemble(_ fragments: [[UInt8]]) -> [UInt8] {
    var payload: [UInt8] = []
    for f in fragments.sorted(by: { ($0.loadBigEndian(UInt16.self, at: 6) & 0x1FFF) < ($1.loadBigEndian(UInt16.self, at: 6) & 0x1FFF) }) {
        let ihl = Int(f[0] & 0x0F) * 4
        let offset = Int(f.loadBigEndian(UInt16.self, at: 6) & 0x1FFF) * 8
        if payload.count < offset { return [] }
        payload = Array(payload[0..<offset]) + f[ihl..<Int(f.loadBigEndian(UInt16.self, at: 2))]
    }
    return payload
}

func checksumsAreValidIPHeader(_ ip: [UInt8]) -> Bool {
    InternetChecksum.sum(ip.span.bytes.extracting(first: Int(ip[0] & 0x0F) * 4)).value == 0xFFFF
}

/// Whether an ICMP error (raw IP) has valid IP and ICMP checksums.
func checksumsAreValidICMP(_ packet: [UInt8]) -> Bool {
    if packet[0] >> 4 == 4 {
        return checksumsAreValidIPHeader(packet) && InternetChecksum.sum(packet.span.bytes.extracting(droppingFirst: 20)).value == 0xFFFF
    }
    guard let p = try? IPv6Packet(validating: packet.span.bytes) else { return false }
    let pseudo = InternetChecksum.pseudoHeaderSum(ipv6Source: p.source, destination: p.destination,
                                                  nextHeader: .icmpv6, length: p.payloadLength)
    return InternetChecksum.sum(packet.span.bytes.extracting(droppingFirst: 40), initial: pseudo).value == 0xFFFF
}
