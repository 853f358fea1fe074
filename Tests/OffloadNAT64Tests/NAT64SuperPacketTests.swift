import Logging
import OffloadEngine
import OffloadForwarder
import OffloadNAT64
import OffloadSIIT
import OffloadWire
import Testing

/// Super-packets through a ``ForwardingPipeline`` with GRO and virtio headers, as a TUN device
/// with offloads gives them: one lookup, one translation in place, one super-packet out.
@Suite("NAT64 super-packets: looked up once, translated once, segmentable to valid segments")
struct NAT64SuperPacketTests {
    static let s = Net.s

    /// A state with an ESTABLISHED session client:40001 ↔ server:80 (opened at 0 and 1 ns); the pool4 port.
    static func established() throws -> (NAT64State, UInt16) {
        let state = NAT64State(configuration: Net.configuration())
        let port = state.withTables { t -> UInt16? in
            guard case .success(let side) = t.fromIPv6(.tcp, source: Net.client, sourcePort: 40001, destination: Net.server,
                                                         destinationPort: 80, tcpFlags: 0x02, now: 0),
                case .success = t.fromIPv4(.tcp, source: Net.server, sourcePort: 80, destination: side.address,
                                           destinationPort: side.port, tcpFlags: 0x12, now: 1)
            else { return nil }
            return side.port
        }
        return (state, try #require(port))
    }

    /// `count` segments of `payload` bytes of the flow, from IPv6 (client → server) or IPv4 (server → pool4:port).
    static func segments(_ count: Int, fromIPv6: Bool, payload: Int, port: UInt16 = 0, lastFlags: TCPFlags = .ack) -> [[UInt8]] {
        (0..<count).map { i in
            var b = PacketBuilder()
            b.link = .raw
            if fromIPv6 {
                b.source = .v6(Net.client)
                b.destination = .v6(Net.prefix.embedding(Net.server))
                b.sourcePort = 40001
                b.destinationPort = 80
            } else {
                b.source = .v4(Net.server)
                b.destination = .v4(Net.pool)
                b.sourcePort = 80
                b.destinationPort = port
            }
            b.flags = i == count - 1 ? lastFlags : .ack
            b.sequence = 1000 + UInt32(i * payload)
            b.ipID = 50 + UInt16(i)
            b.payloadLength = payload
            return b.frame()
        }
    }

    /// Runs the frames through one pipeline at `now`.
    static func run(_ frames: [[UInt8]], state: NAT64State, fromIPv6: Bool, egressMTU: Int, now: UInt64)
        -> (egress: RecordingSink, back: RecordingSink, forwarder: ForwarderStatistics, nat64: NAT64Statistics)
    {
        var pipeline = ForwardingPipeline(direction: fromIPv6 ? .lanToWan : .wanToLan, gro: GROConfiguration(),
                                          egressMTU: egressMTU, icmpSourceV4: IPv4Address(192, 0, 2, 254),
                                          icmpSourceV6: IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe), virtioHeaders: true,
                                          stage: NAT64Stage(state: state), logger: Logger(label: "test"))
        var batch = PacketBatch(packetCapacity: max(1, frames.count), byteCapacity: 1 << 20)
        for f in frames { batch.append(f, metadata: PacketMetadata(linkType: .raw, checksum: .verified)) }
        let egress = RecordingSink()
        let back = RecordingSink()
        pipeline.process(batch, now: now, egress: egress, back: back)
        return (egress, back, pipeline.snapshot, pipeline.stage.statistics)
    }

    /// Finishes the partial checksum, splits the super-packet with GSO and returns the segments,
    /// each checked.
    static func validSegments(_ bytes: [UInt8], gso: GSOInfo) throws -> [[UInt8]] {
        var whole = bytes
        let layout = try PacketLayout(parsing: whole.span.bytes, linkType: .raw)
        try whole.withUnsafeMutableBytes {
            try VirtioPacketInfo.finishPartialChecksum($0, start: layout.transportOffset, offset: TCPSegment.Field.checksum)
        }
        var segmenter = GSOSegmenter()
        try whole.withUnsafeBytes { try segmenter.segment($0, linkType: .raw, gso: gso) }
        let out = (0..<segmenter.segmentCount).map { segmenter.segmentBytes(at: $0) }
        for (i, segment) in out.enumerated() {
            #expect(try checksumsAreValid(segment), "segment \(i)")
        }
        return out
    }

    @Test("IPv6 → IPv4: four segments, one lookup, one IPv4 super-packet with the pool4 port")
    func toIPv4() throws {
        let (state, port) = try Self.established()
        let input = Self.segments(4, fromIPv6: true, payload: 1428)
        let r = Self.run(input, state: state, fromIPv6: true, egressMTU: 1500, now: 10 * Self.s)
        #expect(r.forwarder.gro.superPackets == 1)
        #expect(r.nat64.superPackets == 1 && r.nat64.toIPv4 == 1 && r.nat64.slowPath == 0)
        #expect(r.egress.writes.count == 1 && r.back.writes.isEmpty)
        let (header, bytes) = try #require(r.egress.writes.first)
        #expect(header?.baseGSOType == VirtioNetHeader.gsoTCPv4 && header?.gsoSize == 1428)
        #expect(Net.source4(bytes) == Net.pool && Net.destination4(bytes) == Net.server)
        #expect(Net.l4Field(bytes, 0) == port && Net.l4Field(bytes, 2) == 80)
        #expect(Array(bytes[52...]) == input.flatMap { Array($0[72...]) }, "the payload untouched")
        let segments = try Self.validSegments(bytes, gso: GSOInfo(kind: .tcpv4, segmentSize: 1428, segmentCount: 4))
        #expect(segments.count == 4)
        #expect(segments.allSatisfy { Net.l4Field($0, 0) == port && $0.count == 1480 })
        // Refreshed once, at the batch's time.
        let view = try #require(Net.session(state.snapshot(now: 10 * Self.s), .tcp, remote: "203.0.113.9:80"))
        #expect(view.state == "ESTABLISHED" && view.expiresIn == 7_440)
    }

    @Test("IPv4 → IPv6: three segments, one IPv6 super-packet to the client's own port")
    func toIPv6() throws {
        let (state, port) = try Self.established()
        let input = Self.segments(3, fromIPv6: false, payload: 1448, port: port)
        let r = Self.run(input, state: state, fromIPv6: false, egressMTU: 1520, now: 10 * Self.s)
        #expect(r.nat64.superPackets == 1 && r.nat64.toIPv6 == 1 && r.nat64.slowPath == 0)
        #expect(r.egress.writes.count == 1 && r.back.writes.isEmpty)
        let (header, bytes) = try #require(r.egress.writes.first)
        #expect(header?.baseGSOType == VirtioNetHeader.gsoTCPv6 && header?.gsoSize == 1448)
        #expect(Net.source6(bytes) == Net.prefix.embedding(Net.server) && Net.destination6(bytes) == Net.client)
        #expect(Net.l4Field(bytes, 0) == 80 && Net.l4Field(bytes, 2) == 40001)
        let segments = try Self.validSegments(bytes, gso: GSOInfo(kind: .tcpv6, segmentSize: 1448, segmentCount: 3))
        #expect(segments.count == 3 && segments.allSatisfy { Net.l4Field($0, 2) == 40001 })
    }

    @Test("a FIN on the last segment rides the super-packet and moves the state once")
    func finOnLastSegment() throws {
        let (state, port) = try Self.established()
        let input = Self.segments(4, fromIPv6: true, payload: 1428, lastFlags: [.fin, .ack])
        let r = Self.run(input, state: state, fromIPv6: true, egressMTU: 1500, now: 10 * Self.s)
        #expect(r.forwarder.gro.superPackets == 1 && r.nat64.superPackets == 1 && r.nat64.toIPv4 == 1)
        let (_, bytes) = try #require(r.egress.writes.first)
        let segments = try Self.validSegments(bytes, gso: GSOInfo(kind: .tcpv4, segmentSize: 1428, segmentCount: 4))
        #expect(segments.count == 4)
        #expect(segments.last.map { $0[20 + 13] & 0x01 } == 1, "the FIN on the last segment")
        #expect(segments.dropLast().allSatisfy { $0[20 + 13] & 0x01 == 0 }, "and on no other")
        #expect(Net.session(state.snapshot(now: 10 * Self.s), .tcp, remote: "203.0.113.9:80")?.state == "V6_FIN_RCV")
        // The server's FIN in a super-packet of its own: both FINs.
        let back = Self.segments(2, fromIPv6: false, payload: 1448, port: port, lastFlags: [.fin, .ack])
        let r2 = Self.run(back, state: state, fromIPv6: false, egressMTU: 1520, now: 11 * Self.s)
        #expect(r2.nat64.superPackets == 1)
        let view = try #require(Net.session(state.snapshot(now: 11 * Self.s), .tcp, remote: "203.0.113.9:80"))
        #expect(view.state == "V4_FIN_V6_FIN_RCV" && view.expiresIn == 240)
    }

    @Test("a super-packet of a flow with no session: dropped whole (no_session), nothing leaves")
    func withoutSession() throws {
        let state = NAT64State(configuration: Net.configuration())
        let r = Self.run(Self.segments(4, fromIPv6: true, payload: 1428), state: state, fromIPv6: true, egressMTU: 1500, now: 1)
        #expect(r.egress.writes.isEmpty && r.nat64.dropped[.noSession] == 1 && r.nat64.toIPv4 == 0)
        #expect(state.snapshot(now: 1).sessions["tcp"] == 0)
    }
}
