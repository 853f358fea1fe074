import OffloadEngine
import OffloadNAT64
import OffloadSIIT
import OffloadWire
import Testing

/// The stage through ``NAT64OfflineDataplane``, one packet at a time on a clock the test turns:
/// what leaves on each side, what comes back, and the counters.
@Suite("NAT64 stage: packets in, packets out, errors back")
struct NAT64StageTests {
    static let s = Net.s

    /// Gives the client a UDP binding client:5000 → server:53; its (T, t).
    static func withUDPBinding(_ d: inout NAT64OfflineDataplane) throws -> (address: IPv4Address, port: UInt16) {
        let out = try #require(d.translate(Net.udp6(sourcePort: 5000), now: 0).forwarded.first)
        return (Net.source4(out), Net.l4Field(out, 0))
    }

    /// An established TCP connection client:40001 ↔ server:80; its pool4 port.
    static func withTCPConnection(_ d: inout NAT64OfflineDataplane) throws -> UInt16 {
        let syn = try #require(d.translate(Net.tcp6(flags: .syn), now: 0).forwarded.first)
        let port = Net.l4Field(syn, 0)
        #expect(d.translate(Net.tcp4(port: port, flags: [.syn, .ack]), now: 1).forwarded.count == 1)
        return port
    }

    // MARK: - TCP

    @Test("a TCP segment that is not a SYN and has no session is dropped (no_session), from either side")
    func nonSYNDropped() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let r = d.translate(Net.tcp6(flags: .ack, payload: 100), now: 0)
        #expect(r.forwarded.isEmpty && r.returned.isEmpty)
        #expect(d.translation.dropped[.noSession] == 1)
        // From IPv4 to a port of a binding that exists, from a host with no session: dropped too.
        let port = try Self.withTCPConnection(&d)
        #expect(d.translate(Net.tcp4(from: Net.server2, port: port, flags: .ack, payload: 10), now: 2).forwarded.isEmpty)
        #expect(d.translation.dropped[.noSession] == 2)
        #expect(d.state.snapshot(now: 2).sessions["tcp"] == 1)
    }

    @Test("FIN through the stage's fast path moves the state; both FINs leave TCP_TRANS")
    func finThroughStage() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let port = try Self.withTCPConnection(&d)
        #expect(d.translate(Net.tcp6(flags: [.fin, .ack], payload: 10), now: 10 * Self.s).forwarded.count == 1)
        #expect(Net.session(d.state.snapshot(now: 10 * Self.s), .tcp, remote: "203.0.113.9:80")?.state == "V6_FIN_RCV")
        #expect(d.translate(Net.tcp4(port: port, flags: [.fin, .ack]), now: 11 * Self.s).forwarded.count == 1)
        let view = try #require(Net.session(d.state.snapshot(now: 11 * Self.s), .tcp, remote: "203.0.113.9:80"))
        #expect(view.state == "V4_FIN_V6_FIN_RCV" && view.expiresIn == 240)
        #expect(d.translation.toIPv4 == 2 && d.translation.toIPv6 == 2 && d.translation.slowPath == 0)
    }

    @Test("an unsolicited V4 SYN is kept 6 s, then answered with port unreachable (quoting it) with the next IPv4 packet")
    func unsolicitedSYNAnswered() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let syn = Net.tcp4(port: 3000, flags: .syn)
        var r = d.translate(syn, now: 1 * Self.s)
        #expect(r.forwarded.isEmpty && r.returned.isEmpty)
        #expect(d.translation.dropped[.synStored] == 1 && d.state.snapshot(now: 1 * Self.s).storedSYNs == 1)
        // A retransmission is not kept twice, and its clock does not restart.
        r = d.translate(syn, now: 3 * Self.s)
        #expect(r.returned.isEmpty && d.state.snapshot(now: 3 * Self.s).storedSYNs == 1)
        // Before 6 s: no answer with the IPv4 packets that come.
        let other = Net.udp4(from: Net.server2, sourcePort: 7, port: 7777)
        r = d.translate(other, now: 6_900_000_000)
        #expect(r.returned.isEmpty)
        // At 6 s: the answer leaves with the next IPv4 packet.
        r = d.translate(other, now: 7 * Self.s)
        let error = try #require(r.returned.first)
        #expect(r.returned.count == 1)
        #expect(error[0] >> 4 == 4 && error[9] == 1 && error[20] == 3 && error[21] == 3, "ICMP port unreachable")
        #expect(Net.source4(error) == Net.pool && Net.destination4(error) == Net.server)
        #expect(Array(error[28..<(28 + 40)]) == Array(syn.prefix(40)), "the quote is the SYN")
        #expect(try checksumsAreValid(error))
        #expect(d.translation.errorsSent == 1 && d.state.snapshot(now: 7 * Self.s).storedSYNs == 0)
        // Once.
        #expect(d.translate(other, now: 8 * Self.s).returned.isEmpty)
    }

    @Test("simultaneous open: a kept V4 SYN and a V6 SYN within 6 s make an ESTABLISHED session; no error later")
    func simultaneousOpen() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration("198.51.100.1:2000-2000"))
        #expect(d.translate(Net.tcp4(port: 2000, flags: .syn), now: 1 * Self.s).forwarded.isEmpty)
        let out = try #require(d.translate(Net.tcp6(flags: .syn), now: 3 * Self.s).forwarded.first)
        #expect(Net.source4(out) == Net.pool && Net.l4Field(out, 0) == 2000)
        let snapshot = d.state.snapshot(now: 3 * Self.s)
        let view = try #require(Net.session(snapshot, .tcp, remote: "203.0.113.9:80"))
        #expect(view.state == "ESTABLISHED" && view.expiresIn == 7_440 && snapshot.storedSYNs == 0)
        #expect(d.translate(Net.udp4(from: Net.server2, sourcePort: 7, port: 7777), now: 10 * Self.s).returned.isEmpty)
        #expect(d.translation.errorsSent == 0)
    }

    @Test("simultaneous open under address-dependent filtering: the V4 SYN from a new host waits for the V6 SYN to it")
    func simultaneousOpenFiltered() throws {
        var c = Net.configuration()
        c.filtering = .addressDependent
        var d = NAT64OfflineDataplane(configuration: c)
        let syn = try #require(d.translate(Net.tcp6(flags: .syn), now: 0).forwarded.first)
        let port = Net.l4Field(syn, 0)
        #expect(d.translate(Net.tcp4(from: Net.server2, port: port, flags: .syn), now: 1 * Self.s).forwarded.isEmpty)
        #expect(d.translation.dropped[.synStored] == 1)
        #expect(d.translate(Net.tcp6(to: Net.server2, flags: .syn), now: 2 * Self.s).forwarded.count == 1)
        #expect(Net.session(d.state.snapshot(now: 2 * Self.s), .tcp, remote: "203.0.113.10:80")?.state == "ESTABLISHED")
        #expect(d.translate(Net.udp4(from: Net.server2, sourcePort: 7, port: 7777), now: 10 * Self.s).returned.isEmpty)
    }

    @Test("the SYN store holds maximumStoredSYNs; more are dropped (syn_store_full) and never answered")
    func synStoreCap() throws {
        var c = Net.configuration()
        c.maximumStoredSYNs = 2
        var d = NAT64OfflineDataplane(configuration: c)
        for i in 0..<3 {
            #expect(d.translate(Net.tcp4(port: UInt16(3000 + i), flags: .syn), now: 0).forwarded.isEmpty)
        }
        #expect(d.translation.dropped[.synStored] == 2 && d.translation.dropped[.synStoreFull] == 1)
        #expect(d.state.snapshot(now: 0).storedSYNs == 2)
        let r = d.translate(Net.udp4(from: Net.server2, sourcePort: 7, port: 7777), now: 7 * Self.s)
        #expect(r.returned.count == 2)
        #expect(Set(r.returned.map { $0.loadBigEndian(UInt16.self, at: 28 + 22) }) == [3000, 3001])
    }

    // MARK: - Ports and limits

    @Test("a pool of four ports: the fifth host hears address unreachable (code 3); after expiry it gets a port")
    func poolExhausted() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration("198.51.100.1:2000-2003"))
        for i in 0..<4 {
            #expect(d.translate(Net.udp6(sourcePort: UInt16(6000 + i)), now: 0).forwarded.count == 1)
        }
        let refused = Net.udp6(from: Net.client2, sourcePort: 6000)
        let r = d.translate(refused, now: 1 * Self.s)
        #expect(r.forwarded.isEmpty)
        let error = try #require(r.returned.first)
        #expect(error[6] == 58 && error[40] == 1 && error[41] == 3, "ICMPv6 destination unreachable, address unreachable")
        #expect(Net.destination6(error) == Net.client2 && Net.source6(error) == d.state.configuration.ownIPv6)
        #expect(Array(error[48..<(48 + 48)]) == Array(refused.prefix(48)), "quotes the refused packet")
        #expect(try checksumsAreValid(error))
        #expect(d.translation.dropped[.poolExhausted] == 1 && d.translation.errorsSent == 1)
        let out = try #require(d.translate(refused, now: 301 * Self.s).forwarded.first)
        #expect((2000...2003).contains(Net.l4Field(out, 0)))
    }

    @Test("limits: past the per-host and the total session limits, ICMPv6 administratively prohibited (code 1)")
    func limits() throws {
        var c = Net.configuration()
        c.maximumSessionsPerHost = 2
        c.maximumSessions = 3
        var d = NAT64OfflineDataplane(configuration: c)
        #expect(d.translate(Net.udp6(sourcePort: 5000), now: 0).forwarded.count == 1)
        #expect(d.translate(Net.tcp6(sourcePort: 5000), now: 0).forwarded.count == 1)
        var r = d.translate(Net.echo6(), now: 0)
        #expect(r.forwarded.isEmpty && r.returned.count == 1)
        #expect(r.returned.first.map { [$0[40], $0[41]] } == [1, 1])
        #expect(d.translation.dropped[.hostLimit] == 1)
        #expect(d.translate(Net.udp6(from: Net.client2, sourcePort: 5000), now: 0).forwarded.count == 1)
        r = d.translate(Net.udp6(from: IPv6Address(0x2001, 0xdb8, 1, 0, 0, 0, 0, 9)), now: 0)
        #expect(r.forwarded.isEmpty && r.returned.first.map { [$0[40], $0[41]] } == [1, 1])
        #expect(try r.returned.allSatisfy(checksumsAreValid))
        #expect(d.translation.dropped[.sessionLimit] == 1 && d.translation.errorsSent == 2)
    }

    // MARK: - Filtering

    @Test("endpoint-independent filtering: another IPv4 host reaches the client through its UDP binding")
    func endpointIndependentFiltering() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let (address, port) = try Self.withUDPBinding(&d)
        let r = d.translate(Net.udp4(from: Net.server2, sourcePort: 9999, to: address, port: port), now: 1)
        let back = try #require(r.forwarded.first)
        #expect(Net.destination6(back) == Net.client && Net.l4Field(back, 2) == 5000)
        #expect(Net.source6(back) == Net.prefix.embedding(Net.server2) && Net.l4Field(back, 0) == 9999)
        #expect(try checksumsAreValid(back))
    }

    @Test("address-dependent filtering: another host is filtered; the host the client sent to passes from any port")
    func addressDependentFiltering() throws {
        var c = Net.configuration()
        c.filtering = .addressDependent
        var d = NAT64OfflineDataplane(configuration: c)
        let (address, port) = try Self.withUDPBinding(&d)
        #expect(d.translate(Net.udp4(from: Net.server2, sourcePort: 53, to: address, port: port), now: 1).forwarded.isEmpty)
        #expect(d.translation.dropped[.filtered] == 1)
        let back = try #require(d.translate(Net.udp4(from: Net.server, sourcePort: 4444, to: address, port: port), now: 2).forwarded.first)
        #expect(Net.destination6(back) == Net.client && Net.l4Field(back, 2) == 5000 && Net.l4Field(back, 0) == 4444)
    }

    // MARK: - Hairpinning (RFC 6146 §3.8)

    @Test("UDP hairpin: A to B's binding comes back as IPv6 from A's pool4 address to B")
    func hairpinUDP() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let bOut = try #require(d.translate(Net.udp6(from: Net.client2, sourcePort: 6000), now: 0).forwarded.first)
        let (t, tB) = (Net.source4(bOut), Net.l4Field(bOut, 0))
        let r = d.translate(Net.udp6(from: Net.client, sourcePort: 5000, to: t, port: tB), now: 1)
        let p = try #require(r.forwarded.first)
        #expect(p[0] >> 4 == 6 && p[6] == 17)
        #expect(Net.source6(p) == Net.prefix.embedding(t) && Net.destination6(p) == Net.client2)
        #expect(Net.l4Field(p, 2) == 6000)
        let tA = Net.l4Field(p, 0)
        #expect(tA >= 1024 && tA & 1 == 0)
        #expect(try checksumsAreValid(p))
        #expect(d.translation.hairpinned == 1)
        // B's answer to A's pool4 address and port goes back to A the same way.
        let answer = try #require(d.translate(Net.udp6(from: Net.client2, sourcePort: 6000, to: t, port: tA), now: 2).forwarded.first)
        #expect(Net.source6(answer) == Net.prefix.embedding(t) && Net.destination6(answer) == Net.client)
        #expect(Net.l4Field(answer, 0) == tB && Net.l4Field(answer, 2) == 5000)
        #expect(try checksumsAreValid(answer))
    }

    @Test("hairpin refusals keep their reason: filtered, no_binding, and address unreachable when the sender gets no port")
    func hairpinRefusals() throws {
        var c = Net.configuration("198.51.100.1:2000-2001")
        c.filtering = .addressDependent
        var d = NAT64OfflineDataplane(configuration: c)
        let bOut = try #require(d.translate(Net.udp6(from: Net.client2, sourcePort: 6000), now: 0).forwarded.first)
        let tB = Net.l4Field(bOut, 0)
        // B never sent to the pool4 address: A is filtered.
        var r = d.translate(Net.udp6(from: Net.client, sourcePort: 5000, to: Net.pool, port: tB), now: 1)
        #expect(r.forwarded.isEmpty && r.returned.isEmpty && d.translation.dropped[.filtered] == 1)
        // A port of the pool4 address nobody holds.
        r = d.translate(Net.udp6(from: Net.client, sourcePort: 5000, to: Net.pool, port: 9999), now: 2)
        #expect(r.forwarded.isEmpty && d.translation.dropped[.noBinding] == 1)
        // Both ports taken (B's and A's): a third host gets no port, and hears so.
        r = d.translate(Net.udp6(from: IPv6Address(0x2001, 0xdb8, 1, 0, 0, 0, 0, 9), sourcePort: 5000, to: Net.pool, port: tB), now: 3)
        #expect(r.forwarded.isEmpty && d.translation.dropped[.poolExhausted] == 1)
        #expect(r.returned.first.map { [$0[40], $0[41]] } == [1, 3])
    }

    @Test("TCP hairpin to a static binding: SYN and SYN-ACK both come back as IPv6, both sessions ESTABLISHED")
    func hairpinTCP() throws {
        var c = Net.configuration()
        c.staticBindings = [NAT64StaticBinding("tcp=[2001:db8:1::3]:80=198.51.100.1:8080")!]
        var d = NAT64OfflineDataplane(configuration: c)
        let syn = try #require(d.translate(Net.tcp6(to: Net.pool, port: 8080, flags: .syn), now: 0).forwarded.first)
        #expect(syn[0] >> 4 == 6 && Net.source6(syn) == Net.prefix.embedding(Net.pool) && Net.destination6(syn) == Net.client2)
        #expect(Net.l4Field(syn, 2) == 80)
        #expect(try checksumsAreValid(syn))
        let tA = Net.l4Field(syn, 0)
        let synAck = try #require(d.translate(Net.tcp6(from: Net.client2, sourcePort: 80, to: Net.pool, port: tA, flags: [.syn, .ack]),
                                              now: 1).forwarded.first)
        #expect(Net.source6(synAck) == Net.prefix.embedding(Net.pool) && Net.destination6(synAck) == Net.client)
        #expect(Net.l4Field(synAck, 0) == 8080 && Net.l4Field(synAck, 2) == 40001)
        #expect(try checksumsAreValid(synAck))
        let states = d.state.snapshot(now: 1).entries.filter { $0.proto == "tcp" }.flatMap(\.sessions).map(\.state)
        #expect(states == ["ESTABLISHED", "ESTABLISHED"])
        #expect(d.translation.hairpinned == 2)
    }

    @Test("echo hairpin between two static ICMP bindings: request and reply, identifiers mapped")
    func hairpinEcho() throws {
        var c = Net.configuration("198.51.100.1-198.51.100.2")
        c.staticBindings = [NAT64StaticBinding("icmp=[2001:db8:1::2]:4660=198.51.100.1:500")!,
                            NAT64StaticBinding("icmp=[2001:db8:1::3]:153=198.51.100.2:500")!]
        var d = NAT64OfflineDataplane(configuration: c)
        let request = try #require(d.translate(Net.echo6(to: IPv4Address(198, 51, 100, 2), id: 4660), now: 0).forwarded.first)
        #expect(request[40] == 128 && Net.l4Field(request, 4) == 153)
        #expect(Net.source6(request) == Net.prefix.embedding(Net.pool) && Net.destination6(request) == Net.client2)
        #expect(try checksumsAreValid(request))
        let reply = try #require(d.translate(Net.echo6(from: Net.client2, to: Net.pool, type: 129, id: 153), now: 1).forwarded.first)
        #expect(reply[40] == 129 && Net.l4Field(reply, 4) == 4660)
        #expect(Net.source6(reply) == Net.prefix.embedding(IPv4Address(198, 51, 100, 2)) && Net.destination6(reply) == Net.client)
        #expect(try checksumsAreValid(reply))
    }

    // MARK: - ICMP (RFC 5508)

    @Test("echo out and back: the identifier is the port; an echo request from IPv4 reaches a static binding")
    func echo() throws {
        var c = Net.configuration()
        c.staticBindings = [NAT64StaticBinding("icmp=[2001:db8:1::3]:77=198.51.100.1:7000")!]
        var d = NAT64OfflineDataplane(configuration: c)
        let out = try #require(d.translate(Net.echo6(id: 0x1234), now: 0).forwarded.first)
        #expect(out[0] >> 4 == 4 && out[20] == 8 && Net.source4(out) == Net.pool && Net.destination4(out) == Net.server)
        let id = Net.l4Field(out, 4)
        #expect(try checksumsAreValid(out))
        let back = try #require(d.translate(Net.echo4(type: 0, id: id), now: 1).forwarded.first)
        #expect(back[40] == 129 && Net.l4Field(back, 4) == 0x1234 && Net.destination6(back) == Net.client)
        #expect(try checksumsAreValid(back))
        // An echo reply nobody asked for, and one from IPv6: dropped, nothing created.
        #expect(d.translate(Net.echo4(type: 0, id: id &+ 2), now: 2).forwarded.isEmpty)
        #expect(d.translate(Net.echo6(type: 129, id: 0x4321), now: 2).forwarded.isEmpty)
        // From IPv4 to the static binding.
        let inbound = try #require(d.translate(Net.echo4(type: 8, id: 7000), now: 3).forwarded.first)
        #expect(inbound[40] == 128 && Net.l4Field(inbound, 4) == 77 && Net.destination6(inbound) == Net.client2)
        #expect(try checksumsAreValid(inbound))
        #expect(d.state.snapshot(now: 3).sessions["icmp"] == 2)
    }

    @Test("fragmentation needed from a router about a translated packet: packet too big to the client, the quote its own")
    func fragmentationNeeded() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        _ = try Self.withTCPConnection(&d)
        let sent = try #require(d.translate(Net.tcp6(flags: .ack, payload: 1400), now: 2 * Self.s).forwarded.first)
        let before = try #require(Net.session(d.state.snapshot(now: 3 * Self.s), .tcp, remote: "203.0.113.9:80"))
        let error = Net.icmp4Error(from: Net.router4, to: Net.pool, type: 3, code: 4, rest: 1300, quoting: sent)
        let r = d.translate(error, now: 3 * Self.s)
        let six = try #require(r.forwarded.first)
        #expect(six[6] == 58 && six[40] == 2 && six[41] == 0, "ICMPv6 packet too big")
        #expect(six.loadBigEndian(UInt32.self, at: 44) == 1320)
        #expect(Net.source6(six) == Net.prefix.embedding(Net.router4) && Net.destination6(six) == Net.client)
        // The quote: the client's own packet, its own address and port.
        #expect(six[48] >> 4 == 6 && IPv6Address(six, 48 + 8) == Net.client)
        #expect(IPv6Address(six, 48 + 24) == Net.prefix.embedding(Net.server))
        #expect(six.loadBigEndian(UInt16.self, at: 88) == 40001 && six.loadBigEndian(UInt16.self, at: 90) == 80)
        #expect(try checksumsAreValid(six))
        #expect(d.translation.errorsTranslated == 1)
        // The error changed nothing.
        #expect(Net.session(d.state.snapshot(now: 3 * Self.s), .tcp, remote: "203.0.113.9:80") == before)
    }

    @Test("port unreachable from the client about an inbound packet: out as ICMPv4 with the pool4 port in the quote")
    func errorFromIPv6() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let (address, port) = try Self.withUDPBinding(&d)
        let inbound = try #require(d.translate(Net.udp4(port: port), now: 1).forwarded.first)
        let before = try #require(Net.session(d.state.snapshot(now: 2), .udp, remote: "203.0.113.9:53"))
        let error = Net.icmp6Error(from: Net.client, to: Net.server, type: 1, code: 4, quoting: inbound)
        let four = try #require(d.translate(error, now: 2).forwarded.first)
        #expect(four[0] >> 4 == 4 && four[9] == 1 && four[20] == 3 && four[21] == 3, "ICMPv4 port unreachable")
        #expect(Net.source4(four) == address && Net.destination4(four) == Net.server)
        // The quote: the packet as the server sent it.
        #expect(IPv4Address(four, 28 + 12) == Net.server && IPv4Address(four, 28 + 16) == address)
        #expect(four.loadBigEndian(UInt16.self, at: 48) == 53 && four.loadBigEndian(UInt16.self, at: 50) == port)
        #expect(try checksumsAreValid(four))
        #expect(Net.session(d.state.snapshot(now: 2), .udp, remote: "203.0.113.9:53") == before)
    }

    @Test("errors quoting a flow the translator does not have, or another session, are dropped and change nothing")
    func errorsWithoutSession() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let (address, port) = try Self.withUDPBinding(&d)
        let before = d.state.snapshot(now: 10 * Self.s)
        // A quote of (T, t) → server2: the binding exists, the session does not.
        var quoted = Net.udp4(from: address, sourcePort: port, to: Net.server2, port: 53)
        var r = d.translate(Net.icmp4Error(from: Net.router4, to: address, type: 3, code: 1, quoting: quoted), now: 10 * Self.s)
        #expect(r.forwarded.isEmpty)
        // A quote of a port with no binding.
        quoted = Net.udp4(from: address, sourcePort: port &+ 2, to: Net.server, port: 53)
        r = d.translate(Net.icmp4Error(from: Net.router4, to: address, type: 3, code: 1, quoting: quoted), now: 10 * Self.s)
        #expect(r.forwarded.isEmpty)
        // From IPv6: a quote of an inbound packet from server2 (no session), and to another client port.
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v6(Net.prefix.embedding(Net.server2))
        b.destination = .v6(Net.client)
        b.udp = true
        b.sourcePort = 53
        b.destinationPort = 5000
        r = d.translate(Net.icmp6Error(from: Net.client, to: Net.server2, type: 1, code: 4, quoting: b.frame()), now: 10 * Self.s)
        #expect(r.forwarded.isEmpty)
        b.source = .v6(Net.prefix.embedding(Net.server))
        b.destinationPort = 5002
        r = d.translate(Net.icmp6Error(from: Net.client, to: Net.server, type: 1, code: 4, quoting: b.frame()), now: 10 * Self.s)
        #expect(r.forwarded.isEmpty)
        #expect(d.translation.dropped[.noSession] == 4)
        let after = d.state.snapshot(now: 10 * Self.s)
        #expect(after == before, "no session created, refreshed or ended")
    }

    @Test("IPv6 fragments whose first never comes: dropped after 2 s (fragment_without_first)")
    func fragmentsFromIPv6WithoutFirst() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        _ = try Self.withUDPBinding(&d)
        let pieces = Net.fragments6(Net.udp6(sourcePort: 5000, payload: 600), split: 304, id: 77)
        #expect(d.translate(pieces[1], now: 1 * Self.s).forwarded.isEmpty)
        #expect(d.translation.fragmentsHeld == 1)
        _ = d.translate(Net.udp6(sourcePort: 5000), now: 2 * Self.s)
        #expect(d.translation.dropped[.fragmentWithoutFirst, default: 0] == 0)
        _ = d.translate(Net.udp6(sourcePort: 5000), now: 3 * Self.s)
        #expect(d.translation.dropped[.fragmentWithoutFirst] == 1)
        // Its first, late: translated alone; the rest does not come back.
        #expect(d.translate(pieces[0], now: 4 * Self.s).forwarded.count == 1)
    }

    // MARK: - Static bindings

    @Test("a static binding outlives its sessions: reachable from IPv4 before and after they expire")
    func staticBinding() throws {
        var c = Net.configuration()
        c.staticBindings = [NAT64StaticBinding("udp=[2001:db8:1::3]:53=198.51.100.1:5353")!]
        var d = NAT64OfflineDataplane(configuration: c)
        var back = try #require(d.translate(Net.udp4(sourcePort: 9000, port: 5353), now: 0).forwarded.first)
        #expect(Net.destination6(back) == Net.client2 && Net.l4Field(back, 2) == 53)
        #expect(try checksumsAreValid(back))
        // The answer leaves from the static (T, t).
        let answer = try #require(d.translate(Net.udp6(from: Net.client2, sourcePort: 53, port: 9000), now: 1).forwarded.first)
        #expect(Net.source4(answer) == Net.pool && Net.l4Field(answer, 0) == 5353)
        var snapshot = d.state.snapshot(now: 302 * Self.s)
        #expect(snapshot.sessions["udp"] == 0 && snapshot.bindings["udp"] == 1 && snapshot.entries.first?.isStatic == true)
        back = try #require(d.translate(Net.udp4(sourcePort: 9001, port: 5353), now: 303 * Self.s).forwarded.first)
        #expect(Net.destination6(back) == Net.client2 && Net.l4Field(back, 2) == 53)
        snapshot = d.state.snapshot(now: 303 * Self.s)
        #expect(snapshot.sessions["udp"] == 1)
        // Dynamic bindings never take the static port.
        for i in 0..<50 {
            let out = try #require(d.translate(Net.udp6(sourcePort: UInt16(20_001 + 2 * i)), now: 304 * Self.s).forwarded.first)
            #expect(Net.l4Field(out, 0) != 5353)
        }
    }

    @Test("host unreachable from a router about a translated echo: back to the client with its own identifier")
    func errorAboutEcho() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let echo = try #require(d.translate(Net.echo6(id: 0x1234), now: 0).forwarded.first)
        let error = Net.icmp4Error(from: Net.router4, to: Net.pool, type: 3, code: 1, quoting: echo)
        let six = try #require(d.translate(error, now: 1).forwarded.first)
        #expect(six[6] == 58 && six[40] == 1 && Net.destination6(six) == Net.client)
        #expect(IPv6Address(six, 48 + 8) == Net.client && six[48 + 40] == 128)
        #expect(six.loadBigEndian(UInt16.self, at: 48 + 44) == 0x1234)
        #expect(try checksumsAreValid(six))
    }

    // MARK: - Fragments (RFC 6146 §3.4)

    @Test("a fragmented UDP datagram from IPv4: first, then the rest, both with the session's addresses")
    func fragmentsFromIPv4() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let (address, port) = try Self.withUDPBinding(&d)
        let pieces = Net.fragments4(Net.udp4(to: address, port: port, payload: 600), split: 304, id: 0x4242)
        let first = d.translate(pieces[0], now: 1).forwarded
        let rest = d.translate(pieces[1], now: 2).forwarded
        try #require(first.count == 1 && rest.count == 1)
        for f in first + rest {
            #expect(f[0] >> 4 == 6 && f[6] == 44 && Net.destination6(f) == Net.client)
            #expect(Net.source6(f) == Net.prefix.embedding(Net.server))
        }
        #expect(first[0].loadBigEndian(UInt16.self, at: 48 + 2) == 5000)
        #expect(try Net.reassembledChecksumIsValid(first + rest))
    }

    @Test("IPv4 fragments out of order: the last waits for the first and leaves with it")
    func fragmentsFromIPv4OutOfOrder() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let (_, port) = try Self.withUDPBinding(&d)
        let pieces = Net.fragments4(Net.udp4(port: port, payload: 600), split: 304, id: 0x4243)
        #expect(d.translate(pieces[1], now: 1).forwarded.isEmpty)
        #expect(d.translation.fragmentsHeld == 1)
        let out = d.translate(pieces[0], now: 2).forwarded
        #expect(out.count == 2)
        #expect(out.allSatisfy { Net.destination6($0) == Net.client })
        #expect(try Net.reassembledChecksumIsValid(out))
    }

    @Test("a fragment whose first never comes is dropped after 2 s (fragment_without_first); the hold is capped")
    func fragmentsWithoutFirst() throws {
        var c = Net.configuration()
        c.maximumHeldFragments = 2
        var d = NAT64OfflineDataplane(configuration: c)
        let (_, port) = try Self.withUDPBinding(&d)
        for id in UInt16(1)...3 {
            let pieces = Net.fragments4(Net.udp4(port: port, payload: 600), split: 304, id: id)
            #expect(d.translate(pieces[1], now: 1 * Self.s).forwarded.isEmpty)
        }
        #expect(d.translation.fragmentsHeld == 2 && d.translation.dropped[.fragmentWithoutFirst] == 1)
        _ = d.translate(Net.udp4(port: port), now: 2 * Self.s + 500)
        #expect(d.translation.dropped[.fragmentWithoutFirst] == 1)
        _ = d.translate(Net.udp4(port: port), now: 3 * Self.s + 1)
        #expect(d.translation.dropped[.fragmentWithoutFirst] == 3)
        // The first fragment of one of them, late: translated alone (its rest is gone).
        let pieces = Net.fragments4(Net.udp4(port: port, payload: 600), split: 304, id: 1)
        #expect(d.translate(pieces[0], now: 4 * Self.s).forwarded.count == 1)
    }

    @Test("a fragmented UDP datagram from IPv6 (Fragment header): first, then the rest, out with the pool4 port")
    func fragmentsFromIPv6() throws {
        var d = NAT64OfflineDataplane(configuration: Net.configuration())
        let (address, port) = try Self.withUDPBinding(&d)
        let pieces = Net.fragments6(Net.udp6(sourcePort: 5000, payload: 600), split: 304, id: 0x0102_0304)
        let first = d.translate(pieces[0], now: 1).forwarded
        let rest = d.translate(pieces[1], now: 2).forwarded
        try #require(first.count == 1 && rest.count == 1)
        for f in first + rest {
            #expect(f[0] >> 4 == 4 && Net.source4(f) == address && Net.destination4(f) == Net.server)
        }
        #expect(Net.l4Field(first[0], 0) == port)
        #expect(try Net.reassembledChecksumIsValid(first + rest))
        // Out of order.
        let again = Net.fragments6(Net.udp6(sourcePort: 5000, payload: 600), split: 304, id: 0x0102_0305)
        #expect(d.translate(again[1], now: 3).forwarded.isEmpty)
        let both = d.translate(again[0], now: 4).forwarded
        #expect(both.count == 2)
        #expect(try Net.reassembledChecksumIsValid(both))
    }
}
