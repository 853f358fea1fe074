import OffloadEngine
import OffloadForwarder
import OffloadNAT64
import OffloadSIIT
import OffloadWire
import Testing

/// What anyone on either side may send: lying lengths, cut headers, floods, packets of flows
/// that do not exist. Nothing crashes, everything is counted, memory stays bounded.
@Suite("NAT64 hostile input: malformed packets, floods, strangers")
struct NAT64HostileTests {
    static let s = Net.s

    /// A small deterministic generator (SplitMix64), so that a failure can be replayed.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Packets dropped as not parsing: by the pipeline (before the stage) or by the stage.
    static func malformed(_ d: borrowing NAT64OfflineDataplane) -> Int {
        let t = d.translation
        return d.forwarding.stageDropped - t.droppedTotal - t.fragmentsHeld + t.dropped[.malformed, default: 0]
    }

    /// Writes a 16-bit field.
    static func with(_ p: [UInt8], _ offset: Int, _ value: UInt16) -> [UInt8] {
        var q = p
        q.storeBigEndian(value, at: offset)
        return q
    }

    /// Recomputes an IPv4 header checksum (so that only the lie under test is wrong).
    static func ipv4Sum(_ p: [UInt8]) -> [UInt8] {
        var q = p
        let ihl = min(Int(q[0] & 0x0F) * 4, q.count)
        guard ihl >= 20 else { return q }
        q[10] = 0
        q[11] = 0
        q.storeBigEndian(InternetChecksum.checksum(Array(q[0..<ihl]).span.bytes), at: 10)
        return q
    }

    /// IPv4 packets whose lengths lie or whose headers are cut, about a flow that exists.
    static func lyingIPv4(port: UInt16, address: IPv4Address) -> [(String, [UInt8])] {
        let udp = Net.udp4(to: address, port: port, payload: 40)
        let tcp = Net.tcp4(to: address, port: port, flags: .ack, payload: 20)
        let sent = Net.udp4(from: address, sourcePort: port, to: Net.server, port: 53)
        let error = Net.icmp4Error(from: Net.router4, to: address, type: 3, code: 4, rest: 1300, quoting: sent)
        var cases: [(String, [UInt8])] = [
            ("10 bytes", Array(udp.prefix(10))),
            ("IHL 4", ipv4Sum({ var p = udp; p[0] = 0x44; return p }())),
            ("IHL 15 in 68 bytes", ipv4Sum({ var p = udp; p[0] = 0x4F; return p }())),
            ("total length past the end", ipv4Sum(with(udp, 2, 1000))),
            ("total length below the header", ipv4Sum(with(udp, 2, 12))),
            ("total length cuts the UDP header", ipv4Sum(with(udp, 2, 24))),
            ("total length cuts the TCP header", ipv4Sum(with(tcp, 2, 30))),
            ("UDP length 4", with(udp, 24, 4)),
            ("UDP length past the end", with(udp, 24, 2000)),
            ("TCP data offset 15", { var p = tcp; p[32] = 0xF0; return p }()),
            ("TCP data offset 2", { var p = tcp; p[32] = 0x20; return p }()),
            ("ICMP error cut in the quote's header", ipv4Sum(with(Array(error.prefix(38)), 2, 38))),
            ("ICMP error quoting IHL 15", { var p = error; p[28] = 0x4F; return p }()),
            ("ICMP error quoting IHL 3", { var p = error; p[28] = 0x43; return p }()),
            ("ICMP error quoting two bytes of UDP", ipv4Sum(with(Array(error.prefix(50)), 2, 50))),
            ("fragment past 65535", ipv4Sum(with(udp, 6, 0x1FFF))),
        ]
        for n in stride(from: 0, to: udp.count, by: 3) { cases.append(("UDP cut to \(n)", Array(udp.prefix(n)))) }
        for n in stride(from: 0, to: error.count, by: 5) { cases.append(("ICMP error cut to \(n)", Array(error.prefix(n)))) }
        return cases
    }

    /// IPv6 packets whose lengths lie or whose headers are cut.
    static func lyingIPv6() -> [(String, [UInt8])] {
        let udp = Net.udp6(sourcePort: 5000, payload: 40)
        let tcp = Net.tcp6(sourcePort: 40001, flags: .ack, payload: 20)
        var inbound = PacketBuilder()
        inbound.link = .raw
        inbound.source = .v6(Net.prefix.embedding(Net.server))
        inbound.destination = .v6(Net.client)
        inbound.udp = true
        inbound.sourcePort = 53
        inbound.destinationPort = 5000
        inbound.payloadLength = 20
        let error = Net.icmp6Error(from: Net.client, to: Net.server, type: 1, code: 4, quoting: inbound.frame())
        var hopByHop = PacketBuilder()
        hopByHop.link = .raw
        hopByHop.source = .v6(Net.client)
        hopByHop.destination = .v6(Net.prefix.embedding(Net.server))
        hopByHop.udp = true
        hopByHop.sourcePort = 5000
        hopByHop.destinationPort = 53
        hopByHop.payloadLength = 20
        hopByHop.extensionHeaders = [(.hopByHop, [0, 0, 1, 4, 0, 0, 0, 0])]
        let withOptions = hopByHop.frame()
        var cases: [(String, [UInt8])] = [
            ("20 bytes", Array(udp.prefix(20))),
            ("payload length past the end", with(udp, 4, 2000)),
            ("payload length 0", with(udp, 4, 0)),
            ("payload length cuts the UDP header", with(udp, 4, 4)),
            ("payload length cuts the TCP header", with(tcp, 4, 10)),
            ("UDP length 3", with(udp, 44, 3)),
            ("TCP data offset 15", { var p = tcp; p[52] = 0xF0; return p }()),
            ("hop-by-hop header of 2048 bytes", { var p = withOptions; p[41] = 255; return p }()),
            ("fragment past 65535", Net.fragments6(Net.udp6(sourcePort: 5000, payload: 100), split: 48, id: 1)[1]
                .enumerated().map { $0.offset == 42 ? 0xFF : $0.offset == 43 ? 0xF8 : $0.element }),
            ("a Fragment header cut short", with(Array({ var p = udp; p[6] = 44; return p }().prefix(44)), 4, 4)),
            ("ICMPv6 error quoting 10 bytes", with(Array(error.prefix(58)), 4, 18)),
            ("ICMPv6 error quoting a cut UDP header", with(Array(error.prefix(90)), 4, 50)),
            ("ICMPv6 error quoting IPv4", { var p = error; p[48] = 0x45; return p }()),
        ]
        for n in stride(from: 0, to: udp.count, by: 3) { cases.append(("UDP cut to \(n)", Array(udp.prefix(n)))) }
        for n in stride(from: 0, to: error.count, by: 7) { cases.append(("ICMPv6 error cut to \(n)", Array(error.prefix(n)))) }
        for n in stride(from: 0, to: withOptions.count, by: 4) {
            cases.append(("hop-by-hop cut to \(n)", Array(withOptions.prefix(n))))
        }
        return cases
    }

    @Test("lying lengths and cut headers from IPv4 and IPv6: no crash, nothing translated, each counted malformed")
    func lyingLengths() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let out = try #require(d.translate(Net.udp6(sourcePort: 5000), now: 0).forwarded.first)
        let (address, port) = (Net.source4(out), Net.l4Field(out, 0))
        _ = try #require(d.translate(Net.tcp6(sourcePort: 40001, flags: .syn), now: 0).forwarded.first)
        let before = d.state.snapshot(now: 1)
        for (name, packet) in Self.lyingIPv4(port: port, address: address) + Self.lyingIPv6() {
            let counted = Self.malformed(d)
            let r = d.translate(packet, now: 1)
            #expect(r.forwarded.isEmpty, "\(name): translated")
            #expect(r.returned.isEmpty, "\(name): answered")
            #expect(Self.malformed(d) == counted + 1, "\(name): not counted as malformed")
        }
        #expect(d.state.snapshot(now: 1) == before, "the tables did not change")
    }

    @Test("random damage to valid packets of both families: no crash, and every packet has one outcome")
    func randomDamage() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let out = try #require(d.translate(Net.udp6(sourcePort: 5000), now: 0).forwarded.first)
        let (address, port) = (Net.source4(out), Net.l4Field(out, 0))
        let tcp = try #require(d.translate(Net.tcp6(sourcePort: 40001, flags: .syn), now: 0).forwarded.first)
        let tcpPort = Net.l4Field(tcp, 0)
        let echo = try #require(d.translate(Net.echo6(id: 9), now: 0).forwarded.first)
        var inbound = PacketBuilder()
        inbound.link = .raw
        inbound.source = .v6(Net.prefix.embedding(Net.server))
        inbound.destination = .v6(Net.client)
        inbound.udp = true
        inbound.sourcePort = 53
        inbound.destinationPort = 5000
        let seeds: [[UInt8]] = [
            Net.udp4(to: address, port: port), Net.tcp4(to: address, port: tcpPort, flags: .ack, payload: 30),
            Net.echo4(to: address, type: 0, id: Net.l4Field(echo, 4)),
            Net.icmp4Error(from: Net.router4, to: address, type: 3, code: 4, rest: 1300, quoting: tcp),
            Net.udp6(sourcePort: 5000), Net.tcp6(sourcePort: 40001, flags: .ack, payload: 30), Net.echo6(id: 9),
            Net.icmp6Error(from: Net.client, to: Net.server, type: 1, code: 4, quoting: inbound.frame()),
        ] + Net.fragments4(Net.udp4(to: address, port: port, payload: 100), split: 48, id: 7)
            + Net.fragments6(Net.udp6(sourcePort: 5000, payload: 100), split: 48, id: 7)
        var random = Generator(state: 0x6146)
        let rounds = 20_000
        for i in 0..<rounds {
            var p = seeds[i % seeds.count]
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let at = Int.random(in: 0..<p.count, using: &random)
                p[at] = UInt8.random(in: 0...255, using: &random)
            }
            if Bool.random(using: &random) { p = Array(p.prefix(Int.random(in: 0...p.count, using: &random))) }
            if p.first.map({ $0 >> 4 != 4 && $0 >> 4 != 6 }) ?? true { p = [0x45] + p.dropFirst() }
            _ = d.translate(p, now: 1 + UInt64(i))
        }
        let f = d.forwarding
        #expect(f.deliveredSentOn + f.deliveredRefused + f.deliveredAnswered + f.deliveredNotForwarded + f.deliveredDropped
            == rounds + 3)
        #expect(d.state.snapshot(now: UInt64(rounds) + 2).sessions.values.reduce(0, +) <= 3 + rounds)
    }

    @Test("a SYN flood from 100 000 IPv6 sources with maximumSessions 5000: 5000 sessions, the rest session_limit")
    func synFlood() throws {
        var c = Net.configuration()
        c.maximumSessions = 5_000
        var d = NAT64OfflineDataplane(configuration: c)
        var random = Generator(state: 100_000)
        let template = Net.tcp6(sourcePort: 40001, flags: .syn)
        let oldLow = template.loadBigEndian(UInt32.self, at: 20)
        let flood = 100_000
        var forwarded = 0, returned = 0
        for i in 0..<flood {
            var p = template
            // A random interface ID in 2001:db8:1::/64, the TCP checksum moved to match.
            let high = UInt32.random(in: 0...UInt32.max, using: &random), low = UInt32.random(in: 0...UInt32.max, using: &random)
            p.storeBigEndian(high, at: 16)
            p.storeBigEndian(low, at: 20)
            var sum = p.loadBigEndian(UInt16.self, at: 56)
            sum = InternetChecksum.update(sum, replacing: template.loadBigEndian(UInt32.self, at: 16), with: high)
            sum = InternetChecksum.update(sum, replacing: oldLow, with: low)
            p.storeBigEndian(sum, at: 56)
            let r = d.translate(p, now: UInt64(i) * 10_000)  // 100 000 SYNs a second
            forwarded += r.forwarded.count
            returned += r.returned.count
        }
        let snapshot = d.state.snapshot(now: UInt64(flood) * 10_000, limit: 0)
        #expect(snapshot.sessions["tcp"] == 5_000 && snapshot.bindings["tcp"] == 5_000)
        #expect(forwarded == 5_000)
        #expect(d.translation.dropped[.sessionLimit] == flood - 5_000)
        // RFC 4443 §2.4 (f): the translator's own errors are rate-limited, not one per spoofed SYN.
        // At most a burst of 50 and 1000 a second, over the flood's one second.
        #expect(returned >= 50 && returned <= 1_051, "\(returned) ICMPv6 errors for \(flood - 5_000) refused SYNs in one second")
        #expect(d.translation.errorsSent == returned && d.translation.errorsSuppressed == flood - 5_000 - returned)
    }

    @Test("packets of flows that do not exist are dropped, not translated, and create nothing")
    func strangers() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        var random = Generator(state: 42)
        for i in 0..<500 {
            let port = UInt16.random(in: 1024...65535, using: &random)
            let packets = [
                Net.tcp4(to: Net.pool, port: port, flags: .ack, payload: 20),
                Net.tcp4(to: Net.pool, port: port, flags: [.fin, .ack]),
                Net.tcp4(to: Net.pool, port: port, flags: .rst),
                Net.udp4(to: Net.pool, port: port),
                Net.echo4(to: Net.pool, type: 0, id: port),
                Net.echo4(to: Net.pool, type: 8, id: port),
                Net.icmp4Error(from: Net.router4, to: Net.pool, type: 3, code: 1,
                               quoting: Net.udp4(from: Net.pool, sourcePort: port, to: Net.server, port: 53)),
                Net.tcp6(sourcePort: port, flags: .ack, payload: 20),
                Net.echo6(type: 129, id: port),
            ]
            for p in packets {
                let r = d.translate(p, now: UInt64(i))
                #expect(r.forwarded.isEmpty)
            }
        }
        let t = d.translation
        #expect(t.toIPv4 == 0 && t.toIPv6 == 0 && t.errorsTranslated == 0)
        #expect(t.dropped[.noBinding, default: 0] + t.dropped[.noSession, default: 0] == 500 * 9)
        let snapshot = d.state.snapshot(now: 1_000)
        #expect(snapshot.sessions.values.allSatisfy { $0 == 0 } && snapshot.storedSYNs == 0)
    }
}
