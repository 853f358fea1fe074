import OffloadWire
import Testing

@Suite("PacketSelectors: the 5-tuple an IPsec policy matches, read from an inner packet's headers")
struct PacketSelectorsTests {
    func read(_ bytes: [UInt8]) -> PacketSelectors? { PacketSelectors(bytes.span.bytes) }

    func builder(ipv6: Bool = false, transport: PacketBuilder.Transport = .tcp) -> PacketBuilder {
        var b = PacketBuilder()
        b.link = .raw
        b.ipv6 = ipv6
        b.transport = transport
        b.sourcePort = 40_001
        b.destinationPort = 5202
        b.payloadLength = 100
        return b
    }

    @Test("TCP and UDP over IPv4 and IPv6: addresses, protocol, both ports", arguments: [false, true])
    func tcpAndUDP(ipv6: Bool) throws {
        for transport in [PacketBuilder.Transport.tcp, .udp] {
            let b = builder(ipv6: ipv6, transport: transport)
            let s = try #require(read(b.ipPacket()))
            #expect(s == PacketSelectors(source: b.source, destination: b.destination, ipProtocol: b.protocolNumber.rawValue,
                                         sourcePort: 40_001, destinationPort: 5202))
        }
    }

    @Test("only the headers (an encapsulator's first segment): the length fields count bytes that are not there")
    func headersOnly() throws {
        for ipv6 in [false, true] {
            let whole = builder(ipv6: ipv6).ipPacket()
            let headers = Array(whole.prefix((ipv6 ? 40 : 20) + 32))
            #expect(read(headers)?.destinationPort == 5202)
        }
    }

    @Test("ICMP, and a protocol without ports: the protocol, no ports")
    func noPorts() throws {
        let icmp = try #require(read(builder(transport: .icmp(type: 8, code: 0, restOfHeader: 1)).ipPacket()))
        #expect(icmp.ipProtocol == 1 && icmp.sourcePort == nil && icmp.destinationPort == nil && !icmp.isNonInitialFragment)
        let gre = try #require(read(builder(ipv6: true, transport: .other(IPProtocol(rawValue: 47))).ipPacket()))
        #expect(gre.ipProtocol == 47 && gre.sourcePort == nil)
    }

    @Test("IPv4 fragments: the first has ports, a later one has none and says so; options are skipped")
    func ipv4Fragments() throws {
        var b = builder()
        b.dontFragment = false
        b.moreFragments = true
        let first = try #require(read(b.ipPacket()))
        #expect(first.destinationPort == 5202 && !first.isNonInitialFragment)
        b.fragmentOffset = 185
        let later = try #require(read(b.ipPacket()))
        #expect(later.ipProtocol == 6 && later.sourcePort == nil && later.destinationPort == nil && later.isNonInitialFragment)
        var options = builder()
        options.ipv4Options = [1, 1, 1, 0]  // NOP NOP NOP EOL: a 24-byte header
        #expect(read(options.ipPacket())?.destinationPort == 5202)
    }

    @Test("IPv6 extension headers are walked; a non-initial Fragment header ends the walk with its next header")
    func ipv6ExtensionHeaders() throws {
        var b = builder(ipv6: true)
        b.extensionHeaders = [(.hopByHop, [0, 0, 1, 4, 0, 0, 0, 0]), (.ipv6DestinationOptions, [0, 1] + [UInt8](repeating: 0, count: 14))]
        #expect(read(b.ipPacket()) == PacketSelectors(source: b.source, destination: b.destination, ipProtocol: 6,
                                                      sourcePort: 40_001, destinationPort: 5202))
        b.extensionHeaders = [(.ipv6Fragment, [0, 0, 0, 1, 0, 0, 0, 9])]  // offset 0, more fragments: the first
        #expect(read(b.ipPacket())?.destinationPort == 5202)
        b.extensionHeaders = [(.ipv6Fragment, [0, 0, 0x05, 0xC8, 0, 0, 0, 9])]  // offset 185 (× 8 bytes)
        let later = try #require(read(b.ipPacket()))
        #expect(later.ipProtocol == 6 && later.destinationPort == nil && later.isNonInitialFragment)
        b.extensionHeaders = [(.authentication, [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1])]
        let ah = try #require(read(b.ipPacket()))
        #expect(ah.ipProtocol == 51 && ah.destinationPort == nil, "AH is a protocol of its own: not walked")
    }

    @Test("cut short: no fixed header, no IPv6 extension header, is nil; a cut transport header has no ports")
    func truncated() throws {
        for ipv6 in [false, true] {
            let whole = builder(ipv6: ipv6).ipPacket()
            let fixed = ipv6 ? 40 : 20
            for cut in [0, 1, fixed - 1] { #expect(read(Array(whole.prefix(cut))) == nil, "\(ipv6) \(cut)") }
            let noPorts = try #require(read(Array(whole.prefix(fixed + 3))))
            #expect(noPorts.ipProtocol == 6 && noPorts.sourcePort == nil && noPorts.destinationPort == nil)
            #expect(read(Array(whole.prefix(fixed + 4)))?.destinationPort == 5202)
        }
        var b = builder(ipv6: true)
        b.extensionHeaders = [(.hopByHop, [0, 0, 1, 4, 0, 0, 0, 0])]
        #expect(read(Array(b.ipPacket().prefix(45))) == nil, "the Hop-by-Hop header is cut: the protocol is unknown")
        var v4 = builder()
        v4.ipv4Options = [1, 1, 1, 0]
        #expect(read(Array(v4.ipPacket().prefix(22))) == nil, "the options are cut")
        #expect(read([0x55] + [UInt8](repeating: 0, count: 40)) == nil, "version 5")
    }

    @Test("more extension headers than the walk follows: nil, not a loop")
    func tooManyExtensionHeaders() {
        var b = builder(ipv6: true)
        b.extensionHeaders = Array(repeating: (.ipv6DestinationOptions, [0, 0, 1, 4, 0, 0, 0, 0]), count: IPv6Packet.maximumExtensionHeaders + 1)
        #expect(read(b.ipPacket()) == nil)
        b.extensionHeaders.removeLast()
        #expect(read(b.ipPacket())?.destinationPort == 5202)
    }

    @Test("the IP length field bounds the read when it is shorter than the buffer (padding after the packet)")
    func lengthBounds() throws {
        var b = builder(transport: .other(.tcp))
        b.payload = []
        var bytes = b.ipPacket()  // a 20-byte packet claiming TCP, with no TCP header
        bytes += [0x9C, 0x41, 0x14, 0x51]  // bytes after it that look like ports
        let s = try #require(read(bytes))
        #expect(s.ipProtocol == 6 && s.sourcePort == nil, "ports are not read from beyond the packet")
    }
}
