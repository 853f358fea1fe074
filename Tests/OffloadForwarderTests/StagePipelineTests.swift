import Logging
import OffloadEngine
import OffloadForwarder
import OffloadTUN
import OffloadWire
import OffloadTestSupport
import Testing

/// A stage written outside the forwarder, as a user would: it rewrites the DSCP bits of every
/// packet and keeps ECN. Nothing in the forwarder knows it.
struct DSCPRewriteStage: Stage {
    var dscp: UInt8
    var headerGrowth: Int { 0 }

    mutating func process(_ packet: inout StagePacket) -> StageVerdict {
        let n = packet.layout.networkOffset
        let isIPv4 = packet.layout.network == .ipv4
        let current = packet.headers.withUnsafeBytes { h in
            isIPv4 ? h[n + IPv4Packet.Field.typeOfService] : h[n] << 4 | h[n + 1] >> 4
        }
        let value = dscp << 2 | current & 0x03
        packet.withUnsafeMutableHeaders { RouterHeaders.setTrafficClass(value, in: $0, networkOffset: n) }
        return .forward
    }
}

/// A stage that grows the headers: it inserts an 8-byte IPv6 Destination Options header (one PadN
/// option) behind the fixed header of every IPv6 packet, leaving IPv4 alone.
struct DestinationOptionsStage: Stage {
    var headerGrowth: Int { 8 }

    mutating func process(_ packet: inout StagePacket) -> StageVerdict {
        guard packet.layout.network == .ipv6 else { return .forward }
        let n = packet.layout.networkOffset
        let t = packet.layout.transportOffset
        let end = packet.headerLength
        guard end + 8 <= packet.headerCapacity else { return .drop }
        packet.withUnsafeMutableHeaders { h in
            let base = h.baseAddress!
            (base + t + 8).copyMemory(from: base + t, byteCount: end - t)  // the regions overlap: memmove
            let next = h[n + IPv6Packet.Field.nextHeader]
            h[n + IPv6Packet.Field.nextHeader] = IPProtocol.ipv6DestinationOptions.rawValue
            for (k, byte) in [next, 0, 1, 4, 0, 0, 0, 0].enumerated() { h[t + k] = byte }
            let length = (Int(h[n + 4]) << 8 | Int(h[n + 5])) + 8
            h[n + 4] = UInt8(length >> 8)
            h[n + 5] = UInt8(length & 0xFF)
        }
        packet.headerLength += 8
        packet.layout.transportOffset += 8
        packet.layout.ipEnd += 8
        packet.layout.frameLength += 8
        return .forward
    }
}

/// A stage that drops everything to one port and answers nothing.
struct PortFilterStage: Stage {
    var blockedPort: UInt16
    var headerGrowth: Int { 0 }
    mutating func process(_ packet: inout StagePacket) -> StageVerdict {
        let key = FlowKey(packet.headers, layout: packet.layout)
        return key?.destinationPort == blockedPort ? .drop : .forward
    }
}

@Suite("Stages: a stage added from outside runs in the forwarding pipeline")
struct StagePipelineTests {
    func segments(_ count: Int, ipv6: Bool = false, port: UInt16 = 5201) -> [[UInt8]] {
        (0..<count).map { i in
            var b = PacketBuilder()
            b.link = .raw
            b.ipv6 = ipv6
            b.destinationPort = port
            b.tos = 0x01  // ECT(1): the stage must keep ECN
            b.sequence = 1000 + UInt32(i) * 1448
            b.ipID = 100 + UInt16(i)
            return b.frame()
        }
    }

    func run<S: Stage>(_ frames: [[UInt8]], stage: S, egressMTU: Int = 1500, egressTakesVirtio: Bool = true)
        -> (egress: RecordingSink, back: RecordingSink, statistics: ForwarderStatistics)
    {
        var pipeline = ForwardingPipeline(direction: .lanToWan, gro: GROConfiguration(), egressMTU: egressMTU,
                                          icmpSourceV4: IPv4Address(192, 0, 2, 254),
                                          icmpSourceV6: IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe),
                                          virtioHeaders: true, stage: stage, logger: Logger(label: "test"))
        var batch = PacketBatch(packetCapacity: frames.count, byteCapacity: 1 << 20)
        for f in frames { batch.append(f, metadata: PacketMetadata(linkType: .raw, checksum: .verified)) }
        let egress = RecordingSink(takesVirtioHeaders: egressTakesVirtio)
        let back = RecordingSink()
        pipeline.process(batch, now: 1, egress: egress, back: back)
        let snapshot = pipeline.snapshot
        // Whatever happened, every packet GRO delivered has exactly one outcome.
        #expect(snapshot.deliveriesReconcile && snapshot.gro.packetsOut > 0, "\(snapshot)")
        return (egress, back, snapshot)
    }

    @Test("DSCP rewritten once per super-packet, ECN kept, header checksum right, payload untouched", arguments: [false, true])
    func dscpOnASuperPacket(ipv6: Bool) throws {
        let input = segments(4, ipv6: ipv6)
        let (egress, back, stats) = run(input, stage: DSCPRewriteStage(dscp: 46), egressMTU: ipv6 ? 1520 : 1500)
        #expect(back.writes.isEmpty && egress.writes.count == 1 && stats.superPacketsOut == 1, "\(stats)")
        let (header, bytes) = try #require(egress.writes.first)
        let vhdr = try #require(header)
        #expect(vhdr.baseGSOType == (ipv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4) && vhdr.gsoSize == 1448)
        let layout = try PacketLayout(parsing: bytes.span.bytes, linkType: .raw)
        #expect(layout.payloadLength == 4 * 1448)
        if ipv6 {
            let ip = try IPv6Packet(validating: bytes.span.bytes)
            #expect(ip.trafficClass == 46 << 2 | 1 && ip.hopLimit == 63)
        } else {
            let ip = try IPv4Packet(validating: bytes.span.bytes)
            #expect(ip.typeOfService == 46 << 2 | 1 && ip.timeToLive == 63 && ip.headerChecksumIsValid)
        }
        // The payload is the four segments' payloads, in order, byte for byte.
        let expected = input.flatMap { frame -> [UInt8] in Array(frame[layout.payloadOffset...]) }
        #expect(Array(bytes[layout.payloadOffset...]) == expected)
    }

    @Test("""
        software segmentation from the staged headers (an egress without virtio headers; a fixed-ID train): \
        the very segments that came in, one hop older
        """, arguments: [false, true])
    func segmentedFromStagedHeaders(fixedID: Bool) throws {
        var input = segments(6, ipv6: false)
        if fixedID {
            // The same IP ID on every segment (DF set): GRO merges it, but no virtio GSO type can
            // say "fixed ID", so it must be segmented here even towards a virtio egress.
            input = (0..<6).map { i in
                var b = PacketBuilder()
                b.link = .raw
                b.destinationPort = 5201
                b.sequence = 1000 + UInt32(i) * 1448
                b.ipID = 7
                return b.frame()
            }
        }
        let (egress, back, stats) = run(input, stage: IdentityStage(), egressTakesVirtio: fixedID)
        #expect(back.writes.isEmpty && stats.segmentedInSoftware == 1 && stats.superPacketsOut == 0, "\(stats)")
        #expect(egress.writes.map(\.bytes) == input.map { aged($0, hops: 1) })
        #expect(egress.writes.allSatisfy { $0.header == nil })
    }

    @Test("the MTU applies after the stage; a too-big error quotes the packet as the source sent it")
    func tooBigQuotesTheOriginal() throws {
        let (egress, back, stats) = run(segments(3), stage: DSCPRewriteStage(dscp: 46), egressMTU: 1000)
        #expect(egress.writes.isEmpty && stats.icmpSent == 1 && stats.dropped == 1)
        let icmpBytes = try #require(back.writes.first?.bytes)
        let layout = try PacketLayout(parsing: icmpBytes.span.bytes, linkType: .raw)
        let icmp = try ICMPMessage(validating: icmpBytes.span.bytes.extracting(layout.transportOffset..<layout.ipEnd),
                                   version6: false)
        #expect(icmp.type == ICMPType.v4DestinationUnreachable && icmp.code == ICMPType.v4FragmentationNeeded)
        #expect(icmp.nextHopMTU == 1000)
        let read = QuotedPacket(icmp.body)
        let quote = try #require(read)
        #expect(quote.ipLength == 20 + 32 + 1448 && quote.tcpSequenceNumber == 1000)  // the first segment
        #expect(icmp.body.withUnsafeBytes { $0[IPv4Packet.Field.typeOfService] } == 0x01)  // not the rewritten DSCP
    }

    @Test("a stage that grows the headers: the MTU applies after it, and the error announces the MTU less its growth")
    func growthMovesTheMTU() throws {
        // 40 + 32 + 1448 = 1520 bytes per segment as sent; 1528 after the stage.
        let tooBig = run(segments(3, ipv6: true), stage: DestinationOptionsStage(), egressMTU: 1520)
        #expect(tooBig.egress.writes.isEmpty && tooBig.statistics.icmpSent == 1)
        let icmpBytes = try #require(tooBig.back.writes.first?.bytes)
        let layout = try PacketLayout(parsing: icmpBytes.span.bytes, linkType: .raw)
        let icmp = try ICMPMessage(validating: icmpBytes.span.bytes.extracting(layout.transportOffset..<layout.ipEnd),
                                   version6: true)
        #expect(icmp.type == ICMPType.v6PacketTooBig && icmp.mtu == 1512)
        let read = QuotedPacket(icmp.body)
        let quote = try #require(read)
        #expect(quote.flow.transport == .tcp && quote.ipLength == 1520)  // the packet as the source sent it

        let fits = run(segments(3, ipv6: true), stage: DestinationOptionsStage(), egressMTU: 1528)
        #expect(fits.back.writes.isEmpty && fits.egress.writes.count == 1)
        let written = try #require(fits.egress.writes.first)
        #expect(written.header?.gsoSize == 1448 && written.header?.checksumStart == 48)
        let out = try PacketLayout(parsing: written.bytes.span.bytes, linkType: .raw)
        #expect(out.transport == .tcp && out.transportOffset == 48 && out.payloadLength == 3 * 1448)
        #expect(try IPv6Packet(validating: written.bytes.span.bytes).extensionHeaderCount == 1)
    }

    @Test("a stage's drop is counted and nothing is written; other flows pass")
    func drop() {
        let frames = segments(2, port: 23) + segments(2, port: 5201)
        let (egress, back, stats) = run(frames, stage: PortFilterStage(blockedPort: 23))
        #expect(stats.stageDropped == 1 && back.writes.isEmpty && egress.writes.count == 1)
    }

    @Test("the identity stage forwards what it gets, only the TTL changes")
    func identity() throws {
        let input = segments(1)
        let (egress, _, _) = run(input, stage: IdentityStage())
        var expected = input[0]
        RouterHeaders.decrementTTL(&expected, networkOffset: 0)
        let written = try #require(egress.writes.first)
        // Verified input leaves with a partial checksum (NEEDS_CSUM): compare all but the L4 checksum.
        #expect(Array(written.bytes[0..<36]) == Array(expected[0..<36]))
        #expect(Array(written.bytes[38...]) == Array(expected[38...]))
    }
}
