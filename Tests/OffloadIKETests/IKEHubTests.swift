import Foundation
import OffloadIPsec
import OffloadWire
import Testing

@testable import OffloadIKE

/// A hub engine and several peer engines in memory; each peer reaches the hub from an endpoint
/// (address and port, what a NAT in front of it made of its own), which a test may change.
final class IKEHubNet {
    static let hubAddress = IPAddress("192.0.2.1")!
    let hub: IKEEngine
    var peers: [(engine: IKEEngine, seenAs: UDPEndpoint)] = []
    var now = 0.0
    var inFlight: [(toHub: Bool, peer: Int, bytes: [UInt8])] = []
    /// Every message a peer sent to the hub, in order (for replays).
    var toHub: [(peer: Int, bytes: [UInt8])] = []
    /// Messages of the hub that no peer was at.
    var lost = 0

    init(hub config: String) throws { hub = IKEEngine(connections: try IKEConfig.parse(config)) }

    /// Adds a peer; returns its index.
    @discardableResult
    func add(_ config: String, seenAs: String, port: UInt16 = 4500, claimsNAT: Bool = true) throws -> Int {
        let e = IKEEngine(connections: try IKEConfig.parse(config))
        e.claimsNAT = claimsNAT
        peers.append((e, UDPEndpoint(IPAddress(seenAs)!, port)))
        return peers.count - 1
    }

    /// The path on which the hub receives from peer `i` now.
    func pathAtHub(_ i: Int) -> IKEPath { IKEPath(localPort: 4500, remote: peers[i].seenAs.address, remotePort: peers[i].seenAs.port) }

    func fromPeer(_ i: Int, _ out: [(bytes: [UInt8], path: IKEPath)]) {
        for m in out where m.path.remote == Self.hubAddress { inFlight.append((true, i, m.bytes)) }
    }

    func fromHub(_ out: [(bytes: [UInt8], path: IKEPath)]) {
        for m in out {
            if let i = peers.firstIndex(where: { $0.seenAs == m.path.endpoint }) { inFlight.append((false, i, m.bytes)) } else { lost += 1 }
        }
    }

    /// Delivers until nothing is in flight (bounded).
    func run(limit: Int = 200) {
        var steps = 0
        while !inFlight.isEmpty && steps < limit {
            steps += 1
            let m = inFlight.removeFirst()
            if m.toHub {
                toHub.append((m.peer, m.bytes))
                fromHub(hub.receive(m.bytes, path: pathAtHub(m.peer), now: now))
            } else {
                fromPeer(m.peer, peers[m.peer].engine.receive(m.bytes, path: IKEPath(localPort: 4500, remote: Self.hubAddress, remotePort: 4500), now: now))
            }
        }
    }

    /// Starts peer `i`'s connections and runs the exchanges.
    func start(_ i: Int) {
        fromPeer(i, peers[i].engine.start(now: now))
        run()
    }

    /// Moves the clock by `seconds` in steps, ticking every engine.
    func advance(_ seconds: Double, step: Double = 0.5) {
        var t = 0.0
        let none = { (_: UInt32, _: Bool) in IKETrafficSample() }
        while t < seconds {
            now += step
            t += step
            fromHub(hub.tick(now: now, traffic: none))
            for i in peers.indices { fromPeer(i, peers[i].engine.tick(now: now, traffic: none)) }
            run()
        }
    }

    /// The hub's CHILD_SA paired with peer `i`'s (its outbound is the peer's inbound).
    func hubChild(of i: Int) -> IKEChildSA? {
        guard let mine = peers[i].engine.activeChildSAs.first else { return nil }
        return hub.activeChildSAs.first { $0.outbound == mine.inbound && $0.inbound == mine.outbound }
    }

    /// The hub's configuration: site A at 192.0.2.2, site B at 192.0.2.3 (exact addresses, their
    /// own ids and keys), road warriors from anywhere with any id (`roadwarriorID`) and their key.
    static func hubConfig(roadwarriorID: String = "*", extraConnections: String = "", extraSecrets: String = "") -> String {
        """
        connections {
          siteA {
            local_addrs = 192.0.2.1
            remote_addrs = 192.0.2.2
            local { auth = psk
              id = hub }
            remote { auth = psk
              id = siteA }
            children { net { local_ts = 10.0.0.0/24
                remote_ts = 10.1.0.0/24 } }
          }
          siteB {
            local_addrs = 192.0.2.1
            remote_addrs = 192.0.2.3
            local { auth = psk
              id = hub }
            remote { auth = psk
              id = siteB }
            children { net { local_ts = 10.0.0.0/24
                remote_ts = 10.2.0.0/24 } }
          }
          \(extraConnections)
          roadwarriors {
            local_addrs = 192.0.2.1
            local { auth = psk
              id = hub }
            remote { auth = psk
              id = \(roadwarriorID) }
            children { net { local_ts = 10.0.0.0/16
                remote_ts = 10.99.0.0/16 } }
          }
        }
        secrets {
          ike-a { id = siteA
            secret = "psk-of-site-a" }
          ike-b { id = siteB
            secret = "psk-of-site-b" }
          ike-rw { id = \(roadwarriorID)
            secret = "psk-of-road-warriors" }
          \(extraSecrets)
        }
        """
    }

    /// A peer that initiates to the hub as `id` from `local`, with `psk`, offering `localTS`.
    static func peerConfig(local: String, id: String, psk: String, localTS: String, extra: String = "") -> String {
        """
        connections {
          hub {
            local_addrs = \(local)
            remote_addrs = 192.0.2.1
            \(extra)
            local { auth = psk
              id = \(id) }
            remote { auth = psk
              id = hub }
            children { net { local_ts = \(localTS)
                remote_ts = 10.0.0.0/24
                start_action = start } }
          }
        }
        secrets {
          ike-1 { id = hub
            secret = "\(psk)" }
        }
        """
    }

    static func siteA(from local: String = "192.0.2.2", psk: String = "psk-of-site-a") -> String {
        peerConfig(local: local, id: "siteA", psk: psk, localTS: "10.1.0.0/24")
    }
    static func siteB() -> String { peerConfig(local: "192.0.2.3", id: "siteB", psk: "psk-of-site-b", localTS: "10.2.0.0/24") }
    /// A road warrior behind a NAT: its own address is private.
    static func roadwarrior(local: String = "10.77.0.2", id: String = "carol", extra: String = "") -> String {
        peerConfig(local: local, id: id, psk: "psk-of-road-warriors", localTS: "10.99.0.0/16", extra: extra)
    }
}

@Suite("IKEv2 engine: a hub serving many peers")
struct IKEHubTests {
    @Test("remote_addrs: an address, prefixes, a list, %any (also when absent); what each accepts and how well")
    func addressMatch() throws {
        let any = try #require(IKEAddressMatch("%any"))
        #expect(any.rank(IPAddress("198.51.100.1")!) == 1 && any.rank(IPAddress("2001:db8::1")!) == 1)
        let list = try #require(IKEAddressMatch("192.0.2.2, 198.51.100.0/24,2001:db8::/32"))
        #expect(list.entries.count == 3)
        #expect(list.rank(IPAddress("192.0.2.2")!) == 200)
        #expect(list.rank(IPAddress("198.51.100.77")!) == 26)
        #expect(list.rank(IPAddress("2001:db8:1::1")!) == 34)
        #expect(list.rank(IPAddress("192.0.2.3")!) == nil && list.rank(IPAddress("2001:db9::1")!) == nil)
        #expect(list.initiationAddress == IPAddress("192.0.2.2"))
        #expect(IKEAddressMatch("198.51.100.0/24")?.initiationAddress == nil)
        for bad in ["gw.example.org", "192.0.2.5/24", "192.0.2.1-192.0.2.9", "", "192.0.2.0/33"] {
            #expect(IKEAddressMatch(bad) == nil, "\(bad)")
        }
        let connections = try IKEConfig.parse(IKEHubNet.hubConfig())
        #expect(connections.map(\.remoteAddrs.description) == ["192.0.2.2", "192.0.2.3", "%any"])
        #expect(connections.map(\.remoteAddress) == [IPAddress("192.0.2.2"), IPAddress("192.0.2.3"), nil])
        #expect(connections[2].remoteID == nil, "id = * is any identity")
    }

    @Test("configurations refused: a connection that starts without one address to send to; different local_addrs; a bad remote_addrs", arguments: [
        ("remote_addrs = 192.0.2.0/24", "start_action = start, which needs remote_addrs to begin with one address"),
        ("remote_addrs = %any", "start_action = start, which needs remote_addrs"),
        ("remote_addrs = gw.example.org", "remote_addrs: addresses, prefixes"),
        ("remote_addrs = 2001:db8::1", "one family"),
    ])
    func refused(remote: String, message: String) {
        let text = IKEHubNet.siteA().replacingOccurrences(of: "remote_addrs = 192.0.2.1", with: remote)
        #expect(throws: IKEConfigError.self) { try IKEConfig.parse(text) }
        do { _ = try IKEConfig.parse(text) } catch { #expect(error.description.contains(message), "\(error)") }
    }

    @Test("connections of one file must share local_addrs")
    func differentLocals() {
        let text = IKEHubNet.hubConfig().replacingOccurrences(of: "local_addrs = 192.0.2.1\n    remote_addrs = 192.0.2.3",
                                                              with: "local_addrs = 192.0.2.9\n    remote_addrs = 192.0.2.3")
        #expect(text != IKEHubNet.hubConfig())
        do {
            let c = try IKEConfig.parse(text)
            Issue.record("accepted: \(c.map(\.localAddress))")
        } catch { #expect(error.description.contains("the same local_addrs"), "\(error)") }
    }

    @Test("the hub serves site A, site B and a road warrior at once, each with its own connection and selectors")
    func threePeers() throws {
        let net = try IKEHubNet(hub: IKEHubNet.hubConfig())
        try net.add(IKEHubNet.siteA(), seenAs: "192.0.2.2")
        try net.add(IKEHubNet.siteB(), seenAs: "192.0.2.3")
        try net.add(IKEHubNet.roadwarrior(), seenAs: "203.0.113.5", port: 40000)
        for i in net.peers.indices { net.start(i) }
        let expected = [("siteA", "10.1.0.0/24"), ("siteB", "10.2.0.0/24"), ("roadwarriors", "10.99.0.0/16")]
        for (i, (name, remote)) in expected.enumerated() {
            let child = try #require(net.hubChild(of: i), "\(name): \(net.hub.takeEvents())")
            #expect(child.connection == name)
            #expect(child.remoteTS == [TrafficSelector(remote)!])
            #expect(child.tunnel.peer == net.peers[i].seenAs)
            #expect(net.peers[i].engine.activeChildSAs.first?.remoteTS == child.localTS)
            #expect(net.peers[i].engine.activeChildSAs.first?.tunnel.peer == UDPEndpoint(IKEHubNet.hubAddress, 4500))
        }
        #expect(net.hub.activeChildSAs.count == 3)
        let status = net.hub.status(now: net.now) { _, _ in IKETrafficSample() }
        #expect(Set(status.map(\.peerID)) == ["siteA", "siteB", "carol"])
        #expect(status.allSatisfy { $0.state == "established" })
    }

    @Test("many road warriors share the %any connection; a specific id is served by its own connection before %any")
    func roadwarriors() throws {
        let dave = """
            dave {
                local_addrs = 192.0.2.1
                local { auth = psk
                  id = hub }
                remote { auth = psk
                  id = dave }
                children { net { local_ts = 10.0.0.0/16
                    remote_ts = 10.98.0.0/16 } }
              }
            """
        let hub = IKEHubNet.hubConfig(extraConnections: dave, extraSecrets: "ike-d { id = dave\n secret = \"psk-of-dave\" }")
        let net = try IKEHubNet(hub: hub)
        try net.add(IKEHubNet.roadwarrior(id: "carol"), seenAs: "203.0.113.5", port: 40000)
        try net.add(IKEHubNet.roadwarrior(id: "erin"), seenAs: "203.0.113.5", port: 40001)
        try net.add(IKEHubNet.peerConfig(local: "10.1.1.1", id: "dave", psk: "psk-of-dave", localTS: "10.98.0.0/16"), seenAs: "198.51.100.4")
        for i in net.peers.indices { net.start(i) }
        #expect(net.hubChild(of: 0)?.connection == "roadwarriors")
        #expect(net.hubChild(of: 1)?.connection == "roadwarriors")
        #expect(net.hubChild(of: 2)?.connection == "dave", "\(net.hub.takeEvents())")
        #expect(net.hubChild(of: 2)?.remoteTS == [TrafficSelector("10.98.0.0/16")!])
        #expect(net.hub.activeChildSAs.count == 3)
    }

    @Test("site A's identity and key from site B's address (or any other) is refused: no SA, a clear event", arguments: ["192.0.2.3", "198.51.100.9"])
    func identityFromWrongAddress(address: String) throws {
        let net = try IKEHubNet(hub: IKEHubNet.hubConfig())
        try net.add(IKEHubNet.siteA(from: address), seenAs: address)
        net.start(0)
        #expect(net.hub.activeChildSAs.isEmpty && net.peers[0].engine.activeChildSAs.isEmpty)
        let events = net.hub.takeEvents().map(\.description)
        #expect(events.contains { $0.contains("authentication failed") }, "\(events)")
        #expect(net.peers[0].engine.takeEvents().contains { $0.description.contains("AUTHENTICATION_FAILED") })
        net.advance(1)
        #expect(!net.hub.status(now: net.now) { _, _ in IKETrafficSample() }.contains { $0.state == "established" })
    }

    @Test("site A's identity from a road warrior connection with a specific id is refused: no connection accepts it")
    func identityNoConnection() throws {
        let net = try IKEHubNet(hub: IKEHubNet.hubConfig(roadwarriorID: "carol"))
        try net.add(IKEHubNet.siteA(from: "198.51.100.9"), seenAs: "198.51.100.9")
        net.start(0)
        #expect(net.hub.activeChildSAs.isEmpty)
        #expect(net.hub.takeEvents().contains { $0.description.contains("which no connection for that address accepts") })
    }

    @Test("a wrong pre-shared key is refused")
    func wrongPSK() throws {
        let net = try IKEHubNet(hub: IKEHubNet.hubConfig())
        try net.add(IKEHubNet.siteA(psk: "not-the-psk-of-site-a"), seenAs: "192.0.2.2")
        net.start(0)
        #expect(net.hub.activeChildSAs.isEmpty && net.peers[0].engine.activeChildSAs.isEmpty)
        #expect(net.hub.takeEvents().contains { $0.description.contains("does not verify") })
    }

    @Test("the connection for an address: exact host, then the longest prefix, then %any")
    func ranking() throws {
        func conn(_ name: String, _ remote: String?) -> String {
            """
              \(name) {
                local_addrs = 192.0.2.1
                \(remote.map { "remote_addrs = \($0)" } ?? "")
                local { auth = psk
                  id = hub }
                remote { auth = psk
                  id = %any }
                children { net { local_ts = 10.0.0.0/24
                    remote_ts = 10.\(name.count).0.0/16 } }
              }
            """
        }
        let text = "connections {\n" + conn("any", nil) + conn("wide", "192.0.0.0/16") + conn("narrow", "192.0.2.0/24")
            + conn("exactone", "192.0.2.7") + "}\nsecrets { ike { secret = \"shared-by-all\" } }"
        let hub = IKEEngine(connections: try IKEConfig.parse(text))
        func order(_ a: String) -> [String] { hub.candidates(for: IPAddress(a)!).map(\.name) }
        #expect(order("192.0.2.7") == ["exactone", "narrow", "wide", "any"])
        #expect(order("192.0.2.8") == ["narrow", "wide", "any"])
        #expect(order("192.0.9.1") == ["wide", "any"])
        #expect(order("203.0.113.1") == ["any"])
        // End to end: the peer gets the best connection's selectors.
        for (address, name) in [("192.0.2.7", "exactone"), ("192.0.2.8", "narrow"), ("192.0.9.1", "wide"), ("203.0.113.1", "any")] {
            let net = try IKEHubNet(hub: text)
            let peer = IKEHubNet.peerConfig(local: address, id: "peer", psk: "shared-by-all", localTS: "10.\(name.count).0.0/16")
            try net.add(peer, seenAs: address)
            net.start(0)
            #expect(net.hubChild(of: 0)?.connection == name, "\(address)")
        }
    }

    /// A hub and a road warrior behind a NAT (its liveness checks every 10 s make new requests).
    func natNet(claimsNAT: Bool = true, local: String = "10.77.0.2", seenAs: String = "203.0.113.5", port: UInt16 = 40000) throws -> IKEHubNet {
        let net = try IKEHubNet(hub: IKEHubNet.hubConfig())
        try net.add(IKEHubNet.roadwarrior(local: local, extra: "dpd_delay = 10s"), seenAs: seenAs, port: port, claimsNAT: claimsNAT)
        net.start(0)
        #expect(net.hubChild(of: 0) != nil)
        return net
    }

    @Test("NAT detection per IKE SA, in status: the road warrior is behind a NAT, the hub is not")
    func natStatus() throws {
        let net = try natNet()
        let hub = try #require(net.hub.status(now: net.now) { _, _ in IKETrafficSample() }.first)
        #expect(!hub.natLocal && hub.natRemote && hub.peer == "203.0.113.5:40000")
        let rw = try #require(net.peers[0].engine.status(now: net.now) { _, _ in IKETrafficSample() }.first)
        #expect(rw.natLocal)
        #expect(net.hubChild(of: 0)?.tunnel.peerMayMove == true)
    }

    @Test("behind a NAT: an authenticated new request from a new port moves the IKE SA and its CHILD_SAs' peer")
    func natMoves() throws {
        let net = try natNet()
        _ = net.hub.takeEvents()
        let generation = net.hub.childGeneration
        net.peers[0].seenAs = UDPEndpoint(IPAddress("203.0.113.5")!, 40123)  // the NAT rebound
        net.advance(11)  // the road warrior's liveness check
        let child = try #require(net.hubChild(of: 0))
        #expect(child.tunnel.peer == UDPEndpoint(IPAddress("203.0.113.5")!, 40123))
        #expect(net.hub.childGeneration > generation)
        #expect(net.hub.takeEvents().contains { $0.description.contains("peer moved from 203.0.113.5:40000 to 203.0.113.5:40123") })
        #expect(net.hub.status(now: net.now) { _, _ in IKETrafficSample() }.first?.peer == "203.0.113.5:40123")
    }

    @Test("a retransmitted request, or a forged one, from a new port does not move the peer")
    func natNoMoveOnReplay() throws {
        let net = try natNet()
        net.advance(11)  // a liveness request goes to the hub and is answered
        let request = try #require(net.toHub.last?.bytes)
        let before = try #require(net.hubChild(of: 0)?.tunnel.peer)
        let elsewhere = IKEPath(localPort: 4500, remote: IPAddress("198.51.100.66")!, remotePort: 5555)
        // The same request again: answered from the cache (to where it came from), not processed.
        let answer = net.hub.receive(request, path: elsewhere, now: net.now)
        #expect(answer.count == 1 && answer.first?.path == elsewhere)
        // The next message ID, but not sealed with the keys: the ICV fails.
        var forged = request
        let id = UInt32(forged[20]) << 24 | UInt32(forged[21]) << 16 | UInt32(forged[22]) << 8 | UInt32(forged[23])
        forged[20..<24] = ArraySlice(bigEndianBytes(id + 1))
        #expect(net.hub.receive(forged, path: elsewhere, now: net.now).isEmpty)
        #expect(net.hub.receive(Array(repeating: 0xAB, count: 80), path: elsewhere, now: net.now).isEmpty)
        #expect(net.hubChild(of: 0)?.tunnel.peer == before)
        #expect(!net.hub.takeEvents().contains { $0.description.contains("peer moved") })
    }

    @Test("without a NAT in front of the peer, a new request from a new port does not move it")
    func noNATNoMove() throws {
        let net = try natNet(claimsNAT: false, local: "198.51.100.4", seenAs: "198.51.100.4", port: 4500)
        #expect(net.hub.status(now: net.now) { _, _ in IKETrafficSample() }.first?.natRemote == false)
        #expect(net.hubChild(of: 0)?.tunnel.peerMayMove == false)
        let moves = net.hub.childGeneration
        net.peers[0].seenAs = UDPEndpoint(IPAddress("198.51.100.4")!, 4600)
        net.advance(11)
        #expect(net.hubChild(of: 0)?.tunnel.peer == UDPEndpoint(IPAddress("198.51.100.4")!, 4500))
        #expect(net.hub.childGeneration == moves)
        #expect(!net.hub.takeEvents().contains { $0.description.contains("peer moved") })
        #expect(!net.hub.peerMoved(inboundSPI: try #require(net.hubChild(of: 0)).inbound.spi, to: UDPEndpoint(IPAddress("198.51.100.4")!, 4700),
                                   now: net.now))
    }

    @Test("peerMoved(inboundSPI:): an authentic ESP datagram from elsewhere moves the IKE SA and its children (peer behind a NAT)")
    func espMove() throws {
        let net = try natNet()
        let child = try #require(net.hubChild(of: 0))
        let generation = net.hub.childGeneration
        let to = UDPEndpoint(IPAddress("203.0.113.9")!, 61000)
        #expect(!net.hub.peerMoved(inboundSPI: child.outbound.spi, to: to, now: net.now), "an SPI the hub does not receive with")
        #expect(net.hub.peerMoved(inboundSPI: child.inbound.spi, to: to, now: net.now))
        #expect(net.hubChild(of: 0)?.tunnel.peer == to)
        #expect(net.hub.childGeneration > generation)
        #expect(!net.hub.peerMoved(inboundSPI: child.inbound.spi, to: to, now: net.now), "already there")
        // IKE follows: the hub's next request goes there.
        #expect(net.hub.status(now: net.now) { _, _ in IKETrafficSample() }.first?.peer == "203.0.113.9:61000")
    }

    @Test("a peer never moves to an address its connection's remote_addrs refuses (site A at 192.0.2.2 may change port only)")
    func moveBoundedByRemoteAddrs() throws {
        let net = try IKEHubNet(hub: IKEHubNet.hubConfig())
        try net.add(IKEHubNet.siteA(), seenAs: "192.0.2.2")
        net.start(0)
        let child = try #require(net.hubChild(of: 0))
        #expect(child.tunnel.peerMayMove, "site A claims a NAT (encap = yes)")
        #expect(!net.hub.peerMoved(inboundSPI: child.inbound.spi, to: UDPEndpoint(IPAddress("198.51.100.1")!, 4500), now: net.now))
        #expect(net.hub.takeEvents().contains { $0.description.contains("remote_addrs (192.0.2.2) does not accept it") })
        #expect(net.hubChild(of: 0)?.tunnel.peer == UDPEndpoint(IPAddress("192.0.2.2")!, 4500))
        #expect(net.hub.peerMoved(inboundSPI: child.inbound.spi, to: UDPEndpoint(IPAddress("192.0.2.2")!, 1024), now: net.now))
        #expect(net.hubChild(of: 0)?.tunnel.peer == UDPEndpoint(IPAddress("192.0.2.2")!, 1024))
    }

    @Test("keepalives: only from the end behind a NAT, and only after the interval without sending")
    func keepalives() throws {
        let net = try IKEHubNet(hub: IKEHubNet.hubConfig())
        try net.add(IKEHubNet.roadwarrior(), seenAs: "203.0.113.5", port: 40000)
        try net.add(IKEHubNet.siteA(), seenAs: "192.0.2.2")
        net.start(0)
        net.start(1)
        let rw = net.peers[0].engine, site = net.peers[1].engine
        #expect(rw.keepalives(now: net.now).isEmpty, "just sent")
        net.advance(19)
        #expect(rw.keepalives(now: net.now).isEmpty)
        net.advance(1)
        #expect(rw.keepalives(now: net.now) == [IKEPath(localPort: 4500, remote: IKEHubNet.hubAddress, remotePort: 4500)])
        #expect(rw.keepalives(now: net.now).isEmpty, "just sent one")
        net.advance(20)
        #expect(rw.keepalives(now: net.now).count == 1)
        #expect(net.hub.keepalives(now: net.now).isEmpty && site.keepalives(now: net.now).isEmpty, "not behind a NAT")
    }
}
