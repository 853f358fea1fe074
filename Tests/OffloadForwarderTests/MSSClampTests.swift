import Logging
import OffloadEngine
import OffloadForwarder
import OffloadTUN
import OffloadWire
import OffloadTestSupport
import Testing

@Suite("MSS clamping: SYNs through a smaller MTU announce an MSS that fits")
struct MSSClampTests {
    /// A SYN (or SYN-ACK) with `options`, as raw IP.
    func syn(ipv6: Bool = false, flags: TCPFlags = .syn, options: [TCPOption], ttl: UInt8 = 64) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        if ipv6 {
            b.source = .v6(IPv6Address(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2))
            b.destination = .v6(IPv6Address(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2))
        }
        b.flags = flags
        b.payloadLength = 0
        b.options = options
        b.ttl = ttl
        return b.ipPacket()
    }

    /// Linux's SYN options: MSS, SACK permitted, timestamps, no-operation, window scale.
    func linuxOptions(mss: UInt16) -> [TCPOption] {
        [.maximumSegmentSize(mss), .sackPermitted, .timestamp(value: 7, echoReply: 0), .noOperation, .windowScale(7)]
    }

    /// What a pipeline clamping to `clampMTU` (nil: not clamping) writes for `packet`, and how many it clamped.
    func forward(_ packet: [UInt8], clampMTU: Int?) -> (bytes: [UInt8], clamped: Int) {
        var pipeline = ForwardingPipeline(direction: .lanToWan, gro: GROConfiguration(), egressMTU: 1500,
                                          icmpSourceV4: IPv4Address(192, 0, 2, 254),
                                          icmpSourceV6: IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe),
                                          virtioHeaders: false, stage: IdentityStage(), logger: Logger(label: "test"))
        pipeline.mssClampMTU = clampMTU
        var batch = PacketBatch(packetCapacity: 1, byteCapacity: 1 << 16)
        batch.append(packet, metadata: PacketMetadata(linkType: .raw, checksum: .verified))
        let egress = RecordingSink(takesVirtioHeaders: false)
        pipeline.process(batch, now: 1, egress: egress, back: RecordingSink())
        return (egress.writes.first?.bytes ?? [], pipeline.snapshot.mssClamped)
    }

    @Test("a SYN announcing 1460 through a 1435-byte tunnel leaves with 1395 and a correct checksum, byte for byte")
    func clampsIPv4() {
        let out = forward(syn(options: linuxOptions(mss: 1460)), clampMTU: 1435)
        // The packet a sender with MSS 1395 would have sent, one hop on (TTL − 1): checksums made afresh.
        #expect(out.bytes == syn(options: linuxOptions(mss: 1395), ttl: 63))
        #expect(out.clamped == 1)
    }

    @Test("a SYN-ACK over IPv6: MTU less 60")
    func clampsIPv6SynAck() {
        let out = forward(syn(ipv6: true, flags: [.syn, .ack], options: linuxOptions(mss: 1440)), clampMTU: 1435)
        #expect(out.bytes == syn(ipv6: true, flags: [.syn, .ack], options: linuxOptions(mss: 1375), ttl: 63))
    }

    @Test("an MSS option at an odd offset (after a no-operation): the checksum update counts its bytes swapped")
    func clampsAtOddOffset() {
        let options: (UInt16) -> [TCPOption] = { [.noOperation, .maximumSegmentSize($0), .noOperation, .noOperation, .noOperation] }
        let out = forward(syn(options: options(1460)), clampMTU: 1435)
        #expect(out.bytes == syn(options: options(1395), ttl: 63))
    }

    @Test("left as they are: an MSS already small enough, a segment without SYN, no clamping configured")
    func leavesOthers() {
        for (packet, clamp) in [(syn(options: linuxOptions(mss: 1300)), Optional(1435)),
                                (syn(flags: .ack, options: linuxOptions(mss: 1460)), 1435),
                                (syn(options: linuxOptions(mss: 1460)), nil)] {
            let out = forward(packet, clampMTU: clamp)
            var expected = packet
            RouterHeaders.decrementTTL(&expected, networkOffset: 0)
            #expect(out.bytes == expected)
            #expect(out.clamped == 0)
        }
    }

    @Test("a partial (NEEDS_CSUM) checksum field is left for the writer to finish over the new bytes")
    func partialChecksumUntouched() {
        var tcp: [UInt8] = Array(syn(options: linuxOptions(mss: 1460))[20...])
        tcp[16] = 0x12
        tcp[17] = 0x34
        let old = tcp.withUnsafeMutableBytes { RouterHeaders.clampMSS($0, to: 1395, checksumIsPartial: true) }
        #expect(old == 1460)
        #expect(tcp[16] == 0x12 && tcp[17] == 0x34)
        #expect(tcp[22] == 0x05 && tcp[23] == 0x73)  // 1395
    }
}
