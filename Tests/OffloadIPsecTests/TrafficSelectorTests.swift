import Foundation
import OffloadEngine
import OffloadTestSupport
import OffloadTunnel
import OffloadWire
import Testing

@testable import OffloadIPsec

@Suite("Traffic selectors with a protocol and ports: swanctl's syntax, clear errors")
struct TrafficSelectorSyntaxTests {
    @Test("good selectors parse to their parts and print back to what parses to the same", arguments: [
        ("10.1.0.0/16", "10.1.0.0/16", 0, 0, 65_535),
        ("10.2.0.10/32[tcp/5201]", "10.2.0.10/32[tcp/5201]", 6, 5201, 5201),
        ("10.2.0.10[tcp/5201]", "10.2.0.10/32[tcp/5201]", 6, 5201, 5201),
        ("fd00::/8[udp/1024-2048]", "fd00::/8[udp/1024-2048]", 17, 1024, 2048),
        ("10.0.0.0/8[tcp]", "10.0.0.0/8[tcp]", 6, 0, 65_535),
        ("10.0.0.0/8[tcp/%any]", "10.0.0.0/8[tcp]", 6, 0, 65_535),
        ("10.0.0.0/8[tcp/any]", "10.0.0.0/8[tcp]", 6, 0, 65_535),
        ("10.0.0.0/8[6/80]", "10.0.0.0/8[tcp/80]", 6, 80, 80),
        ("10.0.0.0/8[icmp]", "10.0.0.0/8[icmp]", 1, 0, 65_535),
        ("fd00::/8[ipv6-icmp]", "fd00::/8[ipv6-icmp]", 58, 0, 65_535),
        ("fd00::/8[icmpv6/%any]", "fd00::/8[ipv6-icmp]", 58, 0, 65_535),
        ("10.0.0.0/8[sctp/9]", "10.0.0.0/8[sctp/9]", 132, 9, 9),
        ("10.0.0.0/8[47]", "10.0.0.0/8[47]", 47, 0, 65_535),
        ("10.0.0.0/8[%any]", "10.0.0.0/8", 0, 0, 65_535),
        ("10.0.0.0/8[any/any]", "10.0.0.0/8", 0, 0, 65_535),
        (" 10.0.0.0/8 [ TCP / 0-1023 ] ", "10.0.0.0/8[tcp/0-1023]", 6, 0, 1023),
    ])
    func good(text: String, printed: String, ipProtocol: Int, low: Int, high: Int) throws {
        let ts = try TrafficSelector.parse(text)
        #expect(ts.ipProtocol == UInt8(ipProtocol) && ts.ports == UInt16(low)...UInt16(high))
        #expect(ts.description == printed)
        #expect(try TrafficSelector.parse(ts.description) == ts)
    }

    @Test("bad selectors are refused with what is wrong", arguments: [
        ("10.0.0.0/8[tcp/80", "ends with `]`"),
        ("10.0.0.0/8[foo]", "`foo` is not a protocol"),
        ("10.0.0.0/8[256]", "`256` is not a protocol"),
        ("10.0.0.0/8[tcp/http]", "`http` is not a port"),
        ("10.0.0.0/8[tcp/70000]", "`70000` is not a port"),
        ("10.0.0.0/8[tcp/1-2-3]", "`1-2-3` is not a port"),
        ("10.0.0.0/8[tcp/2048-1024]", "is empty"),
        ("10.0.0.0/8[/80]", "a port needs a protocol"),
        ("10.0.0.0/8[any/80]", "a port needs a protocol"),
        ("10.0.0.0/8[icmp/8]", "ICMP type and code selectors are not supported"),
        ("fd00::/8[ipv6-icmp/2048]", "ICMP type and code selectors are not supported"),
        ("10.0.0.0/8[47/80]", "protocol 47 has no ports"),
        ("10.0.0.0/8[tcp/opaque]", "OPAQUE"),
        ("10.0.0.1/8[tcp]", "is not a prefix"),
        ("[tcp/80]", "is not a prefix"),
    ])
    func bad(text: String, message: String) {
        #expect(TrafficSelector(text) == nil)
        #expect {
            _ = try TrafficSelector.parse(text)
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    static func saFile(remote: String) -> String {
        """
        tunnels {
            site {
                esp_proposals = aes128gcm16
                local_ts = 10.1.0.0/16
                remote_ts = \(remote)
                out {
                    spi = 0x1001
                    key = 0x\(String(repeating: "11", count: 20))
                }
                in {
                    spi = 0x2001
                    key = 0x\(String(repeating: "22", count: 20))
                }
            }
        }
        """
    }

    @Test("an SA file takes selectors with ports, and renders them back")
    func saFile() throws {
        let tunnels = try SAFile.parse(Self.saFile(remote: "10.2.0.10/32[tcp/5201], 10.2.0.10/32[udp/5201-5204], fd02::/64"))
        #expect(tunnels[0].remoteSelectors.map(\.description) == ["10.2.0.10/32[tcp/5201]", "10.2.0.10/32[udp/5201-5204]", "fd02::/64"])
        let again = try SAFile.parse(SAFile.render(tunnels))
        #expect(again[0].remoteSelectors == tunnels[0].remoteSelectors && again[0].localSelectors == tunnels[0].localSelectors)
    }

    @Test("a bad selector in an SA file names the file and the line")
    func saFileError() {
        #expect {
            _ = try SAFile.parse(Self.saFile(remote: "10.2.0.10/32[tcp/5201], 10.2.0.10/32[tcp/http]"), path: "sa.conf")
        } throws: { error in
            "\(error)".hasPrefix("sa.conf:5: remote_ts: `10.2.0.10/32[tcp/http]`: `http` is not a port")
        }
    }
}

/// Four tunnels between two gateways, one TCP connection each (the "seed" setup): the same
/// addresses, remote ports 5201...5204.
enum FourFlows {
    static let local = IPAddress("10.1.0.5")!, remote = IPAddress("10.2.0.10")!
    static let ports: [UInt16] = [5201, 5202, 5203, 5204]

    /// This gateway's tunnels (SPIs 0x1001... out, 0x2001... in).
    static func tunnels() -> [ESPTunnelConfiguration] {
        ports.enumerated().map { i, port in
            ESPTunnelConfiguration(name: "flow\(port)", algorithm: .aesGCM128, localSelectors: [TrafficSelector("10.1.0.0/16")!],
                                   remoteSelectors: [TrafficSelector("10.2.0.10/32[tcp/\(port)]")!],
                                   outbound: keys(.aesGCM128, spi: 0x1001 + UInt32(i), seed: UInt8(2 * i + 1)),
                                   inbound: keys(.aesGCM128, spi: 0x2001 + UInt32(i), seed: UInt8(2 * i + 2)))
        }
    }

    /// An inner packet from 10.1.0.5:40000 to `destination:destinationPort`.
    static func packet(_ destinationPort: UInt16, to destination: IPAddress = remote, udp: Bool = false) -> [UInt8] {
        packet(from: local, 40_000, to: destination, destinationPort, udp: udp)
    }

    /// The far end's answer: from 10.2.0.10:`sourcePort` to 10.1.0.5:40000.
    static func reply(from sourcePort: UInt16, udp: Bool = false) -> [UInt8] {
        packet(from: remote, sourcePort, to: local, 40_000, udp: udp)
    }

    static func packet(from source: IPAddress, _ sourcePort: UInt16, to destination: IPAddress, _ destinationPort: UInt16,
                       udp: Bool) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        b.source = source
        b.destination = destination
        b.sourcePort = sourcePort
        b.destinationPort = destinationPort
        b.udp = udp
        b.payloadLength = 64
        return b.ipPacket()
    }

    /// The SPI of an ESP datagram.
    static func spi(_ datagram: [UInt8]) -> UInt32 { datagram.prefix(4).reduce(0) { $0 << 8 | UInt32($1) } }

    /// What the encoder does with `packet`: the SPIs of the datagrams, or the refusal.
    static func send(_ packet: [UInt8], _ encapsulator: inout TunnelEncapsulator<ESPCodec>) -> Result<[UInt32], TunnelDropReason> {
        packet.withUnsafeBytes { raw in
            do {
                if let refusal = try encapsulator.prepare(raw, gso: nil) { return .failure(refusal) }
            } catch { return .failure(.truncated) }
            return .success((0..<encapsulator.datagramCount).map { spi(encapsulator.datagramBytes(at: $0)) })
        }
    }
}

@Suite("Selectors on the 5-tuple: outbound choice, inbound enforcement, most specific first")
struct TrafficSelectorMatchingTests {
    @Test("four SAs that differ only by destination port: each TCP flow picks its own; UDP picks none (no_policy)")
    func fourFlows() throws {
        let policy = try ESPSecurityPolicy(tunnels: FourFlows.tunnels(), store: nil)
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: policy))
        // Interleaved, so that the encoder's remembered choice is checked against each packet.
        for port in FourFlows.ports + FourFlows.ports.reversed() + [5201, 5203, 5201] {
            let i = UInt32(FourFlows.ports.firstIndex(of: port)!)
            #expect(FourFlows.send(FourFlows.packet(port), &encapsulator) == .success([0x1001 + i]), "port \(port)")
        }
        #expect(FourFlows.send(FourFlows.packet(5201, udp: true), &encapsulator) == .failure(.noPolicy))
        #expect(FourFlows.send(FourFlows.packet(5205), &encapsulator) == .failure(.noPolicy))
        #expect(FourFlows.send(FourFlows.packet(5201, to: IPAddress("10.2.0.11")!), &encapsulator) == .failure(.noPolicy))
    }

    @Test("a super-packet is one flow: all its datagrams go out on its flow's SA")
    func superPackets() throws {
        // The super-packet goes 192.0.2.1:40000 → 198.51.100.7:5201.
        let tunnels = FourFlows.tunnels().enumerated().map { i, t in
            var t = t
            t.localSelectors = [TrafficSelector("192.0.2.0/24")!]
            t.remoteSelectors = [TrafficSelector("198.51.100.7/32[tcp/\(FourFlows.ports[(i + 3) % 4])]")!]
            return t
        }
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: try ESPSecurityPolicy(tunnels: tunnels, store: nil)))
        let (bytes, gso) = superPacket(count: 3, size: 1000)
        let datagrams = try encrypt(bytes, gso: gso, with: &encapsulator)
        #expect(datagrams.map(FourFlows.spi) == [0x1002, 0x1002, 0x1002])
    }

    @Test("inbound: a packet decrypted on the SA for port 5201 but from port 5202 is dropped as policy; from 5201 it passes")
    func inboundEnforced() throws {
        let here = try ESPSecurityPolicy(tunnels: FourFlows.tunnels(), store: nil)
        // The far end, sending on the SA for 5201 (our inbound 0x2001) whatever it likes.
        var liar = FourFlows.tunnels()[0].reversed
        liar.localSelectors = [TrafficSelector("0.0.0.0/0")!]
        liar.remoteSelectors = [TrafficSelector("0.0.0.0/0")!]
        var sender = try TunnelEncapsulator(codec: ESPCodec(policy: try ESPSecurityPolicy(tunnels: [liar], store: nil)))
        var decoder = try ESPCodec(policy: here).makeDecoder()
        let right = FourFlows.reply(from: 5201)
        let wrong = FourFlows.reply(from: 5202)
        let udp = FourFlows.reply(from: 5201, udp: true)
        #expect(decoder.open(try encrypt(right, with: &sender)[0]).1 == right)
        #expect(decoder.open(try encrypt(wrong, with: &sender)[0]).0 == .drop(.policy))
        #expect(decoder.open(try encrypt(udp, with: &sender)[0]).0 == .drop(.policy))
        #expect(here.counters(spi: 0x2001, inbound: true)?.packets == 1, "only the right one counted")
    }

    @Test("non-initial fragments carry no ports: dropped on an SA whose selectors name ports, passed on one that allows any port")
    func fragments() throws {
        var fragment = PacketBuilder()
        fragment.link = .raw
        fragment.source = FourFlows.remote
        fragment.destination = FourFlows.local
        fragment.sourcePort = 5201
        fragment.dontFragment = false
        fragment.fragmentOffset = 100
        let bytes = fragment.ipPacket()
        for (remote, verdict) in [("10.2.0.10/32[tcp/5201]", TunnelDatagram.drop(.policy)),
                                  ("10.2.0.10/32[tcp]", .packet(16..<(16 + bytes.count)))] {
            var tunnel = FourFlows.tunnels()[0]
            tunnel.remoteSelectors = [TrafficSelector(remote)!]
            var any = tunnel.reversed
            any.localSelectors = [TrafficSelector("0.0.0.0/0")!]
            var sender = try TunnelEncapsulator(codec: ESPCodec(policy: try ESPSecurityPolicy(tunnels: [any], store: nil)))
            var decoder = try ESPCodec(policy: try ESPSecurityPolicy(tunnels: [tunnel], store: nil)).makeDecoder()
            #expect(decoder.open(try encrypt(bytes, with: &sender)[0]).0 == verdict, "\(remote)")
            // Outbound the same: the fragment's reply direction finds the SA only when it allows any port.
            var back = fragment
            back.source = FourFlows.local
            back.destination = FourFlows.remote
            var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: try ESPSecurityPolicy(tunnels: [tunnel], store: nil)))
            let sent = FourFlows.send(back.ipPacket(), &encapsulator)
            #expect(remote.hasSuffix("5201]") ? sent == .failure(.noPolicy) : sent == .success([0x1001]), "\(remote)")
        }
    }

    @Test("encode → decode end to end: each flow's packets arrive on the far end through its SA, and the replies come back")
    func endToEnd() throws {
        let a = try ESPSecurityPolicy(tunnels: FourFlows.tunnels(), store: nil)
        let b = try ESPSecurityPolicy(tunnels: FourFlows.tunnels().map(\.reversed), store: nil)
        var aOut = try TunnelEncapsulator(codec: ESPCodec(policy: a)), bOut = try TunnelEncapsulator(codec: ESPCodec(policy: b))
        var aIn = try ESPCodec(policy: a).makeDecoder(), bIn = try ESPCodec(policy: b).makeDecoder()
        for (i, port) in FourFlows.ports.enumerated() {
            let request = FourFlows.packet(port), reply = FourFlows.reply(from: port)
            let sent = try encrypt(request, with: &aOut)
            #expect(sent.map(FourFlows.spi) == [0x1001 + UInt32(i)])
            #expect(bIn.open(sent[0]).1 == request)
            let back = try encrypt(reply, with: &bOut)
            #expect(back.map(FourFlows.spi) == [0x2001 + UInt32(i)], "B answers on the SA of the flow")
            #expect(aIn.open(back[0]).1 == reply)
            #expect(b.counters(spi: 0x1001 + UInt32(i), inbound: true)?.packets == 1)
        }
    }

    func tunnel(_ name: String, remote: String, spi: UInt32, sending: Bool = true) -> ESPTunnelConfiguration {
        var t = ESPTunnelConfiguration(name: name, algorithm: .aesGCM128, localSelectors: [TrafficSelector("0.0.0.0/0")!],
                                       remoteSelectors: remote.split(separator: ",").map { TrafficSelector($0)! },
                                       outbound: keys(.aesGCM128, spi: spi, seed: UInt8(spi & 0xFF)),
                                       inbound: keys(.aesGCM128, spi: spi + 0x1000, seed: UInt8(spi & 0xFF) &+ 100))
        t.sending = sending
        return t
    }

    @Test("most specific first: protocol and port, then protocol, then any; longer prefixes first; equals keep their order")
    func mostSpecificFirst() throws {
        // Listed least specific first: the order alone would send everything through "all".
        let tunnels = [
            tunnel("all", remote: "0.0.0.0/0", spi: 0x101),
            tunnel("net", remote: "10.2.0.0/16", spi: 0x102),
            tunnel("host", remote: "10.2.0.10/32", spi: 0x103),
            tunnel("tcp", remote: "10.2.0.0/16[tcp]", spi: 0x104),
            tunnel("port-old", remote: "10.2.0.0/16[tcp/5201]", spi: 0x105, sending: false),
            tunnel("port-new", remote: "10.2.0.0/16[tcp/5201]", spi: 0x106),
            tunnel("port-newer", remote: "10.2.0.0/16[tcp/5201]", spi: 0x107),
        ]
        let policy = try ESPSecurityPolicy(tunnels: tunnels, store: nil)
        #expect(policy.generation.outboundPolicy.map { tunnels[$0.tunnel].name } == ["port-new", "port-newer", "tcp", "host", "net", "all"])
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: policy))
        let cases: [([UInt8], UInt32)] = [
            (FourFlows.packet(5201, to: IPAddress("10.2.0.10")!), 0x106),
            (FourFlows.packet(80, to: IPAddress("10.2.0.10")!), 0x104),
            (FourFlows.packet(5201, to: IPAddress("10.2.0.10")!, udp: true), 0x103),
            (FourFlows.packet(5201, to: IPAddress("10.2.0.99")!, udp: true), 0x102),
            (FourFlows.packet(5201, to: IPAddress("10.3.0.1")!), 0x101),
            (FourFlows.packet(5201, to: IPAddress("10.2.0.99")!), 0x106),
        ]
        for (packet, spi) in cases + cases.reversed() {
            #expect(FourFlows.send(packet, &encapsulator) == .success([spi]))
        }
    }

    @Test("the encoder's remembered SA is not kept for a packet a more specific SA matches")
    func rememberedChoiceYields() throws {
        let policy = try ESPSecurityPolicy(tunnels: [tunnel("all", remote: "0.0.0.0/0", spi: 0x101),
                                                     tunnel("port", remote: "10.2.0.10/32[tcp/5201]", spi: 0x102)], store: nil)
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: policy))
        #expect(FourFlows.send(FourFlows.packet(5201, udp: true), &encapsulator) == .success([0x101]))
        #expect(FourFlows.send(FourFlows.packet(5201), &encapsulator) == .success([0x102]), "the catch-all, remembered, also matches")
        #expect(FourFlows.send(FourFlows.packet(5201, udp: true), &encapsulator) == .success([0x101]))
    }
}
