import OffloadNAT64
import OffloadWire
import Testing

/// The tables on their own, on a clock the test turns: RFC 6146 §3.5.2.2's TCP state machine, the
/// lifetimes of §4, the pool4's ports (RFC 4787 REQ-1..4, RFC 6056 §3.3.3) and filtering.
@Suite("NAT64 tables: TCP states, lifetimes, ports, filtering")
struct NAT64TablesTests {
    static let s = Net.s
    static let syn: UInt8 = 0x02, fin: UInt8 = 0x11, rst: UInt8 = 0x04, ack: UInt8 = 0x10, synAck: UInt8 = 0x12

    /// Ends what ran out by `now`, then reads the tables.
    static func look(_ t: inout NAT64Tables, at now: UInt64) -> NAT64Snapshot {
        _ = t.expire(now: now, limit: 100_000)
        return t.snapshot(now: now)
    }

    /// A TCP segment of the flow client:40001 ↔ server:80 from IPv6, at `now`.
    @discardableResult
    static func out(_ t: inout NAT64Tables, _ flags: UInt8, at now: UInt64, port: UInt16 = 40001,
                    to server: IPv4Address = Net.server) -> Result<NAT64IPv4Side, NAT64Refusal> {
        t.fromIPv6(.tcp, source: Net.client, sourcePort: port, destination: server, destinationPort: 80, tcpFlags: flags,
                   now: now)
    }

    /// A TCP segment of the same flow from IPv4, to (T, t).
    @discardableResult
    static func back(_ t: inout NAT64Tables, _ flags: UInt8, to side: NAT64IPv4Side, at now: UInt64,
                     from server: IPv4Address = Net.server) -> Result<NAT64IPv6Side, NAT64Refusal> {
        t.fromIPv4(.tcp, source: server, sourcePort: 80, destination: side.address, destinationPort: side.port, tcpFlags: flags,
                   now: now)
    }

    static func tcp(_ t: inout NAT64Tables, at now: UInt64) -> NAT64SessionView? {
        Net.session(look(&t, at: now), .tcp, remote: "203.0.113.9:80")
    }

    /// A connection opened from IPv6 at 1 s, answered at 2 s: ESTABLISHED.
    static func established() throws -> (NAT64Tables, NAT64IPv4Side) {
        var t = NAT64Tables(configuration: Net.configuration())
        let side = try out(&t, syn, at: 1 * s).get()
        _ = try back(&t, synAck, to: side, at: 2 * s).get()
        return (t, side)
    }

    // MARK: - TCP (RFC 6146 §3.5.2.2)

    @Test("V6 SYN: V6_INIT for TCP_TRANS (4 min); V4 SYN: ESTABLISHED for TCP_EST (2 h 4 min)")
    func opening() throws {
        var t = NAT64Tables(configuration: Net.configuration())
        let side = try Self.out(&t, Self.syn, at: 1 * Self.s).get()
        var view = try #require(Self.tcp(&t, at: 1 * Self.s))
        #expect(view.state == "V6_INIT" && view.expiresIn == 240)
        // A retransmitted V6 SYN refreshes TCP_TRANS.
        Self.out(&t, Self.syn, at: 10 * Self.s)
        view = try #require(Self.tcp(&t, at: 10 * Self.s))
        #expect(view.state == "V6_INIT" && view.expiresIn == 240)
        let six = try Self.back(&t, Self.synAck, to: side, at: 11 * Self.s).get()
        #expect(six.address == Net.client && six.port == 40001)
        view = try #require(Self.tcp(&t, at: 11 * Self.s))
        #expect(view.state == "ESTABLISHED" && view.expiresIn == 7_440)
        // Data refreshes TCP_EST.
        Self.out(&t, Self.ack, at: 100 * Self.s)
        #expect(Self.tcp(&t, at: 100 * Self.s)?.expiresIn == 7_440)
    }

    @Test("V6 INIT never answered: deleted at TCP_TRANS, not before")
    func unansweredOpening() throws {
        var t = NAT64Tables(configuration: Net.configuration())
        Self.out(&t, Self.syn, at: 0)
        #expect(Self.tcp(&t, at: 239 * Self.s)?.state == "V6_INIT")
        #expect(Self.tcp(&t, at: 240 * Self.s) == nil)
        #expect(t.sessionCount == 0 && t.bindingCounts[NAT64Protocol.tcp.rawValue] == 0)
    }

    @Test("FIN from IPv6 then IPv4: V6_FIN_RCV, then V4_FIN_V6_FIN_RCV for TCP_TRANS, not refreshed after")
    func closeFromIPv6First() throws {
        var (t, side) = try Self.established()
        Self.out(&t, Self.fin, at: 10 * Self.s)
        var view = try #require(Self.tcp(&t, at: 10 * Self.s))
        #expect(view.state == "V6_FIN_RCV" && view.expiresIn == 7_440)
        // More data from IPv4 in V6_FIN_RCV: still half closed, TCP_EST refreshed.
        Self.back(&t, Self.ack, to: side, at: 20 * Self.s)
        view = try #require(Self.tcp(&t, at: 20 * Self.s))
        #expect(view.state == "V6_FIN_RCV" && view.expiresIn == 7_440)
        Self.back(&t, Self.fin, to: side, at: 30 * Self.s)
        view = try #require(Self.tcp(&t, at: 30 * Self.s))
        #expect(view.state == "V4_FIN_V6_FIN_RCV" && view.expiresIn == 240)
        // The last ACKs are translated but refresh nothing.
        #expect((try? Self.out(&t, Self.ack, at: 100 * Self.s).get()) == side)
        Self.back(&t, Self.ack, to: side, at: 200 * Self.s)
        view = try #require(Self.tcp(&t, at: 200 * Self.s))
        #expect(view.state == "V4_FIN_V6_FIN_RCV" && view.expiresIn == 70)
        #expect(Self.tcp(&t, at: 270 * Self.s) == nil)
        #expect(t.sessionCount == 0)
    }

    @Test("FIN from IPv4 then IPv6: V4_FIN_RCV, then V4_FIN_V6_FIN_RCV")
    func closeFromIPv4First() throws {
        var (t, side) = try Self.established()
        Self.back(&t, Self.fin, to: side, at: 10 * Self.s)
        #expect(Self.tcp(&t, at: 10 * Self.s)?.state == "V4_FIN_RCV")
        Self.out(&t, Self.fin, at: 11 * Self.s)
        let view = try #require(Self.tcp(&t, at: 11 * Self.s))
        #expect(view.state == "V4_FIN_V6_FIN_RCV" && view.expiresIn == 240)
    }

    @Test("RST: TRANS for TCP_TRANS, the session kept; data within 4 min brings it back to ESTABLISHED")
    func resetThenData() throws {
        var (t, side) = try Self.established()
        Self.back(&t, Self.rst, to: side, at: 10 * Self.s)
        var view = try #require(Self.tcp(&t, at: 10 * Self.s))
        #expect(view.state == "TRANS" && view.expiresIn == 240)
        // Still there (not deleted) 3 min later; a second RST does not refresh it.
        Self.out(&t, Self.rst, at: 100 * Self.s)
        view = try #require(Self.tcp(&t, at: 200 * Self.s))
        #expect(view.state == "TRANS" && view.expiresIn == 50)
        #expect((try? Self.out(&t, Self.ack, at: 249 * Self.s).get()) == side)
        view = try #require(Self.tcp(&t, at: 249 * Self.s))
        #expect(view.state == "ESTABLISHED" && view.expiresIn == 7_440)
    }

    @Test("RST and nothing after: deleted at TCP_TRANS")
    func resetThenSilence() throws {
        var (t, side) = try Self.established()
        Self.out(&t, Self.rst, at: 10 * Self.s)
        #expect(Self.tcp(&t, at: 249 * Self.s)?.state == "TRANS")
        #expect(Self.tcp(&t, at: 250 * Self.s) == nil)
        // The binding went with its last session: the server's late segment finds nothing.
        #expect(throws: NAT64Refusal.noBinding) { try Self.back(&t, Self.ack, to: side, at: 251 * Self.s).get() }
    }

    @Test("ESTABLISHED idle for TCP_EST: TRANS for TCP_TRANS, then deleted; a packet in TRANS revives it")
    func establishedExpiry() throws {
        var (t, side) = try Self.established()  // refreshed at 2 s
        let end = (2 + 7_440) * Self.s
        #expect(Self.tcp(&t, at: end - 1)?.state == "ESTABLISHED")
        var view = try #require(Self.tcp(&t, at: end))
        #expect(view.state == "TRANS" && view.expiresIn == 240)
        #expect(Self.tcp(&t, at: end + 239 * Self.s)?.state == "TRANS")
        #expect(Self.tcp(&t, at: end + 240 * Self.s) == nil)

        var (u, side2) = try Self.established()
        _ = side
        #expect(Self.tcp(&u, at: end)?.state == "TRANS")
        Self.back(&u, Self.ack, to: side2, at: end + 100 * Self.s)
        view = try #require(Self.tcp(&u, at: end + 100 * Self.s))
        #expect(view.state == "ESTABLISHED" && view.expiresIn == 7_440)
    }

    @Test("CLOSED: a TCP segment other than a SYN opens nothing, from either side")
    func nonSYNWithoutSession() throws {
        var t = NAT64Tables(configuration: Net.configuration())
        #expect(throws: NAT64Refusal.noSession) { try Self.out(&t, Self.ack, at: 0).get() }
        #expect(throws: NAT64Refusal.noSession) { try Self.out(&t, Self.fin, at: 0).get() }
        #expect(throws: NAT64Refusal.noSession) { try Self.out(&t, Self.rst, at: 0).get() }
        #expect(t.sessionCount == 0 && t.bindingCounts == [0, 0, 0])
        // From IPv4 to a binding that exists (of another flow): no session for a non-SYN either.
        let side = try Self.out(&t, Self.syn, at: 0).get()
        #expect(throws: NAT64Refusal.noSession) { try Self.back(&t, Self.ack, to: side, at: 1, from: Net.server2).get() }
        #expect(t.sessionCount == 1)
    }

    @Test("V4 SYN to an existing binding (endpoint-independent): V4_INIT; the V6 SYN makes it ESTABLISHED")
    func openFromIPv4() throws {
        var t = NAT64Tables(configuration: Net.configuration())
        let side = try Self.out(&t, Self.syn, at: 0).get()
        _ = try Self.back(&t, Self.syn, to: side, at: 1 * Self.s, from: Net.server2).get()
        var view = try #require(Net.session(Self.look(&t, at: 1 * Self.s), .tcp, remote: "203.0.113.10:80"))
        #expect(view.state == "V4_INIT" && view.expiresIn == 240)
        Self.out(&t, Self.synAck, at: 2 * Self.s, to: Net.server2)
        view = try #require(Net.session(Self.look(&t, at: 2 * Self.s), .tcp, remote: "203.0.113.10:80"))
        #expect(view.state == "ESTABLISHED" && view.expiresIn == 7_440)
    }

    // MARK: - Lifetimes (RFC 6146 §4, RFC 4787 REQ-5, RFC 5508 REQ-2)

    @Test("UDP: 5 minutes, refreshed by packets out and in; then gone, and the next flow gets a new binding")
    func udpLifetime() throws {
        var t = NAT64Tables(configuration: Net.configuration())
        func out(_ now: UInt64) throws -> NAT64IPv4Side {
            try t.fromIPv6(.udp, source: Net.client, sourcePort: 5000, destination: Net.server, destinationPort: 53, now: now).get()
        }
        let side = try out(0)
        func udp(_ now: UInt64) -> NAT64SessionView? { Net.session(Self.look(&t, at: now), .udp, remote: "203.0.113.9:53") }
        #expect(udp(0)?.expiresIn == 300)
        _ = try t.fromIPv4(.udp, source: Net.server, sourcePort: 53, destination: side.address, destinationPort: side.port,
                           now: 200 * Self.s).get()
        #expect(udp(200 * Self.s)?.expiresIn == 300)
        #expect(try out(400 * Self.s) == side)
        #expect(udp(699 * Self.s)?.expiresIn == 1)
        #expect(udp(700 * Self.s) == nil)
        #expect(t.sessionCount == 0 && t.bindingCounts[NAT64Protocol.udp.rawValue] == 0 && t.expiredSessions == 1)
        // The old (T, t) is free: the server's reply finds nothing.
        #expect(throws: NAT64Refusal.noBinding) {
            try t.fromIPv4(.udp, source: Net.server, sourcePort: 53, destination: side.address, destinationPort: side.port,
                           now: 701 * Self.s).get()
        }
        _ = try out(702 * Self.s)
        #expect(t.bindingCounts[NAT64Protocol.udp.rawValue] == 1 && udp(702 * Self.s)?.expiresIn == 300)
    }

    @Test("ICMP query: 60 s, refreshed by the echo reply")
    func icmpLifetime() throws {
        var t = NAT64Tables(configuration: Net.configuration())
        let side = try t.fromIPv6(.icmp, source: Net.client, sourcePort: 7, destination: Net.server, destinationPort: 7,
                                  now: 0).get()
        func icmp(_ now: UInt64) -> NAT64SessionView? { Net.session(Self.look(&t, at: now), .icmp, remote: "203.0.113.9") }
        #expect(icmp(0)?.expiresIn == 60)
        _ = try t.fromIPv4(.icmp, source: Net.server, sourcePort: side.port, destination: side.address,
                           destinationPort: side.port, creates: false, now: 30 * Self.s).get()
        #expect(icmp(89 * Self.s)?.expiresIn == 1)
        #expect(icmp(90 * Self.s) == nil)
    }

    @Test("configured lifetimes are the ones used")
    func configuredLifetimes() throws {
        var c = Net.configuration()
        c.timeouts.udp = 150 * Self.s
        c.timeouts.icmp = 30 * Self.s
        c.timeouts.tcpTransitory = 100 * Self.s
        c.timeouts.tcpEstablished = 1_000 * Self.s
        #expect(c.warnings.count == 3, "TCP_EST, TCP_TRANS and ICMP below the RFCs' minimums: \(c.warnings)")
        var t = NAT64Tables(configuration: c)
        _ = try t.fromIPv6(.udp, source: Net.client, sourcePort: 5000, destination: Net.server, destinationPort: 53, now: 0).get()
        _ = try t.fromIPv6(.icmp, source: Net.client, sourcePort: 9, destination: Net.server, destinationPort: 9, now: 0).get()
        let side = try Self.out(&t, Self.syn, at: 0).get()
        var snap = Self.look(&t, at: 0)
        #expect(Net.session(snap, .udp, remote: "203.0.113.9:53")?.expiresIn == 150)
        #expect(Net.session(snap, .icmp, remote: "203.0.113.9")?.expiresIn == 30)
        #expect(Net.session(snap, .tcp, remote: "203.0.113.9:80")?.expiresIn == 100)
        Self.back(&t, Self.synAck, to: side, at: 0)
        snap = Self.look(&t, at: 0)
        #expect(Net.session(snap, .tcp, remote: "203.0.113.9:80")?.expiresIn == 1_000)
        #expect(Self.tcp(&t, at: 1_000 * Self.s)?.state == "TRANS")
        #expect(Self.tcp(&t, at: 1_100 * Self.s) == nil)
    }

    @Test("paired address: each host's bindings of all protocols and flows share one IPv4 address")
    func pairedAddress() throws {
        var t = NAT64Tables(configuration: Net.configuration("198.51.100.1-198.51.100.8:1024-65535"))
        var used = Set<IPv4Address>()
        for h in 0..<20 {
            let host = IPv6Address(0x2001, 0xdb8, 1, 0, 0, 0, 0, UInt16(100 + h))
            var addresses = Set<IPv4Address>()
            for f in 0..<3 {
                let server = IPv4Address(203, 0, 113, UInt8(1 + f))
                for proto in NAT64Protocol.allCases {
                    let side = try t.fromIPv6(proto, source: host, sourcePort: UInt16(30_000 + f), destination: server,
                                              destinationPort: 443, tcpFlags: Self.syn, now: 0).get()
                    addresses.insert(side.address)
                }
            }
            #expect(addresses.count == 1, "host \(h): \(addresses)")
            #expect(t.pairedAddress(of: host) == addresses.first)
            used.formUnion(addresses)
        }
        #expect(used.count > 1, "hosts are spread over the pool4")
    }

    @Test("expire(limit:) ends at most `limit` sessions per call; the rest at the next calls")
    func boundedExpiry() throws {
        var t = NAT64Tables(configuration: Net.configuration())
        for i in 0..<10 {
            _ = try t.fromIPv6(.udp, source: Net.client, sourcePort: UInt16(5000 + i), destination: Net.server, destinationPort: 53,
                               now: 0).get()
        }
        #expect(t.expire(now: 299 * Self.s, limit: 3).deleted == 0)
        #expect(t.expire(now: 300 * Self.s, limit: 3).deleted == 3 && t.sessionCount == 7)
        #expect(t.expire(now: 300 * Self.s, limit: 3).deleted == 3 && t.sessionCount == 4)
        #expect(t.expire(now: 300 * Self.s, limit: 3).deleted == 3)
        #expect(t.expire(now: 300 * Self.s, limit: 3).deleted == 1 && t.sessionCount == 0 && t.nextExpiry == nil)
    }

    // MARK: - Ports (RFC 4787 REQ-1..4, RFC 6056 §3.3.3)

    @Test("parity kept: odd source ports get odd pool4 ports, even get even")
    func parity() throws {
        var t = NAT64Tables(configuration: Net.configuration())
        for i in 0..<64 {
            let port = UInt16(30_000 + i)
            let side = try t.fromIPv6(.udp, source: Net.client, sourcePort: port, destination: Net.server, destinationPort: 53,
                                      now: 0).get()
            #expect(side.port & 1 == port & 1, "source \(port) got \(side.port)")
            #expect(side.port >= 1024)
        }
    }

    @Test("parity kept in a range of an odd number of ports: the search wraps to a port of the same parity")
    func parityInOddRange() throws {
        // 2000-2004 has two odd ports; two odd source ports must get both, whichever the search starts at.
        for trial in 0..<50 {
            var t = NAT64Tables(configuration: Net.configuration("198.51.100.1:2000-2004"))
            var ports = Set<UInt16>()
            for i in 0..<2 {
                let side = try t.fromIPv6(.udp, source: Net.client, sourcePort: UInt16(7001 + 2 * i), destination: Net.server,
                                          destinationPort: 53, now: 0).get()
                ports.insert(side.port)
            }
            #expect(ports == [2001, 2003], "trial \(trial): \(ports.sorted())")
        }
    }

    @Test("range kept: a source port below 1024 gets one below 1024 when the pool has such, others get 1024 or more")
    func range() throws {
        var t = NAT64Tables(configuration: Net.configuration("198.51.100.1:1-65535"))
        for i in 0..<20 {
            let low = UInt16(500 + i), high = UInt16(40_000 + i)
            let a = try t.fromIPv6(.udp, source: Net.client, sourcePort: low, destination: Net.server, destinationPort: 53, now: 0).get()
            let b = try t.fromIPv6(.tcp, source: Net.client, sourcePort: high, destination: Net.server, destinationPort: 80,
                                   tcpFlags: Self.syn, now: 0).get()
            #expect(a.port < 1024 && a.port & 1 == low & 1, "source \(low) got \(a.port)")
            #expect(b.port >= 1024 && b.port & 1 == high & 1, "source \(high) got \(b.port)")
        }
        // A pool without low ports still serves a low source port.
        var u = NAT64Tables(configuration: Net.configuration())
        let side = try u.fromIPv6(.udp, source: Net.client, sourcePort: 53, destination: Net.server, destinationPort: 53, now: 0).get()
        #expect(side.port >= 1024 && side.port & 1 == 1)
    }

    @Test("ports of consecutive flows from one host to one server are not sequential (RFC 6056)")
    func unpredictablePorts() throws {
        var t = NAT64Tables(configuration: Net.configuration())
        var ports: [Int] = []
        for i in 0..<16 {
            let side = try t.fromIPv6(.tcp, source: Net.client, sourcePort: UInt16(40_001 + 2 * i), destination: Net.server,
                                      destinationPort: 443, tcpFlags: Self.syn, now: 0).get()
            ports.append(Int(side.port))
        }
        let steps = zip(ports.dropFirst(), ports).map { $0 - $1 }
        #expect(!steps.allSatisfy { (-2...2).contains($0) }, "ports \(ports)")
        #expect(Set(steps).count > 1, "ports \(ports)")
        // Nor to different servers.
        var others: [Int] = []
        for i in 0..<16 {
            let side = try t.fromIPv6(.udp, source: Net.client2, sourcePort: UInt16(5001 + 2 * i),
                                      destination: IPv4Address(203, 0, 113, UInt8(20 + i)), destinationPort: 53, now: 0).get()
            others.append(Int(side.port))
        }
        let steps2 = zip(others.dropFirst(), others).map { $0 - $1 }
        #expect(!steps2.allSatisfy { (-2...2).contains($0) }, "ports \(others)")
    }

    @Test("endpoint-independent mapping: (X', x) to two destinations is one (T, t)")
    func endpointIndependentMapping() throws {
        var t = NAT64Tables(configuration: Net.configuration("198.51.100.1-198.51.100.4"))
        for proto in NAT64Protocol.allCases {
            let a = try t.fromIPv6(proto, source: Net.client, sourcePort: 41_000, destination: Net.server, destinationPort: 80,
                                   tcpFlags: Self.syn, now: 0).get()
            let b = try t.fromIPv6(proto, source: Net.client, sourcePort: 41_000, destination: Net.server2, destinationPort: 8080,
                                   tcpFlags: Self.syn, now: 0).get()
            #expect(a == b, "\(proto)")
        }
        #expect(t.sessionCount == 6 && t.bindingCounts == [1, 1, 1])
    }

    @Test("a pool of four ports: four bindings, then pool_exhausted; a port again once a binding expired")
    func exhaustion() throws {
        var t = NAT64Tables(configuration: Net.configuration("198.51.100.1:2000-2003"))
        var ports = Set<UInt16>()
        for i in 0..<4 {
            let side = try t.fromIPv6(.udp, source: Net.client, sourcePort: UInt16(6000 + i), destination: Net.server,
                                      destinationPort: 53, now: UInt64(i) * Self.s).get()
            ports.insert(side.port)
        }
        #expect(ports == [2000, 2001, 2002, 2003])
        #expect(throws: NAT64Refusal.poolExhausted) {
            try t.fromIPv6(.udp, source: Net.client2, sourcePort: 6000, destination: Net.server, destinationPort: 53, now: 5 * Self.s).get()
        }
        // Another protocol has its own ports.
        _ = try t.fromIPv6(.tcp, source: Net.client2, sourcePort: 6000, destination: Net.server, destinationPort: 80,
                           tcpFlags: Self.syn, now: 5 * Self.s).get()
        _ = t.expire(now: 300 * Self.s, limit: 100)  // the first binding (made at 0) ran out
        let side = try t.fromIPv6(.udp, source: Net.client2, sourcePort: 6000, destination: Net.server, destinationPort: 53,
                                  now: 300 * Self.s).get()
        #expect(ports.contains(side.port))
    }

    @Test("maximumPortProbes bounds the search: with one probe, a nearly full pool refuses flows it has ports for")
    func probeBound() throws {
        var c = Net.configuration("198.51.100.1:2000-2063")
        c.maximumPortProbes = 1
        var t = NAT64Tables(configuration: c)
        var refused = 0
        for i in 0..<64 {
            let r = t.fromIPv6(.udp, source: Net.client, sourcePort: UInt16(6000 + i), destination: Net.server, destinationPort: 53,
                               now: 0)
            if case .failure(let refusal) = r {
                #expect(refusal == .poolExhausted)
                refused += 1
            }
        }
        #expect(refused > 0 && t.bindingCounts[NAT64Protocol.udp.rawValue] == 64 - refused)
        // With the default bound the same pool is used to the last port.
        var u = NAT64Tables(configuration: Net.configuration("198.51.100.1:2000-2063"))
        for i in 0..<64 {
            _ = try u.fromIPv6(.udp, source: Net.client, sourcePort: UInt16(6000 + i), destination: Net.server, destinationPort: 53,
                               now: 0).get()
        }
        #expect(u.bindingCounts[NAT64Protocol.udp.rawValue] == 64)
    }

    @Test("limits: per host and in all")
    func limits() throws {
        var c = Net.configuration()
        c.maximumSessionsPerHost = 2
        c.maximumSessions = 3
        var t = NAT64Tables(configuration: c)
        for i in 0..<2 {
            _ = try t.fromIPv6(.udp, source: Net.client, sourcePort: UInt16(5000 + i), destination: Net.server, destinationPort: 53,
                               now: 0).get()
        }
        #expect(throws: NAT64Refusal.hostLimit) {
            try t.fromIPv6(.udp, source: Net.client, sourcePort: 5002, destination: Net.server, destinationPort: 53, now: 0).get()
        }
        _ = try t.fromIPv6(.udp, source: Net.client2, sourcePort: 5000, destination: Net.server, destinationPort: 53, now: 0).get()
        #expect(throws: NAT64Refusal.sessionLimit) {
            try t.fromIPv6(.udp, source: IPv6Address(0x2001, 0xdb8, 1, 0, 0, 0, 0, 9), sourcePort: 5000, destination: Net.server,
                           destinationPort: 53, now: 0).get()
        }
        #expect(t.sessionCount == 3)
    }

    @Test("limits as large as an Int can say are no limit, not a trap")
    func hugeLimits() throws {
        var c = Net.configuration()
        c.maximumSessionsPerHost = Int.max
        c.maximumSessions = Int.max
        var t = NAT64Tables(configuration: c)
        for i in 0..<3 {
            _ = try t.fromIPv6(.udp, source: Net.client, sourcePort: UInt16(5000 + i), destination: Net.server, destinationPort: 53,
                               now: 0).get()
        }
        let side = try t.fromIPv6(.udp, source: Net.client, sourcePort: 5000, destination: Net.server, destinationPort: 53, now: 0).get()
        _ = try t.fromIPv4(.udp, source: Net.server2, sourcePort: 53, destination: side.address, destinationPort: side.port, now: 0).get()
        #expect(t.sessionCount == 4)
    }

    @Test("limits below zero refuse, they do not trap")
    func negativeLimits() throws {
        var c = Net.configuration()
        c.maximumPortProbes = -1
        c.maximumStoredSYNs = -1
        var t = NAT64Tables(configuration: c)
        #expect(throws: NAT64Refusal.poolExhausted) {
            try t.fromIPv6(.udp, source: Net.client, sourcePort: 5000, destination: Net.server, destinationPort: 53, now: 0).get()
        }
        #expect(throws: NAT64Refusal.synStoreFull) {
            try t.fromIPv4(.tcp, source: Net.server, sourcePort: 80, destination: Net.pool, destinationPort: 3000, tcpFlags: Self.syn,
                           now: 0).get()
        }
    }

    @Test("lifetimes as long as a UInt64 can say are forever, not a trap nor an instant expiry")
    func hugeLifetimes() throws {
        var c = Net.configuration()
        c.timeouts.udp = .max
        c.timeouts.tcpIncomingSyn = .max
        var t = NAT64Tables(configuration: c)
        _ = try t.fromIPv6(.udp, source: Net.client, sourcePort: 5000, destination: Net.server, destinationPort: 53,
                           now: 1_000).get()
        #expect(throws: NAT64Refusal.synStored) {
            try t.fromIPv4(.tcp, source: Net.server, sourcePort: 80, destination: Net.pool, destinationPort: 3000, tcpFlags: Self.syn,
                           now: 1_000).get()
        }
        let expiry = t.expire(now: UInt64.max - 1, limit: 100)
        #expect(expiry.deleted == 0 && expiry.unansweredSYNs.isEmpty && t.sessionCount == 1 && t.storedSYNCount == 1)
    }

    // MARK: - Filtering (RFC 4787 §5)

    @Test("endpoint-independent filtering: another IPv4 host may use an existing UDP binding")
    func endpointIndependentFiltering() throws {
        var t = NAT64Tables(configuration: Net.configuration())
        let side = try t.fromIPv6(.udp, source: Net.client, sourcePort: 5000, destination: Net.server, destinationPort: 53, now: 0).get()
        let six = try t.fromIPv4(.udp, source: Net.server2, sourcePort: 9999, destination: side.address, destinationPort: side.port,
                                 now: 1).get()
        #expect(six.address == Net.client && six.port == 5000 && t.sessionCount == 2)
    }

    @Test("address-dependent filtering: only hosts the client sent to (any port) may use its binding")
    func addressDependentFiltering() throws {
        var c = Net.configuration()
        c.filtering = .addressDependent
        var t = NAT64Tables(configuration: c)
        let side = try t.fromIPv6(.udp, source: Net.client, sourcePort: 5000, destination: Net.server, destinationPort: 53, now: 0).get()
        #expect(throws: NAT64Refusal.filtered) {
            try t.fromIPv4(.udp, source: Net.server2, sourcePort: 53, destination: side.address, destinationPort: side.port, now: 1).get()
        }
        #expect(t.sessionCount == 1)
        let six = try t.fromIPv4(.udp, source: Net.server, sourcePort: 9999, destination: side.address, destinationPort: side.port,
                                 now: 2).get()
        #expect(six.address == Net.client && six.port == 5000 && t.sessionCount == 2)
    }
}
