import OffloadEngine
import OffloadNAT64
import OffloadSIIT
import OffloadWire
import Testing

/// Checks that a packet's IPv4 or IPv6 header and L4 checksum are right.
func checksumsAreValid(_ packet: [UInt8]) throws -> Bool {
    let layout = try PacketLayout(parsing: packet.span.bytes, linkType: .raw)
    let l4 = packet.span.bytes.extracting(layout.transportOffset..<layout.ipEnd)
    let read = FlowKey(packet.span.bytes, layout: layout)
    let key = try #require(read)
    let pseudo: OnesComplementSum = switch (key.source, key.destination) {
    case (.v4(let s), .v4(let d)):
        layout.transport == .icmp ? .zero
            : InternetChecksum.pseudoHeaderSum(ipv4Source: s, destination: d, protocolNumber: layout.transport, length: l4.byteCount)
    case (.v6(let s), .v6(let d)):
        InternetChecksum.pseudoHeaderSum(ipv6Source: s, destination: d, nextHeader: layout.transport, length: l4.byteCount)
    default: .zero
    }
    return InternetChecksum.sum(l4, initial: pseudo).value == 0xFFFF
}

@Suite("NAT64: a TCP connection out and back, with the session's port")
struct NAT64RoundTripTests {
    static let prefix = RFC6052Prefix(IPv6Prefix(IPv6Address(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0), length: 96)!)!
    static let client = IPv6Address(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2)
    static let server = IPv4Address(203, 0, 113, 9)
    static let pool = IPv4Address(198, 51, 100, 1)

    static func configuration() -> NAT64Configuration {
        NAT64Configuration(pool4: [Pool4Entry("198.51.100.1:1024-65535")!], pool6: prefix)
    }

    @Test("V6 SYN out, V4 SYN-ACK back: the pool4 address and a new port out, the client's own port back")
    func synAndSynAck() throws {
        var dataplane = NAT64OfflineDataplane(configuration: Self.configuration())
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v6(Self.client)
        b.destination = .v6(Self.prefix.embedding(Self.server))
        b.flags = .syn
        b.sourcePort = 40001
        b.destinationPort = 80
        b.payloadLength = 0
        let out = dataplane.translate(b.frame(), now: 1_000)
        let syn = try #require(out.forwarded.first)
        #expect(syn[0] >> 4 == 4)
        #expect(IPv4Address(syn, 12) == Self.pool)
        #expect(IPv4Address(syn, 16) == Self.server)
        let port = syn.loadBigEndian(UInt16.self, at: 20)
        #expect(port >= 1024 && port & 1 == 1, "odd source port keeps its parity")
        #expect(try checksumsAreValid(syn))

        var r = PacketBuilder()
        r.link = .raw
        r.source = .v4(Self.server)
        r.destination = .v4(Self.pool)
        r.flags = [.syn, .ack]
        r.sourcePort = 80
        r.destinationPort = port
        r.payloadLength = 0
        let back = dataplane.translate(r.frame(), now: 2_000)
        let synAck = try #require(back.forwarded.first)
        #expect(synAck[0] >> 4 == 6)
        #expect(IPv6Address(synAck, 8) == Self.prefix.embedding(Self.server))
        #expect(IPv6Address(synAck, 24) == Self.client)
        #expect(synAck.loadBigEndian(UInt16.self, at: 42) == 40001)
        #expect(try checksumsAreValid(synAck))
        let state = dataplane.state.snapshot(now: 3_000)
        #expect(state.sessions["tcp"] == 1)
        #expect(state.entries.first?.sessions.first?.state == "ESTABLISHED")
    }

    @Test("endpoint-independent filtering, in place: another IPv4 host (and port) reaches a UDP binding and gets its own session; address-dependent refuses it")
    func endpointIndependentInbound() throws {
        for filtering in [NAT64Filtering.endpointIndependent, .addressDependent] {
            var c = Self.configuration()
            c.filtering = filtering
            var dataplane = NAT64OfflineDataplane(configuration: c)
            var b = PacketBuilder()
            b.link = .raw
            b.transport = .udp
            b.source = .v6(Self.client)
            b.destination = .v6(Self.prefix.embedding(Self.server))
            b.sourcePort = 5000
            b.destinationPort = 53
            b.payloadLength = 30
            let out = try #require(dataplane.translate(b.frame(), now: 1_000).forwarded.first)
            let port = out.loadBigEndian(UInt16.self, at: 20)
            var r = PacketBuilder()
            r.link = .raw
            r.transport = .udp
            r.source = .v4(IPv4Address(192, 0, 2, 77))  // not the server
            r.destination = .v4(Self.pool)
            r.sourcePort = 9999
            r.destinationPort = port
            r.payloadLength = 30
            let back = dataplane.translate(r.frame(), now: 2_000).forwarded
            if filtering == .endpointIndependent {
                let packet = try #require(back.first, "the other host's datagram was not translated")
                #expect(IPv6Address(packet, 24) == Self.client && packet.loadBigEndian(UInt16.self, at: 42) == 5000)
                #expect(try checksumsAreValid(packet))
                #expect(dataplane.state.snapshot(now: 3_000).sessions["udp"] == 2)
            } else {
                #expect(back.isEmpty)
                #expect(dataplane.translation.dropped[.filtered] == 1)
            }
        }
    }
}

@Suite("NAT64: what the state shows, and IPv6 UDP without a checksum")
struct NAT64StateViewTests {
    @Test("IPv6 UDP with a zero checksum is dropped as malformed and makes no session (RFC 8200 §8.1)")
    func udpZeroChecksum() throws {
        var dataplane = NAT64OfflineDataplane(configuration: NAT64RoundTripTests.configuration())
        var b = PacketBuilder()
        b.link = .raw
        b.transport = .udp
        b.source = .v6(NAT64RoundTripTests.client)
        b.destination = .v6(NAT64RoundTripTests.prefix.embedding(NAT64RoundTripTests.server))
        b.payloadLength = 20
        b.zeroUDPChecksum = true
        #expect(dataplane.translate(b.frame(), now: 1).forwarded.isEmpty)
        #expect(dataplane.translation.dropped[.malformed] == 1)
        #expect(dataplane.state.snapshot(now: 2).sessions["udp"] == 0)
    }

    @Test("the snapshot lists at most its limit, counts the rest, and sorts by protocol, address and port as numbers")
    func snapshotLimitAndOrder() throws {
        var dataplane = NAT64OfflineDataplane(configuration: NAT64RoundTripTests.configuration())
        for port: UInt16 in [9, 10, 100, 2, 1000] {
            var b = PacketBuilder()
            b.link = .raw
            b.transport = .udp
            b.source = .v6(NAT64RoundTripTests.client)
            b.destination = .v6(NAT64RoundTripTests.prefix.embedding(NAT64RoundTripTests.server))
            b.sourcePort = port
            b.payloadLength = 8
            _ = dataplane.translate(b.frame(), now: 1)
        }
        let all = dataplane.state.snapshot(now: 2, limit: 100)
        #expect(all.entries.map(\.ipv6) == [2, 9, 10, 100, 1000].map { "[\(NAT64RoundTripTests.client)]:\($0)" })
        let some = dataplane.state.snapshot(now: 2, limit: 3)
        #expect(some.entries.count == 3 && some.omitted == 2 && some.bindings["udp"] == 5)
    }
}
