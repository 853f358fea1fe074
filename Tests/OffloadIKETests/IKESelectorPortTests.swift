import Foundation
import OffloadEngine
import OffloadIPsec
import OffloadTunnel
import OffloadWire
import Testing

@testable import OffloadIKE

/// A configuration for gateway `me` (1 or 2) whose children are `children` (name, local_ts, remote_ts).
func portConfig(me: Int, start: String, children: [(String, String, String)]) -> String {
    let peer = 3 - me
    let childText = children.map { name, local, remote in
        """
              \(name) {
                local_ts = \(local)
                remote_ts = \(remote)
                esp_proposals = aes128gcm16
                start_action = \(start)
              }

        """
    }.joined()
    return """
        connections {
          site {
            local_addrs = 192.0.2.\(me)
            remote_addrs = 192.0.2.\(peer)
            proposals = aes128gcm16-prfsha256-x25519
            local { auth = psk
              id = gw\(me) }
            remote { auth = psk
              id = gw\(peer) }
            children {
        \(childText)    }
          }
        }
        secrets {
          ike-1 { id = gw\(peer)
            secret = "not-a-secret-psk" }
        }
        """
}

@Suite("IKEv2 selectors with a protocol and ports (RFC 7296 §2.9, §3.13.1)")
struct IKESelectorPortTests {
    func range(_ start: String, _ end: String, _ proto: UInt8 = 0, _ ports: ClosedRange<UInt16> = 0...65_535) -> IKETrafficSelector {
        let a = IPv4Address(start)!, b = IPv4Address(end)!
        return IKETrafficSelector(start: bigEndianBytes(a.rawValue), end: bigEndianBytes(b.rawValue), ipProtocol: proto,
                                  startPort: ports.lowerBound, endPort: ports.upperBound)
    }

    func ts(_ text: String) -> TrafficSelector { TrafficSelector(text)! }

    @Test("narrowing intersects protocols (0 with P is P, P with Q is nothing) and port ranges")
    func narrowing() {
        let net = range("10.2.0.0", "10.2.255.255")
        #expect(SelectorMath.narrow([net], to: [ts("10.2.0.10/32[tcp/5201]")]) == [ts("10.2.0.10/32[tcp/5201]")])
        #expect(SelectorMath.narrow([range("10.2.0.0", "10.2.255.255", 6, 5201...5300)], to: [ts("10.0.0.0/8[tcp/5250-6000]")])
            == [ts("10.2.0.0/16[tcp/5250-5300]")])
        #expect(SelectorMath.narrow([range("10.2.0.0", "10.2.255.255", 6)], to: [ts("10.2.0.0/16")]) == [ts("10.2.0.0/16[tcp]")])
        #expect(SelectorMath.narrow([range("10.2.0.0", "10.2.255.255", 17)], to: [ts("10.2.0.0/16[tcp]")]).isEmpty, "UDP against TCP")
        #expect(SelectorMath.narrow([range("10.2.0.0", "10.2.255.255", 6, 80...80)], to: [ts("10.2.0.0/16[tcp/443]")]).isEmpty)
        // What the dataplane cannot enforce is left out, never widened: ICMP type/code, ports without a protocol, OPAQUE.
        #expect(SelectorMath.narrow([range("10.2.0.0", "10.2.255.255", 1, 0x0800...0x0800)], to: [ts("10.0.0.0/8")]).isEmpty)
        #expect(SelectorMath.narrow([range("10.2.0.0", "10.2.255.255", 0, 80...80)], to: [ts("10.0.0.0/8")]).isEmpty)
        #expect(SelectorMath.narrow([IKETrafficSelector(start: [10, 2, 0, 0], end: [10, 2, 0, 255], ipProtocol: 6, startPort: 65_535, endPort: 0)],
                                    to: [ts("10.0.0.0/8")]).isEmpty)
        #expect(SelectorMath.narrow([range("10.2.0.0", "10.2.255.255", 1)], to: [ts("10.0.0.0/8")]) == [ts("10.2.0.0/16[icmp]")])
    }

    @Test("the initiator's check: the answer lies inside the offer in addresses, protocol and ports")
    func within() {
        #expect(SelectorMath.within([range("10.2.0.10", "10.2.0.10", 6, 5201...5201)], [ts("10.2.0.0/16")]))
        #expect(SelectorMath.within([range("10.2.0.10", "10.2.0.10", 6, 5201...5201)], [ts("10.2.0.0/16[tcp/5200-5300]")]))
        #expect(!SelectorMath.within([range("10.2.0.0", "10.2.255.255")], [ts("10.2.0.10/32[tcp/5201]")]), "wider addresses")
        #expect(!SelectorMath.within([range("10.2.0.10", "10.2.0.10")], [ts("10.2.0.10/32[tcp/5201]")]), "every protocol for TCP")
        #expect(!SelectorMath.within([range("10.2.0.10", "10.2.0.10", 6, 5201...5202)], [ts("10.2.0.10/32[tcp/5201]")]), "more ports")
        #expect(!SelectorMath.within([range("10.2.0.10", "10.2.0.10", 17, 5201...5201)], [ts("10.2.0.10/32[tcp/5201]")]), "another protocol")
        #expect(!SelectorMath.within([range("10.2.0.10", "10.2.0.10", 1, 0x0800...0x0800)], [ts("10.2.0.0/16")]), "ICMP type/code")
    }

    @Test("a selector to a range and back keeps its protocol and ports (what goes on the wire)")
    func roundTrip() throws {
        for text in ["10.2.0.10/32[tcp/5201]", "fd00::/8[udp/1024-2048]", "10.0.0.0/8[sctp]", "10.0.0.0/8"] {
            let r = SelectorMath.range(ts(text))
            #expect(SelectorMath.prefixes(r) == [ts(text)])
            let payload = try IKEPayload.parse(type: IKEPayloadType.trafficSelectorInitiator.rawValue,
                                               body: IKEPayload.trafficSelectorsInitiator([r]).body)
            #expect(payload == .trafficSelectorsInitiator([r]))
        }
    }

    @Test("four CHILD_SAs, one per TCP port, negotiated in memory; each dataplane tunnel carries its own flow")
    func seed() throws {
        let ports: [UInt16] = [5201, 5202, 5203, 5204]
        let a = portConfig(me: 1, start: "start", children: ports.map { ("p\($0)", "10.1.0.0/16", "10.2.0.10/32[tcp/\($0)]") })
        let b = portConfig(me: 2, start: "none", children: [("tcp", "10.2.0.0/16[tcp]", "10.1.0.0/16")])
        let w = try IKEWire(a, b)
        w.start()
        let children = w.a.activeChildSAs
        #expect(children.count == 4 && w.b.activeChildSAs.count == 4, "\(w.a.takeEvents())")
        #expect(Set(children.flatMap(\.remoteTS).map(\.description)) == Set(ports.map { "10.2.0.10/32[tcp/\($0)]" }))
        #expect(matched(w.a, w.b))
        // The dataplane of A: each flow picks the SA negotiated for its port.
        let policy = try ESPSecurityPolicy(tunnels: children.map(\.tunnel), store: nil)
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: policy))
        for port in ports {
            var packet = PacketBuilder()
            packet.link = .raw
            packet.source = IPAddress("10.1.0.5")!
            packet.destination = IPAddress("10.2.0.10")!
            packet.destinationPort = port
            let spi = try packet.ipPacket().withUnsafeBytes { raw throws -> UInt32 in
                #expect(try encapsulator.prepare(raw, gso: nil) == nil)
                return encapsulator.datagramBytes(at: 0).prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            }
            let child = try #require(children.first { $0.remoteTS.map(\.description) == ["10.2.0.10/32[tcp/\(port)]"] })
            #expect(spi == child.outbound.spi, "port \(port)")
        }
    }

    @Test("the responder narrows an any-protocol offer to its port; a protocol that does not agree is TS_UNACCEPTABLE")
    func responderNarrows() throws {
        let w = try IKEWire(portConfig(me: 1, start: "start", children: [("net", "10.1.0.0/16", "10.2.0.0/16")]),
                            portConfig(me: 2, start: "none", children: [("web", "10.2.0.10/32[tcp/443]", "10.1.0.0/16")]))
        w.start()
        #expect(w.a.activeChildSAs.first?.remoteTS == [TrafficSelector("10.2.0.10/32[tcp/443]")!])
        #expect(w.b.activeChildSAs.first?.localTS == [TrafficSelector("10.2.0.10/32[tcp/443]")!])
        let none = try IKEWire(portConfig(me: 1, start: "start", children: [("dns", "10.1.0.0/16", "10.2.0.0/16[udp/53]")]),
                               portConfig(me: 2, start: "none", children: [("web", "10.2.0.0/16[tcp]", "10.1.0.0/16")]))
        none.start()
        #expect(none.a.activeChildSAs.isEmpty && none.b.activeChildSAs.isEmpty)
        #expect(none.a.takeEvents().contains { $0.description.contains("TS_UNACCEPTABLE") })
    }

    @Test("a bad selector in the IKE configuration names the file and the line")
    func configError() {
        #expect {
            _ = try IKEConfig.parse(portConfig(me: 1, start: "start", children: [("x", "10.1.0.0/16", "10.2.0.0/16[tcp/99999]")]),
                                    path: "swanctl.conf")
        } throws: { error in
            "\(error)".hasPrefix("swanctl.conf:13: remote_ts: `10.2.0.0/16[tcp/99999]`: `99999` is not a port")
        }
    }
}
