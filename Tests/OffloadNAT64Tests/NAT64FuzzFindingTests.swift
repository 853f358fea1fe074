import OffloadNAT64
import OffloadWire
import Testing

/// What FuzzNAT64 found about the translator's own addresses in ICMP errors: each was translated
/// with a quote or a source that named the wrong host.
@Suite("NAT64: ICMP errors that involve the pool4 addresses themselves")
struct NAT64FuzzFindingTests {
    @Test("an ICMPv4 error whose source is the pool4 address (spoofed: the translator's own address on the IPv4 side) is dropped, not sent with the IPv6 host's own address as its source")
    func errorFromPool4Address() throws {
        var dataplane = NAT64OfflineDataplane(configuration: Net.configuration())
        let out = try #require(dataplane.translate(Net.udp6(), now: 1).forwarded.first)
        let error = Net.icmp4Error(from: Net.pool, to: Net.pool, type: 3, code: 3, quoting: out)
        #expect(dataplane.translate(error, now: 2).forwarded.isEmpty)
        #expect(dataplane.translation.dropped[.notOurs] == 1)
        // The same error from a router is translated (the rule is about the source only).
        let routed = Net.icmp4Error(from: Net.router4, to: Net.pool, type: 3, code: 3, quoting: out)
        let back = try #require(dataplane.translate(routed, now: 3).forwarded.first)
        #expect(Net.source6(back) == Net.prefix.embedding(Net.router4) && Net.destination6(back) == Net.client)
    }

    @Test("an ICMPv4 error quoting a packet from a pool4 address to a pool4 address (which the translator never sends) is dropped, even when a hairpinned session has that remote")
    func errorQuotingPool4ToPool4() throws {
        var dataplane = NAT64OfflineDataplane(configuration: Net.configuration())
        // A client pings its own pool4 address: the echo hairpins and leaves a session whose
        // remote is the pool4 address itself.
        _ = dataplane.translate(Net.echo6(from: Net.client, to: Net.pool, id: 7), now: 1)
        let binding = try #require(dataplane.state.snapshot(now: 1).entries.first { $0.proto == "icmp" })
        let port = try #require(UInt16(binding.ipv4.split(separator: "#").last ?? ""))
        #expect(binding.sessions.map(\.remote) == ["\(Net.pool)"])
        // A forged error quoting an echo from the pool4 address to itself with that identifier.
        var quoted = Net.echo4(from: Net.pool, to: Net.pool, type: 8, id: port)
        quoted[8] = 63
        let error = Net.icmp4Error(from: Net.router4, to: Net.pool, type: 11, code: 0, quoting: quoted)
        #expect(dataplane.translate(error, now: 2).forwarded.isEmpty)
        #expect(dataplane.translation.dropped[.noSession] == 1)
    }

    @Test("an ICMPv6 error about a hairpinned packet is dropped (not sent to its own sender with another host's port in its quote)")
    func errorAboutHairpinnedPacket() throws {
        var dataplane = NAT64OfflineDataplane(configuration: Net.configuration())
        // Client B has a UDP binding; client A sends to it through the pool4 (hairpinned).
        let bOut = try #require(dataplane.translate(Net.udp6(from: Net.client2, sourcePort: 5000), now: 1).forwarded.first)
        let bPort = Net.l4Field(bOut, 0)
        let hairpinned = try #require(dataplane.translate(Net.udp6(from: Net.client, sourcePort: 6000, to: Net.pool, port: bPort),
                                                          now: 2).forwarded.first)
        #expect(Net.destination6(hairpinned) == Net.client2)
        // B answers port unreachable about it, to A's pool4 address under the prefix.
        let error = Net.icmp6Error(from: Net.client2, to: Net.pool, type: 1, code: 4, quoting: hairpinned)
        let before = dataplane.translation.dropped[.notTranslated, default: 0]
        #expect(dataplane.translate(error, now: 3).forwarded.isEmpty)
        #expect(dataplane.translation.dropped[.notTranslated, default: 0] == before + 1)
    }
}
