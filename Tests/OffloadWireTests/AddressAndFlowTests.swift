import OffloadWire
import Testing

@Suite("IP addresses: RFC 5952 text, parsing, scopes")
struct AddressTests {
    @Test("IPv6 text is RFC 5952's", arguments: [
        ("2001:db8:1:0:0:0:0:a", "2001:db8:1::a"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("0:0:0:0:0:0:0:0", "::"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  // a single zero group is not shortened (§4.2.2)
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),  // the longest run is shortened (§4.2.3)
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  // equal runs: the first (§4.2.3)
        ("FE80::ABCD", "fe80::abcd"),  // lower case (§4.3)
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),  // IPv4-mapped with a dotted quad (§5)
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
    ])
    func rfc5952(input: String, expected: String) throws {
        let address = try #require(IPv6Address(input))
        #expect(address.description == expected)
        #expect(IPv6Address(address.description) == address)  // the text parses back to the same address
    }

    @Test("bad text is refused, never trapped on", arguments: [
        "", ":", ":::", "1::2::3", "12345::", "g::1", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "::ffff:300.1.1.1",
        "fe80::1%eth0",
    ])
    func badIPv6(text: String) {
        #expect(IPv6Address(text) == nil)
    }

    @Test("IPv4 text", arguments: ["192.0.2.1", "0.0.0.0", "255.255.255.255"])
    func ipv4RoundTrip(text: String) throws {
        #expect(try #require(IPv4Address(text)).description == text)
    }

    @Test("bad IPv4 text", arguments: ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3", "a.b.c.d", "1.2.3.4 "])
    func badIPv4(text: String) {
        #expect(IPv4Address(text) == nil)
    }

    @Test("either family from text, ordered IPv4 first, encoded as text")
    func either() throws {
        let a = try #require(IPAddress("198.51.100.7"))
        let b = try #require(IPAddress("2001:db8::2"))
        #expect(a.isIPv4 && !b.isIPv4 && a < b)
        #expect(IPAddress("nonsense") == nil)
        #expect("\(b)" == "2001:db8::2")
    }

    @Test("scopes: multicast, link-local, loopback")
    func scopes() throws {
        #expect(try #require(IPAddress("224.0.0.251")).isMulticast)
        #expect(try #require(IPAddress("239.255.255.250")).isMulticast)
        #expect(try !#require(IPAddress("223.255.255.255")).isMulticast)
        #expect(try #require(IPAddress("169.254.1.1")).isLinkLocal)
        #expect(try !#require(IPAddress("169.253.1.1")).isLinkLocal)
        #expect(try #require(IPAddress("127.0.0.1")).isLoopback)
        #expect(try #require(IPAddress("ff02::1")).isMulticast)
        #expect(try #require(IPv6Address("ff02::1")).isLinkScopeMulticast)
        #expect(try !#require(IPv6Address("ff05::2")).isLinkScopeMulticast)
        #expect(try #require(IPAddress("fe80::1")).isLinkLocal)
        #expect(try #require(IPAddress("febf::1")).isLinkLocal)
        #expect(try !#require(IPAddress("fec0::1")).isLinkLocal)
        #expect(try #require(IPAddress("::1")).isLoopback)
        #expect(try #require(IPv4Address("255.255.255.255")).isLimitedBroadcast)
        #expect(try #require(IPv6Address("::ffff:10.0.0.1")).mappedIPv4 == IPv4Address(10, 0, 0, 1))
    }
}

@Suite("FlowKey: one flow identity, read from a layout or loosely")
struct FlowKeyTests {
    @Test("a parsed TCP/IPv6 packet gives every field; text is RFC 5952 with brackets")
    func parsed() throws {
        var b = PacketBuilder()
        b.ipv6 = true
        let frame = b.frame()
        let layout = try PacketLayout(parsing: frame.span.bytes, linkType: .ethernet)
        let read = FlowKey(frame.span.bytes, layout: layout)
        let key = try #require(read)
        #expect(key == FlowKey(source: .v6(PacketBuilder.v6Source), destination: .v6(PacketBuilder.v6Destination),
                               transport: .tcp, sourcePort: 40000, destinationPort: 5201))
        #expect(key.description == "[2001:db8::1]:40000 → [2001:db8::2]:5201")
        #expect(key.reversed.reversed == key && key.reversed.sourcePort == 5201)
    }

    @Test("a non-first fragment has no ports; a truncated packet is read loosely")
    func loose() throws {
        var b = PacketBuilder()
        b.link = .raw
        b.moreFragments = true
        b.fragmentOffset = 185
        let fragment = b.frame()
        let read = FlowKey(loosely: fragment.span.bytes, linkType: .raw)
        let key = try #require(read)
        #expect(key.transport == .tcp && key.sourcePort == nil && key.description == "192.0.2.1 → 198.51.100.7")
        b.moreFragments = false
        b.fragmentOffset = 0
        let truncated = Array(b.frame()[0..<24])  // the IP header and the ports, nothing else
        let readCut = FlowKey(loosely: truncated.span.bytes, linkType: .raw)
        let cut = try #require(readCut)
        #expect(cut.transport == .tcp && cut.sourcePort == 40000 && cut.destinationPort == 5201)
        #expect(FlowKey(loosely: Array(truncated[0..<19]).span.bytes, linkType: .raw) == nil)
        #expect(FlowKey(loosely: [UInt8]().span.bytes, linkType: .raw) == nil)
    }

    @Test("mayShareFlow: unknown fields match anything, known ones must agree")
    func sharing() {
        let tcp = FlowKey(source: .v4(IPv4Address(192, 0, 2, 1)), destination: .v4(IPv4Address(192, 0, 2, 2)),
                          transport: .tcp, sourcePort: 1, destinationPort: 1)
        var udp = tcp
        udp.transport = .udp
        var fragment = tcp
        fragment.sourcePort = nil
        fragment.destinationPort = nil
        var unknown = fragment
        unknown.transport = nil
        var otherPort = tcp
        otherPort.sourcePort = 2
        #expect(!tcp.mayShareFlow(with: udp))
        #expect(tcp.mayShareFlow(with: fragment) && fragment.mayShareFlow(with: tcp))
        #expect(udp.mayShareFlow(with: unknown) && tcp.mayShareFlow(with: unknown))
        #expect(!tcp.mayShareFlow(with: otherPort) && !tcp.mayShareFlow(with: tcp.reversed))
    }

    @Test("a quoted packet cut after 8 bytes of TCP still gives its flow, length and sequence")
    func quote() throws {
        var b = PacketBuilder()
        b.link = .raw
        b.sequence = 777
        b.payloadLength = 1000
        let quote = Array(b.frame()[0..<28])
        let read = QuotedPacket(quote.span.bytes)
        let q = try #require(read)
        #expect(q.ipLength == 20 + 32 + 1000 && q.tcpSequenceNumber == 777 && q.flow.sourcePort == 40000)
        #expect(QuotedPacket(Array(quote[0..<10]).span.bytes) == nil)
    }
}

@Suite("PacketBuilder: whole packets with correct checksums")
struct PacketBuilderTests {
    @Test("TCP, UDP and ICMP over both families, raw and Ethernet, parse and verify", arguments: [false, true])
    func everyKind(ipv6: Bool) throws {
        for transport in [PacketBuilder.Transport.tcp, .udp, .icmp(type: 3, code: 4, restOfHeader: 1400)] {
            for link in [PacketBuilder.Link.raw, .ethernet] {
                var b = PacketBuilder()
                b.ipv6 = ipv6
                b.transport = transport
                b.link = link
                b.payloadLength = 100
                let frame = b.frame()
                let layout = try PacketLayout(parsing: frame.span.bytes, linkType: b.linkType)
                #expect(layout.transport == b.protocolNumber && layout.ipEnd == frame.count)
                let l4 = frame.span.bytes.extracting(layout.transportOffset..<layout.ipEnd)
                let pseudo = b.protocolNumber == .icmp ? .zero : b.pseudoHeaderSum(length: l4.byteCount)
                #expect(InternetChecksum.sum(l4, initial: pseudo).value == 0xFFFF, "\(transport) \(link)")
            }
        }
    }

    @Test("IPv4 options, IPv6 extension headers, VLAN and a spoiled checksum")
    func extras() throws {
        var b = PacketBuilder()
        b.ipv4Options = [1, 1, 1, 0]
        b.vlan = 7
        b.corruptChecksum = true
        let frame = b.frame()
        let layout = try PacketLayout(parsing: frame.span.bytes, linkType: .ethernet)
        #expect(layout.networkOffset == 18 && layout.networkHeaderLength == 24)
        let l4 = frame.span.bytes.extracting(layout.transportOffset..<layout.ipEnd)
        #expect(InternetChecksum.sum(l4, initial: b.pseudoHeaderSum(length: l4.byteCount)).value != 0xFFFF)
        var v6 = PacketBuilder()
        v6.ipv6 = true
        v6.extensionHeaders = [(.hopByHop, [0, 0, 1, 4, 0, 0, 0, 0]), (.ipv6DestinationOptions, [0, 0, 1, 4, 0, 0, 0, 0])]
        let layout6 = try PacketLayout(parsing: v6.frame().span.bytes, linkType: .ethernet)
        #expect(layout6.transport == .tcp && layout6.networkHeaderLength == 56)
    }
}

@Suite("staysOnLink: the per-packet check agrees with the key's")
struct StaysOnLinkTests {
    @Test("multicast, link-local and broadcast stay; others are routed", arguments: [
        ("192.0.2.1", "198.51.100.7", false), ("192.0.2.1", "224.0.0.251", true), ("169.254.1.1", "192.0.2.7", true),
        ("192.0.2.1", "255.255.255.255", true), ("2001:db8::1", "2001:db8::2", false), ("fe80::1", "2001:db8::2", true),
        ("2001:db8::1", "ff02::1", true), ("2001:db8::1", "fe80::2", true),
    ])
    func onLink(source: String, destination: String, expected: Bool) throws {
        var b = PacketBuilder()
        b.link = .raw
        b.source = try #require(IPAddress(source))
        b.destination = try #require(IPAddress(destination))
        let frame = b.frame()
        let layout = try PacketLayout(parsing: frame.span.bytes, linkType: .raw)
        let key = FlowKey(frame.span.bytes, layout: layout)
        #expect(key?.staysOnLink == expected)
        #expect(frame.withUnsafeBytes { FlowKey.staysOnLink($0, layout: layout) } == expected)
    }
}

@Suite("FlowKey's hash")
struct FlowKeyHashTests {
    @Test("keys that differ in one field only (a port, the protocol, an address, a port present or not) hash apart; equal keys hash alike")
    func spreads() {
        let a = IPAddress("10.0.0.1")!, b = IPAddress("fd00::2")!
        var keys: [FlowKey] = []
        for port in 0..<500 { keys.append(FlowKey(source: a, destination: a, transport: .tcp, sourcePort: UInt16(port), destinationPort: 80)) }
        for port in 0..<500 { keys.append(FlowKey(source: b, destination: b, transport: .udp, sourcePort: 53, destinationPort: UInt16(port))) }
        for n in 0..<100 { keys.append(FlowKey(source: .v4(IPv4Address(rawValue: UInt32(n))), destination: a, transport: .tcp)) }
        keys.append(FlowKey(source: a, destination: a, transport: .tcp, sourcePort: nil, destinationPort: 80))
        keys.append(FlowKey(source: a, destination: a, transport: nil, sourcePort: 0, destinationPort: 80))
        #expect(Set(keys.map(\.hashValue)).count == keys.count, "no collision among \(keys.count) keys that differ in one field")
        let copy = FlowKey(source: a, destination: a, transport: .tcp, sourcePort: 7, destinationPort: 80)
        #expect(copy.hashValue == keys[7].hashValue && copy == keys[7])
    }
}
