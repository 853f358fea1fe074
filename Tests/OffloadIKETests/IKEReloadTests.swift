import Foundation
import OffloadIPsec
import OffloadWire
import Testing

@testable import OffloadIKE

@Suite("IKEv2 engine: reloading the connections (SIGHUP) as swanctl --load-all does")
struct IKEReloadTests {
    @Test("an unchanged connection keeps its SAs; a changed one is deleted (the peer told) and its peer comes back under the new settings; a removed one is deleted; an added one is served")
    func reload() throws {
        let net = try IKEHubNet(hub: IKEHubNet.hubConfig())
        let a = try net.add(IKEHubNet.siteA(), seenAs: "192.0.2.2")
        let b = try net.add(IKEHubNet.siteB(), seenAs: "192.0.2.3")
        net.start(a)
        net.start(b)
        let childA = try #require(net.hubChild(of: a)), childB = try #require(net.hubChild(of: b))
        #expect(childB.remoteTS.map(\.description) == ["10.2.0.0/24"])
        // site B's remote_ts narrowed; the road warriors' connection removed; site C added.
        var text = IKEHubNet.hubConfig().replacingOccurrences(of: "remote_ts = 10.2.0.0/24", with: "remote_ts = 10.2.0.0/25")
        let rw = try #require(text.range(of: "  roadwarriors {"))
        let end = try #require(text.range(of: "\n}\nsecrets", range: rw.upperBound..<text.endIndex))
        text.replaceSubrange(rw.lowerBound..<end.lowerBound, with: """
              siteC {
                local_addrs = 192.0.2.1
                remote_addrs = 192.0.2.4
                local { auth = psk
                  id = hub }
                remote { auth = psk
                  id = siteC }
                children { net { local_ts = 10.0.0.0/24
                    remote_ts = 10.3.0.0/24 } }
              }
            """)
        text = text.replacingOccurrences(of: "  ike-rw {", with: "  ike-c { id = siteC\n    secret = \"psk-of-site-c\" }\n  ike-rw {")
        let generation = net.hub.childGeneration
        let (messages, summary) = net.hub.reload(try IKEConfig.parse(text), now: net.now)
        #expect(summary.unchanged == ["siteA"] && summary.changed == ["siteB"] && summary.removed == ["roadwarriors"] && summary.added == ["siteC"],
                "\(summary)")
        #expect(net.hub.childGeneration != generation, "the dataplane's SA set is replaced")
        // Site A's SAs are untouched: the same keys in and out.
        let keptA = try #require(net.hubChild(of: a))
        #expect(keptA.inbound == childA.inbound && keptA.outbound == childA.outbound)
        // Site B's IKE SA is deleted, and site B is told (a Delete to its address).
        #expect(messages.count == 1 && messages.first?.path.remote == IPAddress("192.0.2.3"))
        #expect(!net.hub.activeChildSAs.contains { $0.inbound == childB.inbound })
        net.fromHub(messages)
        net.run()
        // Site B, told its SA is gone, connects again (as strongSwan with close_action = start
        // would) and gets the new, narrower selectors.
        #expect(net.peers[b].engine.activeChildSAs.isEmpty, "site B was told")
        net.start(b)
        let newB = try #require(net.hubChild(of: b), "site B is back")
        #expect(newB.remoteTS.map(\.description) == ["10.2.0.0/25"])
        // Site C, new, is served.
        let c = try net.add(IKEHubNet.peerConfig(local: "192.0.2.4", id: "siteC", psk: "psk-of-site-c", localTS: "10.3.0.0/24"), seenAs: "192.0.2.4")
        net.start(c)
        #expect(net.hubChild(of: c) != nil, "site C is served after the reload")
        #expect(net.hub.connections.map(\.name) == ["siteA", "siteB", "siteC"])
    }

    @Test("a reload with the same file changes nothing")
    func sameFile() throws {
        let net = try IKEHubNet(hub: IKEHubNet.hubConfig())
        let a = try net.add(IKEHubNet.siteA(), seenAs: "192.0.2.2")
        net.start(a)
        let child = try #require(net.hubChild(of: a))
        let generation = net.hub.childGeneration
        let (messages, summary) = net.hub.reload(try IKEConfig.parse(IKEHubNet.hubConfig()), now: net.now)
        #expect(messages.isEmpty && summary.unchanged.count == 3 && summary.changed.isEmpty && summary.removed.isEmpty && summary.added.isEmpty)
        #expect(net.hub.childGeneration == generation)
        #expect(net.hubChild(of: a)?.inbound == child.inbound)
    }

    @Test("a changed secret counts as a change (compared without showing it)")
    func secretChange() throws {
        let old = try IKEConfig.parse(IKEHubNet.hubConfig())
        let new = try IKEConfig.parse(IKEHubNet.hubConfig().replacingOccurrences(of: "psk-of-site-a", with: "psk-of-site-a2"))
        #expect(old[0] != new[0] && old[1] == new[1])
    }
}

@Suite("IKEv2 engine: a hub under a flood of IKE_SA_INIT from many addresses")
struct IKEHubFloodTests {
    @Test("5,000 IKE_SA_INIT requests from 5,000 addresses: established peers keep their SAs, half-open state stays bounded (cookies), and a new peer still gets in")
    func flood() throws {
        let net = try IKEHubNet(hub: IKEHubNet.hubConfig())
        let a = try net.add(IKEHubNet.siteA(), seenAs: "192.0.2.2")
        net.start(a)
        let before = try #require(net.hubChild(of: a))
        // One real first request (a road warrior's), sent again with a new SPI from each address.
        let template = IKEEngine(connections: try IKEConfig.parse(IKEHubNet.roadwarrior()))
        let request = try #require(template.start(now: 0).first?.bytes)
        var answered = 0, cookies = 0
        for i in 0..<5000 {
            var copy = request
            for k in 0..<8 { copy[k] = UInt8(truncatingIfNeeded: (i + 1) >> (8 * (k % 4))) ^ UInt8(k) }
            let source = IPAddress("100.\(64 + i / 65_536 % 64).\(i / 256 % 256).\(i % 256)")!
            let out = net.hub.receive(copy, path: IKEPath(localPort: 500, remote: source, remotePort: 500), now: net.now)
            answered += out.count
            cookies += out.filter { $0.bytes.count < 120 }.count
        }
        let halfOpen = net.hub._fuzzViews().filter { !$0.established }.count
        #expect(halfOpen <= net.hub.cookieThreshold, "half-open IKE SAs: \(halfOpen)")
        #expect(cookies >= 5000 - net.hub.cookieThreshold, "past the threshold every request gets a COOKIE demand, no state: \(cookies) of \(answered)")
        // Site A untouched: the same CHILD_SA, and it still rekeys with the hub.
        let after = try #require(net.hubChild(of: a))
        #expect(after.inbound == before.inbound && after.outbound == before.outbound)
        // A new peer still gets in (answering the COOKIE demand, RFC 7296 §2.6).
        let b = try net.add(IKEHubNet.siteB(), seenAs: "192.0.2.3")
        net.start(b)
        #expect(net.hubChild(of: b) != nil, "site B established during the flood's aftermath: \(net.hub.takeEvents().suffix(5))")
    }
}
